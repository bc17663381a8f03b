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
from dataclasses import dataclass, field, replace
from typing import Any

from config.fleet_schema import apply_fleet_document
from config.local import CameraSection, ConfigError, LocalConfig, upload_class_for
from gateway.api import start_api
from gateway.box import Box, open_box
from gateway.capture.replay_source import ReplaySource
from gateway.capture.service import Camera, CaptureService
from gateway.capture.source import PyavSource, SourceSpec, ThreadedSource
from gateway.capture.synthetic_source import SyntheticSource
from gateway.fleet_apply import ConfigSlots, FleetApplier
from gateway.fleet_sync import FleetSync
from gateway.fleet_target import RunningBoxTarget, back_office_reachable, cameras_delivering
from gateway.gps import GpsdClient, GpsTracker
from gateway.inputs import (
    CrashRule,
    GpioChardevInput,
    IioAccelerometerInput,
    InputRule,
    SpeedRule,
    SysfsGpioInput,
)
from gateway.pairing_client import fleet_metadata_dir, is_paired, paired_uplink
from gateway.policy import recorder_policy
from gateway.recorder import Event, IllegalTransition
from gateway.web.server import WebListener, start_web
from transport.connect import BackOffice
from transport.from_config import (
    PAIRING_UNREADABLE,
    UplinkNotStarted,
    back_office,
    uplink_service,
)
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


@dataclass
class RunningBox:
    box: Box
    service: CaptureService
    gps: GpsTracker
    gpsd: GpsdClient
    events: asyncio.Queue[Event]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop_api: Callable[[], Any] | None = None
    web: WebListener | None = None  # the officer's HTTPS channel (docs/webui.md 1)
    ignored_events: int = 0
    uplink: UplinkService | UplinkNotStarted | None = None  # None: [uplink] is off
    fleet: FleetSync | None = None


def effective_at_start(local: LocalConfig) -> LocalConfig:
    """The local file with the last known good fleet document applied (a box restarts on the
    configuration it last ran healthily, not on its defaults)."""
    current = ConfigSlots(local.state_dir).current()
    if current is None:
        return local
    serial, text = current
    try:
        return apply_fleet_document(local, text, f"fleet document serial {serial}")
    except ConfigError as exc:  # the schema grew stricter since: run on the local file
        log.warning("last fleet configuration no longer valid, using the local file: %s", exc)
        return local


async def start_box(local: LocalConfig) -> RunningBox:
    config = effective_at_start(local)
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
        await _start_parts(running, local, config)
    except BaseException:
        await stop_box(running)  # e.g. the API port is taken: stop what already runs
        raise
    await asyncio.to_thread(box.audit.append, "gateway.started", cameras=len(cameras))
    return running


async def resolve_back_office(
    local: LocalConfig, effective: LocalConfig
) -> BackOffice | UplinkNotStarted | None:
    """The back office of the effective [uplink], completed from the pairing files (read off
    the event loop); None when the uplink is off. A box that pairs while running (`mvb pair` is
    another process) gets its uplink at the next start."""
    if not effective.uplink.enabled:
        return None
    try:
        paired = await asyncio.to_thread(paired_uplink, local.state_dir)
    except (OSError, ValueError) as exc:  # a damaged pairing must not stop the recording
        return UplinkNotStarted(PAIRING_UNREADABLE, f"the pairing files are unreadable: {exc}")
    # Credential paths are local-file keys (a fleet document cannot set them): they resolve
    # against the local file, whatever document the effective configuration came from.
    return back_office(replace(effective, source=local.source), paired)


def build_fleet_sync(
    running: RunningBox, local: LocalConfig, effective: LocalConfig, office: BackOffice | None
) -> FleetSync | None:
    """Signed fleet configuration for a paired box: polled over the uplink when it runs
    (`office`), and pushed as a bundle (local API) always. A configuration is judged by the
    back office's reachability only when there is an uplink to reach it with."""
    if not is_paired(local.state_dir):
        return None
    checks = [cameras_delivering(running)]
    if office is not None:
        checks.append(back_office_reachable(running))
    applier = FleetApplier(
        local,
        RunningBoxTarget(running),
        ConfigSlots(local.state_dir),
        checks,
        audit=running.box.audit.append,
    )
    applier.effective = effective
    return FleetSync(
        state_dir=local.state_dir,
        metadata_dir=fleet_metadata_dir(local.state_dir),
        box_id=local.box.device_serial,
        groups=local.box.fleet_groups,
        back_office=office,
        applier=applier,
        audit=running.box.audit,
        alarms=running.service.alarms,
        sign=running.box.device_key.sign,
        device_public_pem=running.box.device_key.public_pem(),
        poll_s=effective.uplink.config_poll_s,
    )


async def _start_parts(running: RunningBox, local: LocalConfig, config: LocalConfig) -> None:
    await running.service.start()
    office = await resolve_back_office(local, config)
    if isinstance(office, BackOffice):
        running.uplink = uplink_service(config, running.box.store, office)
        await running.uplink.start()
    else:
        running.uplink = office  # None (off) or why it does not run; recording goes on regardless
        if office is not None:
            log.warning("uplink not started: %s", office.reason)
    running.fleet = build_fleet_sync(
        running, local, config, office if isinstance(office, BackOffice) else None
    )
    if running.fleet is not None:
        await running.fleet.start()
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
    running.web = await start_web(running, config)


async def stop_box(running: RunningBox) -> None:
    if running.web is not None:
        await running.web.stop()
    if running.stop_api is not None:
        await running.stop_api()
    running.gpsd.stop()
    for task in running.tasks:
        task.cancel()
    for task in running.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if running.fleet is not None:
        await running.fleet.stop()
    await running.service.stop()
    if isinstance(running.uplink, UplinkService):
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
