"""Vehicle inputs, the pure core: lights, siren, door, speed and acceleration turned into events.

Like the recorder (RULES R2-R3), the decisions are pure and the I/O is a thin shell around them:

- here (pure): `InputRule` says what one input is and which edges matter; `InputDebouncer` (a
  level line), `SpeedRule` (GPS speed) and `CrashRule` (accelerometer) take samples *with their
  time* and return `Event`s; `InputHealth` is the snapshot a shell reports; `parse_sysfs_level`
  and `parse_iio_number` read the kernel's attribute formats. Nothing here reads a file, a clock
  or a queue, so tests drive the rules sample by sample.
- gateway/inputs_io.py (the shell): the pollers of sysfs GPIO and IIO accelerometers, the GPIO
  character device reader (its kernel ABI, pure, in gateway/gpio_uapi.py), and the bounded queue
  they all feed. gateway/inputs_sim.py: simulated inputs for the demo and the tests.

What reaches the recorder: a rising edge (input became active) is a TRIGGER; a falling edge is a
STOP only if the rule asks for it (`on_fall`). Whether that source may stop a recording is the
recorder's policy (`TriggerPolicy.may_stop`), not the input's.

Invariants: every detector changes state only inside `sample` (or `poll`), at most once per call,
and the event it returns describes exactly that change. Times are nanoseconds on one monotonic
clock (`time.monotonic_ns`, CLOCK_MONOTONIC on Linux, the clock the kernel stamps GPIO edge events
with); the caller passes them in.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Protocol

from gateway.recorder import Event, EventKind

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
STANDARD_GRAVITY_MPS2 = 9.80665


# -- rules: configuration ---------------------------------------------------------------------


class InputKind(enum.Enum):
    LEVEL = "level"  # a line that is on or off: lights, siren, door, button
    THRESHOLD = "threshold"  # a measured value compared with a limit: speed


@dataclass(frozen=True, slots=True)
class InputRule:
    """What one input is. Build with `InputRule.level(...)` or `InputRule.threshold(...)`.

    LEVEL: `active_low` inverts the line (a door contact that pulls to ground); a change counts
    once the line has shown the new level for `debounce_ms`.
    THRESHOLD: active when the value stays above `threshold` for `hold_s`; released when it falls
    below `threshold - hysteresis`, so a speed wobbling around the limit is one event, not many.

    `on_rise` (became active) emits TRIGGER; `on_fall` (became inactive) emits STOP.
    """

    source: str
    kind: InputKind = InputKind.LEVEL
    active_low: bool = False
    debounce_ms: float = 50.0
    threshold: float = 0.0
    hysteresis: float = 0.0
    hold_s: float = 0.0
    on_rise: bool = True
    on_fall: bool = False

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("an input needs a source name (it is audited, RULES R3)")
        for name in ("debounce_ms", "hysteresis", "hold_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, not {value}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, not {self.threshold}")

    @classmethod
    def level(
        cls,
        source: str,
        *,
        active_low: bool = False,
        debounce_ms: float = 50.0,
        on_rise: bool = True,
        on_fall: bool = False,
    ) -> InputRule:
        return cls(
            source,
            InputKind.LEVEL,
            active_low=active_low,
            debounce_ms=debounce_ms,
            on_rise=on_rise,
            on_fall=on_fall,
        )

    @classmethod
    def threshold_above(
        cls,
        source: str,
        *,
        threshold: float,
        hysteresis: float = 0.0,
        hold_s: float = 0.0,
        on_rise: bool = True,
        on_fall: bool = False,
    ) -> InputRule:
        return cls(
            source,
            InputKind.THRESHOLD,
            threshold=threshold,
            hysteresis=hysteresis,
            hold_s=hold_s,
            on_rise=on_rise,
            on_fall=on_fall,
        )


def _edge_event(
    rule: InputRule, active: bool, now_ns: int, facts: dict[str, object]
) -> Event | None:
    """The event for a committed change, or None when the rule ignores that direction."""
    if active and rule.on_rise:
        return Event(EventKind.TRIGGER, now_ns, rule.source, facts)
    if not active and rule.on_fall:
        return Event(EventKind.STOP, now_ns, rule.source, facts)
    return None


# -- pure detectors ---------------------------------------------------------------------------


class InputDebouncer:
    """Debounces one level line and reports its edges.

    Invariants:
    - `active` changes only when samples have shown the new logical level continuously for at
      least `debounce_ms` (measured between sample times); a sample showing the old level forgets
      the pending change, so a bounce restarts the wait;
    - every change of `active` happens inside `sample`/`poll`, at most one per call, and sets
      `changed_ns`; the returned event (if any) describes exactly that change.
    """

    def __init__(self, rule: InputRule, *, initial_active: bool = False) -> None:
        if rule.kind is not InputKind.LEVEL:
            raise ValueError(f"{rule.source}: InputDebouncer needs a LEVEL rule")
        self.rule = rule
        self.source = rule.source
        self.active = initial_active
        self.changed_ns: int | None = None
        self.last_raw: int | None = None
        self._debounce_ns = int(rule.debounce_ms * NS_PER_MS)
        self._pending_since_ns: int | None = None

    @property
    def last_value(self) -> float | None:
        return None if self.last_raw is None else float(self.last_raw)

    @property
    def pending(self) -> bool:
        """A change has been seen but not yet held for the debounce time."""
        return self._pending_since_ns is not None

    def sample(self, raw: int | bool, now_ns: int) -> Event | None:
        """Feed the physical line level read at `now_ns`."""
        self.last_raw = 1 if raw else 0
        level = bool(raw) != self.rule.active_low
        if level == self.active:
            self._pending_since_ns = None
            return None
        if self._pending_since_ns is None:
            self._pending_since_ns = now_ns
        if now_ns - self._pending_since_ns < self._debounce_ns:
            return None
        return self._commit(level, now_ns)

    def poll(self, now_ns: int) -> Event | None:
        """The line still shows its last level at `now_ns`: for sources that only report edges."""
        if self.last_raw is None:
            return None
        return self.sample(self.last_raw, now_ns)

    def _commit(self, level: bool, now_ns: int) -> Event | None:
        self.active = level
        self.changed_ns = now_ns
        self._pending_since_ns = None
        facts: dict[str, object] = {"input": self.source, "value": int(level)}
        return _edge_event(self.rule, level, now_ns, facts)


EdgeDetector = InputDebouncer


class _Threshold:
    """Above `above` for `hold_ns` -> active; below `release_below` -> inactive.

    Invariant: `peak` is the largest value seen since the pending rise began (the value that
    justified the trigger); a non-finite sample (no GPS fix, sensor fault) restarts the hold,
    because a rise must be backed by continuous measurements.
    """

    def __init__(self, above: float, release_below: float, hold_ns: int) -> None:
        self.above = above
        self.release_below = release_below
        self.hold_ns = hold_ns
        self.active = False
        self.changed_ns: int | None = None
        self.peak = 0.0
        self._pending_since_ns: int | None = None

    def sample(self, value: float, now_ns: int) -> bool | None:
        """The new state when this sample changes it, else None."""
        if not math.isfinite(value):
            self._pending_since_ns = None
            return None
        if self.active:
            return self._maybe_release(value, now_ns)
        if value <= self.above:
            self._pending_since_ns = None
            return None
        if self._pending_since_ns is None:
            self._pending_since_ns = now_ns
            self.peak = value
        self.peak = max(self.peak, value)
        if now_ns - self._pending_since_ns < self.hold_ns:
            return None
        self.active = True
        self.changed_ns = now_ns
        self._pending_since_ns = None
        return True

    def _maybe_release(self, value: float, now_ns: int) -> bool | None:
        if value >= self.release_below:
            return None
        self.active = False
        self.changed_ns = now_ns
        return False


class SpeedRule:
    """Speed above a limit (from GPS), with hold time and release hysteresis.

    Invariant: a TRIGGER needs every sample for `hold_s` to be above the threshold; once active,
    only a sample below `threshold - hysteresis` releases it (STOP if `on_fall`).
    """

    def __init__(self, rule: InputRule) -> None:
        if rule.kind is not InputKind.THRESHOLD:
            raise ValueError(f"{rule.source}: SpeedRule needs a THRESHOLD rule")
        self.rule = rule
        self.source = rule.source
        self.last_value: float | None = None
        self._threshold = _Threshold(
            rule.threshold, rule.threshold - rule.hysteresis, int(rule.hold_s * NS_PER_S)
        )

    @property
    def active(self) -> bool:
        return self._threshold.active

    @property
    def changed_ns(self) -> int | None:
        return self._threshold.changed_ns

    def sample(self, speed_mps: float, now_ns: int) -> Event | None:
        self.last_value = speed_mps
        change = self._threshold.sample(speed_mps, now_ns)
        if change is None:
            return None
        facts: dict[str, object] = {"speed_mps": speed_mps, "threshold_mps": self.rule.threshold}
        return _edge_event(self.rule, change, now_ns, facts)


class CrashRule:
    """Crash or hard braking from an accelerometer: horizontal |a| above `threshold_g`.

    The sensor is mounted with z vertical, so gravity and potholes (az) are left out; x and y
    together cover braking, acceleration and side impacts. `hold_ms` > 0 ignores spikes shorter
    than that (useful with an unfiltered sensor). The trigger carries `peak_g`, the largest
    horizontal acceleration seen while the rise was pending.

    Invariant: one TRIGGER per excursion; the rule re-arms only after the acceleration fell below
    `threshold_g - hysteresis_g`. It never emits STOP: a crash does not end the incident.
    """

    def __init__(
        self,
        source: str = "crash",
        *,
        threshold_g: float = 0.5,
        hysteresis_g: float = 0.1,
        hold_ms: float = 0.0,
    ) -> None:
        if not (math.isfinite(threshold_g) and threshold_g > 0):
            raise ValueError(f"threshold_g must be > 0, not {threshold_g}")
        if not (0 <= hysteresis_g < threshold_g):
            raise ValueError(f"hysteresis_g must be in [0, threshold_g), not {hysteresis_g}")
        if not (math.isfinite(hold_ms) and hold_ms >= 0):
            raise ValueError(f"hold_ms must be >= 0, not {hold_ms}")
        self.source = source
        self.threshold_g = threshold_g
        self.last_value: float | None = None
        self._threshold = _Threshold(
            threshold_g, threshold_g - hysteresis_g, int(hold_ms * NS_PER_MS)
        )

    @property
    def active(self) -> bool:
        return self._threshold.active

    @property
    def changed_ns(self) -> int | None:
        return self._threshold.changed_ns

    def sample(self, ax: float, ay: float, az: float, now_ns: int) -> Event | None:
        """Feed one sample in m/s^2. `az` is accepted as the sensor gives it and not used."""
        del az  # vertical: gravity and road bumps, not a collision or braking
        horizontal_g = math.hypot(ax, ay) / STANDARD_GRAVITY_MPS2
        self.last_value = horizontal_g
        if self._threshold.sample(horizontal_g, now_ns) is not True:
            return None
        facts: dict[str, object] = {
            "peak_g": round(self._threshold.peak, 3),
            "threshold_g": self.threshold_g,
            "ax_mps2": ax,
            "ay_mps2": ay,
        }
        return Event(EventKind.TRIGGER, now_ns, self.source, facts)


# -- health and formats ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputHealth:
    """A snapshot of one input for the status page and the audit."""

    source: str
    ok: bool
    error: str | None  # the last failure while it lasts; None once a read succeeds again
    errors: int  # failures since start
    active: bool  # the debounced state
    last_value: float | None  # the last raw sample: line level, m/s, horizontal g
    last_change_age_s: float | None  # since `active` last changed; None: never changed
    dropped: int  # events this input dropped from the full queue to make room for its own


class Detector(Protocol):
    """What a shell reads from any rule to report its health."""

    @property
    def source(self) -> str: ...
    @property
    def active(self) -> bool: ...
    @property
    def changed_ns(self) -> int | None: ...
    @property
    def last_value(self) -> float | None: ...


def parse_sysfs_level(data: bytes) -> int:
    """`b"0\\n"` -> 0, `b"1\\n"` -> 1; anything else is an error, never a guess."""
    text = data.strip()
    if text == b"0":
        return 0
    if text == b"1":
        return 1
    raise ValueError(f"not a GPIO level: {data[:16]!r}")


def parse_iio_number(data: bytes) -> float:
    """An IIO sysfs attribute: one decimal number (`b"-123\\n"`, `b"0.009576\\n"`)."""
    value = float(data.strip().decode("ascii"))
    if not math.isfinite(value):
        raise ValueError(f"not a finite IIO value: {data[:24]!r}")
    return value
