"""How far a rollout got, from the boxes' health reports (docs/fleet-health.md). PURE.

Each targeted box is in exactly one bucket:
- **on version**: its latest report says `software_version` = the rollout's version (a
  configuration rollout: its applied serial has reached the serial signed for it);
- **failed**: it rolled the release back (the sticky alarm `release_rolled_back` of the A/B
  switch, docs/releases.md 5), or it refused the rollout's document (its applied serial is below
  the serial the rollout signed for it and its last outcome is a refusal, with the reason);
- **waiting**: anything else (no report since the rollout started, an older version, a document
  deferred or not fetched yet).

A box is **stale** (named apart, whatever its bucket) when the back office has no report of it
received within `stale_after_ms` (backoffice/fleet_status.py's rule): off, out of reach, broken.

The health gate (`canary_healthy`): every canary box is on version, none failed, none stale, and
each has reported since the rollout started (a report of before says nothing of it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from backoffice.fleet_health import BoxHealth
from backoffice.rollout import Rollout

ROLLED_BACK_ALARMS: Final = frozenset({"release_rolled_back", "release_refused"})
"""Alarm codes that mean the box tried the release and went back (gateway/release_report.py) or
refused the pinned release (gateway/release_update.py: a downgrade, a wrong key, a tampered or
uninstallable bundle; cleared once the pin is acted on)."""
_NOT_REFUSALS: Final = frozenset({"", "applied"})
"""Last outcomes that are no refusal; a deferral ("deferred: ...", gateway/fleet_apply.py) waits."""


@dataclass(frozen=True, slots=True)
class BoxProgress:
    box_id: str
    bucket: str  # "on_version", "failed", "waiting"
    stale: bool
    reported_since_start: bool
    software_version: str | None
    reason: str  # why failed, or what it waits for


@dataclass(frozen=True, slots=True)
class Progress:
    boxes: tuple[BoxProgress, ...]

    def count(self, bucket: str, among: Iterable[str] | None = None) -> int:
        names = None if among is None else set(among)
        return sum(
            1 for b in self.boxes if b.bucket == bucket and (names is None or b.box_id in names)
        )

    @property
    def stale(self) -> tuple[str, ...]:
        return tuple(b.box_id for b in self.boxes if b.stale)

    @property
    def all_on_version(self) -> bool:
        return all(b.bucket == "on_version" for b in self.boxes)

    def to_json_object(self) -> dict[str, Any]:
        return {
            "targeted": len(self.boxes),
            "on_version": self.count("on_version"),
            "failed": self.count("failed"),
            "waiting": self.count("waiting"),
            "stale": list(self.stale),
            "boxes": [
                {
                    "box_id": b.box_id,
                    "bucket": b.bucket,
                    "stale": b.stale,
                    "software_version": b.software_version,
                    "reason": b.reason,
                }
                for b in self.boxes
            ],
        }


def progress(
    rollout: Rollout, reports: Iterable[BoxHealth], now_ms: int, stale_after_ms: int
) -> Progress:
    latest = {report.box_id: report for report in reports}
    return Progress(
        tuple(
            _box(rollout, box, latest.get(box), now_ms, stale_after_ms)
            for box in sorted(rollout.targets)
        )
    )


def _box(
    rollout: Rollout, box: str, report: BoxHealth | None, now_ms: int, stale_after_ms: int
) -> BoxProgress:
    if report is None:
        return BoxProgress(box, "waiting", True, False, None, "no health report yet")
    health = report.health
    stale = now_ms - report.received_at_ms > stale_after_ms
    since = report.received_at_ms >= rollout.started_at_ms
    version = str(health["software_version"])
    alarms = set(health["alarms"]) & ROLLED_BACK_ALARMS
    outcome = str(health["config_last_outcome"])
    serial = rollout.serial_for(box)
    refused = (
        serial is not None
        and int(health["config_applied_serial"]) < serial
        and outcome not in _NOT_REFUSALS
        and not outcome.startswith("deferred")
    )
    if alarms:
        bucket, reason = "failed", f"rolled back ({', '.join(sorted(alarms))})"
    elif refused:
        bucket, reason = "failed", f"refused: {outcome}"
    elif _on_version(rollout, health, serial):
        bucket, reason = "on_version", ""
    else:
        bucket, reason = "waiting", _waits_for(health, serial)
    return BoxProgress(box, bucket, stale, since, version, reason)


def _on_version(rollout: Rollout, health: dict[str, Any], serial: int | None) -> bool:
    """A release: the box runs it. A configuration: it applied the document signed for it (or
    a later one: serials only grow)."""
    if rollout.kind == "config":
        return serial is not None and int(health["config_applied_serial"]) >= serial
    return str(health["software_version"]) == rollout.version


def _waits_for(health: dict[str, Any], serial: int | None) -> str:
    if serial is None:
        return "its document is not signed yet (canary, or not promoted)"
    if int(health["config_applied_serial"]) < serial:
        return f"its document (serial {serial}) not applied yet"
    return f"runs {health['software_version']}: the release not installed yet"


def canary_healthy(rollout: Rollout, state: Progress) -> tuple[bool, list[str]]:
    """Whether the canary may be promoted, and what stands in the way when not."""
    problems = []
    canary = set(rollout.canary)
    for box in state.boxes:
        if box.box_id not in canary:
            continue
        if box.bucket == "failed":
            problems.append(f"{box.box_id} failed: {box.reason}")
        elif box.stale:
            problems.append(f"{box.box_id} is stale")
        elif not box.reported_since_start:
            problems.append(f"{box.box_id} has not reported since the rollout started")
        elif box.bucket != "on_version":
            problems.append(f"{box.box_id} waits: {box.reason}")
    return not problems, problems
