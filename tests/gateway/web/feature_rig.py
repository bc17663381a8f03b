"""A real running box for the feature-route tests: `start_box` on a temporary card and state
directory, its loopback (`local`) API on 127.0.0.1, a gpsd port nobody listens on, the web
channel off, and optionally a replay camera (so recordings write real encrypted files).

Also: wait helpers (poll with a deadline, never a timed assertion), the back office's private
key for decryption, and a byte scan that proves a text is nowhere in plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from backoffice.keys import create_recording_keys
from config.local import LocalConfig, load_config
from demo.synthetic import generate_clip
from gateway.officer.desks import OfficerDesks
from gateway.run import RunningBox, start_box, stop_box
from storage.envelope import RecipientPrivateKey
from storage.reader import ReadReport, read_evidence
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config

REPO = Path(__file__).resolve().parents[3]


@dataclass
class LocalBox:
    running: RunningBox
    config: LocalConfig
    recipient: RecipientPrivateKey
    recipient_key_path: Path
    config_path: Path
    base: str  # http://127.0.0.1:PORT

    def client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(base_url=self.base)

    def audit_events(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        lines = (self.config.state_dir / "audit.jsonl").read_text().splitlines()
        entries = [json.loads(line) for line in lines]
        return [(e["event"], e["fields"]) for e in entries if e["event"].startswith(prefix)]

    def decrypt_all(self) -> list[ReadReport]:
        """Every sealed evidence file on the card, read with the back office's key."""
        reports = []
        for path in sorted(self.running.box.store.layout.sealed_files()):
            with path.open("rb") as handle:
                reports.append(read_evidence(handle, self.recipient, media_out=io.BytesIO()))
        return reports


def feature_box_config(
    root: Path,
    *,
    camera_clip: Path | None = None,
    extra: str = "",
    bodycams: tuple[str, ...] = (),
) -> Path:
    """`bodycams`: serials of replay cameras `bodycam-1`, ... beside the dashcam (DC-9)."""
    private, public = create_recording_keys(root / "keys")
    camera = ""
    if camera_clip is not None:
        camera = f"""
[[cameras]]
name = "dashcam"
kind = "replay"
url = "{camera_clip}"
serial = "DC-9"
"""
        for number, serial in enumerate(bodycams, start=1):
            camera += f"""
[[cameras]]
name = "bodycam-{number}"
kind = "replay"
url = "{camera_clip}"
serial = "{serial}"
"""
    config = write_box_config(
        root / "box",
        public,
        storage_lines=f"""
[recording]
prerecord_s = 5
postrecord_s = 0
[triggers.officer]
postrecord_s = 0
[gps]
port = {free_port()}
[api]
port = {free_port()}
[web]
enabled = false
{extra}
{camera}
""",
    )
    (root / "private-key-path").write_text(str(private))
    return config


@contextlib.asynccontextmanager
async def running_box(config_path: Path) -> AsyncIterator[LocalBox]:
    config = load_config(config_path)
    private_path = Path((config_path.parent.parent / "private-key-path").read_text())
    running = await start_box(config)
    try:
        yield LocalBox(
            running,
            config,
            RecipientPrivateKey.load(private_path),
            private_path,
            config_path,
            f"http://{config.api.host}:{config.api.port}",
        )
    finally:
        await stop_box(running)


def replay_clip(directory: Path) -> Path:
    return generate_clip(directory / "clip.ts", seconds=3, keyframe_interval_frames=25)


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll until `condition` holds; fail naming `what` after `timeout_s` (no timed asserts)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def record_once(box: LocalBox, client: aiohttp.ClientSession) -> str:
    """Start a recording through the API, stop it, wait until it is sealed: its id."""
    reply = await client.post("/api/record/start")
    assert reply.status == 200, await reply.text()
    recording = box.running.service.recording
    assert recording is not None
    recording_id = recording.recording_id
    reply = await client.post("/api/record/stop")
    assert reply.status == 200, await reply.text()
    book = features(box).reports.book

    def finished() -> bool:
        entry = book.get(recording_id)
        return entry is not None and entry.duration_s is not None

    await wait_for(finished, "the recording to be sealed and noted in the report book")
    return recording_id


def features(box: LocalBox) -> OfficerDesks:
    """The officer's desks of the running box (they observe its capture service)."""
    return box.running.officer


def files_containing(roots: list[Path], needle: bytes) -> list[Path]:
    """Every file below `roots` whose bytes contain `needle` (the plaintext scan)."""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and needle in path.read_bytes():
                found.append(path)
    return found


async def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    """A command (e.g. `mvb shift start`) run while this event loop keeps serving the box it
    talks to."""

    # The checkout first on the path: the commands import this tree's packages, also ones
    # newer than the editable install's list.
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def call() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=60, check=False, env=env
        )

    return await asyncio.to_thread(call)
