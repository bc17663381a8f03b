"""The back office's audit custody on disk (backoffice/audit_store.py) and its check
(backoffice/audit_check.py): real files, real logs; what a restart, a crash's torn line and a
lost index leave; every refusal an error line and a record the check shows."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from backoffice.audit_check import check_box
from backoffice.audit_store import (
    AUDIT_DIR,
    INDEX_FILE,
    LOG_FILE,
    AuditStore,
    NotABoxId,
)
from storage.audit_head import AuditHead
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from transport.audit_wire import AppendRefused, render_key

BOX = "MVB-TEST-0001"


@pytest.fixture
def key() -> DeviceKey:
    return DeviceKey.generate()


@pytest.fixture
def box_log(tmp_path: Path, key: DeviceKey) -> Iterator[AuditLog]:
    ticks = itertools.count(1_700_000_000_000, 1000)
    log = AuditLog.open(tmp_path / "box-audit.jsonl", key, clock_ms=lambda: next(ticks))
    yield log
    log.close()


def add(log: AuditLog, count: int, event: str = "gateway.trigger") -> None:
    for number in range(count):
        log.append(event, number=number)


def ship(store: AuditStore, log: AuditLog, start_bytes: int = 0) -> int:
    """Ship everything durable from `start_bytes`; the HTTP status."""
    _head, size = log.durable_end()
    body = log.read_durable(start_bytes, size - start_bytes)
    answer = store.append(BOX, body, log.signed_head().render(), render_key(log.public_key()))
    return answer.status


def test_what_is_held_survives_a_restart_and_the_check_prints_the_last_head(
    tmp_path: Path, box_log: AuditLog, key: DeviceKey
) -> None:
    add(box_log, 4)
    assert ship(AuditStore(tmp_path / "store"), box_log) == 204
    head, size = box_log.durable_end()
    add(box_log, 2)
    restarted = AuditStore(tmp_path / "store")
    assert restarted.held(BOX) == head
    assert ship(restarted, box_log, size) == 204
    held = restarted.box(BOX)
    assert held.log_bytes() == box_log.path.read_bytes()
    result = check_box(tmp_path / "store" / AUDIT_DIR / BOX, BOX, None)
    last = box_log.durable_end()[0]
    assert result.ok
    assert result.last_head == last
    assert result.lines[:3] == [
        f"box {BOX}: held log OK",
        f"  6 entries verify with device key {key.public_key().key_id()}",
        f"last head: {last.render()}",
    ]
    assert result.lines[-1] == "alarms: none"


def test_a_crash_mid_append_and_a_lost_index_are_repaired_at_load(
    tmp_path: Path, box_log: AuditLog
) -> None:
    add(box_log, 3)
    store = AuditStore(tmp_path / "store")
    ship(store, box_log)
    directory = tmp_path / "store" / AUDIT_DIR / BOX
    with (directory / LOG_FILE).open("ab") as handle:
        handle.write(b'{"at_ms":1,"ev')  # the power went while a line was written
    (directory / INDEX_FILE).unlink()
    reloaded = AuditStore(tmp_path / "store")
    assert reloaded.held(BOX) == box_log.durable_end()[0]
    assert (directory / LOG_FILE).read_bytes() == box_log.path.read_bytes()
    assert reloaded.box(BOX).held_line(1) == box_log.path.read_bytes().splitlines()[1]


def test_a_refusal_is_an_error_line_a_record_and_a_failed_check(
    tmp_path: Path, box_log: AuditLog, key: DeviceKey, caplog: pytest.LogCaptureFixture
) -> None:
    add(box_log, 3)
    store = AuditStore(tmp_path / "store")
    ship(store, box_log)
    lower = AuditHead(0, store.box(BOX).held_hash(0)).sign(key)
    with caplog.at_level(logging.ERROR, logger="backoffice.audit_store"):
        answer = store.append(BOX, b"", lower.render(), render_key(key.public_key()))
    assert answer.status == 409
    assert answer.held == box_log.durable_end()[0]
    why = "the box's head is seq 0, below seq 2 the back office holds"
    assert answer.message == f"truncation: {why}"
    assert [r.getMessage() for r in caplog.records] == [
        f"audit custody alarm box={BOX} kind=truncation: the box's head is seq 0, below seq 2 "
        "the back office holds"
    ]
    (alarm,) = store.box(BOX).alarms()
    assert (alarm["kind"], alarm["via"], alarm["head"]) == ("truncation", "append", lower.render())
    result = check_box(tmp_path / "store" / AUDIT_DIR / BOX, BOX, None)
    assert not result.ok
    assert result.lines[-2] == "alarms: 1"
    assert result.lines[-1].endswith(
        " truncation: the box's head is seq 0, below seq 2 the back office holds"
    )


def test_the_check_notices_a_held_log_cut_on_the_back_office_disk(
    tmp_path: Path, box_log: AuditLog
) -> None:
    add(box_log, 4)
    store = AuditStore(tmp_path / "store")
    ship(store, box_log)
    directory = tmp_path / "store" / AUDIT_DIR / BOX
    lines = (directory / LOG_FILE).read_bytes().splitlines(keepends=True)
    (directory / LOG_FILE).write_bytes(b"".join(lines[:2]))
    result = check_box(directory, BOX, None)
    assert not result.ok
    assert result.lines[0] == (
        f"box {BOX}: held log BROKEN: the log ends at seq 1, but the head names seq 3: "
        "entries 2..3 were cut off the end"
    )


def test_heads_on_uploads_are_kept_and_claims_shown(
    tmp_path: Path, box_log: AuditLog, key: DeviceKey
) -> None:
    add(box_log, 2)
    store = AuditStore(tmp_path / "store")
    before = store.observe(BOX, box_log.signed_head().render(), "upload")
    assert before is not None
    assert before.outcome == "unverified"  # no key pinned yet
    ship(store, box_log)
    add(box_log, 3)
    claim = box_log.signed_head()
    verdict = store.observe(BOX, claim.render(), "upload")
    assert verdict is not None
    assert verdict.outcome == "pending"
    assert store.observe(BOX, "not a head", "report") is None
    assert [h["outcome"] for h in store.box(BOX).heads()] == ["unverified", "held", "pending"]
    reloaded = AuditStore(tmp_path / "store")
    assert set(reloaded.box(BOX).custody.claims) == {4}  # claims outlive a restart
    result = check_box(tmp_path / "store" / AUDIT_DIR / BOX, BOX, None)
    assert any(
        line.startswith("  claim: the box signed head 4 via upload at ") for line in result.lines
    )


@pytest.mark.parametrize(
    ("body", "head", "device_key", "problem"),
    [
        (b"x\n", "HEAD", "KEY", "line 1: not valid JSON"),
        (b"", None, "KEY", "an append needs Mvb-Audit-Head"),
        (b"", "1:2", "KEY", "Mvb-Audit-Head: a head is SEQ:SHA256 or SEQ:SHA256:SIGNATURE"),
        (b"", "HEAD", None, "an append needs Mvb-Device-Key"),
        (b"", "HEAD", "AAAA", "Mvb-Device-Key is not base64 of a 32-byte Ed25519 key"),
    ],
)
def test_malformed_appends_are_refused_before_anything_is_judged(
    tmp_path: Path,
    box_log: AuditLog,
    body: bytes,
    head: str | None,
    device_key: str | None,
    problem: str,
) -> None:
    add(box_log, 1)
    real_head, real_key = box_log.signed_head().render(), render_key(box_log.public_key())
    store = AuditStore(tmp_path / "store")
    with pytest.raises(AppendRefused) as refused:
        store.append(
            BOX,
            body,
            real_head if head == "HEAD" else head,
            real_key if device_key == "KEY" else device_key,
        )
    assert str(refused.value) == problem
    assert not (tmp_path / "store" / AUDIT_DIR / BOX).exists()


@pytest.mark.parametrize("box_id", [".", "..", ""])
def test_a_client_id_that_is_no_directory_name_is_refused(tmp_path: Path, box_id: str) -> None:
    with pytest.raises(NotABoxId):
        AuditStore(tmp_path).box(box_id)
