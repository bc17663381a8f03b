"""GPS: a pure tracker of gpsd's reports and a thin asyncio client of gpsd's JSON protocol.

Why not gpsd-py3: it polls synchronously through a module-global socket and loses the altitude
with gpsd >= 3.20. gpsd speaks line-delimited JSON on TCP 2947; after
`?WATCH={"enable":true,"json":true}` it streams one object per line: VERSION, DEVICES, WATCH,
DEVICE, SKY, TPV (time-position-velocity), ERROR... Only TPV matters here:

    {"class":"TPV","mode":3,"time":"2024-05-14T09:30:00.000Z","lat":52.47,"lon":6.06,
     "altHAE":51.3,"altMSL":5.2,"speed":13.0,"track":314.6,"eph":17.1,...}

`mode` is 0 (unknown), 1 (no fix), 2 (2D) or 3 (3D); speed is in m/s, track in degrees true.
Every other member may be absent (or NaN from a few drivers) and is then unknown, not zero.

Layers, as elsewhere in the box (DESIGN principle 1):
- `parse_line`: bytes from the wire -> a validated report dict, or None for garbage. gpsd is a
  local daemon, but its input is radio data and its socket is reachable by any local process:
  treat it as hostile, bounded (64 KiB a line) and never let it raise into the loop.
- `GpsTracker`: pure. Takes reports plus `now_mono_ns` / `now_wall_ms`, keeps the current fix,
  the status (NO_GPSD / NO_FIX / FIX / STALE) and a bounded 1 Hz history that each evidence
  segment copies into its encrypted metadata. No sockets, no clocks.
- `GpsdClient`: the asyncio shell. Connects, watches, feeds the tracker, reconnects with bounded
  exponential backoff and jitter, exposes health counters.

Privacy: positions are personal data (the officer's and the public's whereabouts). They go only
into encrypted evidence; logs carry counts and status, never a coordinate.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
MS_PER_S = 1000
MAX_LINE_BYTES = 64 * 1024
"""gpsd's longest reports (SKY with many satellites, DEVICES) stay far below this."""
WATCH = b'?WATCH={"enable":true,"json":true}\n'
DEFAULT_PORT = 2947
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Report = dict[str, object]
"""A validated gpsd report: a JSON object with a string member "class"."""


class GpsStatus(enum.Enum):
    """What the box knows about its position right now."""

    NO_GPSD = "no_gpsd"  # no connection to gpsd
    NO_FIX = "no_fix"  # gpsd answers, but the receiver has no fix (yet, or lost it: mode 0/1)
    FIX = "fix"  # a 2D or 3D fix younger than stale_after_s
    STALE = "stale"  # the last fix is older than stale_after_s (receiver or gpsd went quiet)


# -- parsing: hostile bytes -> validated report -------------------------------------------------


def _is_number(value: object) -> bool:
    # bool is an int subclass in Python; `true` is never a coordinate.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_ok(value: object, low: float, high: float) -> bool:
    """Absent (None), NaN/inf (tolerated as unknown) or a finite number within [low, high]."""
    if value is None:
        return True
    if not _is_number(value):
        return False
    assert isinstance(value, int | float)
    return not math.isfinite(value) or low <= value <= high


_TPV_RANGES: dict[str, tuple[float, float]] = {
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
    # Altitudes: from the Dead Sea to an airliner; anything outside is a corrupt report.
    "altHAE": (-1_000.0, 20_000.0),
    "altMSL": (-1_000.0, 20_000.0),
    "alt": (-1_000.0, 20_000.0),
    "speed": (0.0, 1_000.0),
    "track": (0.0, 360.0),
}


def _valid_tpv(report: Mapping[str, object]) -> bool:
    mode = report.get("mode", 0)
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 3:
        return False
    stamp = report.get("time")
    if stamp is not None and not isinstance(stamp, str) and not _is_number(stamp):
        return False
    return all(_number_ok(report.get(key), *bounds) for key, bounds in _TPV_RANGES.items())


def parse_line(line: bytes) -> Report | None:
    """One line from gpsd -> the report, or None when the line is garbage.

    Invariants: never raises (whatever the bytes); a returned report is a dict whose "class" is
    a str, and a TPV's mode is an int 0..3 (0 when absent), its "time" a str or number when
    present, its position/velocity members numbers within physical bounds or NaN/absent.
    Rejected: over MAX_LINE_BYTES, not UTF-8, not JSON, not an object, no string "class",
    a TPV with members of the wrong type or out of range. The caller counts the Nones.
    """
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        value = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(value, dict) or not isinstance(value.get("class"), str):
        return None
    if value["class"] == "TPV" and not _valid_tpv(value):
        return None
    return value


# -- the pure tracker ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpsFix:
    """One TPV report with a usable position (mode 2 or 3, finite lat and lon).

    `alt_m` is None for a 2D fix; speed, track and GPS time are None when gpsd did not send
    them. `clock_offset_ms` = gps_time_ms - received_wall_ms: positive when GPS time is ahead of
    the system clock. It includes gpsd's and the receiver's latency (typically tens to a few
    hundred ms), so it cross-checks the wall clock to within about a second, not better.
    """

    mode: int
    lat: float
    lon: float
    alt_m: float | None
    speed_mps: float | None
    track_deg: float | None
    gps_time_ms: int | None
    clock_offset_ms: int | None
    received_mono_ns: int
    received_wall_ms: int

    def sample(self) -> dict[str, object]:
        """The JSON-able form stored in evidence metadata (type "gps"); `at_ms` is wall clock."""
        return {
            "at_ms": self.received_wall_ms,
            "mode": self.mode,
            "lat": self.lat,
            "lon": self.lon,
            "alt_m": self.alt_m,
            "speed_mps": self.speed_mps,
            "track_deg": self.track_deg,
            "gps_time_ms": self.gps_time_ms,
            "clock_offset_ms": self.clock_offset_ms,
        }


def _finite(value: object) -> float | None:
    """A finite number as float; None for absent, NaN, infinite or non-numbers."""
    if not _is_number(value):
        return None
    assert isinstance(value, int | float)
    number = float(value)
    return number if math.isfinite(number) else None


def _time_ms(value: object) -> int | None:
    """gpsd's "time": ISO 8601 UTC (protocol >= 3.10), or seconds since the epoch (older)."""
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)  # gpsd's times are UTC even without a suffix
        return (stamp - _EPOCH) // timedelta(milliseconds=1)
    seconds = _finite(value)
    return None if seconds is None else round(seconds * MS_PER_S)


def _altitude_m(report: Mapping[str, object]) -> float | None:
    # Prefer altHAE, then altMSL, then alt. gpsd < 3.20 sent only "alt" (its datum was never
    # specified); 3.20 split it into altHAE (height above the WGS84 ellipsoid, the receiver's
    # own measurement, in the same datum as lat/lon) and altMSL (HAE minus a geoid model) and
    # deprecated "alt". HAE does not depend on which geoid model a receiver or gpsd applies,
    # so it is the most comparable value across boxes; the others keep older gpsd working.
    for key in ("altHAE", "altMSL", "alt"):
        altitude = _finite(report.get(key))
        if altitude is not None:
            return altitude
    return None


def _gps_second(fix: GpsFix) -> int | None:
    return None if fix.gps_time_ms is None else fix.gps_time_ms // MS_PER_S


class GpsTracker:
    """The box's knowledge of its position, driven only by reports and `now` arguments.

    Invariants:
    - `fix` is the newest TPV with mode >= 2 and a finite position, or None if there never was;
    - status is NO_GPSD while disconnected; otherwise NO_FIX until a fix and after a TPV with
      mode < 2, FIX while the fix is at most `stale_after_s` old, STALE after that;
    - the history holds fixes only, at most one per second of GPS time (the first report of
      each second, upgraded in place by a later report of the same instant with a better
      mode), ordered by reception, none older than `history_s` before the newest, and never
      more than `max_samples` whatever the clocks do.
    """

    def __init__(self, *, stale_after_s: float = 3.0, history_s: float = 300.0) -> None:
        if stale_after_s <= 0 or history_s <= 0:
            raise ValueError("gps: stale_after_s and history_s must be positive")
        self.stale_after_ns = int(stale_after_s * NS_PER_S)
        self.history_ns = int(history_s * NS_PER_S)
        # One sample a second for history_s seconds, plus one for the boundary second. A
        # replayed log or a GPS time jumping back and forth could otherwise grow it unbounded.
        self.max_samples = math.ceil(history_s) + 1
        self.fix: GpsFix | None = None
        self.connected = False
        self.reports = 0
        self.tpv_reports = 0
        self.tpv_without_position = 0
        self.gpsd_release: str | None = None
        self.last_report_mono_ns: int | None = None
        self._last_mode = 0
        self._history: deque[GpsFix] = deque(maxlen=self.max_samples)

    # -- inputs --

    def set_connected(self, connected: bool) -> None:
        """The shell reports the state of its gpsd connection. The last fix survives a
        reconnect: a fix that is still young is still the box's position."""
        self.connected = connected

    def handle_report(
        self, report: Mapping[str, object], now_mono_ns: int, now_wall_ms: int
    ) -> None:
        """Take one report (as returned by `parse_line`); non-TPV classes only count."""
        self.reports += 1
        self.last_report_mono_ns = now_mono_ns
        kind = report.get("class")
        if kind == "VERSION":
            release = report.get("release")
            self.gpsd_release = release if isinstance(release, str) else None
        elif kind == "TPV":
            self._handle_tpv(report, now_mono_ns, now_wall_ms)

    def _handle_tpv(self, report: Mapping[str, object], now_mono_ns: int, now_wall_ms: int) -> None:
        self.tpv_reports += 1
        mode = report.get("mode", 0)
        mode = mode if isinstance(mode, int) and 0 <= mode <= 3 else 0
        if mode < 2:
            self._last_mode = mode  # gpsd says the fix is lost (or not yet there)
            return
        lat, lon = _finite(report.get("lat")), _finite(report.get("lon"))
        if lat is None or lon is None:
            # A "fix" without a position is no evidence of anything; neither refresh the fix
            # nor declare it lost. If such reports persist the fix goes STALE.
            self.tpv_without_position += 1
            return
        self._last_mode = mode
        gps_time_ms = _time_ms(report.get("time"))
        fix = GpsFix(
            mode=mode,
            lat=lat,
            lon=lon,
            # A 2D fix's altitude is a stale or assumed value, not a measurement.
            alt_m=_altitude_m(report) if mode == 3 else None,
            speed_mps=_finite(report.get("speed")),
            track_deg=_finite(report.get("track")),
            gps_time_ms=gps_time_ms,
            clock_offset_ms=None if gps_time_ms is None else gps_time_ms - now_wall_ms,
            received_mono_ns=now_mono_ns,
            received_wall_ms=now_wall_ms,
        )
        self.fix = fix
        self._remember(fix)

    def _remember(self, fix: GpsFix) -> None:
        """Add to the 1 Hz history (see the class invariants), then drop what is too old."""
        if fix.gps_time_ms is None:
            return  # without a GPS time a sample can neither be placed in a second nor checked
        if self._history and _gps_second(self._history[-1]) == _gps_second(fix):
            last = self._history[-1]
            if last.gps_time_ms == fix.gps_time_ms and fix.mode > last.mode:
                self._history[-1] = fix  # e.g. RMC gave 2D, then the epoch's GGA gave 3D
            return
        self._history.append(fix)
        oldest_ns = fix.received_mono_ns - self.history_ns
        while self._history[0].received_mono_ns < oldest_ns:
            self._history.popleft()

    # -- queries --

    def status(self, now_mono_ns: int) -> GpsStatus:
        if not self.connected:
            return GpsStatus.NO_GPSD
        if self.fix is None or self._last_mode < 2:
            return GpsStatus.NO_FIX
        if now_mono_ns - self.fix.received_mono_ns > self.stale_after_ns:
            return GpsStatus.STALE
        return GpsStatus.FIX

    def speed_mps(self, now_mono_ns: int) -> float | None:
        """The current speed, or None unless the status is FIX: a trigger must not fire on a
        speed that is stale or from a lost fix."""
        if self.fix is None or self.status(now_mono_ns) is not GpsStatus.FIX:
            return None
        return self.fix.speed_mps

    @property
    def clock_offset_ms(self) -> int | None:
        """GPS time minus system wall clock at the newest fix (None without one)."""
        return None if self.fix is None else self.fix.clock_offset_ms

    def history_len(self) -> int:
        return len(self._history)

    def samples_between(self, start_mono_ns: int, end_mono_ns: int) -> list[dict[str, object]]:
        """The history samples received in [start, end) of monotonic time, oldest first.

        Half-open, so consecutive segments (one's end is the next one's start) share no sample.
        """
        return [
            fix.sample()
            for fix in self._history
            if start_mono_ns <= fix.received_mono_ns < end_mono_ns
        ]


# -- the asyncio shell ---------------------------------------------------------------------------


def _wall_ms() -> int:
    return time.time_ns() // NS_PER_MS


@dataclass(frozen=True, slots=True)
class GpsdHealth:
    """What the local API shows about GPS. No position in here: it may be logged."""

    status: GpsStatus
    connected: bool
    reports: int
    parse_errors: int
    reconnects: int
    last_report_age_s: float | None
    gpsd_release: str | None


class Backoff:
    """Bounded exponential backoff with jitter.

    Invariant: the n-th delay since the last `reset()` is drawn uniformly from [d/2, d] where
    d = min(min_s * 2**n, max_s): never below min_s/2, never above max_s. The jitter keeps a
    fleet of boxes (or several clients in one) from retrying in step.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError("gps: need 0 < reconnect_min_s <= reconnect_max_s")
        self.min_s = min_s
        self.max_s = max_s
        self._rng = rng
        self._delay_s = min_s

    def next_s(self) -> float:
        delay_s = self._delay_s
        self._delay_s = min(delay_s * 2, self.max_s)
        return self._rng.uniform(delay_s / 2, delay_s)

    def reset(self) -> None:
        self._delay_s = self.min_s


class GpsdClient:
    """Keeps a watch on gpsd and feeds `tracker`; `run()` returns only after `stop()`.

    Invariants: `run()` never raises for anything gpsd or the network does (connection
    refused, reset, EOF, garbage, silence): it marks the tracker disconnected and retries after
    a `Backoff` from `reconnect_min_s` up to `reconnect_max_s`. A session that delivered at
    least one report resets the backoff. A connection silent for `idle_timeout_s` is treated as
    hung and reopened (gpsd without a receiver is silent too; a reconnect every
    `idle_timeout_s` on loopback is cheap). Memory per connection is bounded by the stream
    limit (MAX_LINE_BYTES, a little more while a longer line is being discarded). While the box
    records (`set_recording(True)`), a retry waits at most `recording_retry_s`, and a backoff
    already running ends then: a recording's GPS samples matter more than a quiet log.
    """

    def __init__(
        self,
        tracker: GpsTracker,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        idle_timeout_s: float = 30.0,
        recording_retry_s: float = 1.0,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        wall_ms: Callable[[], int] = _wall_ms,
        rng: random.Random | None = None,
    ) -> None:
        if connect_timeout_s <= 0 or idle_timeout_s <= 0:
            raise ValueError("gps: timeouts must be positive")
        self.tracker = tracker
        self.host = host
        self.port = port
        # jitter only: nothing secret depends on this generator
        self._backoff = Backoff(reconnect_min_s, reconnect_max_s, rng or random.Random())
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._mono_ns = mono_ns
        self._wall_ms = wall_ms
        self.parse_errors = 0
        self.reconnects = 0  # connection attempts after the first
        self.connections = 0  # successful connections
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()  # a recording started: end the backoff now
        self._recording = False
        self.recording_retry_s = recording_retry_s
        self._writer: asyncio.StreamWriter | None = None

    @property
    def connected(self) -> bool:
        return self.tracker.connected

    def health(self) -> GpsdHealth:
        now = self._mono_ns()
        last = self.tracker.last_report_mono_ns
        return GpsdHealth(
            status=self.tracker.status(now),
            connected=self.connected,
            reports=self.tracker.reports,
            parse_errors=self.parse_errors,
            reconnects=self.reconnects,
            last_report_age_s=None if last is None else (now - last) / NS_PER_S,
            gpsd_release=self.tracker.gpsd_release,
        )

    def set_recording(self, recording: bool) -> None:
        """The box records (faster retries) or stands by (the backoff as is). Event loop."""
        self._recording = recording
        if recording:
            self._wake.set()

    def stop(self) -> None:
        """Ask `run()` to return: wakes a backoff sleep, ends the current session."""
        self._stopping.set()
        if self._writer is not None:
            self._writer.close()  # the reader sees EOF at once

    async def run(self) -> None:
        attempts = 0
        while not self._stopping.is_set():
            if attempts:
                self.reconnects += 1
            attempts += 1
            reports_before = self.tracker.reports
            try:
                await self._session()
                reason = "eof"
            except (OSError, TimeoutError, EOFError) as exc:
                reason = type(exc).__name__  # no message: it could echo what gpsd sent
            finally:
                self.tracker.set_connected(False)
                self._writer = None
            if self._stopping.is_set():
                break
            worked = self.tracker.reports > reports_before
            if worked:
                self._backoff.reset()  # it worked for a while: retry soon
            delay_s = self._backoff.next_s()
            if self._recording:
                delay_s = min(delay_s, self.recording_retry_s)
            # A working gpsd lost is worth a warning; a gpsd still absent (at boot, or without
            # a receiver) is not, or the log would fill with one line per retry.
            level = logging.WARNING if worked else logging.INFO
            log.log(level, "gpsd: disconnected (%s), retry %d in %.1f s", reason, attempts, delay_s)
            await self._sleep(delay_s)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, cut short by `stop()` or by a recording starting."""
        self._wake.clear()
        stopping = asyncio.ensure_future(self._stopping.wait())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                (stopping, woken), timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            woken.cancel()

    async def _session(self) -> None:
        """One connection: watch, then feed lines until EOF. Raises OSError/TimeoutError."""
        async with asyncio.timeout(self.connect_timeout_s):
            reader, writer = await asyncio.open_connection(
                self.host, self.port, limit=MAX_LINE_BYTES
            )
        self._writer = writer
        try:
            if self._stopping.is_set():
                return  # stop() ran while we were connecting
            self.connections += 1
            self.tracker.set_connected(True)
            log.info("gpsd: connected (connection %d)", self.connections)
            writer.write(WATCH)
            await writer.drain()
            while (line := await self._next_line(reader)) is not None:
                self._feed(line)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _feed(self, line: bytes) -> None:
        report = parse_line(line)
        if report is None:
            self.parse_errors += 1
            return
        self.tracker.handle_report(report, self._mono_ns(), self._wall_ms())

    async def _next_line(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next complete line, or None at EOF (a partial last line is dropped).

        A line longer than the stream limit is discarded whole, including its tail after the
        limit, and counted as one parse error: it is never parsed in pieces.
        """
        overlong = False
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return None
            except asyncio.LimitOverrunError as exc:
                # The data stays buffered: drop it (at least one byte, so this terminates).
                await reader.readexactly(max(exc.consumed, 1))
                overlong = True
                continue
            if overlong:
                self.parse_errors += 1  # this was the tail of the over-long line
                overlong = False
                continue
            return line
