"""Issue 15 item 2: what happens around a recording is in its metadata (GPS lost and back,
alarms raised and cleared: a clock offset, a card fault), and gpsd is retried faster while the
box records. The pure diff first, then a real recording: a gst-rtsp-server camera, a real gpsd
(gpsfake) killed and started again mid-recording, the box's own Alarms."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from gateway.capture.camera import Camera
from gateway.capture.recording_events import alarm_events, gps_event
from gateway.capture.service import CaptureService
from gateway.capture.source import PyavSource, SourceSpec
from gateway.gps import GpsdClient, GpsTracker
from gateway.recorder import RecorderPolicy, TriggerPolicy
from storage.envelope import RecipientPrivateKey
from tests.cameras import rtsp_camera
from tests.capture_helpers import decrypt_all, store_on, wait_for
from tests.gpsfake import Gpsfake, free_port


def test_gps_events_only_for_gaining_or_losing_a_fix() -> None:
    assert gps_event("fix", "fix", 1) is None
    assert gps_event("stale", "no_gpsd", 1) is None
    assert gps_event("fix", "stale", 5) == {
        "type": "event",
        "name": "gps_lost",
        "status": "stale",
        "at_ms": 5,
    }
    back = gps_event("no_gpsd", "fix", 6)
    assert back is not None
    assert back["name"] == "gps_back"


def test_alarm_events_are_the_difference() -> None:
    before = {"clock_offset": "40 days", "card_full": "full"}
    after = {"clock_offset": "41 days", "card_write_failed": "EIO"}
    events = alarm_events(before, after, 7)
    assert [(e["name"], e["code"]) for e in events] == [
        ("alarm_cleared", "card_full"),
        ("alarm_raised", "card_write_failed"),
        ("alarm_raised", "clock_offset"),
    ]
    assert alarm_events(after, after, 8) == []


async def test_gpsd_is_retried_about_every_second_while_recording() -> None:
    """A closed port: in standby the first retry waits [2, 4] s (min 4 s, jitter); recording
    caps each wait at 1 s, so the same 3 s hold at least two more attempts."""

    async def attempts_in(seconds: float, *, recording: bool) -> int:
        client = GpsdClient(GpsTracker(), "127.0.0.1", free_port(), reconnect_min_s=4.0)
        client.set_recording(recording)
        task = asyncio.create_task(client.run())
        await asyncio.sleep(seconds)
        client.stop()
        await asyncio.wait_for(task, 5)
        return client.reconnects

    standby, recording = await asyncio.gather(
        attempts_in(3.0, recording=False), attempts_in(3.0, recording=True)
    )
    assert standby <= 1
    assert recording >= 2


async def test_gps_loss_and_alarms_are_events_of_the_recording(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    gps_port = free_port()
    tracker = GpsTracker(stale_after_s=2.0)
    gpsd = GpsdClient(tracker, "127.0.0.1", gps_port, reconnect_min_s=4.0)
    fake = Gpsfake(gps_port, tmp_path, singleshot=False, sentence_interval_s=0.5)
    gps_task = asyncio.create_task(gpsd.run())
    try:
        with rtsp_camera() as url, store_on(tmp_path, recipient) as store:
            camera = Camera(
                PyavSource(SourceSpec(name="dashcam", kind="rtsp_pull", url=url)),
                prerecord_s=1.0,
                ring_max_bytes=8 << 20,
            )
            service = CaptureService(
                store,
                [camera],
                RecorderPolicy(prerecord_s=1.0, default_trigger=TriggerPolicy(postrecord_s=0)),
                {},
                tick_s=0.1,
                gps_status=lambda now_ns: tracker.status(now_ns).value,
            )
            service.recording_listeners.append(gpsd.set_recording)
            await service.start()
            try:
                await wait_for(lambda: camera.source.health.packets > 25, "the camera")
                await wait_for(lambda: tracker.fix is not None, "a GPS fix")
                await service.trigger("officer")
                await asyncio.sleep(0.5)
                fake.crash()  # gpsd gone: the fix is lost
                store.alarms.raise_("clock_offset", "system clock 40 days behind GPS")
                await wait_for(lambda: not gpsd.connected, "gpsd lost")
                await asyncio.sleep(1.0)
                store.alarms.clear("clock_offset")
                fake = Gpsfake(gps_port, tmp_path, singleshot=False, sentence_interval_s=0.5)
                await wait_for(
                    lambda: tracker.status(time.monotonic_ns()).value == "fix",
                    "the fix back",
                    timeout_s=15,
                )
                await asyncio.sleep(0.5)
                await service.stop_recording()
                await wait_for(lambda: service.recording is None, "the recording to finish")
            finally:
                await service.stop()
            [(report, _media)] = decrypt_all(store, recipient)
    finally:
        gpsd.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gps_task, 5)
        fake.stop()
    events = [(m["name"], m.get("code")) for m in report.metadata if m["type"] == "event"]
    story = [e for e in events if e[0].startswith(("gps_", "alarm_"))]
    assert ("gps_lost", None) in story
    assert ("alarm_raised", "clock_offset") in story
    assert ("alarm_cleared", "clock_offset") in story
    assert story.index(("gps_back", None)) > story.index(("gps_lost", None))
    assert story.index(("alarm_cleared", "clock_offset")) > story.index(
        ("alarm_raised", "clock_offset")
    )
