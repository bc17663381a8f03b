"""Rules of the bodycam protocols that no other test held (docs/protocol-compliance.md lists
every article and the test that proves it):

- R1, Borsele 2.1 / H2O art. 2.2: in stand-by the pre-record buffer is overwritten in memory and
  reaches the card only when a recording starts;
- L4 (Zepcam: "only http and https ports are open"): a running box with its web channel on
  listens on its HTTPS port and its loopback API and nowhere else (cameras that push to the box
  add their authenticated ingest listeners, RULES L6: tests/gateway/test_camera_ingest.py);
- docs/protocol-compliance.md names only tests that exist (a renamed test must be renamed there);
- H2O art. 5.8: an officer may not destroy a recording on their own: no route of the box's API
  and no `mvb` command deletes a chosen recording (retention deletes by its rules only,
  tests/storage/test_retention.py; a hold can only keep a recording longer).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

from config.local import load_config
from demo.replay_source import ReplaySource
from demo.synthetic import generate_clip
from gateway import cli
from gateway.capture.camera import Camera
from gateway.capture.service import CaptureService
from gateway.capture.source import SourceSpec
from gateway.recorder import RecorderPolicy, TriggerPolicy
from gateway.web.app import api_application
from gateway.web.session_routes import add_session_routes
from gateway.web.status_source import StatusSource
from storage.envelope import RecipientPrivateKey
from tests.capture_helpers import store_on, wait_for
from tests.gateway.web.browser_rig import account_hashes, web_box
from tests.gateway.web.fake_box import FakeBox
from tests.gateway.web.feature_rig import feature_box_config

S = 1_000_000_000
PRERECORD_S = 1.0


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_standby_keeps_the_prerecord_in_memory_and_writes_nothing(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    clip = generate_clip(tmp_path / "clip.ts", seconds=4, fps=25, keyframe_interval_frames=25)
    source = ReplaySource(SourceSpec(name="dashcam", kind="replay", url=str(clip), serial="DC-1"))
    camera = Camera(source, prerecord_s=PRERECORD_S, ring_max_bytes=32 << 20)
    policy = RecorderPolicy(
        prerecord_s=PRERECORD_S, default_trigger=TriggerPolicy(postrecord_s=0.0)
    )
    with store_on(tmp_path, recipient) as store:
        before = files_under(store.layout.evidence_root)
        service = CaptureService(store, [camera], policy, {}, tick_s=0.05)
        await service.start()
        try:
            # Stand-by, with the ring full and overwriting (twice the pre-record delivered).
            await wait_for(lambda: camera.ring.span_ns() >= PRERECORD_S * S, "a full ring")
            await asyncio.sleep(2 * PRERECORD_S)
            assert service.recorder.state.value == "standby"
            assert files_under(store.layout.evidence_root) == before, "nothing of stand-by"
            assert list(store.layout.part_files()) == []
            # A trigger: now, and only now, the buffered seconds go to the card.
            await service.trigger("officer")
            await wait_for(lambda: any(store.layout.part_files()), "the recording's first file")
        finally:
            await service.stop()
        assert list(store.layout.sealed_files()), "the recording was sealed"


async def test_no_route_and_no_command_deletes_a_chosen_recording(tmp_path: Path) -> None:
    fake = FakeBox(load_config(feature_box_config(tmp_path)))
    api = api_application(fake, StatusSource(fake), [])
    add_session_routes(api)
    routes = {
        (route.method, route.resource.canonical)
        for route in api.router.routes()
        if route.resource is not None
    }
    deleting = {route for route in routes if route[0] == "DELETE"}
    # Ending a session, and releasing the box's own hold (the recording stays; retention judges
    # it again by its rules): nothing else.
    assert deleting == {("DELETE", "/api/session"), ("DELETE", "/api/holds/{recording_id}")}
    words = ("delete", "erase", "remove", "wipe", "purge", "destroy")
    for method, path in routes:
        assert not any(word in path.lower() for word in words), (method, path)
    commands = set(cli._COMMANDS) | set(cli._SERVICE_COMMANDS)
    assert not any(word in command for command in commands for word in (*words, "rm")), commands


def own_listeners() -> set[tuple[str, str]]:
    """(protocol, local address:port) of every TCP and UDP socket this process listens on."""
    lines = subprocess.run(
        ["ss", "-H", "-l", "-n", "-t", "-u", "-p"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    mine = f"pid={os.getpid()},"
    return {(line.split()[0], line.split()[4]) for line in lines if mine in line}


async def test_a_running_box_listens_on_https_and_its_loopback_api_only(tmp_path: Path) -> None:
    before = own_listeners()
    async with web_box(tmp_path, account_hashes()) as box:
        opened = own_listeners() - before
    web, api = box.config.web, box.config.api
    assert opened == {
        ("tcp", f"{web.host}:{web.https_port}"),
        ("tcp", f"{api.host}:{api.port}"),
    }
    assert own_listeners() == before, "stopped: nothing left listening"


def test_every_test_the_compliance_table_names_exists() -> None:
    repo = Path(__file__).resolve().parent.parent
    table = (repo / "docs" / "protocol-compliance.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(tests/[a-z0-9_/]+\.py)::(test_[a-z0-9_]+)", table))
    assert len(named) >= 60, "the table names its tests as node ids"
    missing = [
        f"{path}::{name}"
        for path, name in sorted(named)
        if not (repo / path).is_file()
        or re.search(rf"^(async )?def {name}\(", (repo / path).read_text(), re.MULTILINE) is None
    ]
    assert missing == []
