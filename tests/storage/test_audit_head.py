"""The audit log's signed head, and a copy of the log checked against a head: truncation,
emptying and a rewritten, re-signed log are caught by a head kept elsewhere, never without one.

Heads are also built here from the written spec (storage/audit_head.py docstring), so the code
is held to it."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from pathlib import Path

import pytest

from storage.audit import GENESIS_PREV_HEX, verify_audit_log
from storage.audit_head import (
    AuditHead,
    HeadFormatError,
    SignedHead,
    format_head_report,
    parse_head,
    parse_signed_head,
    verify_against_head,
)
from storage.audit_io import AuditLog, AuditLogError
from storage.devicekey import DeviceKey


def make_log(path: Path, key: DeviceKey, count: int, event: str = "gateway.trigger") -> AuditLog:
    ticks = itertools.count(1_700_000_000_000, 1000)
    log = AuditLog.open(path, key, clock_ms=lambda: next(ticks))
    for number in range(count):
        log.append(event, number=number)
    return log


def test_a_signed_head_follows_the_written_spec(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    with make_log(tmp_path / "audit.jsonl", key, 3) as log:
        signed = log.signed_head()
        last_line = log.path.read_bytes().splitlines()[-1]
    assert (signed.seq, signed.sha256_hex) == (2, hashlib.sha256(last_line).hexdigest())
    body = json.dumps({"seq": 2, "sha256": signed.sha256_hex}, separators=(",", ":"))
    expected = base64.b64encode(key.sign(b"MVB audit head v1\n" + body.encode())).decode()
    assert signed.render() == f"2:{signed.sha256_hex}:{expected}"
    assert parse_signed_head(signed.render(), key.public_key()) == signed


def test_a_head_signed_by_another_key_or_altered_is_refused(tmp_path: Path) -> None:
    key, other = DeviceKey.generate(), DeviceKey.generate()
    signed = AuditHead(7, "ab" * 32).sign(key)
    with pytest.raises(HeadFormatError, match="does not verify"):
        parse_signed_head(signed.render(), other.public_key())
    moved = SignedHead(AuditHead(8, "ab" * 32), signed.sig_b64)
    with pytest.raises(HeadFormatError, match="does not verify"):
        parse_signed_head(moved.render(), key.public_key())
    with pytest.raises(HeadFormatError, match="not signed"):
        parse_signed_head(signed.head.render(), key.public_key())


@pytest.mark.parametrize(
    "text",
    ["", "7", "7:" + "ab" * 31, "07:" + "ab" * 32, "-2:" + "0" * 64, "1:" + "AB" * 32,
     "1:" + "ab" * 32 + ":", "1:" + "ab" * 32 + ":" + "A" * 88, "1: " + "ab" * 32,
     "-1:" + "ab" * 32, "9" * 20 + ":" + "ab" * 32, "x" * 300],
)  # fmt: skip
def test_malformed_head_text_is_refused(text: str) -> None:
    with pytest.raises(HeadFormatError):
        parse_head(text)


def test_the_empty_head_is_the_genesis() -> None:
    assert parse_head("-1:" + GENESIS_PREV_HEX) == AuditHead.empty()


def test_durable_end_and_reads_never_pass_the_last_fsynced_entry(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    with make_log(tmp_path / "audit.jsonl", key, 2) as log:
        head, size = log.durable_end()
        assert (head.seq, size) == (1, log.path.stat().st_size)
        with log.path.open("ab") as handle:  # bytes another writer left mid-append
            handle.write(b'{"half an entry')
        assert log.read_durable(0, 10**6) == log.path.read_bytes()[:size]
        assert log.read_durable(size, 10**6) == b""
        assert log.read_durable(5, 10) == log.path.read_bytes()[5:15]
        with pytest.raises(AuditLogError, match="outside"):
            log.read_durable(size + 1, 10)
        assert log.public_key() == key.public_key()


def test_a_copy_that_reaches_the_head_verifies_and_may_have_grown(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    with make_log(tmp_path / "audit.jsonl", key, 5) as log:
        head, _ = log.durable_end()
        log.append("gateway.stop", source="officer")
        data = log.path.read_bytes()
    report = verify_against_head(data, key.public_key(), head)
    assert (report.ok, report.entries) == (True, 6)
    assert format_head_report(report, head) == (
        "audit log OK: 6 entries, chain and signatures verify, and it reaches the head at seq 4"
    )


def test_dropping_the_tail_half_the_log_or_everything_fails_against_the_head(
    tmp_path: Path,
) -> None:
    key = DeviceKey.generate()
    with make_log(tmp_path / "audit.jsonl", key, 8) as log:
        head, _ = log.durable_end()
        data = log.path.read_bytes()
    lines = data.splitlines(keepends=True)
    public = key.public_key()

    # Each cut copy verifies on its own: only the head shows what is missing.
    for kept, problem in [
        (7, "the log ends at seq 6, but the head names seq 7: entries 7..7 were cut off the end"),
        (4, "the log ends at seq 3, but the head names seq 7: entries 4..7 were cut off the end"),
        (0, "the log is empty, but the head names seq 7: it was emptied"),
    ]:
        copy = b"".join(lines[:kept])
        assert verify_audit_log(copy, public).ok
        report = verify_against_head(copy, public, head)
        assert (report.ok, report.first_problem) == (False, problem)
        assert format_head_report(report, head) == f"audit log BROKEN: {problem}"


def test_a_log_rewritten_and_signed_again_with_the_device_key_fails_against_the_head(
    tmp_path: Path,
) -> None:
    key = DeviceKey.generate()
    with make_log(tmp_path / "audit.jsonl", key, 6) as log:
        head, _ = log.durable_end()
    # The attacker holds the device key: a fresh log of the same length, every entry signed.
    with make_log(tmp_path / "forged.jsonl", key, 6, event="gateway.stop") as forged:
        data = forged.path.read_bytes()
    assert verify_audit_log(data, key.public_key()).ok
    report = verify_against_head(data, key.public_key(), head)
    assert not report.ok
    assert report.first_problem == (
        "entry 5 differs from the head (the log was rewritten from there or before, and signed "
        "again)"
    )


def test_without_a_head_the_report_says_what_cannot_be_known(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    report = verify_audit_log(b"", key.public_key())
    text = format_head_report(report, None)
    assert text.splitlines() == [
        "audit log OK: 0 entries, chain and signatures verify",
        "without --head: entries cut off the end, an emptied file or a log rewritten and signed "
        "again with the device key cannot be detected; pass --head with the head the back "
        "office holds (mvb-admin audit check)",
    ]
