"""GPS: the pure tracker driven directly; the client against a real gpsd (gpsfake replaying the
shipped NMEA track), against a gpsd that hangs and dies, and against a hostile fake gpsd.

Needs Debian's gpsd and gpsd-clients (gpsfake). Timing is only ever asserted by polling for a
condition with a generous deadline; no sleep is an assertion.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.gps import (
    MAX_LINE_BYTES,
    Backoff,
    GpsdClient,
    GpsStatus,
    GpsTracker,
    parse_line,
)
from tests.gpsfake import ROUTE, Gpsfake, free_port, read_route

S = 1_000_000_000
MS = 1_000_000
T0_MS = int(datetime(2024, 5, 14, 9, 30, tzinfo=UTC).timestamp() * 1000)
WALL0_MS = 1_800_000_000_000  # the box's system clock in the pure tests
SAMPLE_KEYS = {
    "at_ms",
    "mode",
    "lat",
    "lon",
    "alt_m",
    "speed_mps",
    "track_deg",
    "gps_time_ms",
    "clock_offset_ms",
}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def tpv(mode: int = 3, t_ms: int | None = T0_MS, **members: object) -> dict[str, object]:
    report: dict[str, object] = {"class": "TPV", "mode": mode, "lat": 52.47, "lon": 6.06}
    if t_ms is not None:
        report["time"] = iso(t_ms)
    report.update(altHAE=51.3, altMSL=5.2, speed=13.0, track=314.6)
    report.update(members)
    return report


def connected_tracker(**kwargs: float) -> GpsTracker:
    tracker = GpsTracker(**kwargs)
    tracker.set_connected(True)
    return tracker


def feed(tracker: GpsTracker, report: dict[str, object], at_s: float, wall_ms: int = 0) -> None:
    """Hand `report` to the tracker as received at monotonic `at_s` (wall clock follows)."""
    at_ns = int(at_s * S)
    tracker.handle_report(report, at_ns, wall_ms or WALL0_MS + at_ns // MS)


# -- parse_line --------------------------------------------------------------------------------


def test_parse_line_accepts_gpsd_reports() -> None:
    line = b'{"class":"TPV","device":"/dev/pts/1","mode":3,"lat":52.4735,"lon":6.0589}\r\n'
    assert parse_line(line) == {
        "class": "TPV",
        "device": "/dev/pts/1",
        "mode": 3,
        "lat": 52.4735,
        "lon": 6.0589,
    }
    assert parse_line(b'{"class":"VERSION","release":"3.22"}') == {
        "class": "VERSION",
        "release": "3.22",
    }


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"not json",
        b'{"class":"TPV","mode":3,',
        b"[1, 2, 3]",
        b'"TPV"',
        b'{"no":"class"}',
        b'{"class":1}',
        b'{"class":"TPV","mode":"3"}',
        b'{"class":"TPV","mode":true}',
        b'{"class":"TPV","mode":7}',
        b'{"class":"TPV","mode":3,"lat":"52.47","lon":6.06}',
        b'{"class":"TPV","mode":3,"lat":95.0,"lon":6.06}',
        b'{"class":"TPV","mode":3,"speed":-1}',
        b'{"class":"TPV","mode":3,"lat":true}',
        b'{"class":"TPV","time":[2024]}',
        b"[" * 50_000,  # nesting deep enough to exhaust the parser's recursion
        b'{"class":"SKY","pad":"' + b"a" * MAX_LINE_BYTES + b'"}',
    ],
)
def test_parse_line_rejects_garbage_without_raising(line: bytes) -> None:
    assert parse_line(line) is None


def test_parse_line_tolerates_nan_and_missing_members() -> None:
    report = parse_line(b'{"class":"TPV","mode":3,"lat":NaN,"lon":6.06,"speed":Infinity}')
    assert report is not None
    assert math.isnan(report["lat"])  # type: ignore[arg-type]
    assert parse_line(b'{"class":"TPV"}') == {"class": "TPV"}


@given(st.binary(max_size=300))
def test_parse_line_never_raises_on_bytes(line: bytes) -> None:
    report = parse_line(line)
    assert report is None or isinstance(report["class"], str)


JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
TPV_KEYS = st.sampled_from(["mode", "time", "lat", "lon", "altHAE", "altMSL", "alt", "speed"])


@given(st.dictionaries(TPV_KEYS | st.text(max_size=6), JSON | JSON_SCALARS, max_size=8))
def test_any_accepted_report_is_handled_without_raising(members: dict[str, object]) -> None:
    """Whatever JSON object arrives, a report parse_line accepts never breaks the tracker."""
    line = json.dumps({**members, "class": "TPV"}).encode()
    report = parse_line(line)
    tracker = connected_tracker()
    if report is not None:
        feed(tracker, report, 1.0)
    tracker.status(2 * S)
    assert json.dumps(tracker.samples_between(0, 10 * S), allow_nan=False)


# -- the tracker: fix, status, staleness -------------------------------------------------------


def test_status_before_and_without_gpsd() -> None:
    tracker = GpsTracker()
    assert tracker.status(0) is GpsStatus.NO_GPSD
    tracker.set_connected(True)
    assert tracker.status(0) is GpsStatus.NO_FIX  # connected, nothing reported yet
    feed(tracker, tpv(mode=0, t_ms=None), 0.5)
    assert tracker.status(S) is GpsStatus.NO_FIX
    feed(tracker, tpv(), 1.0)
    assert tracker.status(S) is GpsStatus.FIX
    tracker.set_connected(False)
    assert tracker.status(S) is GpsStatus.NO_GPSD
    assert tracker.fix is not None  # a young fix survives a reconnect
    tracker.set_connected(True)
    assert tracker.status(S) is GpsStatus.FIX


def test_3d_and_2d_fixes() -> None:
    tracker = connected_tracker()
    feed(tracker, tpv(mode=3), 1.0)
    fix = tracker.fix
    assert fix is not None
    assert (fix.mode, fix.lat, fix.lon, fix.alt_m) == (3, 52.47, 6.06, 51.3)
    assert (fix.speed_mps, fix.track_deg, fix.gps_time_ms) == (13.0, 314.6, T0_MS)
    assert (fix.received_mono_ns, fix.received_wall_ms) == (S, WALL0_MS + 1000)
    feed(tracker, tpv(mode=2, t_ms=T0_MS + 1000), 2.0)
    assert tracker.fix is not None
    assert tracker.fix.mode == 2
    assert tracker.fix.alt_m is None  # a 2D fix's altitude is not a measurement
    assert tracker.status(2 * S) is GpsStatus.FIX


def test_lost_fix_mode_1() -> None:
    tracker = connected_tracker()
    feed(tracker, tpv(), 1.0)
    feed(tracker, {"class": "TPV", "mode": 1, "time": iso(T0_MS + 1000)}, 2.0)
    assert tracker.status(2 * S) is GpsStatus.NO_FIX
    assert tracker.speed_mps(2 * S) is None
    assert tracker.fix is not None  # the last known position stays known (and ages)
    assert tracker.fix.received_mono_ns == S
    feed(tracker, tpv(t_ms=T0_MS + 2000), 3.0)
    assert tracker.status(3 * S) is GpsStatus.FIX


def test_stale_fix() -> None:
    tracker = connected_tracker(stale_after_s=3.0)
    feed(tracker, tpv(), 10.0)
    assert tracker.status(13 * S) is GpsStatus.FIX  # exactly stale_after_s old: still valid
    assert tracker.status(13 * S + 1) is GpsStatus.STALE
    assert tracker.speed_mps(13 * S + 1) is None  # a trigger must not fire on a stale speed
    feed(tracker, tpv(t_ms=T0_MS + 5000), 14.0)
    assert tracker.status(14 * S) is GpsStatus.FIX
    assert tracker.speed_mps(14 * S) == 13.0


def test_fix_without_position_is_ignored_then_goes_stale() -> None:
    tracker = connected_tracker(stale_after_s=3.0)
    feed(tracker, tpv(), 1.0)
    feed(tracker, tpv(t_ms=T0_MS + 1000, lat=math.nan), 2.0)
    feed(tracker, {"class": "TPV", "mode": 3, "time": iso(T0_MS + 2000)}, 3.0)
    assert tracker.tpv_without_position == 2
    assert tracker.fix is not None
    assert tracker.fix.received_mono_ns == S
    assert tracker.status(3 * S) is GpsStatus.FIX
    assert tracker.status(5 * S) is GpsStatus.STALE


@pytest.mark.parametrize(
    ("members", "alt_m"),
    [
        ({}, 51.3),  # altHAE preferred
        ({"altHAE": None}, 5.2),  # gpsd may omit HAE: altMSL
        ({"altHAE": math.nan}, 5.2),  # NaN is unknown, not a height
        ({"altHAE": None, "altMSL": None, "alt": 7.0}, 7.0),  # gpsd < 3.20
        ({"altHAE": None, "altMSL": None}, None),
    ],
)
def test_altitude_fallbacks(members: dict[str, object], alt_m: float | None) -> None:
    report = tpv()
    for key, value in members.items():
        if value is None:
            del report[key]
        else:
            report[key] = value
    tracker = connected_tracker()
    feed(tracker, report, 1.0)
    assert tracker.fix is not None
    assert tracker.fix.alt_m == alt_m


def test_nan_members_are_unknown() -> None:
    tracker = connected_tracker()
    feed(tracker, tpv(speed=math.nan, track=math.inf), 1.0)
    assert tracker.fix is not None
    assert (tracker.fix.speed_mps, tracker.fix.track_deg) == (None, None)
    assert tracker.speed_mps(S) is None


def test_clock_offset_sign() -> None:
    """Offset = GPS time - system clock: positive when the system clock is behind."""
    tracker = connected_tracker()
    tracker.handle_report(tpv(t_ms=T0_MS), S, T0_MS - 1500)
    assert tracker.clock_offset_ms == 1500
    tracker.handle_report(tpv(t_ms=T0_MS + 1000), 2 * S, T0_MS + 1000 + 250)
    assert tracker.clock_offset_ms == -250
    assert tracker.fix is not None
    assert tracker.fix.sample()["clock_offset_ms"] == -250


@pytest.mark.parametrize(
    ("stamp", "ms"),
    [
        ("2024-05-14T09:30:00.000Z", T0_MS),
        ("2024-05-14T09:30:00.250Z", T0_MS + 250),
        ("2024-05-14T09:30:00Z", T0_MS),
        ("2024-05-14T09:30:00.5", T0_MS + 500),  # no zone: gpsd's times are UTC
        (T0_MS / 1000 + 0.75, T0_MS + 750),  # protocol < 3.10 sent epoch seconds
        ("not a time", None),
    ],
)
def test_gps_time_formats(stamp: object, ms: int | None) -> None:
    tracker = connected_tracker()
    feed(tracker, tpv(time=stamp), 1.0)
    assert tracker.fix is not None
    assert tracker.fix.gps_time_ms == ms


def test_non_tpv_reports_only_count() -> None:
    tracker = connected_tracker()
    reports: list[dict[str, object]] = [
        {"class": "VERSION", "release": "3.22", "proto_major": 3},
        {"class": "DEVICES", "devices": []},
        {"class": "WATCH", "enable": True},
        {"class": "SKY", "satellites": []},
        {"class": "ERROR", "message": "unrecognized request"},
    ]
    for report in reports:
        feed(tracker, report, 1.0)
    assert (tracker.reports, tracker.tpv_reports, tracker.gpsd_release) == (5, 0, "3.22")
    assert tracker.last_report_mono_ns == S
    assert tracker.fix is None


# -- the tracker: 1 Hz history ------------------------------------------------------------------


def test_history_keeps_one_sample_per_gps_second() -> None:
    """A 5 Hz receiver: the first report of each GPS second is kept."""
    tracker = connected_tracker()
    for i in range(50):
        feed(tracker, tpv(t_ms=T0_MS + 200 * i, speed=float(i)), 1.0 + 0.2 * i)
    samples = tracker.samples_between(0, 100 * S)
    assert [s["gps_time_ms"] for s in samples] == [T0_MS + 1000 * k for k in range(10)]
    assert [s["speed_mps"] for s in samples] == [5.0 * k for k in range(10)]
    assert tracker.fix is not None
    assert tracker.fix.speed_mps == 49.0  # the current fix is always the newest


def test_history_upgrades_an_epoch_from_2d_to_3d() -> None:
    """gpsd reports RMC's 2D fix, then the same epoch again as 3D once GGA arrived."""
    tracker = connected_tracker()
    feed(tracker, tpv(mode=2), 1.0)
    feed(tracker, tpv(mode=3), 1.01)
    feed(tracker, tpv(mode=2, t_ms=T0_MS + 1000), 2.0)
    feed(tracker, tpv(mode=2, t_ms=T0_MS + 1200), 2.2)  # a later instant of the second: no
    samples = tracker.samples_between(0, 10 * S)
    assert [(s["mode"], s["alt_m"]) for s in samples] == [(3, 51.3), (2, None)]
    assert samples[1]["gps_time_ms"] == T0_MS + 1000


def test_history_needs_gps_time() -> None:
    tracker = connected_tracker()
    feed(tracker, tpv(t_ms=None), 1.0)  # gpsd's first report often lacks a time
    assert tracker.fix is not None
    assert tracker.history_len() == 0


def test_history_is_bounded_in_time() -> None:
    tracker = connected_tracker(history_s=10.0)
    for i in range(100):
        feed(tracker, tpv(t_ms=T0_MS + 1000 * i), float(i))
    samples = tracker.samples_between(0, 1000 * S)
    assert len(samples) == 11  # seconds 89..99: none older than history_s before the newest
    assert samples[0]["gps_time_ms"] == T0_MS + 89_000


def test_history_is_bounded_in_count_whatever_the_clocks_do() -> None:
    """A replayed log: hundreds of GPS seconds received within one monotonic second."""
    tracker = connected_tracker(history_s=10.0)
    for i in range(1000):
        feed(tracker, tpv(t_ms=T0_MS + 1000 * (i % 60)), 1.0 + i / 1e6)
    assert tracker.history_len() == tracker.max_samples == 11


def test_samples_between_is_half_open_and_json_ready() -> None:
    tracker = connected_tracker()
    for i in range(10):
        feed(tracker, tpv(t_ms=T0_MS + 1000 * i), 1.0 + i)
    first = tracker.samples_between(0, 5 * S)
    second = tracker.samples_between(5 * S, 11 * S)
    assert [s["gps_time_ms"] for s in first] == [T0_MS + 1000 * i for i in range(4)]
    assert [s["gps_time_ms"] for s in second] == [T0_MS + 1000 * i for i in range(4, 10)]
    assert tracker.samples_between(11 * S, 20 * S) == []
    sample = first[0]
    assert set(sample) == SAMPLE_KEYS
    assert sample["at_ms"] == WALL0_MS + 1000
    assert sample["clock_offset_ms"] == T0_MS - (WALL0_MS + 1000)
    assert json.loads(json.dumps(first + second, allow_nan=False)) == first + second


def test_tracker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="stale_after_s"):
        GpsTracker(stale_after_s=0)
    with pytest.raises(ValueError, match="history_s"):
        GpsTracker(history_s=-1)


# -- backoff -------------------------------------------------------------------------------------


def test_backoff_is_bounded_exponential_with_jitter() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    delays = [backoff.next_s() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    backoff.reset()
    assert 0.25 <= backoff.next_s() <= 0.5
    with pytest.raises(ValueError, match="reconnect_min_s"):
        Backoff(5.0, 1.0, random.Random())


# -- the client: helpers -----------------------------------------------------------------------


GPSFAKE_START_S = 60.0
"""A deadline for a freshly started gpsfake's first fix (gpsd and its replay starting)."""


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    """Poll `condition` until true; fail after `timeout_s` (generous: a loaded CI machine)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def fast_client(tracker: GpsTracker, port: int, idle_timeout_s: float = 30.0) -> GpsdClient:
    """Retries every 25..200 ms, so that the tests see many attempts quickly."""
    return GpsdClient(
        tracker,
        "127.0.0.1",
        port,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        idle_timeout_s=idle_timeout_s,
        rng=random.Random(1),
    )


def ms_of(sample: dict[str, object], key: str) -> int:
    value = sample[key]
    assert isinstance(value, int)
    return value


@contextlib.asynccontextmanager
async def running(client: GpsdClient) -> AsyncIterator[asyncio.Task[None]]:
    """Run the client for the block; then stop() must end run() cleanly and promptly."""
    task = asyncio.create_task(client.run())
    try:
        yield task
    finally:
        client.stop()
        await asyncio.wait_for(task, 5.0)
    assert not client.connected


@pytest.fixture
def gpsfakes(tmp_path: Path) -> Iterator[list[Gpsfake]]:
    """Every gpsfake a test starts goes in this list and is always killed at teardown."""
    started: list[Gpsfake] = []
    yield started
    for fake in started:
        fake.stop()


# -- the client against a real gpsd --------------------------------------------------------------


async def test_fixes_from_real_gpsd_match_the_replayed_track(
    gpsfakes: list[Gpsfake], tmp_path: Path
) -> None:
    route = read_route()
    last_ms = max(route)
    port = free_port()
    tracker = GpsTracker(stale_after_s=0.5)
    client = fast_client(tracker, port)
    gpsfakes.append(Gpsfake(port, tmp_path, singleshot=True))
    async with running(client) as task:
        await wait_until(
            lambda: tracker.fix is not None and tracker.fix.gps_time_ms == last_ms,
            "the last fix of the track",
            timeout_s=GPSFAKE_START_S,
        )
        # -1: after the track gpsd goes quiet, the connection stays: the fix goes stale.
        await wait_until(lambda: tracker.status(time.monotonic_ns()) is GpsStatus.STALE, "stale")
        assert client.connected
        assert not task.done()

    samples = tracker.samples_between(0, time.monotonic_ns() + 1)
    assert len(samples) >= 30  # gpsd may start reading before the client watches
    times = [ms_of(s, "gps_time_ms") for s in samples]
    assert [b - a for a, b in itertools.pairwise(times)] == [1000] * (len(times) - 1)  # 1 Hz
    for sample in samples:
        gps_time_ms = ms_of(sample, "gps_time_ms")
        expected = route[gps_time_ms]
        assert sample["mode"] == 3  # GGA carries an altitude
        assert sample["lat"] == pytest.approx(expected.lat, abs=1e-5)
        assert sample["lon"] == pytest.approx(expected.lon, abs=1e-5)
        assert sample["speed_mps"] == pytest.approx(expected.speed_mps, abs=0.005)
        assert sample["track_deg"] == pytest.approx(expected.track_deg, abs=0.05)
        assert sample["alt_m"] == pytest.approx(5.2 + 46.1)  # altHAE = altMSL + geoid sep.
        # The track is from 2024: GPS time is far behind this machine's clock.
        offset_ms = ms_of(sample, "clock_offset_ms")
        assert offset_ms == gps_time_ms - ms_of(sample, "at_ms")
        assert offset_ms < 0
    health = client.health()
    assert (health.parse_errors, health.gpsd_release) == (0, "3.22")
    assert health.reports >= len(samples) + 3  # VERSION, DEVICES, WATCH before any TPV


async def test_gpsd_hangs_then_dies_then_comes_back(
    gpsfakes: list[Gpsfake], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.gps")
    port = free_port()
    tracker = GpsTracker(stale_after_s=0.5)
    client = fast_client(tracker, port)

    def status() -> GpsStatus:
        return tracker.status(time.monotonic_ns())

    gpsfakes.append(Gpsfake(port, tmp_path, singleshot=False))
    async with running(client) as task:
        # The first fix waits on gpsfake starting gpsd and its replay, which on a loaded CI
        # machine once took longer than 15 s (connected, no TPV yet): setup, not the behaviour
        # under test, so a longer deadline.
        await wait_until(lambda: status() is GpsStatus.FIX, "a fix", timeout_s=GPSFAKE_START_S)

        gpsfakes[0].signal(signal.SIGSTOP)  # gpsd hangs: connected, silent
        await wait_until(lambda: status() is GpsStatus.STALE, "a stale fix")
        assert client.connected

        gpsfakes[0].crash()  # then dies: the kernel closes its end
        await wait_until(lambda: status() is GpsStatus.NO_GPSD, "no gpsd")
        attempts = client.reconnects
        await wait_until(lambda: client.reconnects >= attempts + 3, "reconnect attempts")
        assert not task.done()
        assert client.health().connected is False

        restarted_ns = time.monotonic_ns()
        gpsfakes.append(Gpsfake(port, tmp_path, singleshot=False))
        await wait_until(
            lambda: tracker.fix is not None and tracker.fix.received_mono_ns > restarted_ns,
            "a fix from the new gpsd",
            timeout_s=GPSFAKE_START_S,
        )
        assert status() is GpsStatus.FIX
        assert client.connections == 2
        assert client.health().reconnects == client.reconnects >= 4
        assert tracker.speed_mps(time.monotonic_ns()) is not None
    # Logged: status and counts, never where the car is.
    assert "gpsd: connected" in caplog.text
    assert "disconnected" in caplog.text
    assert "52.4" not in caplog.text
    assert "6.0" not in caplog.text


# -- the client against a hostile gpsd ---------------------------------------------------------


def line(report: dict[str, object]) -> bytes:
    return json.dumps(report).encode() + b"\r\n"


GARBAGE = [
    b"\x00\xff\xfe\x80 binary garbage\r\n",
    b'{"class":"TPV","mode":3,\r\n',  # invalid JSON
    b"[1, 2, 3]\r\n",  # not an object
    b'{"class":"TPV","mode":"3","lat":52.0,"lon":6.0}\r\n',  # wrong type
    b"x" * (1 << 20) + b"\r\n",  # 1 MiB line: dropped whole
    # An over-long line whose tail alone is a valid report: never parsed in pieces.
    b" " * (1 << 20) + line(tpv(t_ms=T0_MS + 500, lat=10.0)),
]


async def test_hostile_gpsd(tmp_path: Path) -> None:
    watches: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        watches.append(await reader.readline())
        if len(watches) == 1:
            writer.writelines(GARBAGE)
            writer.write(b'{"class":"TPV","mode":3,"lat":NaN,"lon":6.0}\r\n')  # tolerated
            writer.write(line(tpv(t_ms=T0_MS, lat=52.1)))
            writer.write(line(tpv(t_ms=T0_MS + 1000, lat=52.2, speed=None)))
            for _ in range(64):  # then a 4 MiB line that never ends: the peer hangs up in it
                writer.write(b"y" * 65536)
                await writer.drain()
        else:
            writer.write(line(tpv(t_ms=T0_MS + 2000, lat=52.3)))
            await writer.drain()
            await reader.read()  # until the client leaves
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tracker = GpsTracker()
    client = fast_client(tracker, port)
    async with server, running(client) as task:
        await wait_until(
            lambda: tracker.fix is not None and tracker.fix.gps_time_ms == T0_MS + 2000,
            "the valid report after the garbage",
        )
        assert not task.done()
        assert client.connected

    assert watches == [b'?WATCH={"enable":true,"json":true}\n'] * 2
    assert client.parse_errors == len(GARBAGE)
    assert tracker.tpv_without_position == 1
    samples = tracker.samples_between(0, time.monotonic_ns() + 1)
    assert [(s["lat"], s["speed_mps"]) for s in samples] == [
        (52.1, 13.0),
        (52.2, None),
        (52.3, 13.0),
    ]
    assert (client.connections, client.reconnects) == (2, 1)


async def test_silent_gpsd_is_reopened_after_idle_timeout() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, says nothing, never hangs up
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tracker = GpsTracker()
    client = fast_client(tracker, port, idle_timeout_s=0.2)
    async with server, running(client):
        await wait_until(lambda: client.connections >= 3, "reconnections after silence")
        assert tracker.status(time.monotonic_ns()) in {GpsStatus.NO_FIX, GpsStatus.NO_GPSD}


async def test_stop_during_backoff_is_prompt(caplog: pytest.LogCaptureFixture) -> None:
    """`stop()` ends a backoff sleep: the backoff is an hour (30..60 min with its jitter), the
    deadline on `run()` returning half a minute, so only the wake can meet it (no stopwatch:
    a deadline on the observable end, far from both)."""
    caplog.set_level(logging.INFO, logger="gateway.gps")
    tracker = GpsTracker()
    client = GpsdClient(
        tracker, "127.0.0.1", free_port(), reconnect_min_s=3600, reconnect_max_s=3600
    )
    task = asyncio.create_task(client.run())
    await wait_until(lambda: "retry 1 in" in caplog.text, "the first backoff")  # refused
    client.stop()
    await asyncio.wait_for(task, 30.0)
    assert (client.connections, client.reconnects) == (0, 0)
    assert tracker.status(0) is GpsStatus.NO_GPSD


async def test_cancellation_closes_the_connection() -> None:
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(line({"class": "VERSION", "release": "3.22"}))
        await reader.read()  # returns when the client closes its end
        closed.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tracker = GpsTracker()
    client = fast_client(tracker, port)
    async with server:
        task = asyncio.create_task(client.run())
        await wait_until(lambda: tracker.reports == 1, "the VERSION report")
        age = client.health().last_report_age_s
        assert age is not None
        assert age >= 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 5.0)
    assert not client.connected


def test_client_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="reconnect_min_s"):
        GpsdClient(GpsTracker(), reconnect_min_s=0)
    with pytest.raises(ValueError, match="timeouts must be positive"):
        GpsdClient(GpsTracker(), idle_timeout_s=0)


def test_shipped_route_has_valid_checksums() -> None:
    lines = ROUTE.read_bytes().split(b"\r\n")
    assert lines[-1] == b""
    for raw in lines[:-1]:
        body, checksum = raw[1:].split(b"*")
        value = 0
        for byte in body:
            value ^= byte
        assert raw[:1] == b"$"
        assert checksum == f"{value:02X}".encode()
    assert len(read_route()) == 60
