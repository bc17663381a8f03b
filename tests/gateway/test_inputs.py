"""Vehicle inputs: pure rules driven sample by sample; shells against real files and pipes.

Waiting in the async tests is polling with a deadline, never a sleep whose length is the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from demo.simulated_inputs import SimulatedInputs
from gateway.gpio_uapi import (
    GPIO_V2_GET_LINE_IOCTL,
    GPIO_V2_LINE_GET_VALUES_IOCTL,
    LINE_EVENT,
    LINE_REQUEST,
    decode_line_events,
    iowr,
    line_request_fd,
    pack_line_request,
)
from gateway.inputs import CrashRule, InputDebouncer, InputRule, SpeedRule, parse_sysfs_level
from gateway.inputs_io import (
    GpioChardevInput,
    IioAccelerometerInput,
    SysfsGpioInput,
    put_dropping_oldest,
)
from gateway.recorder import Event, EventKind

MS = 1_000_000
S = 1_000_000_000
G = 9.80665
TIMEOUT_S = 5.0


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def next_event(queue: asyncio.Queue[Event]) -> Event:
    return await asyncio.wait_for(queue.get(), TIMEOUT_S)


def drain(queue: asyncio.Queue[Event]) -> list[Event]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


def write_atomically(path: Path, text: str) -> None:
    """Replace the whole file at once, so the poller never sees it half written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# -- rules -------------------------------------------------------------------------------------


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="source"):
        InputRule.level("")
    with pytest.raises(ValueError, match="debounce_ms"):
        InputRule.level("lights", debounce_ms=-1)
    with pytest.raises(ValueError, match="hold_s"):
        InputRule.threshold_above("speed", threshold=25, hold_s=float("nan"))
    with pytest.raises(ValueError, match="LEVEL"):
        InputDebouncer(InputRule.threshold_above("speed", threshold=25))
    with pytest.raises(ValueError, match="THRESHOLD"):
        SpeedRule(InputRule.level("lights"))
    with pytest.raises(ValueError, match="hysteresis_g"):
        CrashRule(threshold_g=0.5, hysteresis_g=0.5)


# -- level debounce ----------------------------------------------------------------------------


def test_bounces_shorter_than_debounce_produce_nothing() -> None:
    lights = InputDebouncer(InputRule.level("lights", debounce_ms=50))
    for t_ms, raw in [(0, 1), (10, 0), (20, 1), (45, 0), (60, 1), (100, 0), (200, 0)]:
        assert lights.sample(raw, t_ms * MS) is None
    assert not lights.active
    assert lights.changed_ns is None


def test_steady_change_is_one_trigger_with_its_source() -> None:
    siren = InputDebouncer(InputRule.level("siren", debounce_ms=50))
    assert siren.sample(1, 0) is None
    assert siren.sample(1, 49 * MS) is None
    event = siren.sample(1, 50 * MS)
    assert event == Event(EventKind.TRIGGER, 50 * MS, "siren", {"input": "siren", "value": 1})
    assert siren.active
    assert siren.changed_ns == 50 * MS
    assert [siren.sample(1, t * MS) for t in range(60, 500, 20)] == [None] * 22


def test_a_bounce_restarts_the_debounce_wait() -> None:
    door = InputDebouncer(InputRule.level("door", debounce_ms=50))
    assert door.sample(1, 0) is None
    assert door.sample(0, 40 * MS) is None  # bounce back: the 40 ms so far are forgotten
    assert door.sample(1, 45 * MS) is None
    assert door.sample(1, 90 * MS) is None  # 45 ms since the last bounce
    assert door.sample(1, 95 * MS) is not None


def test_fall_is_a_stop_only_when_configured() -> None:
    silent = InputDebouncer(InputRule.level("lights", debounce_ms=0))
    stopping = InputDebouncer(InputRule.level("lights", debounce_ms=0, on_fall=True))
    for rule in (silent, stopping):
        assert rule.sample(1, 0) is not None
    assert silent.sample(0, 1 * MS) is None
    assert not silent.active  # the state follows the line even when nothing is emitted
    assert stopping.sample(0, 1 * MS) == Event(
        EventKind.STOP, 1 * MS, "lights", {"input": "lights", "value": 0}
    )


def test_active_low_line() -> None:
    door = InputDebouncer(InputRule.level("door", active_low=True, debounce_ms=20))
    assert door.sample(1, 0) is None  # high: inactive, nothing pending
    assert door.sample(0, 10 * MS) is None
    event = door.sample(0, 30 * MS)
    assert event is not None
    assert event.kind is EventKind.TRIGGER
    assert event.facts == {"input": "door", "value": 1}  # the logical value, not the line
    assert door.last_raw == 0


def test_poll_completes_a_debounce_without_a_new_sample() -> None:
    button = InputDebouncer(InputRule.level("button", debounce_ms=30))
    assert button.poll(0) is None  # nothing sampled yet
    assert button.sample(True, 0) is None
    assert button.pending
    assert button.poll(29 * MS) is None
    assert button.poll(30 * MS) is not None
    assert not button.pending


# -- speed -------------------------------------------------------------------------------------

SPEED = InputRule.threshold_above("speed", threshold=25.0, hysteresis=3.0, hold_s=2.0, on_fall=True)


def test_speed_needs_the_hold_time() -> None:
    speed = SpeedRule(SPEED)
    assert speed.sample(27.5, 0) is None
    assert speed.sample(27.5, 1 * S) is None
    assert speed.sample(25.0, int(1.5 * S)) is None  # at the threshold is not above: hold restarts
    assert speed.sample(26.0, 2 * S) is None
    assert speed.sample(27.0, int(3.9 * S)) is None
    event = speed.sample(27.5, 4 * S)
    assert event == Event(
        EventKind.TRIGGER, 4 * S, "speed", {"speed_mps": 27.5, "threshold_mps": 25.0}
    )


def test_speed_hysteresis_on_release() -> None:
    speed = SpeedRule(SPEED)
    speed.sample(30.0, 0)
    assert speed.sample(30.0, 2 * S) is not None
    # wobbling between release (22) and threshold (25) keeps it active: no stop, no new trigger
    assert [speed.sample(v, (3 + i) * S) for i, v in enumerate([24.0, 26.0, 22.0, 25.5])] == [
        None
    ] * 4
    assert speed.active
    stop = speed.sample(21.9, 10 * S)
    assert stop == Event(
        EventKind.STOP, 10 * S, "speed", {"speed_mps": 21.9, "threshold_mps": 25.0}
    )
    assert speed.sample(26.0, 11 * S) is None  # a new trigger needs the hold again
    assert speed.sample(26.0, 13 * S) is not None


def test_speed_without_fix_restarts_the_hold() -> None:
    speed = SpeedRule(SPEED)
    speed.sample(30.0, 0)
    assert speed.sample(float("nan"), 1 * S) is None
    assert speed.sample(30.0, 2 * S) is None
    assert speed.sample(30.0, 4 * S) is not None


# -- crash -------------------------------------------------------------------------------------


def test_crash_threshold_and_peak() -> None:
    crash = CrashRule(threshold_g=0.5)
    assert crash.sample(-0.45 * G, 0.0, G, 0) is None
    assert crash.sample(0.0, 0.0, 3 * G, 1 * MS) is None  # a pothole: vertical only
    event = crash.sample(-0.6 * G, 0.0, G, 2 * MS)
    assert event is not None
    assert (event.kind, event.source, event.now_ns) == (EventKind.TRIGGER, "crash", 2 * MS)
    assert event.facts["peak_g"] == 0.6
    assert event.facts["threshold_g"] == 0.5


def test_crash_is_one_trigger_per_excursion() -> None:
    crash = CrashRule(threshold_g=0.5, hysteresis_g=0.1)
    assert crash.sample(0.3 * G, 0.45 * G, G, 0) is not None  # 0.54 g, braking and swerving
    assert crash.sample(-2.0 * G, 0.0, G, 1 * MS) is None
    assert crash.sample(-0.45 * G, 0.0, G, 2 * MS) is None  # above the 0.4 g release
    assert crash.sample(-0.3 * G, 0.0, G, 3 * MS) is None  # re-armed
    assert crash.sample(-0.7 * G, 0.0, G, 4 * MS) is not None


def test_crash_hold_filters_spikes_and_reports_the_peak() -> None:
    crash = CrashRule(threshold_g=0.5, hold_ms=50)
    assert crash.sample(-4.0 * G, 0.0, G, 0) is None
    assert crash.sample(0.0, 0.0, G, 10 * MS) is None  # a 10 ms spike: ignored
    assert crash.sample(-0.6 * G, 0.0, G, 20 * MS) is None
    assert crash.sample(0.0, -0.9 * G, G, 40 * MS) is None  # side impact counts as horizontal
    event = crash.sample(-0.7 * G, 0.0, G, 70 * MS)
    assert event is not None
    assert event.facts["peak_g"] == 0.9


# -- the queue ---------------------------------------------------------------------------------


def trigger(n: int) -> Event:
    return Event(EventKind.TRIGGER, n, f"source{n}")


async def test_full_queue_drops_the_oldest() -> None:
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=2)
    assert put_dropping_oldest(queue, trigger(1)) == 0
    assert put_dropping_oldest(queue, trigger(2)) == 0
    assert put_dropping_oldest(queue, trigger(3)) == 1
    assert drain(queue) == [trigger(2), trigger(3)]


async def test_overflow_is_counted_in_health_and_join_still_returns() -> None:
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=1)
    sim = SimulatedInputs(queue, [InputRule.level("lights", debounce_ms=0, on_fall=True)])
    for i in range(5):
        sim.set("lights", i % 2 == 0, now_ns=i * MS)
    assert sim.health()["lights"].dropped == 4
    [last] = drain(queue)
    assert (last.kind, last.now_ns) == (EventKind.TRIGGER, 4 * MS)
    queue.task_done()
    await asyncio.wait_for(queue.join(), TIMEOUT_S)  # dropped items were marked done


def test_unbounded_queue_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bounded"):
        SysfsGpioInput(tmp_path / "value", InputRule.level("lights"), asyncio.Queue())


# -- sysfs -------------------------------------------------------------------------------------


def test_parse_sysfs_level() -> None:
    assert parse_sysfs_level(b"0\n") == 0
    assert parse_sysfs_level(b"1\n") == 1
    for garbage in (b"", b"2\n", b"on\n", b"\x00"):
        with pytest.raises(ValueError, match="not a GPIO level"):
            parse_sysfs_level(garbage)


@pytest.fixture
def value_file(tmp_path: Path) -> Path:
    path = tmp_path / "gpio17" / "value"
    path.parent.mkdir()
    write_atomically(path, "0\n")
    return path


@pytest.fixture
async def sysfs(value_file: Path) -> AsyncIterator[tuple[SysfsGpioInput, asyncio.Queue[Event]]]:
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=16)
    rule = InputRule.level("lights", debounce_ms=10, on_fall=True)
    gpio = SysfsGpioInput(value_file, rule, queue, poll_ms=2, max_backoff_ms=20)
    task = asyncio.create_task(gpio.run())
    yield gpio, queue
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_sysfs_level_change_becomes_a_trigger(
    sysfs: tuple[SysfsGpioInput, asyncio.Queue[Event]], value_file: Path
) -> None:
    gpio, queue = sysfs
    await wait_until(lambda: gpio.health().last_value == 0.0, "the first poll")
    write_atomically(value_file, "1\n")
    event = await next_event(queue)
    assert (event.kind, event.source, event.facts) == (
        EventKind.TRIGGER,
        "lights",
        {"input": "lights", "value": 1},
    )
    health = gpio.health()
    assert health.ok
    assert health.active
    assert health.last_change_age_s is not None
    assert health.last_change_age_s >= 0
    write_atomically(value_file, "0\n")
    assert (await next_event(queue)).kind is EventKind.STOP


async def test_sysfs_garbage_is_an_error_then_recovers(
    sysfs: tuple[SysfsGpioInput, asyncio.Queue[Event]], value_file: Path
) -> None:
    gpio, queue = sysfs
    write_atomically(value_file, "banana\n")
    await wait_until(lambda: not gpio.health().ok, "the error")
    health = gpio.health()
    assert health.error is not None
    assert "not a GPIO level" in health.error
    write_atomically(value_file, "1\n")
    await wait_until(lambda: gpio.health().ok, "recovery")
    assert (await next_event(queue)).kind is EventKind.TRIGGER
    assert gpio.health().errors >= 1


async def test_sysfs_file_removed_then_recreated(
    sysfs: tuple[SysfsGpioInput, asyncio.Queue[Event]], value_file: Path
) -> None:
    gpio, queue = sysfs
    write_atomically(value_file, "1\n")
    assert (await next_event(queue)).kind is EventKind.TRIGGER
    value_file.unlink()
    await wait_until(lambda: not gpio.health().ok, "the error")
    assert "FileNotFoundError" in (gpio.health().error or "")
    assert gpio.health().active  # an unreadable line is not an off line: no STOP
    write_atomically(value_file, "0\n")
    await wait_until(lambda: gpio.health().ok, "recovery")
    assert (await next_event(queue)).kind is EventKind.STOP


# -- GPIO character device ---------------------------------------------------------------------

# Values printed by a C program including <linux/gpio.h> (sizeof, offsetof, the ioctl macros).
KERNEL_SIZEOF_LINE_REQUEST = 592
KERNEL_SIZEOF_LINE_EVENT = 48
KERNEL_GPIO_V2_GET_LINE_IOCTL = 0xC250B407
KERNEL_GPIO_V2_LINE_GET_VALUES_IOCTL = 0xC010B40E


def test_chardev_struct_sizes_and_ioctl_numbers() -> None:
    assert LINE_REQUEST.size == KERNEL_SIZEOF_LINE_REQUEST
    assert LINE_EVENT.size == KERNEL_SIZEOF_LINE_EVENT
    assert GPIO_V2_GET_LINE_IOCTL == KERNEL_GPIO_V2_GET_LINE_IOCTL
    assert GPIO_V2_LINE_GET_VALUES_IOCTL == KERNEL_GPIO_V2_LINE_GET_VALUES_IOCTL
    with pytest.raises(ValueError, match="14 bits"):
        iowr(0xB4, 0x07, 1 << 14)


def u32(data: bytes | bytearray, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], sys.byteorder)


def test_line_request_fields_at_kernel_offsets() -> None:
    request = pack_line_request(17, "mvb-lights")
    assert len(request) == KERNEL_SIZEOF_LINE_REQUEST
    assert u32(request, 0) == 17  # offsets[0]
    assert request[256:267] == b"mvb-lights\x00"  # consumer
    flags = int.from_bytes(request[288:296], sys.byteorder)  # config.flags
    assert flags == 0x04 | 0x10 | 0x20  # INPUT | EDGE_RISING | EDGE_FALLING, no ACTIVE_LOW
    assert u32(request, 296) == 0  # config.num_attrs: no kernel debounce
    assert u32(request, 560) == 1  # num_lines
    request[588:592] = (9).to_bytes(4, sys.byteorder, signed=True)  # as the kernel returns it
    assert line_request_fd(request) == 9


def kernel_event(timestamp_ns: int, event_id: int, offset: int, seqno: int) -> bytes:
    """A `struct gpio_v2_line_event` built field by field, independently of LINE_EVENT."""
    fields = [event_id, offset, seqno, seqno] + [0] * 6
    return timestamp_ns.to_bytes(8, sys.byteorder) + b"".join(
        f.to_bytes(4, sys.byteorder) for f in fields
    )


def test_line_event_decoding() -> None:
    data = kernel_event(123_456_789_000, 1, 17, 1) + kernel_event(123_456_799_000, 2, 17, 2)
    rising, falling = decode_line_events(data)
    assert (rising.timestamp_ns, rising.rising, rising.offset, rising.seqno) == (
        123_456_789_000,
        True,
        17,
        1,
    )
    assert (falling.rising, falling.line_seqno) == (False, 2)
    with pytest.raises(ValueError, match="whole number"):
        decode_line_events(data[:-1])
    with pytest.raises(ValueError, match="unknown line event id"):
        decode_line_events(kernel_event(1, 7, 17, 1))


class PipeLine(GpioChardevInput):
    """The chardev loop with a pipe in place of the kernel line fd (no GPIO here)."""

    def __init__(self, queue: asyncio.Queue[Event], rule: InputRule) -> None:
        super().__init__("/dev/gpiochip-none", 17, rule, queue, min_backoff_ms=2)
        self.level = 0
        self.requests = 0
        self.writer = -1
        self.errors_seen: list[str | None] = []  # the health error at each request

    def request_line(self) -> int:
        self.requests += 1
        self.errors_seen.append(self.health().error)
        reader, self.writer = os.pipe()
        return reader

    def read_value(self, line_fd: int) -> int:
        return self.level

    def edge(self, rising: bool) -> None:
        self.level = int(rising)
        now = asyncio.get_running_loop().time()  # CLOCK_MONOTONIC, like the kernel stamps
        os.write(self.writer, kernel_event(int(now * S), 1 if rising else 2, 17, 1))


async def test_chardev_loop_edges_settle_and_reconnect() -> None:
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=8)
    line = PipeLine(queue, InputRule.level("siren", debounce_ms=5))
    task = asyncio.create_task(line.run())
    try:
        await wait_until(lambda: line.requests == 1 and line.health().last_value == 0.0, "open")
        line.edge(rising=True)
        event = await next_event(queue)
        assert (event.kind, event.source) == (EventKind.TRIGGER, "siren")
        os.close(line.writer)  # the chip went away: EOF on the line fd
        await wait_until(lambda: line.requests == 2, "the line requested again")
        assert line.health().errors == 1
        assert line.errors_seen[0] is None
        assert (line.errors_seen[1] or "").startswith("EOFError")
        line.edge(rising=False)
        await wait_until(lambda: line.health().ok and not line.health().active, "the fall")
        assert queue.empty()  # no on_fall: the siren going off stops nothing
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with contextlib.suppress(OSError):
            os.close(line.writer)


async def test_chardev_missing_chip_is_an_error_not_a_crash() -> None:
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=8)
    gpio = GpioChardevInput("/nonexistent/gpiochip9", 3, InputRule.level("door"), queue)
    task = asyncio.create_task(gpio.run())
    try:
        await wait_until(lambda: gpio.health().errors >= 1, "the open error")
        assert "FileNotFoundError" in (gpio.health().error or "")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- simulation --------------------------------------------------------------------------------


def test_simulated_inputs_flow_through_the_rules() -> None:
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=16)
    rules = [
        InputRule.level("lights", debounce_ms=50),
        InputRule.level("door", active_low=True, debounce_ms=0),
        InputRule.threshold_above("speed", threshold=25.0, hysteresis=2.0, hold_s=1.0),
    ]
    sim = SimulatedInputs(queue, rules, crash_rule=CrashRule(hold_ms=0))
    sim.set("lights", True, now_ns=0)
    sim.poll(now_ns=49 * MS)
    assert queue.empty()  # still debouncing
    sim.poll(now_ns=50 * MS)
    sim.set("door", True, now_ns=60 * MS)
    sim.speed(27.0, now_ns=1 * S)
    sim.poll(now_ns=2 * S)
    sim.crash(0.8, now_ns=3 * S)
    sim.poll(now_ns=3 * S + 250 * MS)  # the crash is over: rest again, re-armed
    sim.crash(1.2, now_ns=4 * S)
    events = drain(queue)
    assert [(e.source, e.now_ns) for e in events] == [
        ("lights", 50 * MS),
        ("door", 60 * MS),
        ("speed", 2 * S),
        ("crash", 3 * S),
        ("crash", 4 * S),
    ]
    assert all(e.kind is EventKind.TRIGGER for e in events)
    assert events[-1].facts["peak_g"] == 1.2
    assert sim.levels["door"].last_raw == 0  # active-low: "on" is a low line
    health = sim.health()
    assert set(health) == {"lights", "door", "speed", "crash"}
    assert health["speed"].last_value == 27.0
    assert all(h.ok and h.dropped == 0 for h in health.values())
    with pytest.raises(KeyError):
        sim.set("horn", True)


async def test_simulated_inputs_run_with_the_clock() -> None:
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=16)
    sim = SimulatedInputs(queue, [InputRule.level("lights", debounce_ms=10)])
    task = asyncio.create_task(sim.run(poll_ms=2))
    try:
        sim.set("lights", True)
        event = await next_event(queue)
        assert (event.kind, event.source) == (EventKind.TRIGGER, "lights")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- IIO accelerometer ---------------------------------------------------------------------------


def iio_device(directory: Path, x: int, y: int, z: int, scale: str = "0.009806650") -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "in_accel_scale").write_text(scale + "\n")
    for axis, value in zip("xyz", (x, y, z), strict=True):
        (directory / f"in_accel_{axis}_raw").write_text(f"{value}\n")
    return directory


def test_iio_accelerometer_triggers_on_hard_braking(tmp_path: Path) -> None:
    device = iio_device(tmp_path / "iio:device0", 0, 0, 1000)  # at rest: 1 g down, 0 horizontal
    queue: asyncio.Queue[Event] = asyncio.Queue(8)
    accel = IioAccelerometerInput(device, CrashRule(threshold_g=0.5), queue, clock=lambda: 1)
    accel.poll_once()
    assert queue.empty()
    iio_device(device, -700, 0, 1000)  # 0.7 g deceleration
    accel.poll_once()
    event = queue.get_nowait()
    assert event.kind is EventKind.TRIGGER
    assert event.source == "crash"
    assert event.facts["peak_g"] == pytest.approx(0.7, abs=0.01)
    assert accel.health().ok


def test_iio_accelerometer_faults_are_reported_and_recovered(tmp_path: Path) -> None:
    device = iio_device(tmp_path / "iio:device0", 0, 0, 1000)
    queue: asyncio.Queue[Event] = asyncio.Queue(8)
    accel = IioAccelerometerInput(device, CrashRule(), queue, clock=lambda: 1)
    (device / "in_accel_y_raw").write_text("garbage\n")
    first = accel.poll_once()
    assert not accel.health().ok
    assert "ValueError" in str(accel.health().error)
    assert accel.poll_once() > first, "backs off while the device is broken"
    (device / "in_accel_y_raw").unlink()
    accel.poll_once()
    assert "FileNotFoundError" in str(accel.health().error)
    iio_device(device, 0, 0, 1000)
    accel.poll_once()
    assert accel.health().ok
    assert accel.health().errors == 3
