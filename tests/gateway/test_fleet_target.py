"""A fleet document on the running box: pre-record changes on running cameras, or rolls back."""

from __future__ import annotations

import hashlib
from pathlib import Path

from backoffice.keys import create_recording_keys
from config.fleet_targets import FleetDocument
from config.local import load_config
from demo.synthetic import generate_clip
from gateway.fleet_apply import ConfigSlots, FleetApplier
from gateway.fleet_target import RunningBoxTarget, back_office_reachable, cameras_delivering
from gateway.run import start_box, stop_box
from tests.cameras import free_port
from tests.capture_helpers import wait_for
from tests.evidence_helpers import write_box_config

NS_PER_S = 1_000_000_000


def fleet_document(text: str, serial: int) -> FleetDocument:
    data = text.encode()
    digest = hashlib.sha256(data).hexdigest()
    return FleetDocument("boxes/MVB-TEST-0001.toml", serial, digest, ("MVB-TEST-0001",), (), data)


def box_config(tmp_path: Path, clip_url: str) -> Path:
    _, public = create_recording_keys(tmp_path / "keys")
    return write_box_config(
        tmp_path / "box",
        public,
        storage_lines=f"""
[recording]
prerecord_s = 5
[gps]
port = {free_port()}
[api]
port = {free_port()}
[[cameras]]
name = "dashcam"
kind = "replay"
url = "{clip_url}"
serial = "DC-9"
""",
    )


async def test_prerecord_changes_on_a_running_camera(tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    config = load_config(box_config(tmp_path, str(clip)))
    running = await start_box(config)
    try:
        camera = running.service.cameras["dashcam"]
        # A document is judged on a box that delivers: before the first packet it is deferred.
        await wait_for(lambda: camera.source.health.connected, "the camera's first packets")
        applier = FleetApplier(
            config,
            RunningBoxTarget(running.service, running.box.store),
            ConfigSlots(config.state_dir),
            [cameras_delivering(running.service), back_office_reachable(lambda: running.uplink)],
            settle_s=1.0,
        )
        assert running.service.status()["cameras"]["dashcam"]["audio"] == "none"  # no sound
        text = (
            "[recording]\nprerecord_s = 8.0\nrecord_audio = false\n[storage]\nretention_days = 14\n"
        )
        outcome = await applier.apply(fleet_document(text, 1))
        assert outcome.applied, outcome.reason
        assert camera.ring.window_ns == 8 * NS_PER_S
        assert running.service.recorder.policy.prerecord_s == 8.0
        assert running.service.status()["cameras"]["dashcam"]["prerecord_s"] == 8.0
        assert running.box.store.settings.retention.retention_days == 14
        # the municipality's policy on sound reaches the running cameras (issue 15)
        assert running.service.record_audio is False
        assert running.service.status()["cameras"]["dashcam"]["audio"] == "off"
    finally:
        await stop_box(running)


async def test_a_box_whose_camera_is_down_keeps_its_last_good_configuration_for_now(
    tmp_path: Path,
) -> None:
    config = load_config(box_config(tmp_path, str(tmp_path / "no-such-clip.ts")))
    running = await start_box(config)
    try:
        applier = FleetApplier(
            config,
            RunningBoxTarget(running.service, running.box.store),
            ConfigSlots(config.state_dir),
            [cameras_delivering(running.service)],
            settle_s=0.5,
        )
        outcome = await applier.apply(fleet_document("[recording]\nprerecord_s = 60.0\n", 2))
        assert not outcome.applied
        assert outcome.transient, "the camera was down before: the box's state, not the document"
        assert outcome.reason == "deferred: camera(s) not delivering: dashcam"
        assert running.service.recorder.policy.prerecord_s == 5.0
        assert running.service.cameras["dashcam"].ring.window_ns == 5 * NS_PER_S
    finally:
        await stop_box(running)
