"""`mvb run` as systemd runs it: READY, watchdog pings while healthy, STATUS without personal
data, STOPPING and a graceful exit 0 on SIGTERM (the recording sealed); no usable card: the
page and API stay up (degraded) until the card is back, then the box starts in full; a stray
file on the card alarmed and kept; a failing subsystem restarted while recording goes on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backoffice.keys import create_recording_keys
from config.local import load_config
from demo.synthetic import generate_clip
from gateway.gps import GpsdClient
from gateway.run import start_box, stop_box
from labdisk import LabDisk
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config
from tests.test_run import mvb, mvb_run, status, wait_for


def box_config(root: Path, *, extra_storage: str = "", camera_clip: Path | None = None) -> Path:
    _private, public = create_recording_keys(root / "keys")
    camera = ""
    if camera_clip is not None:
        camera = f"""
[[cameras]]
name = "dashcam"
kind = "replay"
url = "{camera_clip}"
serial = "DC-9"
"""
    return write_box_config(
        root / "box",
        public,
        storage_lines=f"""{extra_storage}
[recording]
prerecord_s = 5
postrecord_s = 30
[gps]
port = {free_port()}
[api]
port = {free_port()}
{camera}""",
    )


def audit_events(config: Path) -> list[dict[str, Any]]:
    """The audit log of the box whose configuration is `config` (its state directory beside it)."""
    lines = (config.parent / "state" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


class Notifications:
    """What `mvb run` sends to NOTIFY_SOCKET, read as it comes by a thread of its own: the kernel
    keeps only a few unread datagrams (net.unix.max_dgram_qlen, 10 by default) and the box sends
    without waiting (MSG_DONTWAIT), so a test that stopped reading for two seconds of watchdog
    pings (a slow `mvb` command under load) would lose the STATUS line sent meanwhile."""

    def __init__(self, path: Path) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.2)
        self._lock = threading.Lock()
        self._messages: list[str] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._socket.recv(4096).decode()
            except TimeoutError:
                continue
            with self._lock:
                self._messages.append(message)

    def messages(self) -> list[str]:
        """Every datagram so far, in order (one string each)."""
        with self._lock:
            return list(self._messages)

    def drained(self) -> list[str]:
        """Every datagram, the last ones the process sent before it exited included."""
        self._stop.set()
        self._reader.join()
        self._socket.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self._messages.append(self._socket.recv(4096).decode())
        return self.messages()

    def close(self) -> None:
        self._stop.set()
        self._reader.join()
        self._socket.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[Notifications, Path]]:
    path = tmp_path / "notify.sock"
    notifications = Notifications(path)
    try:
        yield notifications, path
    finally:
        notifications.close()


def fields(messages: list[str]) -> list[str]:
    """Every `KEY=value` of every datagram (READY=1 and its STATUS share one)."""
    return [field for message in messages for field in message.split("\n")]


def test_systemd_sees_ready_pings_status_and_a_graceful_stop(
    tmp_path: Path, notify_socket: tuple[Notifications, Path]
) -> None:
    notes, path = notify_socket
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    config = box_config(tmp_path, camera_clip=clip)
    card = tmp_path / "box" / "card"
    card.mkdir(parents=True)
    (card / "holiday.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom plaintext")
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    # Leaving the block is the ignition going off mid-recording (SIGTERM, post-record 30 s).
    with mvb_run(config, env=env):
        wait_for(lambda: "READY=1" in " ".join(notes.messages()), "READY=1")
        document = status(config)
        alarms = document["alarms"]
        assert isinstance(alarms, dict)
        assert "card_foreign_files" in alarms
        started = mvb(config, "record", "start")
        assert started.returncode == 0, started.stderr
        wait_for(
            lambda: sum("WATCHDOG=1" in m for m in notes.messages()) >= 3,
            "watchdog pings while healthy",
        )
        recording_line = "STATUS=recording; 1 camera; uplink none"
        wait_for(
            lambda: recording_line in fields(notes.messages()),
            "the STATUS line to follow the recording",
        )
    messages = notes.drained()
    assert "STATUS=standby; 1 camera; uplink none" in fields(messages)  # sent with READY
    assert "STOPPING=1" in messages
    assert messages.index("STOPPING=1") > max(
        i for i, m in enumerate(messages) if m.startswith("READY=1")
    )
    events = audit_events(config)
    names = [e["event"] for e in events]
    assert names.index("gateway.stopping") < names.index("storage.recording_sealed")
    assert names[-1] == "gateway.stopped"
    foreign = [e for e in events if e["event"] == "storage.foreign_files"]
    assert [e["fields"]["count"] for e in foreign] == [1]
    assert (card / "holiday.mp4").exists(), "a foreign file is never deleted"
    assert not list(card.rglob("*.part")), "the recording was sealed, not left to recovery"
    assert list(card.rglob("*.mvbe"))


def card_state_now(config: Path) -> str | None:
    """`storage.card` of the running box, or None while its API does not answer."""
    result = mvb(config, "status")
    if result.returncode != 0:
        return None
    storage = json.loads(result.stdout)["storage"]
    return str(storage["card"])


def card_alerts(document: dict[str, object]) -> list[str]:
    alerts = document["alerts"]
    assert isinstance(alerts, list)
    return [str(a["code"]) for a in alerts if str(a["code"]).startswith("card_")]


@pytest.mark.root
@pytest.mark.parametrize("condition", ["missing", "read_only"])
def test_without_a_usable_card_the_page_stays_up_and_the_card_s_return_starts_the_box(
    tmp_path: Path, condition: str, notify_socket: tuple[Notifications, Path]
) -> None:
    """Degraded mode (issue 14 item 4): no exit and no restart every 2 s. systemd hears READY
    and watchdog pings; the API answers and says why (storage.card, alert card_missing or
    card_read_only), commands are refused with card_unusable; the card (a real labdisk mount)
    comes, or turns writable, and the same process starts in full and records."""
    notes, notify_path = notify_socket
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    config = box_config(tmp_path, extra_storage="require_mount = true", camera_clip=clip)
    card = LabDisk(tmp_path / "card-backing", tmp_path / "box" / "card", mode="ext4")
    if condition == "read_only":
        card.start()
        card.read_only()
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    with mvb_run(config, env=env, card=card) as process:  # its API answers, degraded
        wait_for(
            lambda: sum("WATCHDOG=1" in m for m in notes.messages()) >= 3,
            "watchdog pings while degraded",
        )
        assert any(m.startswith("READY=1") for m in notes.messages()), notes.messages()
        document = status(config)
        storage = document["storage"]
        assert isinstance(storage, dict)
        assert storage["card"] == condition
        assert card_alerts(document) == [f"card_{condition}"]
        refused = mvb(config, "record", "start")
        assert refused.returncode != 0
        assert "card" in (refused.stdout + refused.stderr)
        if condition == "missing":
            card.start()  # the card is pushed in (and mounted)
        else:
            card.read_only(False)  # a writable card is in
        # The faces are started anew with the full box: the API is away for that moment.
        wait_for(lambda: card_state_now(config) == "ok", "the box to start in full")
        assert process.poll() is None, "started in full in the same process"
        assert card_alerts(status(config)) == []
        started = mvb(config, "record", "start")
        assert started.returncode == 0, started.stdout + started.stderr
    events = audit_events(config)
    names = [e["event"] for e in events]
    assert names.count("gateway.degraded") == 1
    assert names.index("gateway.degraded") < names.index("gateway.card_usable")
    assert names.index("gateway.card_usable") < names.index("gateway.started")
    raised = [e["fields"]["code"] for e in events if e["event"] == "alarm.raised"]
    assert f"card_{condition}" in raised


async def test_a_failing_subsystem_restarts_and_recording_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the GPS client (injected: it raises at once, twice) must not stop recording."""
    calls = 0
    real_run = GpsdClient.run

    async def buggy_then_real(self: GpsdClient) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("a bug in the GPS client")
        await real_run(self)

    monkeypatch.setattr(GpsdClient, "run", buggy_then_real)
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    config = load_config(box_config(tmp_path, camera_clip=clip))
    running = await start_box(config)
    running.supervisor.policy = type(running.supervisor.policy)(initial_s=0.05, max_s=0.1)
    try:
        deadline = time.monotonic() + 20
        while running.supervisor.children["gps"].restarts < 2:
            assert time.monotonic() < deadline, running.supervisor.status()
            await asyncio.sleep(0.05)
        base = f"http://{config.api.host}:{config.api.port}"
        async with (
            aiohttp.ClientSession(base_url=base) as client,
            client.post("/api/record/start") as answer,
        ):
            assert answer.status == 200
        assert running.service.recording is not None
        assert running.healthy()
        assert running.supervisor.status()["gps"]["state"] == "running"
    finally:
        await stop_box(running)
    events = [
        json.loads(line)
        for line in (tmp_path / "box" / "state" / "audit.jsonl").read_text().splitlines()
    ]
    failures = [e["fields"] for e in events if e["event"] == "gateway.subsystem_failed"]
    assert failures[:2] == [{"subsystem": "gps", "error": "RuntimeError"}] * 2
    assert "storage.recording_sealed" in [e["event"] for e in events]
