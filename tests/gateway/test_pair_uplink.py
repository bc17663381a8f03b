"""A fresh box whose [uplink] says only `enabled = true` records unpaired, pairs with a code, and
from its next start uploads over the endpoint and credentials that pairing gave it.

Real processes throughout: `mvb-admin serve` (mutual-TLS tus listener, pairing listener, fleet
routes), `mvb-admin pair-code`, `mvb pair` and `mvb run`, over real TLS on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backoffice.fleet_repo import init_repository
from demo.synthetic import generate_clip
from gateway.pairing_client import pairing_files
from protocol.pairing_messages import ServiceEndpoint
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config
from tests.test_run import mvb, mvb_run, status, wait_for
from tests.tls_helpers import SERVER_NAME, TestPki

MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
BOX = "MVB-0042"
STEP_TIMEOUT_S = 20.0
SERVING = re.compile(r"serving (?:pairing at )?https://127\.0\.0\.1:(?P<port>\d+)/(?P<what>\S+)")


def admin(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MVB_ADMIN), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def read_lines(process: subprocess.Popen[str], count: int) -> list[str]:
    """The process's next `count` stdout lines, waiting at most STEP_TIMEOUT_S."""
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout.readline() for _ in range(count))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(STEP_TIMEOUT_S)
    assert not reader.is_alive(), f"only {len(lines)} of {count} lines from the back office"
    return lines


@dataclass(frozen=True)
class BackOffice:
    pki: TestPki
    uploads: Path
    pairing_state: Path
    recording_pub: Path
    mutual_port: int
    pair_port: int

    def code(self) -> str:
        result = admin(
            "pair-code", "--state", self.pairing_state, "--pki", self.pki.directory,
            "--box-id", BOX, "--address", f"127.0.0.1:{self.pair_port}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def back_office(pki: TestPki, tmp_path: Path) -> Iterator[BackOffice]:
    """`mvb-admin serve` with pairing, as an admin starts it: no name or address of the
    mutual-TLS listener is given, so the grant says what `serve` knows (--host, the port it
    listens on, the certificate's first name)."""
    keys = tmp_path / "recording-keys"
    assert admin("keys", "create", "--dir", keys).returncode == 0
    init_repository(tmp_path / "repo", tmp_path / "fleet-keys", now=datetime.now(UTC))
    command = [
        str(MVB_ADMIN), "serve", "--dir", str(tmp_path / "uploads"),
        "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.ca_cert), "--port", "0", "--reserve-bytes", "0",
        "--pair-port", "0", "--pairing-state", str(tmp_path / "pairing-state"),
        "--pki-dir", str(pki.directory), "--fleet-repo", str(tmp_path / "repo"),
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            ports: dict[str, int] = {}
            for line in read_lines(process, 3):
                match = SERVING.match(line.strip())
                assert match is not None, line
                ports[match["what"].split("/")[0]] = int(match["port"])
            yield BackOffice(
                pki,
                tmp_path / "uploads",
                tmp_path / "pairing-state",
                keys / "recording.pub",
                ports["files"],
                ports["pair"],
            )
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(STEP_TIMEOUT_S)


def fresh_box_config(root: Path, recording_pub: Path, clip: Path) -> Path:
    """A box with a camera and a WiFi link, and an [uplink] that names nothing but `enabled`."""
    return write_box_config(
        root,
        recording_pub,
        device_serial=BOX,
        storage_lines=f"""
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
[[links]]
name = "wifi"
cost_class = "wifi"
""",
    )


def record_once(config: Path) -> None:
    assert mvb(config, "record", "start").returncode == 0
    wait_for(lambda: status(config)["state"] == "recording", "the recording")
    assert mvb(config, "record", "stop").returncode == 0
    wait_for(lambda: status(config)["state"] == "standby", "post-record to end")


def uplink_status(config: Path) -> dict[str, object]:
    uplink = status(config)["uplink"]
    assert isinstance(uplink, dict)
    return uplink


def card_is_empty(config: Path) -> bool:
    """Read through the running box's API (the catalog belongs to the running process)."""
    storage = status(config)["storage"]
    assert isinstance(storage, dict)
    return bool(storage["files_on_card"] == 0)


def test_an_unpaired_box_records_then_pairs_and_uploads_with_what_pairing_gave_it(
    back_office: BackOffice, tmp_path: Path
) -> None:
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    config = fresh_box_config(tmp_path / "box", back_office.recording_pub, clip)

    with mvb_run(config):  # unpaired: it records, and says why nothing uploads
        record_once(config)
        not_started = uplink_status(config)
        files_kept = status(config)["storage"]
    assert not_started["state"] == "not paired"
    assert "mvb pair" in str(not_started["reason"])
    assert isinstance(files_kept, dict)
    assert files_kept["files_on_card"] >= 1

    paired = mvb(config, "pair", back_office.code())
    assert paired.returncode == 0, paired.stderr
    state = tmp_path / "box" / "state"
    assert pairing_files(state).service() == ServiceEndpoint(
        f"127.0.0.1:{back_office.mutual_port}", SERVER_NAME, 0
    )

    with mvb_run(config):  # the next start: the uplink runs on the pairing's endpoint
        wait_for(lambda: card_is_empty(config), "the upload and the deletion", timeout_s=60)
        uplink = uplink_status(config)
    assert uplink["uploaded_files"] == files_kept["files_on_card"]
    links = uplink["links"]
    assert isinstance(links, list)
    assert links[0]["state"] == "up"
    stored = list((back_office.uploads / "complete").glob("*.mvbe"))
    assert len(stored) == files_kept["files_on_card"]
    audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    events = [entry["event"] for entry in audit]
    assert events.count("uplink.uploaded") == len(stored)
    assert events.count("storage.file_deleted") == len(stored)  # each after its attestation
