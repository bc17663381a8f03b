"""Trusted time: what the box may believe about the date when it destroys evidence. PURE.

The wall clock stamps recordings; it never decides a deletion (DESIGN principle 7). A box without
an RTC battery starts in 1970 or wherever its clock stood, a technician sets it by hand, NTP is
not authenticated: a wall-clock step forward would expire every unuploaded file at once, and a
recording made while the clock stood behind would look old as soon as it is set. Trusted time is
instead this boot's monotonic clock (CLOCK_BOOTTIME in the shell: it counts suspend and never
steps), tied to a wall time from a source the box trusts by an *anchor*:

- `BACK_OFFICE`: the `Date` of a response read over the pinned mutual-TLS link (only the back
  office holds the pinned key, so the header is authenticated). It is the authority.
- `GPS`: a fix's time (gpsd TPV `time`). Radio, unauthenticated, but present without a link.

An anchor says "when this boot's clock read `mono_ms`, true time lay in `wall`". Projected to
another reading of the same boot it widens by the clock's worst drift (MONO_DRIFT_PPM). A reading
of another boot cannot use it: the monotonic clock restarts at every boot (a power cut), so each
boot needs an anchor of its own. What survives a reboot is the *floor*: the highest lower bound
of trusted time any earlier pass established (time does not run backwards).

Invariants (assuming honest sources; tests/storage/test_trusted_time.py and test_retention.py):
- every interval this module returns for a reading contains the true time of that reading;
- the low bound never exceeds the true time and the high bound never falls below it, whatever
  the wall clock did: no function here takes the wall clock as input;
- disagreeing sources never widen trust: the back office wins over GPS; a GPS fix that jumps away
  from the boot's earlier fixes (or falls below the floor) is refused; either way `conflict_ms`
  says by how much, for the alarm.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

MONO_DRIFT_PPM: Final = 500
"""Worst rate error of the monotonic clock: the kernel slews it by at most 500 ppm (MAXFREQ), far
more than a crystal drifts. Over 28 days without a new anchor that is +-20 min of doubt."""
SOURCES_TOLERANCE_MS: Final = 60_000
"""Two sources whose intervals lie closer than this agree. Wider than a receiver's missing leap
seconds (18 s before it has the almanac); far narrower than anything retention cares about."""
GPS_LATENCY_MAX_MS: Final = 2_000
"""From a fix's epoch to its reception through gpsd: tens to hundreds of ms; bounded generously."""
HTTP_DATE_RESOLUTION_MS: Final = 1_000
"""An HTTP-date has whole seconds (RFC 9110 5.6.7)."""
EARLIEST_TRUSTED_MS: Final = 1_735_689_600_000
"""2025-01-01T00:00:00Z, before this software existed: an anchor saying earlier is wrong (a GPS
receiver's week-number rollover throws it back 1024 weeks) and is refused."""
STATE_VERSION: Final = 1


class TimeSource(enum.StrEnum):
    GPS = "gps"
    BACK_OFFICE = "back_office"


class Verdict(enum.StrEnum):
    """What `observe` did with an anchor."""

    FIRST = "first"  # the first anchor of its source in this boot: trusted time may be new
    REFRESHED = "refreshed"  # agrees with what was trusted and narrows it
    CORRECTED = "corrected"  # the back office overruled GPS or the floor (conflict_ms: by how much)
    REFUSED = "refused"  # disagrees with what is trusted, or is of another boot: not used


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading of a boot's monotonic clock (ms since that boot)."""

    boot_id: str
    mono_ms: int


@dataclass(frozen=True, slots=True)
class Interval:
    """A closed interval of wall time in ms since the epoch. Invariant: low_ms <= high_ms."""

    low_ms: int
    high_ms: int

    def __post_init__(self) -> None:
        if self.low_ms > self.high_ms:
            raise ValueError(f"empty interval [{self.low_ms}, {self.high_ms}]")

    @property
    def width_ms(self) -> int:
        return self.high_ms - self.low_ms

    def distance_ms(self, other: Interval) -> int:
        """0 when they overlap, else the gap between them."""
        return max(0, other.low_ms - self.high_ms, self.low_ms - other.high_ms)

    def intersect(self, other: Interval) -> Interval | None:
        low, high = max(self.low_ms, other.low_ms), min(self.high_ms, other.high_ms)
        return Interval(low, high) if low <= high else None

    def hull(self, other: Interval) -> Interval:
        return Interval(min(self.low_ms, other.low_ms), max(self.high_ms, other.high_ms))


def drift_ms(elapsed_ms: int) -> int:
    """The doubt that `elapsed_ms` of monotonic time adds in either direction: the clock's worst
    rate error (rounded up), plus 1 ms because each of the two readings was cut to whole ms."""
    return math.ceil(abs(elapsed_ms) * MONO_DRIFT_PPM / 1_000_000) + 1


@dataclass(frozen=True, slots=True)
class Anchor:
    """When boot `boot_id`'s clock read `mono_ms`, true wall time lay within `wall`."""

    source: TimeSource
    boot_id: str
    mono_ms: int
    wall: Interval

    def at(self, mono_ms: int) -> Interval:
        """The anchor carried to another reading of the same boot (backwards works too)."""
        elapsed_ms = mono_ms - self.mono_ms
        doubt_ms = drift_ms(elapsed_ms)
        return Interval(
            self.wall.low_ms + elapsed_ms - doubt_ms, self.wall.high_ms + elapsed_ms + doubt_ms
        )


def gps_anchor(gps_time_ms: int, received: Reading) -> Anchor:
    """A fix stamped `gps_time_ms`, received by gpsd's client at `received`."""
    wall = Interval(gps_time_ms, gps_time_ms + GPS_LATENCY_MAX_MS)
    return Anchor(TimeSource.GPS, received.boot_id, received.mono_ms, wall)


def back_office_anchor(date: str | None, received: Reading, rtt_ms: int) -> Anchor | None:
    """The back office's `Date` read at `received`, `rtt_ms` after its request was sent; None
    for a missing or malformed header. The server wrote it at some instant of the exchange, so
    true time at `received` lies in [date, date + 1 s + rtt]."""
    date_ms = parse_http_date_ms(date)
    if date_ms is None or rtt_ms < 0:
        return None
    wall = Interval(date_ms, date_ms + HTTP_DATE_RESOLUTION_MS - 1 + rtt_ms)
    return Anchor(TimeSource.BACK_OFFICE, received.boot_id, received.mono_ms, wall)


def parse_http_date_ms(value: str | None) -> int | None:
    """An HTTP-date (IMF-fixdate, or the obsolete forms) in ms; None unless it names GMT."""
    if value is None or len(value) > 64:
        return None
    try:
        stamp = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if stamp.tzinfo is None or stamp.utcoffset() != UTC.utcoffset(None):
        return None  # "-0000" (unknown zone) or a local time: not a statement about UTC
    return int(stamp.astimezone(UTC).timestamp()) * 1000


@dataclass(frozen=True, slots=True)
class CreatedTime:
    """When a file was created, in trusted time: at most `high_ms` (at least `low_ms`, None
    when unknown). `by` says how it was learnt: "anchor" (trusted time was known when it was
    recorded), "same_boot" (an anchor of its boot came later), "seen" (it existed when trusted
    time became known: its age counts from then, at the latest)."""

    low_ms: int | None
    high_ms: int
    by: str


@dataclass(frozen=True, slots=True)
class TrustedNow:
    """Trusted time at `reading`: at least `low_ms` (None: nothing known), at most `high_ms`
    (None: no anchor in this boot, so no upper bound). `source` names what it rests on."""

    reading: Reading
    low_ms: int | None
    high_ms: int | None
    source: str

    @property
    def known(self) -> bool:
        return self.low_ms is not None and self.high_ms is not None


@dataclass(frozen=True, slots=True)
class TrustedState:
    """What the box trusts about time in boot `boot_id`: one anchor per source (of this boot
    only), the floor (a lower bound of trusted time carried across boots) and the last
    disagreement between sources in this boot (None: none, or resolved)."""

    boot_id: str
    gps: Anchor | None = None
    back_office: Anchor | None = None
    floor_ms: int = EARLIEST_TRUSTED_MS
    conflict_ms: int | None = None

    def for_boot(self, boot_id: str) -> TrustedState:
        """This state as seen from boot `boot_id`: another boot keeps only the floor."""
        if boot_id == self.boot_id:
            return self
        return TrustedState(boot_id, floor_ms=self.floor_ms)


def interval_at(state: TrustedState, mono_ms: int) -> tuple[Interval, str] | None:
    """Trusted time at this boot's reading `mono_ms` from the anchors alone, with its source."""
    gps = None if state.gps is None else state.gps.at(mono_ms)
    office = None if state.back_office is None else state.back_office.at(mono_ms)
    if gps is not None and office is not None:
        if gps.distance_ms(office) > SOURCES_TOLERANCE_MS:
            return office, TimeSource.BACK_OFFICE.value  # the back office wins
        # Both honest: truth is in both. Close but apart (within tolerance): one is slightly
        # off and we cannot tell which, so both may hold it.
        return gps.intersect(office) or gps.hull(office), "gps+back_office"
    if office is not None:
        return office, TimeSource.BACK_OFFICE.value
    if gps is not None:
        return gps, TimeSource.GPS.value
    return None


def trusted_now(state: TrustedState, reading: Reading) -> TrustedNow:
    """Trusted time at `reading` (a reading of `state.boot_id`)."""
    if reading.boot_id != state.boot_id:
        raise ValueError("a reading of another boot: carry the state over with for_boot first")
    found = interval_at(state, reading.mono_ms)
    if found is None:
        return TrustedNow(reading, state.floor_ms, None, "floor")
    interval, source = found
    low_ms = interval.low_ms
    if low_ms < state.floor_ms <= interval.high_ms:
        low_ms = state.floor_ms  # an earlier pass knew more than this anchor's doubt allows
    return TrustedNow(reading, low_ms, interval.high_ms, source)


def created_now(state: TrustedState, reading: Reading) -> CreatedTime | None:
    """The trusted time of a file created at `reading`, if an anchor of this boot exists."""
    found = interval_at(state, reading.mono_ms)
    if found is None:
        return None
    interval, _ = found
    return CreatedTime(interval.low_ms, interval.high_ms, "anchor")


def resolve_created(
    boot_id: str | None, mono_ms: int | None, state: TrustedState, now: TrustedNow
) -> CreatedTime | None:
    """Bound the creation time of a file recorded while trusted time was unknown (or by an
    older version that did not note it): exactly, by an anchor of the boot it was recorded in
    (`same_boot`); otherwise by "it exists now" (`seen`) once trusted time is known. None while
    neither is possible: the file's age cannot be judged and retention keeps it.

    `seen` is the only bound for a file of another boot: its boot may have ended long ago, or
    the card may come from another box, so nothing about this boot dates it."""
    same_boot = boot_id == state.boot_id == now.reading.boot_id
    if same_boot and mono_ms is not None and mono_ms <= now.reading.mono_ms:
        found = interval_at(state, mono_ms)
        if found is not None:
            return CreatedTime(found[0].low_ms, found[0].high_ms, "same_boot")
    if now.high_ms is not None:
        return CreatedTime(None, now.high_ms, "seen")
    return None


def advance_floor(state: TrustedState, now: TrustedNow) -> TrustedState:
    """Raise the floor to what `now` proves (a pass ran at it); never lowers it."""
    if now.reading.boot_id != state.boot_id or now.high_ms is None or now.low_ms is None:
        return state
    return replace(state, floor_ms=max(state.floor_ms, now.low_ms))


# -- observing anchors ------------------------------------------------------------------------


def observe(state: TrustedState, anchor: Anchor) -> tuple[TrustedState, Verdict]:
    """Take one anchor; returns the new state and what was done with it."""
    if anchor.boot_id != state.boot_id or anchor.wall.high_ms < EARLIEST_TRUSTED_MS:
        return state, Verdict.REFUSED
    if anchor.source is TimeSource.BACK_OFFICE:
        return _observe_back_office(state, anchor)
    return _observe_gps(state, anchor)


def _observe_back_office(state: TrustedState, anchor: Anchor) -> tuple[TrustedState, Verdict]:
    """The back office is the authority: always taken. GPS that disagrees with it is dropped,
    a floor above it is lowered to it (the floor then came from a wrong source)."""
    at_ms = anchor.mono_ms
    verdict = Verdict.FIRST if state.back_office is None else Verdict.REFRESHED
    wall = anchor.wall
    if state.back_office is not None:
        # Overlapping with its own earlier word: both hold, keep the narrower common part.
        # Apart: the back office's clock was corrected since; its latest word counts.
        wall = state.back_office.at(at_ms).intersect(wall) or wall
    office = replace(anchor, wall=wall)
    gps, floor_ms, conflict_ms = state.gps, state.floor_ms, None
    if gps is not None:
        apart_ms = gps.at(at_ms).distance_ms(wall)
        if apart_ms > SOURCES_TOLERANCE_MS:
            gps, conflict_ms, verdict = None, apart_ms, Verdict.CORRECTED
    if floor_ms > wall.high_ms:
        conflict_ms = max(conflict_ms or 0, floor_ms - wall.high_ms)
        floor_ms, verdict = max(EARLIEST_TRUSTED_MS, wall.low_ms), Verdict.CORRECTED
    new = TrustedState(state.boot_id, gps, office, floor_ms, conflict_ms)
    return new, verdict


def _observe_gps(state: TrustedState, anchor: Anchor) -> tuple[TrustedState, Verdict]:
    """GPS is taken when it agrees with the back office (if it spoke in this boot), with the
    boot's earlier fixes, and with the floor; otherwise refused and the conflict noted."""
    at_ms = anchor.mono_ms
    wall = anchor.wall
    below_floor_ms = state.floor_ms - wall.high_ms
    if below_floor_ms > SOURCES_TOLERANCE_MS:
        return replace(state, conflict_ms=below_floor_ms), Verdict.REFUSED
    if state.back_office is not None:
        apart_ms = state.back_office.at(at_ms).distance_ms(wall)
        if apart_ms > SOURCES_TOLERANCE_MS:
            return replace(state, conflict_ms=apart_ms), Verdict.REFUSED
    if state.gps is None:
        return replace(state, gps=anchor, conflict_ms=None), Verdict.FIRST
    earlier = state.gps.at(at_ms)
    apart_ms = earlier.distance_ms(wall)
    if apart_ms > SOURCES_TOLERANCE_MS and state.back_office is None:
        # A jump with no authority to arbitrate: stay on the boot's first timeline (a
        # spoofer that takes over mid-boot must not move it), and say so.
        return replace(state, conflict_ms=apart_ms), Verdict.REFUSED
    # With the back office agreeing, a GPS timeline that drifted away is simply replaced.
    if apart_ms > SOURCES_TOLERANCE_MS:
        merged = wall
    else:
        merged = earlier.intersect(wall) or earlier.hull(wall)
    return replace(state, gps=replace(anchor, wall=merged), conflict_ms=None), Verdict.REFRESHED


# -- the state as JSON (the shell keeps it in the state directory) --------------------------------


def state_to_json(state: TrustedState) -> str:
    anchors = [a for a in (state.gps, state.back_office) if a is not None]
    return json.dumps(
        {
            "version": STATE_VERSION,
            "boot_id": state.boot_id,
            "floor_ms": state.floor_ms,
            "conflict_ms": state.conflict_ms,
            "anchors": [
                {
                    "source": a.source.value,
                    "mono_ms": a.mono_ms,
                    "low_ms": a.wall.low_ms,
                    "high_ms": a.wall.high_ms,
                }
                for a in anchors
            ],
        },
        sort_keys=True,
    )


def state_from_json(text: str) -> TrustedState:
    """What `state_to_json` wrote; ValueError for anything else."""
    obj = json.loads(text)
    if not isinstance(obj, dict) or obj.get("version") != STATE_VERSION:
        raise ValueError("not a trusted-time state of this version")
    boot_id = _field(obj, "boot_id", str)
    anchors: dict[TimeSource, Anchor] = {}
    raw_anchors = obj.get("anchors")
    if not isinstance(raw_anchors, list):
        raise ValueError("anchors is not a list")
    for raw in raw_anchors:
        if not isinstance(raw, dict):
            raise ValueError("an anchor is not an object")
        source = TimeSource(_field(raw, "source", str))
        wall = Interval(_field(raw, "low_ms", int), _field(raw, "high_ms", int))
        anchors[source] = Anchor(source, boot_id, _field(raw, "mono_ms", int), wall)
    conflict = obj.get("conflict_ms")
    if conflict is not None and (isinstance(conflict, bool) or not isinstance(conflict, int)):
        raise ValueError("conflict_ms is not an int")
    return TrustedState(
        boot_id,
        anchors.get(TimeSource.GPS),
        anchors.get(TimeSource.BACK_OFFICE),
        max(EARLIEST_TRUSTED_MS, _field(obj, "floor_ms", int)),
        conflict,
    )


def _field(obj: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{name} is not {kind.__name__}")
    return value


def describe(now: TrustedNow) -> str:
    """One line for a person: what trusted time is and how sure the box is of it."""
    if now.low_ms is None:
        return "trusted time unknown"
    low = datetime.fromtimestamp(now.low_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if now.high_ms is None:
        return f"trusted time unknown in this boot; at least {low} UTC (from an earlier boot)"
    doubt_s = (now.high_ms - now.low_ms) / 1000
    return f"trusted time {low} UTC (+{doubt_s:.0f} s) from {now.source}"
