"""`mvb run` as a process, its card a real labdisk pulled in the middle of a recording and
pushed back in (issue 14 item 3, the whole service: every supervised loop, the status, the
officer's API): the process never exits, `mvb status` says the card is missing (storage.card,
alert card_missing) while the pre-record ring goes on, and once the card is back the same
recording goes on in new files, without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.synthetic import generate_clip
from labdisk import LabDisk
from tests.test_lifecycle import audit_events, box_config, card_alerts
from tests.test_run import mvb, mvb_run, status, wait_for

pytestmark = pytest.mark.root


def sealed_on(card: Path) -> int:
    return len(list(card.rglob("*.mvbe")))


def card_state(config: Path) -> str:
    document = status(config)
    assert "storage" in document, document
    storage = document["storage"]
    assert isinstance(storage, dict)
    return str(storage["card"])


def prerecord_filled_s(config: Path) -> float:
    cameras = status(config)["cameras"]
    assert isinstance(cameras, dict)
    return float(cameras["dashcam"]["prerecord_filled_s"])


def test_a_card_pulled_under_mvb_run_is_an_alert_and_recording_resumes(tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    config = box_config(
        tmp_path, extra_storage="require_mount = true\nfile_target_s = 2", camera_clip=clip
    )
    card = LabDisk(tmp_path / "card-backing", tmp_path / "box" / "card", mode="ext4").start()
    with mvb_run(config, card=card) as process:
        wait_for(lambda: prerecord_filled_s(config) >= 1.0, "the pre-record ring")
        started = mvb(config, "record", "start")
        assert started.returncode == 0, started.stdout + started.stderr
        wait_for(lambda: sealed_on(card.mountpoint) >= 1, "a sealed file")

        card.pull("ENODEV")
        wait_for(lambda: card_state(config) == "missing", "the status to say the card is missing")
        assert card_alerts(status(config)) == ["card_missing"]
        assert status(config)["state"] == "recording", "the recording goes on in RAM"
        assert prerecord_filled_s(config) >= 1.0, "the pre-record ring runs on"
        assert process.poll() is None

        card.reinsert()
        wait_for(lambda: card_state(config) == "ok", "the card to be taken back")
        sealed_at_return = sealed_on(card.mountpoint)
        wait_for(lambda: sealed_on(card.mountpoint) > sealed_at_return, "new files after return")
        assert card_alerts(status(config)) == []
        assert process.poll() is None, "no restart"
    events = audit_events(config)
    names = [e["event"] for e in events]
    assert names.count("gateway.started") == 1
    assert "storage.card_back" in names
    assert "gateway.recording_resumed" in names
    failed = [e["fields"]["subsystem"] for e in events if e["event"] == "gateway.subsystem_failed"]
    assert "events" not in failed, "the recorder's core never failed"
    assert "card" not in failed, "the card watch never failed"
