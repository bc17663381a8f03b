"""`mvb run` with its uplink enabled, as real processes: the officer records through the CLI, the
box uploads to `mvb-admin serve` over pinned mutual TLS, and the card ends empty."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

from demo.synthetic import generate_clip
from tests.backoffice.test_tuspy_interop import read_line
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config
from tests.test_run import mvb, post, status, wait_for
from tests.tls_helpers import SERVER_NAME, TestPki

MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
SERVING = re.compile(r"serving https://127\.0\.0\.1:(?P<port>\d+)/files/ from .*")


def test_mvb_run_uploads_what_the_officer_records(tmp_path: Path, pki: TestPki) -> None:
    keys = tmp_path / "backoffice"
    subprocess.run([str(MVB_ADMIN), "keys", "create", "--dir", str(keys)], check=True)
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    serve = [
        str(MVB_ADMIN), "serve", "--dir", str(tmp_path / "store"),
        "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.ca_cert), "--port", "0", "--reserve-bytes", "0",
    ]  # fmt: skip
    with subprocess.Popen(serve, stdout=subprocess.PIPE, text=True) as back_office:
        try:
            match = SERVING.fullmatch(read_line(back_office, 20).strip())
            assert match is not None
            config = write_box_config(
                tmp_path / "box",
                keys / "recording.pub",
                storage_lines=box_sections(clip, pki, int(match["port"])),
            )
            run_and_record(config)
        finally:
            back_office.send_signal(signal.SIGTERM)
            back_office.wait(20)
    stored = list((tmp_path / "store" / "complete").glob("*.mvbe"))
    assert len(stored) == 1
    audit = (config.parent / "state" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line)["event"] for line in audit]
    assert events.count("uplink.uploaded") == 1
    assert events.count("storage.file_deleted") == 1
    assert events.count("storage.recording_flagged") == 1


def run_and_record(config: Path) -> None:
    box = subprocess.Popen([str(MVB), "--config", str(config), "run"], text=True)
    try:
        wait_for(lambda: mvb(config, "status").returncode == 0, "the local API")
        assert post(config, "/api/record/flag", b"")[0] == 409  # nothing to flag yet
        assert mvb(config, "record", "start").returncode == 0
        wait_for(lambda: status(config)["state"] == "recording", "the recording")
        code, answer = post(config, "/api/record/flag", b"")  # the officer: "this is an incident"
        assert (code, answer["upload_class"]) == (200, "P0")
        assert mvb(config, "record", "stop").returncode == 0
        wait_for(lambda: status(config)["state"] == "standby", "post-record to end")
        wait_for(lambda: card_is_empty(config), "the upload and the deletion", timeout_s=60)
        uplink = status(config)["uplink"]
        assert isinstance(uplink, dict)
        assert uplink["uploaded_files"] == 1
        assert uplink["links"][0]["state"] == "up"
        box.send_signal(signal.SIGTERM)
        assert box.wait(30) == 0
    finally:
        if box.poll() is None:
            box.kill()
            box.wait(10)


def card_is_empty(config: Path) -> bool:
    """Read through the running box's API (the catalog belongs to the running process)."""
    document = status(config)
    storage, uplink = document["storage"], document["uplink"]
    assert isinstance(storage, dict)
    assert isinstance(uplink, dict)
    return bool(uplink["uploaded_files"] == 1 and storage["files_on_card"] == 0)


def box_sections(clip: Path, pki: TestPki, port: int) -> str:
    return f"""
[recording]
prerecord_s = 5
postrecord_s = 1
[gps]
port = {free_port()}
[api]
port = {free_port()}
[[cameras]]
name = "dashcam"
kind = "replay"
url = "{clip}"
serial = "DC-9"
[uplink]
enabled = true
host = "127.0.0.1"
port = {port}
server_name = "{SERVER_NAME}"
ca_file = "{pki.ca_cert}"
client_cert_file = "{pki.client_cert}"
client_key_file = "{pki.client_key}"
pins = ["{pki.server_pin}", "{pki.backup_pin}"]
[[links]]
name = "wifi"
cost_class = "wifi"
"""
