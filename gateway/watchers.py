"""The service's small loops that are neither capture nor uplink: the recorder's event queue,
the wall clock against GPS time, GPS time as an anchor of trusted time, retention on its own
timer, and speed as a trigger. Each runs as a supervised child of `mvb run`
(gateway/supervisor.py); each takes only the parts it reads or feeds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from common.faults import IllegalTransition
from gateway.capture.service import CaptureService
from gateway.gps import GpsTracker
from gateway.inputs import InputRule, SpeedRule
from gateway.recorder import OFFICER, Event
from gateway.startup import clock_offset_alarm
from storage.audit_io import AuditLog
from storage.store import EvidenceStore
from storage.trusted_time_io import TrustedClock

CLOCK_CHECK_EVERY_S = 30.0
GPS_TIME_SAMPLE_S = 2.0
"""How often a new GPS fix is taken as an anchor of trusted time (a fix a second is offered)."""
RETENTION_WAKE_S = 2.0
"""How often the retention timer looks whether trusted time just became known."""
SUSPEND_SLACK_NS = 1_000_000
"""CLOCK_BOOTTIME - CLOCK_MONOTONIC grows only by time suspended; read twice apart it may differ
by the reads' own jitter (microseconds). More than this: the box was suspended in between."""
NS_PER_MS = 1_000_000
SPEED_SOURCE = "speed"
SPEED_SAMPLE_EVERY_S = 0.5


async def consume_events(
    events: asyncio.Queue[Event], service: CaptureService, ignored: Callable[[], None]
) -> None:
    """Vehicle inputs and officer buttons arrive here and go through the recorder; an event
    the recorder cannot take now (lights off while standing by) is counted by `ignored`."""
    while True:
        event = await events.get()
        try:
            await service.submit(with_channel(event))
        except IllegalTransition:
            ignored()


def with_channel(event: Event) -> Event:
    """An input's event, named by its channel for the audit (R3): an input line whose source
    is the officer is the officer's button; every other input (and speed) is an input."""
    channel = "button" if event.source == OFFICER else "input"
    return replace(event, facts={**event.facts, "channel": channel, "account": None})


async def watch_clock(gps: GpsTracker, service: CaptureService, audit: AuditLog) -> None:
    """The wall clock against GPS time: recordings are stamped with the wall clock, so an offset
    of seconds is an alarm (and audited once per episode), cleared when the clock is right."""
    alarmed = False
    while True:
        alarm = clock_offset_alarm(gps.clock_offset_ms)
        if alarm is None:
            service.alarms.clear("clock_offset")
            alarmed = False
        else:
            service.alarms.raise_("clock_offset", alarm)
            if not alarmed:
                alarmed = True
                offset_s = round((gps.clock_offset_ms or 0.0) / 1000, 1)
                await asyncio.to_thread(audit.append, "gateway.clock_offset", offset_s=offset_s)
        await asyncio.sleep(CLOCK_CHECK_EVERY_S)


async def watch_speed(gps: GpsTracker, threshold_mps: float, events: asyncio.Queue[Event]) -> None:
    """Speed above `threshold_mps` (from GPS) is a trigger source like any other."""
    rule = SpeedRule(
        InputRule.threshold_above(SPEED_SOURCE, threshold=threshold_mps, hysteresis=2.0, hold_s=2.0)
    )
    while True:
        await asyncio.sleep(SPEED_SAMPLE_EVERY_S)
        now_ns = time.monotonic_ns()
        speed = gps.speed_mps(now_ns)
        event = rule.sample(float("nan") if speed is None else speed, now_ns)
        if event is not None:
            await events.put(event)


def _clocks_ns() -> tuple[int, int]:
    """(CLOCK_MONOTONIC, CLOCK_BOOTTIME) now: gpsd's client stamps fixes with the first,
    trusted time counts in the second (which includes suspend)."""
    return time.monotonic_ns(), time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def boottime_ms_of(
    event_mono_ns: int, before: tuple[int, int], after: tuple[int, int]
) -> int | None:
    """The CLOCK_BOOTTIME (ms) of an event stamped `event_mono_ns` (CLOCK_MONOTONIC) between the
    clock pairs `before` and `after`; None unless it provably lies between them with no suspend
    in between (then the two clocks differ by one constant). Pure."""
    offset_before_ns, offset_after_ns = before[1] - before[0], after[1] - after[0]
    if not before[0] <= event_mono_ns <= after[0]:
        return None
    if abs(offset_after_ns - offset_before_ns) > SUSPEND_SLACK_NS:
        return None
    return (event_mono_ns + offset_after_ns) // NS_PER_MS


async def watch_trusted_time(
    gps: GpsTracker, trusted: TrustedClock, *, sample_s: float = GPS_TIME_SAMPLE_S
) -> None:
    """Each new GPS fix with a time becomes an anchor of trusted time (storage/trusted_time.py
    judges it against the back office and the boot's earlier fixes). A change worth writing at
    once (a first anchor of GPS here or of the back office in the uplink, a conflict) is saved
    within `sample_s`, off the loop; refreshes wait for the retention timer's save."""
    seen = gps.fix
    before = _clocks_ns()
    while True:
        await asyncio.sleep(sample_s)
        fix = gps.fix  # read before the clocks: a fix received after them waits for the next
        after = _clocks_ns()
        if fix is not None and fix is not seen and fix.gps_time_ms is not None:
            seen = fix
            received_ms = boottime_ms_of(fix.received_mono_ns, before, after)
            if received_ms is not None:
                trusted.observe_gps(fix.gps_time_ms, received_ms)
        before = after
        if trusted.needs_save:
            await asyncio.to_thread(trusted.save)


async def keep_retention(
    store: EvidenceStore, every_s: float, *, wake_s: float = RETENTION_WAKE_S
) -> None:
    """Retention on its own timer, uplink or not (RULES S4): a pass every `every_s`, and one as
    soon as trusted time becomes known in this boot (a box that starts without the time judges
    its files minutes later, not a period later). The pass deletes, alarms and audits
    (`EvidenceStore.apply_retention`); what it proved about time is saved."""
    trusted = store.trusted
    loop = asyncio.get_running_loop()
    while True:
        if not store.card_faulted():  # a failing card: the card watch first (dying-card.md)
            await asyncio.to_thread(store.apply_retention)
        if trusted.dirty:
            await asyncio.to_thread(trusted.save)
        known = trusted.now().known
        due_s = loop.time() + every_s
        while (left_s := due_s - loop.time()) > 0:
            await asyncio.sleep(min(wake_s, left_s))
            if not known and trusted.now().known:
                break
