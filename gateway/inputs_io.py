"""Vehicle inputs, the I/O shell: sysfs and IIO pollers, the GPIO character device, the queue.

Around the pure rules of gateway/inputs.py (which decide what a sample means):

- `SysfsGpioInput` polls `/sys/class/gpio/gpioN/value`; `IioAccelerometerInput` polls an IIO
  accelerometer; `GpioChardevInput` asks `/dev/gpiochipN` for edge events (GPIO v2 uAPI, its
  layouts in gateway/gpio_uapi.py). Simulated inputs (gateway/inputs_sim.py) use the same outlet.
- All of them feed their rule and put its events into one bounded `asyncio.Queue[Event]`
  (`Outlet`); when the queue is full the oldest event is dropped and counted, because a poller
  that blocks on a slow consumer would stop seeing the lights at all.

Invariants: a shell's loop never ends on an input error: a failed read sets the health error and
is retried with backoff, and the rule's state is kept meanwhile (an unknown reading is not an off
reading). Inputs only write to bounded queues. Times are `time.monotonic_ns` unless a test
passes its own `clock`.
"""

from __future__ import annotations

import abc
import asyncio
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from gateway.gpio_uapi import (
    GPIO_V2_GET_LINE_IOCTL,
    GPIO_V2_LINE_GET_VALUES_IOCTL,
    LINE_EVENT,
    LINE_VALUES,
    decode_line_events,
    line_request_fd,
    pack_line_request,
)
from gateway.inputs import (
    NS_PER_S,
    CrashRule,
    Detector,
    InputDebouncer,
    InputHealth,
    InputRule,
    parse_iio_number,
    parse_sysfs_level,
)
from gateway.recorder import Event

Clock = Callable[[], int]


# -- the queue --------------------------------------------------------------------------------


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


class Outlet:
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

    def health(self, detector: Detector) -> InputHealth:
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
        self._outlet = Outlet(queue, clock)
        self._poll_s = poll_ms / 1000
        self._backoff = _Backoff(self._poll_s, max_backoff_ms / 1000)

    @abc.abstractmethod
    def _sample(self, now_ns: int) -> Event | None:
        """Read the device once and feed the rule (raises OSError or ValueError on a bad read)."""

    @property
    @abc.abstractmethod
    def _detector(self) -> Detector: ...

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
    def _detector(self) -> Detector:
        return self.debouncer

    def _sample(self, now_ns: int) -> Event | None:
        return self.debouncer.sample(parse_sysfs_level(_read_attribute(self.path, 16)), now_ns)


# -- shell: IIO accelerometer (sysfs) -------------------------------------------------------


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
    def _detector(self) -> Detector:
        return self.rule

    def _read(self, name: str) -> float:
        return parse_iio_number(_read_attribute(self.device_dir / name))

    def _sample(self, now_ns: int) -> Event | None:
        scale = self._read("in_accel_scale")
        ax, ay, az = (self._read(f"in_accel_{axis}_raw") * scale for axis in self.AXES)
        return self.rule.sample(ax, ay, az, now_ns)


# -- shell: GPIO character device (linux/gpio.h, v2 uAPI) -------------------------------------


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
        self._outlet = Outlet(queue, clock)
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
