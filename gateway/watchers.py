"""The service's small loops that are neither capture nor uplink: the recorder's event queue,
the wall clock against GPS time, and speed as a trigger. Each runs as a supervised child of
`mvb run` (gateway/supervisor.py); each takes only the parts it reads or feeds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from common.faults import IllegalTransition
from gateway.capture.service import CaptureService
from gateway.gps import GpsTracker
from gateway.inputs import InputRule, SpeedRule
from gateway.recorder import Event
from gateway.startup import clock_offset_alarm
from storage.audit_io import AuditLog

CLOCK_CHECK_EVERY_S = 30.0
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
            await service.submit(event)
        except IllegalTransition:
            ignored()


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
