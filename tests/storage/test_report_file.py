"""EvidenceStore.write_report: the officer's report as an encrypted evidence file of its
recording (docs/webui.md 4): catalogued under the recording, at its upload class, readable with
the back office's key only."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest

from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from storage.reader import read_evidence
from tests.capture_helpers import store_on

TEXT = "The subject was warned twice before the recording started."


def report(recording_id: str) -> dict[str, object]:
    return {"recording_id": recording_id, "what": TEXT, "warned_beforehand": True}


def read_back(path: Path, key: RecipientPrivateKey) -> list[dict[str, object]]:
    with path.open("rb") as handle:
        return read_evidence(handle, key, media_out=io.BytesIO()).metadata


def test_a_report_file_belongs_to_its_recording_and_hides_its_text(
    tmp_path: Path, recipient: RecipientPrivateKey, second_recipient: RecipientPrivateKey
) -> None:
    with store_on(tmp_path, recipient) as store:
        recording = store.start_recording({"device_serial": "MVB-1", "upload_class": "P1"})
        stream = recording.open_stream("dashcam")
        stream.append_media(b"\x47" * 188)
        recording.close()
        recording_id = recording.recording_id

        sealed = store.write_report(recording_id, report(recording_id))

        record = store.catalog.get(sealed.sidecar.file_id)
        assert record is not None
        assert (record.recording_id, record.state, record.upload_class) == (
            recording_id,
            FileState.SEALED,
            "P1",
        )
        assert record.sha256_hex == sealed.sidecar.sha256_hex
        metadata = read_back(sealed.path, recipient)
        facts, filed, end = metadata
        assert (facts["camera"], facts["container"]) == ("report", "json")
        assert facts["recording_id"] == recording_id
        assert filed == {"type": "report", **report(recording_id)}
        assert (end["type"], end["media_bytes"]) == ("end", 0)
        with pytest.raises(Exception, match=r"(?i)recipient|key|stanza"):
            read_back(sealed.path, second_recipient)
        events = [entry.event for entry in store.audit.entries()]
        assert events[-1] == "storage.report_sealed"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TEXT.encode() not in path.read_bytes(), path


def test_a_report_inherits_a_flagged_recordings_p0(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    with store_on(tmp_path, recipient) as store:
        recording = store.start_recording({"upload_class": "P1"})
        recording.open_stream("dashcam").append_media(b"\x47" * 188)
        store.flag_incident(recording.recording_id)
        recording.close()
        sealed = store.write_report(recording.recording_id, report(recording.recording_id))
        record = store.catalog.get(sealed.sidecar.file_id)
        assert record is not None
        assert record.upload_class == "P0"


def test_a_report_during_the_recording_leaves_its_upload_class_alone(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    with store_on(tmp_path, recipient) as store:
        recording = store.start_recording({"upload_class": "P2"})
        stream = recording.open_stream("dashcam")
        stream.append_media(b"\x47" * 188)
        store.write_report(recording.recording_id, report(recording.recording_id))
        stream.end_segment({"index": 0})
        recording.close()
        classes = {r.upload_class for r in store.catalog.by_recording(recording.recording_id)}
        assert classes == {"P2"}


@pytest.mark.parametrize(
    "recording_id",
    ["", "../../etc", "0123", uuid.uuid4().hex.upper(), uuid.uuid4().hex + "00"],
    ids=["empty", "a-path", "short", "upper-case", "too-long"],  # the same ids in every process
)
def test_a_report_needs_a_recording_id(
    tmp_path: Path, recipient: RecipientPrivateKey, recording_id: str
) -> None:
    with store_on(tmp_path, recipient) as store:
        with pytest.raises(ValueError, match="32 lowercase hex"):
            store.write_report(recording_id, report(recording_id))
        assert store.catalog.all() == []
