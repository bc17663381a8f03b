"""A sealed file cut short and renamed `.part` is not passed off as a power cut (issue 13, item 3).

As found on a copy of card and state: a sealed file cut to a few chunks and renamed `.part` came
back from `mvb recover` as "interrupted at chunk N, device signature verified". Here the same
laundering, on the store and with the real commands (`mvb import`, `mvb recover`, `mvb-admin
audit verify`): the file is quarantined unsigned, the sticky alarm `evidence_suspect` is raised
and survives a restart, every step is audited, and the alarm clears only once the quarantined
file is gone from the card.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from common.alarms import Alarms
from demo.synthetic import generate_clip
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.evidence_format import RECORD_FRAMING_BYTES, decode_framing, decode_header
from storage.models import FileState
from storage.recovery_alarm import ALARM
from storage.store import EvidenceStore, StoreSettings
from tests.evidence_helpers import write_box_config

MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
IMPORTED = re.compile(r"imported clip\.ts as bodycam: recording ([0-9a-f]{32}) file ([0-9a-f]{32})")


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=120, check=False
    )


def records(data: bytes) -> list[int]:
    """The end offset of every record of an evidence file, in order."""
    _, offset = decode_header(data)
    ends = []
    while offset < len(data):
        offset += decode_framing(data[offset : offset + RECORD_FRAMING_BYTES]).record_len()
        ends.append(offset)
    return ends


def launder(sealed: Path, chunks: int) -> Path:
    """Cut a sealed file to its first `chunks` records, rename it `.part` and remove its
    sidecar: what a power cut at chunk `chunks` would have left."""
    data = sealed.read_bytes()
    part = sealed.with_name(sealed.name + ".part")
    part.write_bytes(data[: records(data)[chunks - 1]])
    sealed.unlink()
    sealed.with_suffix(".json").unlink()
    return part


def audit_events(state: Path) -> list[dict[str, object]]:
    lines = (state / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def open_store(root: Path, recipient: RecipientPrivateKey) -> tuple[EvidenceStore, Alarms]:
    state = root / "state"
    state.mkdir(exist_ok=True)
    device = DeviceKey.load_or_create(state)
    audit = AuditLog.open(state / "audit.jsonl", device)
    alarms = Alarms.load(state, audit.append)
    store, _ = EvidenceStore.open(
        StoreSettings(card_dir=root / "card", chunk_max_bytes=4096),
        (recipient.public(),),
        device,
        audit,
        alarms=alarms,
    )
    return store, alarms


def close(store: EvidenceStore, alarms: Alarms) -> None:
    store.close()
    alarms.close()
    store.audit.close()


def test_the_store_quarantines_a_laundered_part_and_keeps_the_alarm_until_it_is_gone(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    store, alarms = open_store(tmp_path, recipient)
    recording = store.start_recording({"trigger": {"source": "test"}})
    stream = recording.open_stream("dashcam")
    for index in range(8):
        stream.append_media(os.urandom(8000))
        stream.end_segment({"index": index})
    recording.close()
    [record] = store.catalog.all()
    sealed = store.layout.sealed_path(record.recording_id, record.file_id)
    close(store, alarms)
    assert len(records(sealed.read_bytes())) > 10
    launder(sealed, 10)

    store, alarms = open_store(tmp_path, recipient)
    try:
        assert ALARM in alarms
        assert "not this box's to close" in alarms[ALARM]
        after = store.catalog.get(record.file_id)
        assert after is not None
        assert (after.state, after.sha256_hex, after.interrupted_at_chunk) == (
            FileState.SEALED,
            record.sha256_hex,
            None,
        ), "the catalog still says what was sealed"
        assert list(store.layout.part_files()) == []
        assert not sealed.exists()
        quarantined = sealed.with_name(sealed.name + ".quarantined")
        assert quarantined.exists()
    finally:
        close(store, alarms)

    store, alarms = open_store(tmp_path, recipient)  # a restart: sticky, the file still there
    try:
        assert ALARM in alarms
    finally:
        close(store, alarms)
    quarantined.unlink()  # the fleet admin took it for the investigation
    store, alarms = open_store(tmp_path, recipient)
    try:
        assert ALARM not in alarms
    finally:
        close(store, alarms)
    events = [e["event"] for e in audit_events(tmp_path / "state")]
    assert events.count("storage.part_refused") == 1
    assert "storage.recording_interrupted" not in events
    assert events.count("alarm.raised") == 1
    assert events.count("alarm.cleared") == 1


def test_mvb_recover_refuses_a_laundered_sealed_file_on_a_copy_of_card_and_state(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    assert run(MVB_ADMIN, "keys", "create", "--dir", keys).returncode == 0
    clip = generate_clip(tmp_path / "clip.ts", seconds=4)
    root = tmp_path / "box"
    config = write_box_config(root, keys / "recording.pub")
    imported = run(MVB, "--config", config, "import", clip, "--camera", "bodycam")
    assert imported.returncode == 0, imported.stderr
    match = IMPORTED.match(imported.stdout.strip())
    assert match is not None, imported.stdout
    recording_id, file_id = match[1], match[2]
    sealed = root / "card" / "evidence" / recording_id / f"{file_id}.mvbe"
    chunks = len(records(sealed.read_bytes()))
    assert chunks > 4
    launder(sealed, chunks // 2)

    recovered = run(MVB, "--config", config, "recover")

    assert recovered.returncode == 1, recovered.stdout + recovered.stderr
    lines = recovered.stdout.strip().splitlines()
    assert lines[0] == (
        f"REFUSED {file_id}: the catalog knows this file as sealed; "
        f"kept as {file_id}.mvbe.quarantined"
    )
    assert lines[-1].endswith(", 1 file(s) refused")
    assert not any("interrupted" in line for line in lines)
    assert list((root / "card").rglob("*.mvbe")) == []
    sticky = json.loads((root / "state" / "alarms.json").read_text())["sticky"]
    assert ALARM in sticky
    quarantined = sealed.with_name(sealed.name + ".quarantined")
    [refusal] = [e for e in audit_events(root / "state") if e["event"] == "storage.part_refused"]
    assert refusal["fields"] == {
        "file_id": file_id,
        "recording_id": recording_id,
        "reason": "the catalog knows this file as sealed",
        "size_bytes": len(quarantined.read_bytes()),
        "kept_as": f"{file_id}.mvbe.quarantined",
    }
    verified = run(
        MVB_ADMIN,
        "audit",
        "verify",
        root / "state" / "audit.jsonl",
        "--device-key",
        root / "state" / "device_key.pub.pem",
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Nothing of it can be decrypted as an interrupted recording: it was never closed or signed.
    out = tmp_path / "out"
    assert run(MVB_ADMIN, "viewing", "init", "--log", tmp_path / "viewing").returncode == 0
    decrypted = run(
        MVB_ADMIN, "decrypt", quarantined, "--key", keys / "recording.key", "--out", out,
        "--log", tmp_path / "viewing", "--reason", "test: a laundered file",
    )  # fmt: skip
    assert decrypted.returncode == 1
    assert "TruncatedFile" in decrypted.stderr
