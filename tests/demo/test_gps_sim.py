"""The simulated gpsd of `make demo`: the route as a pure function, the protocol on the wire, and
the box's real GpsdClient + GpsTracker against it (no Debian gpsd needed).

Timing is only ever asserted by polling for a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from demo.gps_sim import (
    ALT_MSL_M,
    GEOID_SEP_M,
    HATTEM_LOOP,
    MAX_COMMAND_BYTES,
    RELEASE,
    ROUTE_LENGTH_M,
    ROUTE_PERIOD_S,
    SPEED_MPS,
    GpsdSimulator,
    iso_utc,
    route_position,
    tpv_report,
)
from gateway.gps import GpsdClient, GpsStatus, GpsTracker, parse_line

EARTH_RADIUS_M = 6_371_008.8
LINE_TIMEOUT_S = 5.0


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance between two (lat, lon) points: independent of the route's projection."""
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def bearing_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dl = math.radians(b[1] - a[1])
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def position(t_s: float) -> tuple[float, float]:
    lat, lon, _speed, _track = route_position(t_s)
    return lat, lon


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# -- the route: pure ----------------------------------------------------------------------------


@given(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.floats(min_value=1e-3, max_value=30.0),
)
def test_route_is_continuous(t_s: float, dt_s: float) -> None:
    """The vehicle never moves farther than it can drive: no jump, also across the loop's end."""
    moved = distance_m(position(t_s), position(t_s + dt_s))
    assert moved <= SPEED_MPS * dt_s * 1.001 + 0.01


def test_route_closes_on_itself_and_repeats() -> None:
    assert distance_m(position(0.0), position(ROUTE_PERIOD_S)) < 0.01
    assert distance_m(position(0.0), HATTEM_LOOP[0]) < 0.01
    for t_s in (0.5, 17.0, 123.4):
        assert distance_m(position(t_s), position(t_s + 3 * ROUTE_PERIOD_S)) < 0.01
    # just before the end of the loop the vehicle is one step short of the start
    assert distance_m(position(ROUTE_PERIOD_S - 1.0), position(0.0)) == pytest.approx(
        SPEED_MPS, rel=1e-3
    )


def test_route_length_matches_the_waypoints() -> None:
    legs = zip(HATTEM_LOOP, HATTEM_LOOP[1:] + HATTEM_LOOP[:1], strict=True)
    assert sum(distance_m(a, b) for a, b in legs) == pytest.approx(ROUTE_LENGTH_M, rel=1e-3)
    assert math.isclose(ROUTE_PERIOD_S, ROUTE_LENGTH_M / SPEED_MPS)


def test_route_stays_in_hattem_at_a_steady_speed() -> None:
    for t_s in range(0, math.ceil(ROUTE_PERIOD_S), 3):
        lat, lon, speed, track = route_position(float(t_s))
        assert 52.465 < lat < 52.485
        assert 6.050 < lon < 6.078
        assert speed == SPEED_MPS
        assert 0.0 <= track < 360.0


def test_track_is_the_direction_of_travel() -> None:
    for t_s in range(0, math.ceil(ROUTE_PERIOD_S), 5):
        here, there = position(float(t_s)), position(t_s + 0.5)
        if distance_m(here, there) < SPEED_MPS * 0.5 * 0.999:
            continue  # a corner lies between: the straight line is shorter than the drive
        track = route_position(float(t_s))[3]
        difference = (bearing_deg(here, there) - track + 180.0) % 360.0 - 180.0
        assert abs(difference) < 0.5


def test_route_is_a_pure_function() -> None:
    assert route_position(42.25) == route_position(42.25)
    assert distance_m(position(-10.0), position(ROUTE_PERIOD_S - 10.0)) < 1e-6


@pytest.mark.parametrize("t_s", [math.nan, math.inf, -math.inf])
def test_route_rejects_non_finite_times(t_s: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        route_position(t_s)


# -- reports: pure ------------------------------------------------------------------------------


def test_iso_times_are_utc_with_milliseconds() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_715_679_000_042) == "2024-05-14T09:30:00.042Z"


def test_tpv_reports_are_valid_gpsd_tpv() -> None:
    report = tpv_report(12.0, 1_715_679_000_000)
    parsed = parse_line(json.dumps(report).encode())
    assert parsed is not None
    lat, lon, speed, track = route_position(12.0)
    assert parsed["class"] == "TPV"
    assert parsed["mode"] == 3
    assert parsed["time"] == "2024-05-14T09:30:00.000Z"
    assert parsed["lat"] == pytest.approx(lat, abs=1e-8)
    assert parsed["lon"] == pytest.approx(lon, abs=1e-8)
    assert parsed["speed"] == speed
    assert parsed["track"] == pytest.approx(track, abs=1e-3)
    assert parsed["altHAE"] == ALT_MSL_M + GEOID_SEP_M


# -- the server on the wire ---------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[GpsdSimulator]:
    """A simulator on an OS-chosen port, reporting every 0.1 s so tests are quick."""
    simulator = GpsdSimulator(max_clients=2, interval_s=0.1)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


class RawClient:
    """A bare TCP client that reads gpsd's reports line by line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, command: bytes) -> None:
        self.writer.write(command)
        await self.writer.drain()

    async def report(self) -> dict[str, object] | None:
        """The next report, or None at EOF."""
        async with asyncio.timeout(LINE_TIMEOUT_S):
            line = await self.reader.readline()
        if not line:
            return None
        assert line.endswith(b"\r\n")
        report = parse_line(line)
        assert report is not None, line
        return report

    async def report_of(self, kind: str) -> dict[str, object]:
        """Skip reports until one of class `kind`."""
        while (report := await self.report()) is not None:
            if report["class"] == kind:
                return report
        raise AssertionError(f"EOF before a {kind} report")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def test_version_then_watch_then_tpv(sim: GpsdSimulator) -> None:
    client = await RawClient.connect(sim.port)
    try:
        version = await client.report()
        assert version is not None
        assert version["class"] == "VERSION"
        assert version["release"] == RELEASE
        await client.send(b'?WATCH={"enable":true,"json":true}\n')
        devices, watch = await client.report(), await client.report()
        assert devices is not None
        assert watch is not None
        assert devices["class"] == "DEVICES"
        assert watch["class"] == "WATCH"
        assert watch["enable"] is True
        tpv = await client.report_of("TPV")
        assert tpv["mode"] == 3
        assert str(tpv["time"]).endswith("00Z")  # epochs on whole 100 ms of the wall clock
    finally:
        await client.close()


async def test_unwatch_poll_and_unknown_commands(sim: GpsdSimulator) -> None:
    client = await RawClient.connect(sim.port)
    try:
        await client.report_of("VERSION")
        await client.send(b'?WATCH={"enable":true};\n')
        await client.report_of("TPV")
        await client.send(b'?WATCH={"enable":false};?POLL;?FOO;\n')
        watch = await client.report_of("WATCH")
        assert watch["enable"] is False
        poll = await client.report_of("POLL")
        assert isinstance(poll["tpv"], list)
        assert len(poll["tpv"]) == 1
        error = await client.report_of("ERROR")
        assert "?FOO" in str(error["message"])
        await client.send(b"?VERSION;\n")  # the stream stopped: the next report answers this
        after = await client.report()
        assert after is not None
        assert after["class"] in {"VERSION", "TPV", "SKY"}  # at most one epoch was in flight
    finally:
        await client.close()


async def test_bad_watch_argument_gets_an_error(sim: GpsdSimulator) -> None:
    client = await RawClient.connect(sim.port)
    try:
        await client.report_of("VERSION")
        await client.send(b"?WATCH=[1,2]\n")
        error = await client.report_of("ERROR")
        assert "WATCH" in str(error["message"])
    finally:
        await client.close()


async def test_an_overlong_command_ends_the_connection(sim: GpsdSimulator) -> None:
    client = await RawClient.connect(sim.port)
    try:
        await client.report_of("VERSION")
        await client.send(b"?" + b"x" * (MAX_COMMAND_BYTES * 2))
        assert await client.report() is None
        await wait_for(lambda: sim.clients == 0)
    finally:
        await client.close()


async def test_refuses_clients_beyond_the_bound(sim: GpsdSimulator) -> None:
    first, second = await RawClient.connect(sim.port), await RawClient.connect(sim.port)
    extra: RawClient | None = None
    try:
        await first.report_of("VERSION")
        await second.report_of("VERSION")
        assert sim.clients == 2
        extra = await RawClient.connect(sim.port)
        assert await extra.report() is None, "a third client must be closed without a word"
        assert sim.refused == 1
        await extra.close()
        await first.close()  # a served client leaves: room for one more
        await wait_for(lambda: sim.clients == 1)
        extra = await RawClient.connect(sim.port)
        await extra.report_of("VERSION")
        assert sim.served == 3
    finally:
        for client in (first, second, extra):
            if client is not None:
                await client.close()


async def test_stop_closes_every_connection() -> None:
    sim = GpsdSimulator(interval_s=0.1)
    port = await sim.start()
    client = await RawClient.connect(port)
    await client.report_of("VERSION")
    await client.send(b'?WATCH={"enable":true}\n')
    await client.report_of("TPV")
    await sim.stop()
    while (report := await client.report()) is not None:
        assert report["class"] in {"TPV", "SKY"}  # what was on the wire before the close
    assert sim.clients == 0
    with pytest.raises(ConnectionRefusedError):
        await RawClient.connect(port)
    await client.close()


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="max_clients"):
        GpsdSimulator(max_clients=0)
    with pytest.raises(ValueError, match="interval_s"):
        GpsdSimulator(interval_s=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = GpsdSimulator().port


# -- the box's own client against it ------------------------------------------------------------


async def test_gpsd_client_gets_a_fix_on_the_route() -> None:
    """GpsdClient + GpsTracker, exactly as the box runs them, at the real 1 Hz."""
    async with GpsdSimulator() as sim:
        tracker = GpsTracker()
        client = GpsdClient(tracker, "127.0.0.1", sim.port)
        task = asyncio.create_task(client.run())
        try:
            await wait_for(lambda: tracker.status(time.monotonic_ns()) is GpsStatus.FIX)
            await wait_for(lambda: tracker.history_len() >= 2)
            fix = tracker.fix
            assert fix is not None
            assert fix.gps_time_ms is not None
            assert fix.gps_time_ms % 1000 == 0  # a receiver's epoch: whole seconds
            expected = route_position(sim.route_time_s(fix.gps_time_ms))
            assert distance_m((fix.lat, fix.lon), expected[:2]) < 0.01
            assert fix.mode == 3
            assert fix.speed_mps == SPEED_MPS
            assert tracker.speed_mps(time.monotonic_ns()) == SPEED_MPS
            assert fix.track_deg == pytest.approx(expected[3], abs=1e-3)
            assert fix.alt_m == ALT_MSL_M + GEOID_SEP_M
            assert fix.clock_offset_ms is not None
            # The simulator and the box read this machine's clock: the offset is the epoch's
            # delivery delay, a behaviour bound with a wide margin (a loaded machine may delay a
            # line past a second; a clock 40 days wrong is 3.5e9 ms)
            assert abs(fix.clock_offset_ms) < 30_000
            assert tracker.gpsd_release == RELEASE
            assert client.parse_errors == 0
            samples = tracker.samples_between(0, time.monotonic_ns() + 1)
            times = [int(str(s["gps_time_ms"])) for s in samples]
            assert times == sorted(set(times))  # one sample per second, in order
        finally:
            client.stop()
            await task


async def test_gpsd_client_sees_the_vehicle_move(sim: GpsdSimulator) -> None:
    tracker = GpsTracker()
    client = GpsdClient(tracker, "127.0.0.1", sim.port)
    task = asyncio.create_task(client.run())
    try:
        await wait_for(lambda: tracker.fix is not None)
        first = tracker.fix
        assert first is not None
        await wait_for(lambda: tracker.fix is not first)
        second = tracker.fix
        assert second is not None
        assert first.gps_time_ms is not None
        assert second.gps_time_ms is not None
        seconds = (second.gps_time_ms - first.gps_time_ms) / 1000
        moved = distance_m((first.lat, first.lon), (second.lat, second.lon))
        assert moved == pytest.approx(SPEED_MPS * seconds, rel=0.01, abs=0.05)
    finally:
        client.stop()
        await task


async def test_gpsd_client_loses_gpsd_when_the_simulator_stops() -> None:
    sim = GpsdSimulator(interval_s=0.1)
    await sim.start()
    tracker = GpsTracker()
    client = GpsdClient(tracker, "127.0.0.1", sim.port, reconnect_min_s=0.05)
    task = asyncio.create_task(client.run())
    try:
        await wait_for(lambda: tracker.status(time.monotonic_ns()) is GpsStatus.FIX)
        await sim.stop()
        await wait_for(lambda: tracker.status(time.monotonic_ns()) is GpsStatus.NO_GPSD)
    finally:
        client.stop()
        await task
