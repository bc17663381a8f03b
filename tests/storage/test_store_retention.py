"""The store's retention pass on trusted time, with a real card, catalog, audit log and alarms:
wall-clock steps delete nothing unattested, a recording made with the time unknown is kept with
an alarm and dated when the time comes, deadlines escalate, and an expiry is audited loudly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.alarms import Alarms
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.models import FileRecord, FileState
from storage.retention import MS_PER_DAY, RetentionPolicy
from storage.space import SpacePolicy
from storage.store import EvidenceStore, StoreSettings
from storage.trusted_time import TrustedState
from storage.trusted_time_io import TrustedClock
from tests.storage.test_store import BOOT, Clock, record

DAY_MS = MS_PER_DAY


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_store(
    root: Path, recipient: RecipientPrivateKey, clock: Clock, trusted: TrustedClock
) -> EvidenceStore:
    state = root / "state"
    state.mkdir(exist_ok=True)
    device = DeviceKey.load_or_create(state)
    audit = AuditLog.open(state / "audit.jsonl", device, clock_ms=clock)
    settings = StoreSettings(
        card_dir=root / "card",
        chunk_max_bytes=8192,
        space=SpacePolicy(reserve_bytes=0, min_free_to_start_bytes=1),
        retention=RetentionPolicy(retention_days=28),
    )
    alarms = Alarms(None, audit.append)
    store, _ = EvidenceStore.open(
        settings, (recipient.public(),), device, audit, clock, alarms, trusted
    )
    return store


@pytest.fixture
def unanchored(
    tmp_path: Path, recipient: RecipientPrivateKey, clock: Clock
) -> Iterator[EvidenceStore]:
    """A box that does not know the time: no RTC worth the name, no GPS fix, no back office."""
    trusted = TrustedClock(TrustedState(BOOT), mono_ms=lambda: clock.mono_ms)
    store = open_store(tmp_path, recipient, clock, trusted)
    yield store
    store.close()
    store.alarms.close()


@pytest.fixture
def anchored(
    tmp_path: Path, recipient: RecipientPrivateKey, clock: Clock
) -> Iterator[EvidenceStore]:
    store = open_store(tmp_path, recipient, clock, clock.trusted())
    yield store
    store.close()
    store.alarms.close()


def only_record(store: EvidenceStore) -> FileRecord:
    (found,) = store.catalog.all()
    return found


def audit_events(tmp_path: Path, event: str) -> list[dict[str, object]]:
    lines = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    return [e["fields"] for e in entries if e["event"] == event]


def test_a_wall_clock_stepped_forward_deletes_nothing_unattested(
    anchored: EvidenceStore, clock: Clock
) -> None:
    """A technician's typo sets the clock 40 days ahead: by the wall clock every file on the
    card is past 28 days; by trusted time they are minutes old. Nothing goes."""
    record(anchored, b"x" * 3000)
    clock.advance(10 * 60_000)
    clock.now_ms += 40 * DAY_MS
    assert clock.now_ms - only_record(anchored).created_at_ms > 40 * DAY_MS
    assert anchored.apply_retention() == []
    assert only_record(anchored).state is FileState.SEALED


def test_a_recording_made_while_the_clock_stood_behind_is_not_deleted_when_it_is_set(
    anchored: EvidenceStore, clock: Clock
) -> None:
    """The clock stands 40 days behind (a dead RTC battery) while a file is recorded, then is
    set right: by its stamp the file is 40 days old; by trusted time, minutes."""
    clock.now_ms -= 40 * DAY_MS
    record(anchored, b"x" * 3000)
    clock.now_ms += 40 * DAY_MS
    clock.advance(10 * 60_000)
    assert clock.now_ms - only_record(anchored).created_at_ms > 40 * DAY_MS
    assert anchored.apply_retention() == []
    assert only_record(anchored).state is FileState.SEALED


def test_without_any_trusted_time_a_forward_step_deletes_nothing(
    unanchored: EvidenceStore, clock: Clock
) -> None:
    record(unanchored, b"x" * 3000)
    clock.now_ms += 40 * DAY_MS
    assert unanchored.apply_retention() == []
    assert only_record(unanchored).state is FileState.SEALED


def test_a_recording_made_with_the_time_unknown_is_kept_alarmed_then_dated(
    tmp_path: Path, unanchored: EvidenceStore, clock: Clock
) -> None:
    clock.now_ms -= 40 * DAY_MS  # the clock stood 40 days behind
    record(unanchored, b"x" * 3000)
    made = only_record(unanchored)
    assert (made.boot_id, made.created_mono_ms) == (BOOT, clock.mono_ms)
    assert made.trusted_created_high_ms is None  # the time was unknown: noted as such
    clock.now_ms += 40 * DAY_MS  # set right (by hand, by NTP: not trusted either way)
    clock.advance(60_000)

    assert unanchored.apply_retention() == []
    assert "retention_time_unknown" in unanchored.alarms
    assert "1 file(s) not uploaded are kept" in unanchored.alarms["retention_time_unknown"]

    clock.gps_fix(unanchored.trusted)  # the first fix of this boot dates it exactly
    assert unanchored.apply_retention() == []
    dated = only_record(unanchored)
    assert dated.trusted_created_by == "same_boot"
    assert dated.trusted_created_high_ms is not None
    assert dated.trusted_created_high_ms < clock.now_ms  # minutes old, not 40 days
    assert "retention_time_unknown" not in unanchored.alarms
    unanchored.alarms.flush()
    assert audit_events(tmp_path, "alarm.cleared") == [{"code": "retention_time_unknown"}]


def test_deadlines_escalate_and_the_expiry_is_audited_loudly(
    tmp_path: Path, anchored: EvidenceStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    recording_id = record(anchored, b"x" * 3000)

    def pass_at(days: float) -> list[str]:
        clock.advance(round(days * DAY_MS))
        clock.gps_fix(anchored.trusted)
        return [d.file_id for d in anchored.apply_retention()]

    assert pass_at(20) == []
    assert set(anchored.alarms.codes()) == set()
    assert pass_at(1.5) == []  # 21.5 days: 6.5 left
    assert anchored.alarms.codes() == ["retention_near"]
    assert pass_at(5.6) == []  # 27.1 days: 0.9 left
    assert anchored.alarms.codes() == ["retention_imminent"]
    file_id = only_record(anchored).file_id
    assert pass_at(1) == [file_id]  # 28.1 days
    assert anchored.alarms.codes() == []
    assert only_record(anchored).state is FileState.DELETED
    assert not anchored.layout.recording_dir(recording_id).exists()
    (deleted,) = audit_events(tmp_path, "storage.file_deleted")
    assert deleted["reason"] == "retention expired"
    assert deleted["time_source"] == "gps"
    assert 28.0 < float(str(deleted["age_days"])) < 28.2
    assert "unuploaded file" in caplog.text
    assert file_id in caplog.text
    anchored.alarms.flush()
    raised = [f["code"] for f in audit_events(tmp_path, "alarm.raised")]
    assert raised == ["retention_near", "retention_imminent"]


def test_an_attested_file_goes_at_once_whatever_the_clock(
    unanchored: EvidenceStore, clock: Clock
) -> None:
    record(unanchored, b"x" * 3000)
    made = only_record(unanchored)
    assert made.sha256_hex is not None
    clock.now_ms = 0  # 1970: no battery, no fix, no back office
    unanchored.record_attestation(made.file_id, made.sha256_hex)
    assert [d.file_id for d in unanchored.apply_retention()] == [made.file_id]


def test_a_pass_raises_the_floor_the_next_boot_starts_from(
    tmp_path: Path, anchored: EvidenceStore, clock: Clock
) -> None:
    anchored.trusted.save()
    clock.advance(DAY_MS)
    clock.gps_fix(anchored.trusted)
    anchored.apply_retention()
    state = anchored.trusted.state
    assert clock.now_ms - 3 <= state.floor_ms <= clock.now_ms
    assert anchored.trusted.dirty  # saved by the timer after the pass
    assert not anchored.trusted.needs_save  # nothing urgent
