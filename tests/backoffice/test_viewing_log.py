"""The viewing log's checks (backoffice/viewing.py), on logs built in memory.

The chain and signatures are the audit log's (tests/storage/test_audit.py); what is the viewing
log's own: a head the holders noted catches what the chain alone cannot (a cut tail, or a log
rewritten by whoever holds the viewing key), and a reason is required.
"""

from __future__ import annotations

import pytest

from backoffice.viewing import (
    DECRYPTED,
    STARTED,
    NotedHead,
    Viewing,
    ViewingInputError,
    check_viewing_log,
    head_text,
)
from storage.audit import GENESIS_PREV_HEX, Scalar, encode_entry
from storage.devicekey import DeviceKey


def build_log(key: DeviceKey, reasons: list[str]) -> tuple[bytes, list[str]]:
    """A viewing log with a start entry and one decrypted entry per reason; and each entry's
    line hash."""
    entries: list[tuple[str, dict[str, Scalar]]] = [(STARTED, {"key_id": key.key_id()})]
    entries += [(DECRYPTED, {"reason": reason, "holders": "alice,bob"}) for reason in reasons]
    prev, data, hashes = GENESIS_PREV_HEX, b"", []
    for seq, (event, fields) in enumerate(entries):
        entry, line = encode_entry(seq, 1_790_000_000_000 + seq, event, fields, prev, key)
        prev = entry.line_sha256_hex
        hashes.append(prev)
        data += line + b"\n"
    return data, hashes


def test_a_log_rewritten_with_the_viewing_key_verifies_but_not_against_the_noted_head() -> None:
    key = DeviceKey.generate()
    data, hashes = build_log(key, ["request 1", "request 2"])
    noted = NotedHead.parse(head_text(2, hashes[2]))
    assert check_viewing_log(data, key.public_key(), noted).ok

    rewritten, _ = build_log(key, ["request 1", "nothing to see"])  # re-signed from scratch
    assert check_viewing_log(rewritten, key.public_key()).ok  # the chain alone cannot tell
    check = check_viewing_log(rewritten, key.public_key(), noted)
    assert not check.ok
    assert "entry 2 is not the one noted (the log was rewritten)" in check.message


def test_a_tail_cut_below_the_noted_head_fails() -> None:
    key = DeviceKey.generate()
    data, hashes = build_log(key, ["request 1", "request 2"])
    noted = NotedHead.parse(head_text(2, hashes[2]))
    cut = data[: data.rindex(b"\n", 0, len(data) - 1) + 1]
    check = check_viewing_log(cut, key.public_key(), noted)
    assert not check.ok
    assert "beyond the last entry 1 (cut short)" in check.message


def test_an_empty_log_and_a_foreign_key_fail() -> None:
    key = DeviceKey.generate()
    data, _ = build_log(key, ["request 1"])
    assert not check_viewing_log(b"", key.public_key()).ok
    assert not check_viewing_log(data, DeviceKey.generate().public_key()).ok


@pytest.mark.parametrize("text", ["12", "12:abc", "x:0123456789abcdef", "-1:0123456789abcdef"])
def test_a_noted_head_must_be_seq_and_at_least_16_hex(text: str) -> None:
    with pytest.raises(ViewingInputError):
        NotedHead.parse(text)
    assert NotedHead.parse("12:0123456789ABCDEF") == NotedHead(12, "0123456789abcdef")


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_a_viewing_needs_a_reason(reason: str) -> None:
    with pytest.raises(ViewingInputError):
        Viewing(("alice", "bob"), ("01", "02"), reason, "operator")
