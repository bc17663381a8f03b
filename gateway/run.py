"""`mvb run`: the box as one asyncio service — cameras, recorder, GPS, vehicle inputs, uplink,
fleet configuration, local API and the officer's web UI.

Wiring only: every decision lives in a pure part (recorder, ring, rules, tracker, supervisor
backoff, card check); this module builds them from the configuration and connects them.
The process around it (READY, the watchdog, degraded without a card, the stop within the grace
period) is gateway/run_service.py's.

Lifecycle (docs/deploy-box.md):
- start: check the card (present, mounted if required, writable; foreign files alarmed; without
  a usable card run degraded until it is: gateway/degraded.py), recover
  it (open_box), apply the last good configuration, start the subsystems, tell systemd READY;
- run: every loop is a child of one supervisor (gateway/supervisor.py): GPS, each vehicle
  input, the speed watcher, the uplink, fleet sync, the clock check, trusted time and the
  retention timer are isolated (a failure
  restarts that child with backoff); the recorder's event loop is the core (its failure stops
  the service, which systemd restarts). Cameras reconnect by themselves inside capture. The
  watchdog is pinged while the core runs;
- stop (SIGTERM, ignition off): refuse new triggers, tell systemd STOPPING, seal what is being
  recorded and flush the audit log within `box.shutdown_grace_s`, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from config.fleet_schema import apply_fleet_document
from config.local import ConfigError, LocalConfig
from config.local_sections import upload_class_for
from gateway.box import Box, open_box
from gateway.box_port import BoxAdapter
from gateway.capture.camera import Camera
from gateway.capture.service import CaptureService
from gateway.capture.sources import IngestWiring, make_source
from gateway.card_watch import watch_card
from gateway.fleet_apply import ConfigSlots, FleetApplier
from gateway.fleet_sync import FleetSync
from gateway.fleet_target import RunningBoxTarget, back_office_reachable, cameras_delivering
from gateway.gps import GpsdClient, GpsTracker
from gateway.health_io import HealthReporter
from gateway.hold_desk import HoldDesk
from gateway.inputs import CrashRule, InputRule
from gateway.inputs_io import GpioChardevInput, IioAccelerometerInput, SysfsGpioInput
from gateway.officer.desks import OfficerDesks
from gateway.officer.shift_history import tag_key
from gateway.pairing_client import fleet_metadata_dir, is_paired, pairing_files
from gateway.policy import recorder_policy
from gateway.port import BoxPort
from gateway.recorder import Event
from gateway.release_cli import DEFAULT_ROOT
from gateway.release_handoff import InboxSwitch
from gateway.release_report import release_root_of, watch_switch_outcome
from gateway.release_update import (
    RELEASE_INBOX_DIR,
    RELEASE_STAGING_DIR,
    RELEASE_WORK_DIR,
    ReleaseUpdater,
    hand_to_inbox,
)
from gateway.release_verdict import DEFAULT_VERDICTS_DIR
from gateway.startup import check_card
from gateway.status_facts import StatusInputs, software_version
from gateway.supervisor import Child, Supervisor
from gateway.unpairing import Unpairing
from gateway.uplink_credentials import PairedCredentials
from gateway.uplink_credentials import resolve_back_office as resolve_paired_back_office
from gateway.uplink_from_config import UplinkNotStarted, uplink_service
from gateway.watchers import (
    SPEED_SOURCE,
    consume_events,
    keep_retention,
    watch_clock,
    watch_speed,
    watch_trusted_time,
)
from gateway.web.local_channel import start_local_api
from gateway.web.status_source import StatusSource
from transport.connect import BackOffice
from transport.uplink import UplinkService

if TYPE_CHECKING:
    from gateway.web.server import WebListener

log = logging.getLogger(__name__)

EVENT_QUEUE_SIZE = 64


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
    """Every part of the running service, as the composition root wired them. The faces see
    none of it: they reach the box through `port` (gateway/port.py)."""

    box: Box
    service: CaptureService
    gps: GpsTracker
    gpsd: GpsdClient
    events: asyncio.Queue[Event]
    officer: OfficerDesks
    holds: HoldDesk
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # audit appends in flight
    port: BoxAdapter | None = None  # made once the uplink and fleet sync exist
    status: StatusSource | None = None  # one build of the status document for both channels
    stop_api: Callable[[], Awaitable[None]] | None = None
    web: WebListener | None = None  # the officer's HTTPS channel (docs/webui.md 1)
    ignored_events: int = 0
    uplink: UplinkService | UplinkNotStarted | None = None  # None: [uplink] is off
    fleet: FleetSync | None = None
    health: HealthReporter | None = None  # health reports to the fleet's back office
    supervisor: Supervisor = field(default_factory=Supervisor)
    supervised: asyncio.Task[None] | None = None  # runs every child of `supervisor`

    def count_ignored(self) -> None:
        self.ignored_events += 1  # e.g. lights off while standing by: nothing to stop

    def healthy(self) -> bool:
        """For the watchdog: the supervisor and its core child run (a wedged event loop cannot
        answer at all, which stops the pings just as well)."""
        core = self.supervisor.children.get("events")
        return (
            self.supervised is not None
            and not self.supervised.done()
            and core is not None
            and core.state == "running"
        )


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
    """Start every part; raise CardUnusable when the card cannot hold evidence."""
    config = effective_at_start(local)
    card = await asyncio.to_thread(
        check_card, config.card_dir, require_mount=config.storage.require_mount
    )
    box = await asyncio.to_thread(open_box, config)
    if card.foreign_files:
        # Never deleted (they may be someone's evidence): the technician looks at them.
        box.alarms.raise_(
            "card_foreign_files",
            f"{len(card.foreign_files)} file(s) on the card are not the box's encrypted evidence",
        )
        await asyncio.to_thread(
            box.audit.append, "storage.foreign_files", count=len(card.foreign_files)
        )
    gps = GpsTracker(stale_after_s=config.gps.stale_after_s)
    # Cameras prove who they are; refused senders are audited and alarmed (docs/capture.md).
    ingest = IngestWiring(config.resolve, box.alarms, box.audit.append)
    try:
        cameras = [
            Camera(
                make_source(c, ingest),
                prerecord_s=config.recording.prerecord_s,
                ring_max_bytes=config.recording.ring_max_bytes,
                segment_min_s=config.recording.segment_min_s,
            )
            for c in config.cameras
        ]
    except ConfigError:  # a camera's certificate or password file: nothing runs yet
        await asyncio.to_thread(box.close)
        raise
    facts = dict(box.facts)  # the officers come from the shift (gateway/officer/desks.py)
    service = CaptureService(
        box.store,
        cameras,
        recorder_policy(config),
        facts,
        gps_window=gps.samples_between,
        upload_class_of=lambda source: upload_class_for(source, config.triggers),
        record_audio=config.recording.record_audio,
        gps_status=lambda now_ns: gps.status(now_ns).value,
    )
    gpsd = GpsdClient(gps, config.gps.host, config.gps.port)
    service.recording_listeners.append(gpsd.set_recording)  # GPS retried faster meanwhile
    tags = tag_key(box.device_key.sign)
    officer = await asyncio.to_thread(OfficerDesks, config.state_dir, box.store, box.audit, tags)
    service.observers.append(officer)
    holds = HoldDesk(box.store, box.audit)
    running = RunningBox(box, service, gps, gpsd, asyncio.Queue(EVENT_QUEUE_SIZE), officer, holds)
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
    the event loop: gateway/uplink_credentials.py); None when the uplink is off. A box that
    pairs while running without an uplink gets one at the next start; a running uplink whose
    credentials are refused picks up a re-pair by itself (transport/withdrawal.py)."""
    return await asyncio.to_thread(resolve_paired_back_office, local, effective)


def build_fleet_sync(
    running: RunningBox,
    local: LocalConfig,
    effective: LocalConfig,
    office: BackOffice | None,
    unpairing: Unpairing | None = None,
) -> FleetSync | None:
    """Signed fleet configuration for a paired box: polled over the uplink when it runs
    (`office`), and pushed as a bundle (local API) always. A configuration is judged by the
    back office's reachability only when there is an uplink to reach it with, and only while
    it was reachable before (gateway/fleet_target.py): a box with every link down still takes
    a pushed bundle."""
    if not is_paired(local.state_dir):
        return None
    checks = [cameras_delivering(running.service)]
    if office is not None:
        checks.append(back_office_reachable(lambda: running.uplink))
    applier = FleetApplier(
        local,
        RunningBoxTarget(running.service, running.box.store),
        ConfigSlots(local.state_dir),
        checks,
        audit=running.box.audit.append,
        holds=running.holds,
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
        alarms=running.box.alarms,
        sign=running.box.device_key.sign,
        device_public_pem=running.box.device_key.public_pem(),
        poll_s=effective.uplink.config_poll_s,
        pairing_dir=pairing_files(local.state_dir).directory,
        resolve_office=lambda: _paired_office(local, effective),
        on_unpaired=None if unpairing is None else unpairing.unpaired,
        releases=build_release_updater(running, local),
    )


def build_release_updater(running: RunningBox, local: LocalConfig) -> ReleaseUpdater:
    """The release the fleet pins, verified here and left in the release inbox for root's
    installer, which verifies it again, installs it beside the running one under /opt/mvb and
    requests the A/B switch (docs/releases.md 7.6): the box's service never writes /opt/mvb."""
    inbox, staging = local.state_dir / RELEASE_INBOX_DIR, local.state_dir / RELEASE_STAGING_DIR
    return ReleaseUpdater(
        metadata_dir=fleet_metadata_dir(local.state_dir),
        work_dir=local.state_dir / RELEASE_WORK_DIR,
        pairing_dir=pairing_files(local.state_dir).directory,
        running_version=software_version(),
        platform=os.uname().machine,
        hand_off=hand_to_inbox(inbox, staging),
        switch=InboxSwitch(DEFAULT_ROOT, inbox, staging),
        audit=running.box.audit,
        alarms=running.box.alarms,
        verdicts=DEFAULT_VERDICTS_DIR,  # root's verdicts (docs/releases.md 7.6)
    )


async def _paired_office(local: LocalConfig, effective: LocalConfig) -> BackOffice | None:
    """The back office the pairing files name now (after a re-pair), or None."""
    office = await resolve_back_office(local, effective)
    return office if isinstance(office, BackOffice) else None


async def _start_parts(running: RunningBox, local: LocalConfig, config: LocalConfig) -> None:
    await running.service.start()
    # An unpair (RULES L5) is heard by the uplink or the fleet sync: gateway/unpairing.py.
    unpairing = Unpairing(local.state_dir, running.box.alarms, running.box.audit)
    await asyncio.to_thread(unpairing.clear_if_paired)
    office = await resolve_back_office(local, config)
    if isinstance(office, BackOffice):
        # Certificates judged by trusted time, not by a wall clock that may be days wrong.
        office = replace(office, tls=replace(office.tls, validity_time=running.box.trusted.now))
        running.uplink = uplink_service(
            config,
            running.box.store,
            office,
            lambda connector: PairedCredentials(local, config, connector),
        )
        running.uplink.on_server_date = running.box.trusted.observe_server_date
        running.uplink.guard.on_unpaired = unpairing.unpaired
    else:
        running.uplink = office  # None (off) or why it does not run; recording goes on regardless
        if office is not None:
            log.warning("uplink not started: %s", office.reason)
    running.fleet = build_fleet_sync(
        running, local, config, office if isinstance(office, BackOffice) else None, unpairing
    )
    running.supervisor.on_failure = lambda name, exc: _audit_failure(running, name, exc)
    running.supervised = asyncio.create_task(
        running.supervisor.run(children(running, config)), name="supervisor"
    )
    port = BoxAdapter(
        running.box,
        running.service,
        running.gps,
        running.officer,
        uplink=running.uplink,
        fleet=running.fleet,
        holds=running.holds,
    )
    running.port = port
    running.status = StatusSource(port, lambda document: _add_web_status(running, document))
    running.stop_api = await start_local_api(port, running.status, config.api.host, config.api.port)
    running.web = await start_page(port, running.status, config)


async def start_page(
    port: BoxPort, status: StatusSource, config: LocalConfig
) -> WebListener | None:
    """The officer's page (gateway/web/server.py), None when `[web]` is off: its modules (the
    HTTPS listener, sessions, logins, displays: 0.3 MiB) are loaded only for a box that serves
    it (issue 18). `[web]` is the local file's, so it cannot turn on while the box runs."""
    if not config.web.enabled:
        return None
    from gateway.web.server import start_web

    return await start_web(port, status, config)


def _add_web_status(running: RunningBox, document: dict[str, Any]) -> None:
    """The status document's `web` member: the officer's channel as the root started it."""
    document["web"] = None if running.web is None else running.web.status()


def children(running: RunningBox, config: LocalConfig) -> list[Child]:
    """Every supervised loop of the service; only the recorder's event loop is core."""
    kids = [
        Child(
            "events",
            lambda: consume_events(running.events, running.service, running.count_ignored),
            kind="core",
        ),
        Child("gps", running.gpsd.run),
        Child("clock", lambda: watch_clock(running.gps, running.service, running.box.audit)),
        Child("trusted-time", lambda: watch_trusted_time(running.gps, running.box.trusted)),
        # Retention on its own timer: a box without a working uplink still obeys S4.
        Child(
            "retention",
            lambda: keep_retention(running.box.store, config.storage.retention_check_s),
        ),
    ]
    release_root = release_root_of(sys.argv[0])
    if release_root is not None:  # started through /opt/mvb/current: tell of each switch
        audit, alarms = running.box.audit.append, running.box.alarms
        kids.append(
            Child(
                "release-report",
                lambda: watch_switch_outcome(release_root, config.state_dir, audit, alarms),
            )
        )
    kids += [
        Child(f"input-{index}", line.run)
        for index, line in enumerate(input_lines(config, running.events))
    ]
    if SPEED_SOURCE in config.triggers:
        threshold_mps = config.triggers[SPEED_SOURCE].threshold_mps
        kids.append(Child("speed", lambda: watch_speed(running.gps, threshold_mps, running.events)))
    if isinstance(running.uplink, UplinkService):
        kids.append(Child("uplink", running.uplink.run))
    # A failing card is probed and taken back into use without a restart (gateway/card_watch.py).
    on_back = [running.uplink.ledger.reopen] if isinstance(running.uplink, UplinkService) else []
    kids.append(
        Child("card", lambda: watch_card(running.box.store, running.service, on_back=on_back))
    )
    if running.fleet is not None:
        kids.append(Child("fleet", running.fleet.run))
        running.health = health_reporter(running, running.fleet)
        kids.append(Child("health", running.health.run))
    return kids


def health_reporter(running: RunningBox, fleet: FleetSync) -> HealthReporter:
    """Health reports to the fleet sync's back office (followed across a re-pair)."""

    async def inputs() -> StatusInputs:
        while running.port is None:  # the port is made once the supervisor runs
            await asyncio.sleep(0.1)
        return await running.port.status_inputs()

    return HealthReporter(
        box_id=fleet.box_id,
        sign=running.box.device_key.sign,
        gather=inputs,
        back_office=lambda: fleet.back_office,
        on_check_now=fleet.check_soon,
    )


def _audit_failure(running: RunningBox, name: str, exc: BaseException) -> None:
    """A subsystem failed (and restarts): the audit log says which and what kind, never the
    exception's text. Called on the loop: the fsync'd append runs on a thread, and the task
    forgets itself when done (years of flapping must not grow a list)."""

    async def append() -> None:
        await asyncio.to_thread(
            running.box.audit.append,
            "gateway.subsystem_failed",
            subsystem=name,
            error=type(exc).__name__,
        )

    task = asyncio.get_running_loop().create_task(append())
    running.tasks.append(task)
    task.add_done_callback(running.tasks.remove)


async def stop_box(running: RunningBox) -> None:
    if running.web is not None:
        await running.web.stop()
    if running.stop_api is not None:
        await running.stop_api()
    running.gpsd.stop()
    if running.supervised is not None:
        running.supervisor.stop()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running.supervised  # a core failure was already reported by run()
    # Audit appends of subsystem failures still on their way: short, and they belong in the log.
    await asyncio.gather(*list(running.tasks), return_exceptions=True)
    if running.fleet is not None:
        await running.fleet.stop()
    await running.service.stop()
    if isinstance(running.uplink, UplinkService):
        await running.uplink.stop()
        running.uplink.ledger.close()
    try:
        await asyncio.to_thread(running.box.trusted.save)  # a restart in this boot keeps it
    except OSError as exc:  # the card or disk failing must not stop the rest of the shutdown
        log.error("trusted time not saved at stop: %s", exc)
    await asyncio.to_thread(running.box.audit.append, "gateway.stopped")
    await asyncio.to_thread(running.box.close)
