"""The store as the box uses it: recordings, the box's inability to decrypt, retention, audit."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from storage.audit import verify_audit_log
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from storage.envelope import RecipientKeyError, RecipientPrivateKey
from storage.errors import EvidenceError
from storage.models import FileState
from storage.reader import read_evidence
from storage.retention import MS_PER_DAY, RetentionPolicy
from storage.space import CardFullError, SpacePolicy
from storage.store import EvidenceStore, StoreSettings
from storage.trusted_time import TrustedState
from storage.trusted_time_io import TrustedClock
from tests.evidence_helpers import open_evidence_fds

DAY_MS = MS_PER_DAY
START_MS = 1_790_000_000_000
BOOT = "boot-test"


class Clock:
    """The test's wall clock (`now_ms`: stamps) and this boot's monotonic clock (`mono_ms`:
    trusted time). `advance` moves both, as real time does; a wall-clock step moves `now_ms`
    alone."""

    def __init__(self) -> None:
        self.now_ms = START_MS
        self.mono_ms = 3_600_000  # an hour after boot

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms
        self.mono_ms += ms

    def trusted(self) -> TrustedClock:
        """Trusted time on this clock, anchored by a GPS fix telling the truth now."""
        clock = TrustedClock(TrustedState(BOOT), mono_ms=lambda: self.mono_ms)
        self.gps_fix(clock)
        return clock

    def gps_fix(self, trusted: TrustedClock) -> None:
        trusted.observe_gps(self.now_ms, self.mono_ms)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, recipient: RecipientPrivateKey, clock: Clock) -> EvidenceStore:
    state = tmp_path / "state"
    state.mkdir()
    device = DeviceKey.load_or_create(state)
    audit = AuditLog.open(state / "audit.jsonl", device, clock_ms=clock)
    settings = StoreSettings(
        card_dir=tmp_path / "card",
        chunk_max_bytes=8192,
        space=SpacePolicy(reserve_bytes=0, min_free_to_start_bytes=1),
        retention=RetentionPolicy(retention_days=14),
    )
    opened, _ = EvidenceStore.open(
        settings, (recipient.public(),), device, audit, clock, trusted=clock.trusted()
    )
    return opened


def record(store: EvidenceStore, media: bytes, camera: str = "dashcam") -> str:
    recording = store.start_recording({"officer_id": "boa-17", "vehicle_id": "veh-3"})
    stream = recording.open_stream(camera)
    stream.append_media(media)
    stream.end_segment({"index": 0})
    recording.close()
    return recording.recording_id


def decrypt_all(store: EvidenceStore, key: RecipientPrivateKey) -> bytes:
    out = io.BytesIO()
    for path in store.layout.sealed_files():
        with path.open("rb") as handle:
            read_evidence(handle, key, media_out=out)
    return out.getvalue()


def test_closed_recording_cannot_be_decrypted_with_anything_the_box_keeps(
    tmp_path: Path, store: EvidenceStore, recipient: RecipientPrivateKey
) -> None:
    recording = store.start_recording({"officer_id": "boa-17"})
    stream = recording.open_stream("bodycam")
    stream.append_media(os.urandom(30_000))
    stream.end_segment({"index": 0})
    data_key = bytes(recording.key._data_key)  # captured only to prove it is gone afterwards
    file_id = bytes.fromhex(store.catalog.all()[0].file_id)
    file_keys = recording.key.file_keys(file_id)
    recording.close()

    assert recording.key.destroyed
    assert not any(recording.key._data_key)
    with pytest.raises(RuntimeError):
        recording.key.file_keys(file_id)
    everything_kept = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert everything_kept, "the box must have written something"
    for path in everything_kept:
        content = path.read_bytes()
        assert data_key not in content, f"data key found in {path}"
        assert file_keys.chunk_key not in content, f"file key found in {path}"
        assert file_keys.header_mac_key not in content, f"header MAC key found in {path}"
    evidence = next(store.layout.sealed_files())
    for path in everything_kept:  # try every file the box keeps as a recording private key
        try:
            candidate = RecipientPrivateKey.load(path)
        except RecipientKeyError:
            continue
        with pytest.raises(EvidenceError), evidence.open("rb") as handle:
            read_evidence(handle, candidate)
    assert len(decrypt_all(store, recipient)) == 30_000  # the back office still can


def test_every_step_is_in_a_verifying_audit_log(
    tmp_path: Path, store: EvidenceStore, clock: Clock
) -> None:
    record(store, os.urandom(5000))
    clock.advance(15 * DAY_MS)
    clock.gps_fix(store.trusted)
    store.apply_retention()
    log = (tmp_path / "state" / "audit.jsonl").read_bytes()
    events = [line.split(b'"event":"')[1].split(b'"')[0].decode() for line in log.splitlines()]
    assert events == [
        "storage.recording_started",
        "storage.file_sealed",
        "storage.recording_sealed",
        "storage.file_deleted",
    ]
    report = verify_audit_log(log, store.device_key.public_key())
    assert report.ok
    assert report.entries == 4
    assert b"boa-17" not in log, "personal data must not reach the audit log"


def test_retention_deletes_attested_now_and_unattested_only_when_expired(
    store: EvidenceStore, clock: Clock
) -> None:
    attested = record(store, b"a" * 4000)
    young = record(store, b"b" * 4000)
    held = record(store, b"c" * 4000)
    files = {r.recording_id: r for r in store.catalog.all()}
    store.record_attestation(files[attested].file_id, str(files[attested].sha256_hex))
    store.catalog.set_held(files[held].file_id, True)

    deleted = store.apply_retention()
    assert [d.recording_id for d in deleted] == [attested]
    assert not store.layout.recording_dir(attested).exists()
    assert store.catalog.get(files[attested].file_id).state is FileState.DELETED  # type: ignore[union-attr]

    clock.advance(14 * DAY_MS)
    clock.gps_fix(store.trusted)
    assert store.apply_retention() == []  # 14 days: kept
    # Past it by more than the doubt of trusted time: two GPS fixes' latency bound (2 s each).
    clock.advance(4_100)
    clock.gps_fix(store.trusted)
    assert [d.recording_id for d in store.apply_retention()] == [young]
    assert store.layout.recording_dir(held).exists()


def test_discarded_empty_file_leaves_the_catalog_as_deleted(
    tmp_path: Path, store: EvidenceStore, recipient: RecipientPrivateKey, clock: Clock
) -> None:
    recording = store.start_recording({})
    stream = recording.open_stream("dashcam")
    stream.append_media(b"x" * 100)  # opens the file: header written, catalog says RECORDING
    assert stream._writer is not None
    part = stream._writer.path
    stream._writer.abandon()
    part.write_bytes(part.read_bytes()[:20])  # power cut before the header was durable
    store.close()
    store.audit.close()
    state = tmp_path / "state"
    audit = AuditLog.open(state / "audit.jsonl", store.device_key, clock_ms=clock)
    reopened, report = EvidenceStore.open(
        store.settings, (recipient.public(),), store.device_key, audit, clock
    )
    assert report.discarded == [part]
    [only] = reopened.catalog.all()
    assert only.state is FileState.DELETED


def test_card_full_at_file_open_leaks_nothing(
    store: EvidenceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_incoming: int) -> None:
        raise CardFullError(0, 0)

    monkeypatch.setattr(store, "check_space", full)
    recording = store.start_recording({})
    stream = recording.open_stream("dashcam")
    with pytest.raises(CardFullError):
        stream.append_media(b"x" * 100)
    assert not list(store.layout.part_files()), "no file is left when its header never landed"
    assert open_evidence_fds(store.layout.root) == []
    assert store.alarms["card_full"]


def test_upload_class_follows_the_recording_and_an_incident_flag(
    tmp_path: Path, store: EvidenceStore
) -> None:
    recording = store.start_recording({"upload_class": "P2"})
    stream = recording.open_stream("dash")
    stream.append_media(b"x" * 1000)
    stream.end_segment({"seq": 0})
    first = store.catalog.by_recording(recording.recording_id)
    assert [r.upload_class for r in first] == ["P2"]
    changed = store.flag_incident(recording.recording_id)
    assert [r.upload_class for r in changed] == ["P0"]
    recording.close()
    sealed = store.catalog.by_recording(recording.recording_id)
    assert {r.upload_class for r in sealed} == {"P0"}
    log = (tmp_path / "state" / "audit.jsonl").read_bytes()
    assert b"storage.recording_flagged" in log


def test_an_unknown_upload_class_is_refused(store: EvidenceStore) -> None:
    with pytest.raises(ValueError, match="upload class"):
        store.start_recording({"upload_class": "P9"})


def test_the_file_target_counts_the_pre_record(store: EvidenceStore) -> None:
    """A recording's first file holds the pre-record, written in a burst when it starts: the
    target (60 s) counts the capture time its segments span, not the time since it opened."""
    second_ns = 1_000_000_000
    recording = store.start_recording({})
    stream = recording.open_stream("dashcam")
    for index in range(70):  # 70 one-second segments, all at once like a 70 s pre-record
        stream.append_media(b"x" * 100)
        stream.end_segment(
            {
                "index": index,
                "start_mono_ns": index * second_ns,
                "end_mono_ns": (index + 1) * second_ns,
            }
        )
    recording.close()
    files = sorted(store.catalog.by_recording(recording.recording_id), key=lambda r: r.file_seq)
    assert len(files) == 2, "was one file of 70 s against a 60 s target"
    assert [f.file_seq for f in files] == [0, 1]
    assert files[0].size_bytes > files[1].size_bytes, "60 segments, then 10"


def test_metadata_too_large_for_a_chunk_is_recorded_as_refused_and_the_file_stays_readable(
    store: EvidenceStore, recipient: RecipientPrivateKey
) -> None:
    recording = store.start_recording({"officer_id": "boa-17"})
    stream = recording.open_stream("dashcam")
    stream.append_media(b"a" * 5_000)
    too_large = {"type": "event", "note": "x" * 20_000}  # the chunk holds 8192
    stream.add_metadata(too_large)
    stream.append_media(b"b" * 5_000)
    stream.end_segment({"index": 0})
    recording.close()

    (path,) = store.layout.sealed_files()
    with path.open("rb") as handle:
        report = read_evidence(handle, recipient, media_out=io.BytesIO())
    assert report.media_bytes == 10_000
    refused = [m for m in report.metadata if m.get("type") == "metadata_refused"]
    kind_and_json_bytes = 1 + len(json.dumps(too_large, separators=(",", ":")))
    assert refused == [
        {"type": "metadata_refused", "refused_type": "event", "bytes": kind_and_json_bytes}
    ]
    assert not any("xxxx" in json.dumps(m) for m in report.metadata)
