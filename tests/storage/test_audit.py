"""Tests for the signed, hash-chained audit log.

Forged entries are built with `forge_line`, an independent implementation of the format in the
`storage.audit` docstring, so these tests also hold the code to its written spec.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage.audit import (
    GENESIS_PREV_HEX,
    TORN_TAIL_EVENT,
    AuditVerifyReport,
    format_report,
    verify_audit_log,
)
from storage.audit_io import AuditLog, AuditLogError
from storage.devicekey import DeviceKey

START_MS = 1_700_000_000_000


def forge_line(
    key: DeviceKey,
    *,
    seq: int,
    prev: str,
    event: str = "forged",
    fields: dict[str, object] | None = None,
    at_ms: int = START_MS,
) -> bytes:
    """An entry line built straight from the spec (sorted keys, compact, domain-prefixed sig)."""
    unsigned = {"at_ms": at_ms, "event": event, "fields": fields or {}, "prev": prev, "seq": seq}
    body = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    sig = base64.b64encode(key.sign(b"MVB audit v1\n" + body.encode())).decode()
    line = json.dumps(
        {**unsigned, "sig": sig}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return line.encode()


def sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def split(data: bytes) -> list[bytes]:
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


@pytest.fixture
def key() -> DeviceKey:
    return DeviceKey.generate()


@pytest.fixture
def clock() -> Callable[[], int]:
    ticks = itertools.count(START_MS, 1000)
    return lambda: next(ticks)


@pytest.fixture
def log(tmp_path: Path, key: DeviceKey, clock: Callable[[], int]) -> Iterator[AuditLog]:
    audit_log = AuditLog.open(tmp_path / "audit.jsonl", key, clock_ms=clock)
    yield audit_log
    audit_log.close()


def write_entries(log: AuditLog, count: int) -> bytes:
    for number in range(count):
        log.append("recording.started", number=number, source="button", officer="o-17")
    return log.path.read_bytes()


def problem_of(data: bytes, key: DeviceKey) -> str | None:
    return verify_audit_log(data, key.public_key()).first_problem


# --- writing --------------------------------------------------------------------------------


def test_append_returns_entry_matching_the_line_on_disk(log: AuditLog, key: DeviceKey) -> None:
    first = log.append("recording.started", source="button", speed_kmh=42.5, siren=True, note=None)
    second = log.append("upload.done", bytes_sent=1024)

    lines = split(log.path.read_bytes())
    assert len(lines) == 2
    assert (first.seq, first.at_ms, first.prev_hex) == (0, START_MS, GENESIS_PREV_HEX)
    assert dict(first.fields) == {
        "source": "button",
        "speed_kmh": 42.5,
        "siren": True,
        "note": None,
    }
    assert first.line_sha256_hex == sha(lines[0])
    assert (second.seq, second.at_ms, second.prev_hex) == (1, START_MS + 1000, sha(lines[0]))
    assert list(log.entries()) == [first, second]
    assert (log.last_seq, log.head_sha256_hex) == (1, sha(lines[1]))


def test_lines_follow_the_written_spec_byte_for_byte(log: AuditLog, key: DeviceKey) -> None:
    entry = log.append("recording.started", source="büro", count=3)

    # Ed25519 is deterministic, so an independent encoder must produce the very same bytes.
    expected = forge_line(
        key,
        seq=0,
        prev=GENESIS_PREV_HEX,
        event="recording.started",
        fields={"source": "büro", "count": 3},
    )
    assert log.path.read_bytes() == expected + b"\n"
    assert entry.sig_b64 == json.loads(expected)["sig"]


def test_new_log_file_is_private(log: AuditLog) -> None:
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


def test_reopen_continues_the_chain(tmp_path: Path, key: DeviceKey) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, key) as log:
        write_entries(log, 2)
    with AuditLog.open(path, key) as log:
        assert log.last_seq == 1
        assert log.append("service.started").seq == 2

    report = verify_audit_log(path.read_bytes(), key.public_key())
    assert (report.ok, report.entries, report.last_seq) == (True, 3, 2)


@pytest.mark.parametrize(
    "event", ["", "Recording", "1start", "with space", "dash-ed", "é", "a" * 65, "x\n"]
)
def test_invalid_event_name_is_rejected_and_nothing_written(log: AuditLog, event: str) -> None:
    log.append("service.started")
    before = log.path.read_bytes()

    with pytest.raises(ValueError, match="event name"):
        log.append(event)

    assert log.path.read_bytes() == before
    assert log.last_seq == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1, 2], "not a JSON scalar"),
        ({"a": 1}, "not a JSON scalar"),
        (b"raw", "not a JSON scalar"),
        (float("nan"), "not finite"),
        (float("inf"), "not finite"),
        (2**63, "64-bit range"),
        ("x" * 1537, "longer than 1536"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_invalid_field_value_is_rejected_naming_the_key(
    log: AuditLog, value: object, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        log.append("recording.started", good="ok", offending_key=value)  # type: ignore[arg-type]

    assert "'offending_key'" in str(caught.value)
    assert log.path.read_bytes() == b""
    assert log.last_seq == -1


def test_invalid_field_name_is_rejected(log: AuditLog) -> None:
    with pytest.raises(ValueError, match="'Bad-Name'"):
        log.append("recording.started", **{"Bad-Name": 1})
    assert log.path.read_bytes() == b""


def test_boundary_values_are_accepted(log: AuditLog, key: DeviceKey) -> None:
    log.append("edge", text="x" * 1536, low=-(2**63), high=2**63 - 1, event="field named event")
    assert verify_audit_log(log.path.read_bytes(), key.public_key()).ok


def test_append_after_close_fails(log: AuditLog) -> None:
    log.close()
    with pytest.raises(AuditLogError, match="closed"):
        log.append("service.started")


def test_second_writer_is_refused(log: AuditLog, key: DeviceKey) -> None:
    with pytest.raises(AuditLogError, match="already open"):
        AuditLog.open(log.path, key)


def test_open_refuses_to_continue_another_devices_log(tmp_path: Path, key: DeviceKey) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, key) as log:
        write_entries(log, 2)
    before = path.read_bytes()

    with pytest.raises(AuditLogError, match="not signed by this device key"):
        AuditLog.open(path, DeviceKey.generate())
    assert path.read_bytes() == before


def test_failed_fsync_is_rolled_back(
    log: AuditLog, key: DeviceKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.append("service.started")
    before = log.path.read_bytes()
    real_fsync = os.fsync
    calls = itertools.count()

    def fsync_failing_once(fd: int) -> None:
        if next(calls) == 0:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_once)
    with pytest.raises(OSError, match="Input/output"):
        log.append("recording.started")

    assert log.path.read_bytes() == before
    assert log.append("recording.started").seq == 1
    assert verify_audit_log(log.path.read_bytes(), key.public_key()).ok


def test_concurrent_appends_from_four_threads(log: AuditLog, key: DeviceKey) -> None:
    per_thread = 50
    barrier = threading.Barrier(4)

    def worker(thread_no: int) -> None:
        barrier.wait()
        for number in range(per_thread):
            log.append("segment.sealed", thread=thread_no, number=number)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    report = verify_audit_log(log.path.read_bytes(), key.public_key())
    assert (report.ok, report.entries) == (True, 4 * per_thread)
    entries = list(log.entries())
    assert [entry.seq for entry in entries] == list(range(4 * per_thread))
    seen = {(entry.fields["thread"], entry.fields["number"]) for entry in entries}
    assert seen == {(t, n) for t in range(4) for n in range(per_thread)}


# --- torn tail ------------------------------------------------------------------------------


def test_torn_tail_is_repaired_on_reopen(tmp_path: Path, key: DeviceKey) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, key) as log:
        intact = write_entries(log, 3)
    half_line = forge_line(key, seq=3, prev=sha(split(intact)[-1]))[:40]
    path.write_bytes(intact + half_line)  # a power cut in the middle of an append

    with AuditLog.open(path, key) as log:
        assert log.last_seq == 3
        repair = list(log.entries())[-1]

    assert (repair.seq, repair.event) == (3, TORN_TAIL_EVENT)
    assert dict(repair.fields) == {"dropped_bytes": 40}
    data = path.read_bytes()
    assert data.startswith(intact)
    assert half_line not in data
    report = verify_audit_log(data, key.public_key())
    assert (report.ok, report.entries) == (True, 4)


def test_torn_first_line_is_repaired(tmp_path: Path, key: DeviceKey) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"at_ms":17')

    with AuditLog.open(path, key) as log:
        entries = list(log.entries())

    assert [(e.seq, e.event, dict(e.fields)) for e in entries] == [
        (0, TORN_TAIL_EVENT, {"dropped_bytes": 11})
    ]
    assert verify_audit_log(path.read_bytes(), key.public_key()).ok


def test_unreadable_last_line_is_not_silently_continued(tmp_path: Path, key: DeviceKey) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"this is not an audit log\n")

    with pytest.raises(AuditLogError, match="last entry is unreadable"):
        AuditLog.open(path, key)


# --- verification ---------------------------------------------------------------------------


def test_good_log_verifies(log: AuditLog, key: DeviceKey) -> None:
    data = write_entries(log, 5)

    report = verify_audit_log(data, key.public_key())

    assert report == AuditVerifyReport(
        ok=True,
        entries=5,
        first_problem=None,
        last_seq=4,
        head_sha256_hex=sha(split(data)[-1]),
    )
    assert format_report(report) == "audit log OK: 5 entries, chain and signatures verify"


def test_empty_log_verifies(key: DeviceKey) -> None:
    report = verify_audit_log(b"", key.public_key())
    assert (report.ok, report.entries, report.first_problem) == (True, 0, None)


def test_edited_field_breaks_that_entrys_signature(log: AuditLog, key: DeviceKey) -> None:
    lines = split(write_entries(log, 5))
    entry = json.loads(lines[2])
    entry["fields"]["officer"] = "o-99"
    lines[2] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()

    report = verify_audit_log(join(lines), key.public_key())

    assert not report.ok
    assert report.first_problem == "line 3 (seq 2): signature does not verify"
    assert report.entries == 2
    assert format_report(report) == "audit log BROKEN: line 3 (seq 2): signature does not verify"


def test_entry_rewritten_with_the_device_key_breaks_the_next_link(
    log: AuditLog, key: DeviceKey
) -> None:
    lines = split(write_entries(log, 5))
    lines[2] = forge_line(key, seq=2, prev=sha(lines[1]), event="recording.started")

    assert problem_of(join(lines), key) == (
        "line 4 (seq 3): prev-hash does not match line 3 (entry altered or removed)"
    )


def test_removed_middle_entry_is_detected(log: AuditLog, key: DeviceKey) -> None:
    lines = split(write_entries(log, 6))
    del lines[3]

    assert problem_of(join(lines), key) == "line 4: seq 4 follows seq 2 (entry 3 missing)"


def test_removed_run_of_entries_is_detected(log: AuditLog, key: DeviceKey) -> None:
    lines = split(write_entries(log, 9))
    del lines[4:7]

    assert problem_of(join(lines), key) == "line 5: seq 7 follows seq 3 (entries 4..6 missing)"


def test_reordered_entries_are_detected(log: AuditLog, key: DeviceKey) -> None:
    lines = split(write_entries(log, 6))
    lines[2], lines[3] = lines[3], lines[2]

    assert problem_of(join(lines), key) == (
        "line 3: seq 3 follows seq 1 (entry 2 out of order, found at line 4)"
    )


def test_duplicated_entry_is_detected(log: AuditLog, key: DeviceKey) -> None:
    lines = split(write_entries(log, 4))
    lines.insert(2, lines[1])

    assert problem_of(join(lines), key) == "line 3: seq 1 follows seq 1 (out of order or repeated)"


def test_entry_signed_by_another_device_is_detected(log: AuditLog, key: DeviceKey) -> None:
    lines = split(write_entries(log, 5))
    # Same place in the chain (seq and prev copied), but signed by a different box.
    lines[2] = forge_line(DeviceKey.generate(), seq=2, prev=sha(lines[1]))

    assert problem_of(join(lines), key) == "line 3 (seq 2): signature does not verify"


def test_forged_appended_entry_with_right_prev_but_wrong_key(log: AuditLog, key: DeviceKey) -> None:
    lines = split(write_entries(log, 6))
    lines.append(forge_line(DeviceKey.generate(), seq=6, prev=sha(lines[-1])))

    report = verify_audit_log(join(lines), key.public_key())

    assert report.first_problem == "line 7 (seq 6): signature does not verify"
    assert (report.entries, report.last_seq) == (6, 5)


def test_truncated_last_line_is_reported_as_torn(log: AuditLog, key: DeviceKey) -> None:
    data = write_entries(log, 6)

    report = verify_audit_log(data[:-30], key.public_key())

    assert report.first_problem == "line 6: last line is torn (no newline)"
    assert report.entries == 5


def test_first_problem_wins_over_later_ones(log: AuditLog, key: DeviceKey) -> None:
    lines = split(write_entries(log, 6))
    del lines[4]
    lines[1] = b"{broken"

    assert problem_of(join(lines)[:-5], key) == "line 2: not valid JSON"


def test_log_not_starting_at_the_beginning_is_detected(log: AuditLog, key: DeviceKey) -> None:
    lines = split(write_entries(log, 5))

    assert problem_of(join(lines[2:]), key) == (
        "line 1: first entry has seq 2, expected 0 (log does not start at the beginning)"
    )


def test_first_entry_with_nonzero_prev_is_detected(key: DeviceKey) -> None:
    line = forge_line(key, seq=0, prev="ab" * 32)
    assert problem_of(line + b"\n", key) == (
        "line 1 (seq 0): prev-hash of the first entry is not zero"
    )


def test_non_canonical_spelling_is_detected(log: AuditLog, key: DeviceKey) -> None:
    lines = split(write_entries(log, 3))
    # Same content, extra whitespace: would change the line hash without touching a signature.
    lines[1] = json.dumps(json.loads(lines[1]), sort_keys=True).encode()

    assert problem_of(join(lines), key) == "line 2 (seq 1): entry is not in canonical form"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"", "line 1: empty line"),
        (b"[1,2]", "line 1: not a JSON object"),
        (b"\xff\xfe", "line 1: not valid JSON"),
        (b'{"seq":"0"}', "line 1: malformed entry (seq is not a non-negative integer)"),
        (b'{"seq":0}', "line 1 (seq 0): malformed entry (missing members"),
    ],
)
def test_malformed_lines_are_reported(key: DeviceKey, line: bytes, problem: str) -> None:
    found = problem_of(line + b"\n", key)
    assert found is not None
    assert found.startswith(problem)


def test_verifying_with_the_wrong_public_key_fails_at_line_one(
    log: AuditLog, key: DeviceKey
) -> None:
    data = write_entries(log, 3)
    other = DeviceKey.generate()
    assert problem_of(data, other) == "line 1 (seq 0): signature does not verify"
