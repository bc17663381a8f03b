"""`mvb run`: the box as one asyncio service — cameras, recorder, GPS, vehicle inputs, local API.

Wiring only: every decision lives in a pure part (recorder, ring, rules, tracker); this module
builds them from the configuration and connects their queues. (Supervision, systemd notify and
the shutdown grace period come with the service-lifecycle issue.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from config.local import CameraSection, LocalConfig, upload_class_for
from gateway.api import start_api
from gateway.box import Box, open_box
from gateway.capture.replay_source import ReplaySource
from gateway.capture.service import Camera, CaptureService
from gateway.capture.source import PyavSource, SourceSpec, ThreadedSource
from gateway.capture.synthetic_source import SyntheticSource
from gateway.gps import GpsdClient, GpsTracker
from gateway.inputs import (
    CrashRule,
    GpioChardevInput,
    IioAccelerometerInput,
    InputRule,
    SpeedRule,
    SysfsGpioInput,
)
from gateway.recorder import Event, IllegalTransition, RecorderPolicy, TriggerPolicy
from transport.from_config import build_uplink
from transport.uplink import UplinkService

log = logging.getLogger(__name__)

EVENT_QUEUE_SIZE = 64
SPEED_SOURCE = "speed"


def make_source(camera: CameraSection) -> ThreadedSource:
    spec = SourceSpec(
        name=camera.name,
        kind=camera.kind,
        url=camera.url,
        rtsp_transport=camera.rtsp_transport,
        serial=camera.serial or camera.name,
    )
    if camera.kind == "synthetic":
        return SyntheticSource(
            spec,
            width=camera.width,
            height=camera.height,
            fps=camera.fps,
            bitrate_bps=camera.bitrate_bps,
        )
    if camera.kind == "replay":
        return ReplaySource(spec)
    return PyavSource(spec)


InputLine = SysfsGpioInput | GpioChardevInput | IioAccelerometerInput


def input_lines(config: LocalConfig, events: asyncio.Queue[Event]) -> list[InputLine]:
    """The vehicle's inputs, each feeding the recorder's event queue through its rule."""
    lines: list[InputLine] = []
    for item in config.inputs:
        if item.kind == "iio_accel":
            crash = CrashRule(item.source, threshold_g=item.threshold_g)
            lines.append(IioAccelerometerInput(config.resolve(item.path), crash, events))
            continue
        rule = InputRule.level(
            item.source,
            active_low=item.active_low,
            debounce_ms=item.debounce_ms,
            on_fall=item.stop_on_release,
        )
        if item.kind == "sysfs":
            lines.append(SysfsGpioInput(config.resolve(item.path), rule, events))
        else:
            lines.append(GpioChardevInput(item.path, item.line, rule, events))
    return lines


def recorder_policy(config: LocalConfig) -> RecorderPolicy:
    rec = config.recording
    triggers = {
        name: TriggerPolicy(
            cameras=frozenset(t.cameras) or None, postrecord_s=t.postrecord_s, may_stop=t.may_stop
        )
        for name, t in config.triggers.items()
    }
    return RecorderPolicy(
        prerecord_s=rec.prerecord_s,
        max_continuous_s=rec.max_continuous_s,
        triggers=triggers,
        default_trigger=TriggerPolicy(postrecord_s=rec.postrecord_s),
    )


@dataclass
class RunningBox:
    box: Box
    service: CaptureService
    gps: GpsTracker
    gpsd: GpsdClient
    events: asyncio.Queue[Event]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop_api: Callable[[], Any] | None = None
    ignored_events: int = 0
    uplink: UplinkService | None = None


async def start_box(config: LocalConfig) -> RunningBox:
    box = await asyncio.to_thread(open_box, config)
    gps = GpsTracker(stale_after_s=config.gps.stale_after_s)
    cameras = [
        Camera(
            make_source(c),
            prerecord_s=config.recording.prerecord_s,
            ring_max_bytes=config.recording.ring_max_bytes,
            segment_min_s=config.recording.segment_min_s,
        )
        for c in config.cameras
    ]
    facts = {**box.facts, "officer_id": None}
    service = CaptureService(
        box.store,
        cameras,
        recorder_policy(config),
        facts,
        gps_window=gps.samples_between,
        upload_class_of=lambda source: upload_class_for(source, config.triggers),
    )
    gpsd = GpsdClient(gps, config.gps.host, config.gps.port)
    running = RunningBox(box, service, gps, gpsd, asyncio.Queue(EVENT_QUEUE_SIZE))
    try:
        await _start_parts(running, config)
    except BaseException:
        await stop_box(running)  # e.g. the API port is taken: stop what already runs
        raise
    await asyncio.to_thread(box.audit.append, "gateway.started", cameras=len(cameras))
    return running


async def _start_parts(running: RunningBox, config: LocalConfig) -> None:
    await running.service.start()
    running.uplink = build_uplink(config, running.box.store)
    if running.uplink is not None:
        await running.uplink.start()
    running.tasks += [
        asyncio.create_task(running.gpsd.run()),
        asyncio.create_task(_consume_events(running)),
    ]
    running.tasks += [
        asyncio.create_task(line.run()) for line in input_lines(config, running.events)
    ]
    if SPEED_SOURCE in config.triggers:
        running.tasks.append(asyncio.create_task(_watch_speed(running, config)))
    running.stop_api = await start_api(running, config.api.host, config.api.port)


async def stop_box(running: RunningBox) -> None:
    if running.stop_api is not None:
        await running.stop_api()
    running.gpsd.stop()
    for task in running.tasks:
        task.cancel()
    for task in running.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await running.service.stop()
    if running.uplink is not None:
        await running.uplink.stop()
        running.uplink.ledger.close()
    await asyncio.to_thread(running.box.audit.append, "gateway.stopped")
    await asyncio.to_thread(running.box.close)


async def _consume_events(running: RunningBox) -> None:
    """Vehicle inputs and officer buttons arrive here and go through the recorder."""
    while True:
        event = await running.events.get()
        try:
            await running.service.submit(event)
        except IllegalTransition:
            running.ignored_events += 1  # e.g. lights off while standing by: nothing to stop


async def _watch_speed(running: RunningBox, config: LocalConfig) -> None:
    """Speed above the configured threshold (from GPS) is a trigger source like any other."""
    threshold_mps = config.triggers[SPEED_SOURCE].threshold_mps
    rule = SpeedRule(
        InputRule.threshold_above(SPEED_SOURCE, threshold=threshold_mps, hysteresis=2.0, hold_s=2.0)
    )
    while True:
        await asyncio.sleep(0.5)
        now_ns = time.monotonic_ns()
        speed = running.gps.speed_mps(now_ns)
        event = rule.sample(float("nan") if speed is None else speed, now_ns)
        if event is not None:
            await running.events.put(event)


async def run(config: LocalConfig) -> int:
    """Run until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start_box(config)
    print(
        f"mvb: running with {len(config.cameras)} camera(s); API on "
        f"http://{config.api.host}:{config.api.port}/api/status",
        flush=True,
    )
    await stop.wait()
    await stop_box(running)
    return 0
