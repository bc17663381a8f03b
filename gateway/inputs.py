"""Vehicle inputs: lights, siren, door, speed and acceleration turned into recorder events.

A pure core and thin asyncio shells, like the recorder (RULES R2-R3):

- `InputRule` says what one input is and which edges matter; `InputDebouncer` (a level line),
  `SpeedRule` (GPS speed) and `CrashRule` (accelerometer) take samples *with their time* and return
  `Event`s. They read no file and no clock, so tests drive them sample by sample.
- `SysfsGpioInput` polls `/sys/class/gpio/gpioN/value`; `GpioChardevInput` asks `/dev/gpiochipN`
  for edge events (GPIO v2 uAPI); `SimulatedInputs` holds values set by the demo and the tests.
  All three feed the same rules and put events into one bounded `asyncio.Queue[Event]`; when the
  queue is full the oldest event is dropped and counted, because a poller that blocks on a slow
  consumer would stop seeing the lights at all.

What reaches the recorder: a rising edge (input became active) is a TRIGGER; a falling edge is a
STOP only if the rule asks for it (`on_fall`). Whether that source may stop a recording is the
recorder's policy (`TriggerPolicy.may_stop`), not the input's.

Times are nanoseconds on one monotonic clock (`time.monotonic_ns`, CLOCK_MONOTONIC on Linux, the
clock the kernel stamps GPIO edge events with).
"""

from __future__ import annotations

import abc
import asyncio
import enum
import fcntl
import math
import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.recorder import Event, EventKind

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
STANDARD_GRAVITY_MPS2 = 9.80665

Clock = Callable[[], int]


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


# -- health and the queue ---------------------------------------------------------------------


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


class _Detector(Protocol):
    @property
    def source(self) -> str: ...
    @property
    def active(self) -> bool: ...
    @property
    def changed_ns(self) -> int | None: ...
    @property
    def last_value(self) -> float | None: ...


def require_bounded(queue: asyncio.Queue[Event]) -> None:
    """Inputs only write to bounded queues: an unbounded one grows forever if its reader dies."""
    if queue.maxsize <= 0:
        raise ValueError("the input queue must be bounded (asyncio.Queue(maxsize=N))")


def put_dropping_oldest(queue: asyncio.Queue[Event], event: Event) -> int:
    """Put without waiting; when full, drop the oldest first. Returns how many were dropped.

    The newest event wins because it describes the inputs as they are now. A dropped item is
    marked done so `queue.join()` does not wait for it forever.
    """
    dropped = 0
    while True:
        try:
            queue.put_nowait(event)
            return dropped
        except asyncio.QueueFull:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:  # pragma: no cover - only if another task emptied it
                continue
            queue.task_done()
            dropped += 1


class _Outlet:
    """One input's side of the shared queue, with its health counters."""

    def __init__(self, queue: asyncio.Queue[Event], clock: Clock) -> None:
        require_bounded(queue)
        self.queue = queue
        self.clock = clock
        self.error: str | None = None
        self.errors = 0
        self.dropped = 0

    def emit(self, event: Event | None) -> None:
        if event is not None:
            self.dropped += put_dropping_oldest(self.queue, event)

    def fail(self, exc: BaseException | str) -> None:
        self.error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.errors += 1

    def recovered(self) -> None:
        self.error = None

    def health(self, detector: _Detector) -> InputHealth:
        changed = detector.changed_ns
        age = None if changed is None else max(self.clock() - changed, 0) / NS_PER_S
        return InputHealth(
            source=detector.source,
            ok=self.error is None,
            error=self.error,
            errors=self.errors,
            active=detector.active,
            last_value=detector.last_value,
            last_change_age_s=age,
            dropped=self.dropped,
        )


class _Backoff:
    """Retry delays: `first_s`, doubling, capped at `max_s`; `reset()` after a success."""

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s = first_s
        self.max_s = max(max_s, first_s)
        self._next_s = first_s

    def next(self) -> float:
        delay = self._next_s
        self._next_s = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next_s = self.first_s


# -- shell: sysfs ----------------------------------------------------------------------------


def parse_sysfs_level(data: bytes) -> int:
    """`b"0\\n"` -> 0, `b"1\\n"` -> 1; anything else is an error, never a guess."""
    text = data.strip()
    if text == b"0":
        return 0
    if text == b"1":
        return 1
    raise ValueError(f"not a GPIO level: {data[:16]!r}")


class _PolledSysfsInput(abc.ABC):
    """The loop shared by sysfs inputs: read every `poll_ms`, feed the rule, emit its event.

    A plain read in the event loop: a sysfs attribute read is answered by the kernel from the
    device's registers, without disk I/O (microseconds; about a millisecond over I2C).
    A failing read (file gone, garbage) sets the health error and is retried with backoff from
    `poll_ms` up to `max_backoff_ms`; the rule's state is kept meanwhile, because an unknown
    reading is not an off reading. The loop itself never ends on an input error.
    """

    def __init__(
        self,
        queue: asyncio.Queue[Event],
        *,
        poll_ms: float,
        max_backoff_ms: float,
        clock: Clock,
    ) -> None:
        if poll_ms <= 0:
            raise ValueError(f"poll_ms must be > 0, not {poll_ms}")
        self._outlet = _Outlet(queue, clock)
        self._poll_s = poll_ms / 1000
        self._backoff = _Backoff(self._poll_s, max_backoff_ms / 1000)

    @abc.abstractmethod
    def _sample(self, now_ns: int) -> Event | None:
        """Read the device once and feed the rule (raises OSError or ValueError on a bad read)."""

    @property
    @abc.abstractmethod
    def _detector(self) -> _Detector: ...

    def poll_once(self) -> float:
        """Read and feed one sample; returns the seconds to wait before the next poll."""
        now_ns = self._outlet.clock()
        try:
            event = self._sample(now_ns)
        except (OSError, ValueError) as exc:
            self._outlet.fail(exc)
            return self._backoff.next()
        self._outlet.recovered()
        self._backoff.reset()
        self._outlet.emit(event)
        return self._poll_s

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.poll_once())

    def health(self) -> InputHealth:
        return self._outlet.health(self._detector)


def _read_attribute(path: Path, max_bytes: int = 32) -> bytes:
    with path.open("rb") as attribute:
        return attribute.read(max_bytes)


class SysfsGpioInput(_PolledSysfsInput):
    """Polls a sysfs GPIO value file (`/sys/class/gpio/gpioN/value`) every `poll_ms`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        rule: InputRule,
        queue: asyncio.Queue[Event],
        *,
        poll_ms: float = 20.0,
        max_backoff_ms: float = 1000.0,
        clock: Clock = time.monotonic_ns,
    ) -> None:
        super().__init__(queue, poll_ms=poll_ms, max_backoff_ms=max_backoff_ms, clock=clock)
        self.path = Path(path)
        self.debouncer = InputDebouncer(rule)

    @property
    def _detector(self) -> _Detector:
        return self.debouncer

    def _sample(self, now_ns: int) -> Event | None:
        return self.debouncer.sample(parse_sysfs_level(_read_attribute(self.path, 16)), now_ns)


# -- shell: IIO accelerometer (sysfs) -------------------------------------------------------


def parse_iio_number(data: bytes) -> float:
    """An IIO sysfs attribute: one decimal number (`b"-123\\n"`, `b"0.009576\\n"`)."""
    value = float(data.strip().decode("ascii"))
    if not math.isfinite(value):
        raise ValueError(f"not a finite IIO value: {data[:24]!r}")
    return value


class IioAccelerometerInput(_PolledSysfsInput):
    """Polls a Linux IIO accelerometer (`/sys/bus/iio/devices/iio:deviceN`) every `poll_ms`
    and feeds a CrashRule: `in_accel_{x,y,z}_raw` times `in_accel_scale` are m/s^2 (IIO ABI)."""

    AXES = ("x", "y", "z")

    def __init__(
        self,
        device_dir: str | os.PathLike[str],
        rule: CrashRule,
        queue: asyncio.Queue[Event],
        *,
        poll_ms: float = 10.0,
        max_backoff_ms: float = 1000.0,
        clock: Clock = time.monotonic_ns,
    ) -> None:
        super().__init__(queue, poll_ms=poll_ms, max_backoff_ms=max_backoff_ms, clock=clock)
        self.device_dir = Path(device_dir)
        self.rule = rule

    @property
    def _detector(self) -> _Detector:
        return self.rule

    def _read(self, name: str) -> float:
        return parse_iio_number(_read_attribute(self.device_dir / name))

    def _sample(self, now_ns: int) -> Event | None:
        scale = self._read("in_accel_scale")
        ax, ay, az = (self._read(f"in_accel_{axis}_raw") * scale for axis in self.AXES)
        return self.rule.sample(ax, ay, az, now_ns)


# -- shell: GPIO character device (linux/gpio.h, v2 uAPI) -------------------------------------

# asm-generic ioctl encoding (x86, arm, arm64, riscv): dir:2 | size:14 | type:8 | nr:8.
_IOC_WRITE = 1
_IOC_READ = 2


def iowr(ioc_type: int, nr: int, size: int) -> int:
    """`_IOWR(type, nr, size)` as the kernel header computes it."""
    if not 0 <= size < 1 << 14:
        raise ValueError(f"ioctl argument size {size} does not fit 14 bits")
    return ((_IOC_READ | _IOC_WRITE) << 30) | (size << 16) | (ioc_type << 8) | nr


# Layouts with native byte order and no implicit padding ("="): every kernel field is spelled
# out, so the offsets are the header's (config at 288, num_lines at 560, fd at 588).
_ATTR_FORMAT = "IIQQ"  # gpio_v2_line_config_attribute: {attr: id, padding, union u64}, mask
_MAX_LINES = 64
_MAX_ATTRS = 10
LINE_REQUEST = struct.Struct(
    f"={_MAX_LINES}I32s" + "QI5I" + _ATTR_FORMAT * _MAX_ATTRS + "II5Ii"
)  # offsets[64], consumer[32], config {flags, num_attrs, padding[5], attrs[10]}, num_lines,
#   event_buffer_size, padding[5], fd
LINE_EVENT = struct.Struct("=QIIII6I")  # timestamp_ns, id, offset, seqno, line_seqno, padding[6]
LINE_VALUES = struct.Struct("=QQ")  # gpio_v2_line_values: bits, mask

GPIO_V2_GET_LINE_IOCTL = iowr(0xB4, 0x07, LINE_REQUEST.size)
GPIO_V2_LINE_GET_VALUES_IOCTL = iowr(0xB4, 0x0E, LINE_VALUES.size)

GPIO_V2_LINE_FLAG_INPUT = 1 << 2
GPIO_V2_LINE_FLAG_EDGE_RISING = 1 << 4
GPIO_V2_LINE_FLAG_EDGE_FALLING = 1 << 5
GPIO_V2_LINE_EVENT_RISING_EDGE = 1
GPIO_V2_LINE_EVENT_FALLING_EDGE = 2
_FD_OFFSET = LINE_REQUEST.size - 4


@dataclass(frozen=True, slots=True)
class LineEvent:
    """One decoded `struct gpio_v2_line_event`. `rising`: the physical line went high."""

    timestamp_ns: int
    rising: bool
    offset: int
    seqno: int
    line_seqno: int


def pack_line_request(offset: int, consumer: str) -> bytearray:
    """A `gpio_v2_line_request` for one input line with edge events on both edges.

    No ACTIVE_LOW flag and no kernel debounce: the line is reported physically and
    `InputDebouncer` applies the rule, so sysfs, chardev and simulation behave the same.
    """
    label = consumer.encode()[:31]  # NUL-terminated in 32 bytes
    flags = GPIO_V2_LINE_FLAG_INPUT | GPIO_V2_LINE_FLAG_EDGE_RISING | GPIO_V2_LINE_FLAG_EDGE_FALLING
    offsets = [offset] + [0] * (_MAX_LINES - 1)
    attrs = [0] * (len(_ATTR_FORMAT) * _MAX_ATTRS)
    config = [flags, 0, *([0] * 5), *attrs]
    tail = [1, 0, *([0] * 5), -1]  # num_lines, event_buffer_size (kernel default), padding, fd
    return bytearray(LINE_REQUEST.pack(*offsets, label, *config, *tail))


def line_request_fd(request: bytes | bytearray) -> int:
    """The line fd the kernel wrote back into a request after GPIO_V2_GET_LINE_IOCTL."""
    (fd,) = struct.unpack_from("=i", request, _FD_OFFSET)
    return int(fd)


def decode_line_events(data: bytes) -> list[LineEvent]:
    """Decode whole events as read from a line fd (the kernel never returns part of one)."""
    if len(data) % LINE_EVENT.size:
        raise ValueError(f"{len(data)} bytes is not a whole number of line events")
    return [_decode_event(fields) for fields in LINE_EVENT.iter_unpack(data)]


def _decode_event(fields: tuple[int, ...]) -> LineEvent:
    timestamp_ns, event_id, offset, seqno, line_seqno = fields[:5]
    if event_id not in (GPIO_V2_LINE_EVENT_RISING_EDGE, GPIO_V2_LINE_EVENT_FALLING_EDGE):
        raise ValueError(f"unknown line event id {event_id}")
    return LineEvent(
        timestamp_ns, event_id == GPIO_V2_LINE_EVENT_RISING_EDGE, offset, seqno, line_seqno
    )


class GpioChardevInput:
    """One line of `/dev/gpiochipN`, by edge events (GPIO v2 uAPI) read with `loop.add_reader`.

    Each edge is fed to the debouncer with its kernel timestamp (CLOCK_MONOTONIC, the `clock`
    default). After edges stop, a settle timer reads the line's actual value: the debounce can
    only complete on a sample, and if the kernel's event buffer overflowed during heavy bouncing
    the value read is still the truth. A failure (open, ioctl, read, EOF when the chip goes away)
    sets the health error, releases the line and requests it again with backoff.

    Tested here only for its pure parts and, with a pipe in place of the line, its loop; the
    ioctls run on the box's hardware (no GPIO subsystem in the build machine's kernel).
    """

    def __init__(
        self,
        chip_path: str | os.PathLike[str],
        line_offset: int,
        rule: InputRule,
        queue: asyncio.Queue[Event],
        *,
        consumer: str = "mvb",
        min_backoff_ms: float = 50.0,
        max_backoff_ms: float = 2000.0,
        clock: Clock = time.monotonic_ns,
    ) -> None:
        self.chip_path = Path(chip_path)
        self.line_offset = line_offset
        self.consumer = f"{consumer}-{rule.source}"
        self.debouncer = InputDebouncer(rule)
        self._outlet = _Outlet(queue, clock)
        self._backoff = _Backoff(min_backoff_ms / 1000, max_backoff_ms / 1000)
        self._settle_s = max(rule.debounce_ms / 1000, 0.001)
        self._settle: asyncio.TimerHandle | None = None
        self._broken: asyncio.Future[BaseException] | None = None

    # -- the two kernel calls (overridable for tests without hardware) --

    def request_line(self) -> int:
        """Request the line for edge events; returns the non-blocking line fd."""
        chip_fd = os.open(self.chip_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            request = pack_line_request(self.line_offset, self.consumer)
            fcntl.ioctl(chip_fd, GPIO_V2_GET_LINE_IOCTL, request, True)
        finally:
            os.close(chip_fd)  # the line fd lives on without the chip fd
        return line_request_fd(request)

    def read_value(self, line_fd: int) -> int:
        """The line's physical level now (GPIO_V2_LINE_GET_VALUES_IOCTL, bit 0 = our one line)."""
        values = bytearray(LINE_VALUES.pack(0, 1))
        fcntl.ioctl(line_fd, GPIO_V2_LINE_GET_VALUES_IOCTL, values, True)
        bits, _mask = LINE_VALUES.unpack(values)
        return int(bits & 1)

    # -- the loop --

    async def run(self) -> None:
        """Serve the line until cancelled; every failure is reported and retried."""
        while True:
            try:
                line_fd = self.request_line()
            except OSError as exc:
                self._outlet.fail(exc)
                await asyncio.sleep(self._backoff.next())
                continue
            self._backoff.reset()
            try:
                failure = await self._serve(line_fd)
            finally:
                os.close(line_fd)
            self._outlet.fail(failure)
            await asyncio.sleep(self._backoff.next())

    async def _serve(self, line_fd: int) -> BaseException:
        """Read edges until something fails; returns the failure."""
        loop = asyncio.get_running_loop()
        self._broken = loop.create_future()
        os.set_blocking(line_fd, False)
        loop.add_reader(line_fd, self._on_readable, line_fd)
        try:
            self._on_settle(line_fd)  # the level at (re)start: lights already on at boot
            return await self._broken
        finally:
            loop.remove_reader(line_fd)
            if self._settle is not None:
                self._settle.cancel()
                self._settle = None

    def _on_readable(self, line_fd: int) -> None:
        try:
            data = os.read(line_fd, LINE_EVENT.size * 16)
        except BlockingIOError:
            return
        except OSError as exc:
            self._break(exc)
            return
        if not data:
            self._break(EOFError("line fd closed"))
            return
        try:
            events = decode_line_events(data)
        except ValueError as exc:
            self._break(exc)
            return
        for line_event in events:
            self._outlet.emit(self.debouncer.sample(line_event.rising, line_event.timestamp_ns))
        self._schedule_settle(line_fd)

    def _on_settle(self, line_fd: int) -> None:
        self._settle = None
        try:
            level = self.read_value(line_fd)
        except OSError as exc:
            self._break(exc)
            return
        self._outlet.recovered()
        self._outlet.emit(self.debouncer.sample(level, self._outlet.clock()))
        if self.debouncer.pending:
            self._schedule_settle(line_fd)

    def _schedule_settle(self, line_fd: int) -> None:
        if self._settle is not None:
            self._settle.cancel()  # a newer edge restarts the wait
        loop = asyncio.get_running_loop()
        self._settle = loop.call_later(self._settle_s, self._on_settle, line_fd)

    def _break(self, exc: BaseException) -> None:
        if self._broken is not None and not self._broken.done():
            self._broken.set_result(exc)

    def health(self) -> InputHealth:
        return self._outlet.health(self.debouncer)


# -- shell: simulation -----------------------------------------------------------------------

_AT_REST = (0.0, 0.0, STANDARD_GRAVITY_MPS2)


class SimulatedInputs:
    """Named inputs the demo and the tests set by hand, through the same rules and queue.

    Values are *held* like a real line or sensor: `set`, `speed` and `crash` sample at once, and
    `poll` (or `run`) samples the held values again, which is what lets a debounce or a hold time
    complete. `set(name, True)` means "the input is on"; for an active-low rule the simulated line
    is low, so the inversion is exercised too. Every THRESHOLD rule takes the speed.
    """

    def __init__(
        self,
        queue: asyncio.Queue[Event],
        rules: Iterable[InputRule],
        *,
        crash_rule: CrashRule | None = None,
        clock: Clock = time.monotonic_ns,
    ) -> None:
        rules = list(rules)
        self.levels = {r.source: InputDebouncer(r) for r in rules if r.kind is InputKind.LEVEL}
        self.speeds = {r.source: SpeedRule(r) for r in rules if r.kind is InputKind.THRESHOLD}
        self.crash_rule = crash_rule if crash_rule is not None else CrashRule()
        self._outlets = {
            source: _Outlet(queue, clock)
            for source in [*self.levels, *self.speeds, self.crash_rule.source]
        }
        self._clock = clock
        self._lines: dict[str, int] = {}
        self._speed_mps: float | None = None
        self._accel = _AT_REST
        self._accel_until_ns = 0

    def set(self, name: str, on: bool, *, now_ns: int | None = None) -> None:
        debouncer = self.levels[name]  # KeyError: no such input, a test or config error
        self._lines[name] = int(on != debouncer.rule.active_low)
        self._sample_level(name, self._now(now_ns))

    def speed(self, speed_mps: float, *, now_ns: int | None = None) -> None:
        self._speed_mps = speed_mps
        self._sample_speed(speed_mps, self._now(now_ns))

    def crash(
        self, peak_g: float, *, duration_ms: float = 200.0, now_ns: int | None = None
    ) -> None:
        """A deceleration of `peak_g` along the vehicle's axis for `duration_ms`, then rest."""
        now = self._now(now_ns)
        self._accel = (-peak_g * STANDARD_GRAVITY_MPS2, 0.0, STANDARD_GRAVITY_MPS2)
        self._accel_until_ns = now + int(duration_ms * NS_PER_MS)
        self._sample_accel(now)

    def poll(self, *, now_ns: int | None = None) -> None:
        """Sample every held value at `now_ns` (default: the clock)."""
        now = self._now(now_ns)
        for name in self._lines:
            self._sample_level(name, now)
        if self._speed_mps is not None:
            self._sample_speed(self._speed_mps, now)
        self._sample_accel(now)

    async def run(self, poll_ms: float = 20.0) -> None:
        """Poll until cancelled, like the hardware pollers."""
        while True:
            self.poll()
            await asyncio.sleep(poll_ms / 1000)

    def health(self) -> dict[str, InputHealth]:
        detectors: list[_Detector] = [*self.levels.values(), *self.speeds.values()]
        detectors.append(self.crash_rule)
        return {d.source: self._outlets[d.source].health(d) for d in detectors}

    def _now(self, now_ns: int | None) -> int:
        return self._clock() if now_ns is None else now_ns

    def _sample_level(self, name: str, now_ns: int) -> None:
        self._outlets[name].emit(self.levels[name].sample(self._lines[name], now_ns))

    def _sample_speed(self, speed_mps: float, now_ns: int) -> None:
        for source, rule in self.speeds.items():
            self._outlets[source].emit(rule.sample(speed_mps, now_ns))

    def _sample_accel(self, now_ns: int) -> None:
        if self._accel != _AT_REST and now_ns >= self._accel_until_ns:
            self._accel = _AT_REST
        event = self.crash_rule.sample(*self._accel, now_ns)
        self._outlets[self.crash_rule.source].emit(event)
