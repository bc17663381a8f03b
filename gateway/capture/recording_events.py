"""What happened around a recording, as events in its metadata (pure): the GPS lost and back,
alarms raised and cleared (a clock offset, a card fault, a camera's part failing).

The capture service samples the GPS status and the box's alarms on every tick while recording
and writes the difference; a recording starts from a baseline of "GPS fixed, no alarm", so a
recording that starts without a fix or with an alarm active says so in its first events.
Invariants: an event only for a change; each event names its `at_ms` (wall clock, a stamp).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GPS_FIX = "fix"  # gateway/gps.py GpsStatus.FIX.value


def gps_event(before: str, after: str, at_ms: int) -> dict[str, Any] | None:
    """`gps_lost` when a fix is lost (to no_fix, stale or no_gpsd), `gps_back` when it is
    regained; None when nothing that matters changed (e.g. stale -> no_gpsd)."""
    if (before == GPS_FIX) == (after == GPS_FIX):
        return None
    name = "gps_back" if after == GPS_FIX else "gps_lost"
    return {"type": "event", "name": name, "status": after, "at_ms": at_ms}


def alarm_events(
    before: Mapping[str, str], after: Mapping[str, str], at_ms: int
) -> list[dict[str, Any]]:
    """`alarm_raised` for each code now active that was not (or whose message changed),
    `alarm_cleared` for each code gone; sorted by code, so the order is reproducible."""
    events: list[dict[str, Any]] = []
    for code in sorted(set(before) | set(after)):
        if code in after and before.get(code) != after[code]:
            events.append(
                {
                    "type": "event",
                    "name": "alarm_raised",
                    "code": code,
                    "message": after[code],
                    "at_ms": at_ms,
                }
            )
        elif code not in after:
            events.append({"type": "event", "name": "alarm_cleared", "code": code, "at_ms": at_ms})
    return events
