"""A simulated gpsd for `make demo` and tests: no receiver, no Debian gpsd, no gpsfake.

An asyncio TCP server on loopback that speaks as much of gpsd's JSON protocol as
`gateway.gps.GpsdClient` (and a plain `gpspipe -w`-style client) needs:

- on connect: a VERSION object;
- `?WATCH={"enable":true,"json":true}` -> DEVICES and WATCH objects, then one TPV report per
  `interval_s` (aligned to whole seconds of the wall clock, as a receiver's epochs are) and a SKY
  report every few epochs; `?WATCH={"enable":false}` stops the stream;
- `?VERSION;`, `?DEVICES;` and `?POLL;` are answered; anything else gets an ERROR object.

The vehicle drives `route_position`: a loop through Hattem (NL) at a steady 13 m/s, a pure function
of the seconds since the simulator started. Every client sees the same vehicle.

Bounded: at most `max_clients` connections (a further one is closed at once, before VERSION),
each served until it disconnects; a command line longer than MAX_COMMAND_BYTES ends that
connection. `stop()` closes the listener and every connection and waits for their handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

NS_PER_MS = 1_000_000
MS_PER_S = 1000
SPEED_MPS = 13.0  # about 47 km/h: a patrol through a small town
METRES_PER_DEGREE = 6_371_008.8 * math.pi / 180  # mean Earth radius; the route is ~1 km across
ALT_MSL_M = 3.0  # the IJssel valley
GEOID_SEP_M = 44.5  # EGM96 around Hattem: altHAE = altMSL + geoid separation
DEVICE_PATH = "/dev/mvb-sim0"
RELEASE = "3.25-mvb-sim"
MAX_COMMAND_BYTES = 4096
SKY_EVERY = 5  # epochs
DEFAULT_MAX_CLIENTS = 4

# A loop around Hattem's old town (lat, lon), clockwise from the north-west; it closes on itself.
HATTEM_LOOP: tuple[tuple[float, float], ...] = (
    (52.4786, 6.0573),
    (52.4795, 6.0668),
    (52.4762, 6.0726),
    (52.4712, 6.0689),
    (52.4707, 6.0598),
    (52.4741, 6.0551),
)
_ORIGIN_LAT, _ORIGIN_LON = 52.4756, 6.0633  # Hattem, the Markt
_COS_ORIGIN = math.cos(math.radians(_ORIGIN_LAT))


# -- the route: pure ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leg:
    """One straight leg of the loop, in metres east/north of the origin."""

    x0: float
    y0: float
    dx: float
    dy: float
    length_m: float
    track_deg: float


def _to_xy(lat: float, lon: float) -> tuple[float, float]:
    """Degrees -> metres east and north of the origin (equirectangular: exact enough at 1 km)."""
    return (
        (lon - _ORIGIN_LON) * METRES_PER_DEGREE * _COS_ORIGIN,
        (lat - _ORIGIN_LAT) * METRES_PER_DEGREE,
    )


def _to_latlon(x: float, y: float) -> tuple[float, float]:
    return (
        _ORIGIN_LAT + y / METRES_PER_DEGREE,
        _ORIGIN_LON + x / (METRES_PER_DEGREE * _COS_ORIGIN),
    )


def _legs(points: tuple[tuple[float, float], ...]) -> tuple[_Leg, ...]:
    legs = []
    for (lat0, lon0), (lat1, lon1) in zip(points, points[1:] + points[:1], strict=True):
        x0, y0 = _to_xy(lat0, lon0)
        x1, y1 = _to_xy(lat1, lon1)
        dx, dy = x1 - x0, y1 - y0
        track = math.degrees(math.atan2(dx, dy)) % 360.0  # degrees true, clockwise from north
        legs.append(_Leg(x0, y0, dx, dy, math.hypot(dx, dy), track))
    return tuple(legs)


_LEGS = _legs(HATTEM_LOOP)
ROUTE_LENGTH_M = sum(leg.length_m for leg in _LEGS)
ROUTE_PERIOD_S = ROUTE_LENGTH_M / SPEED_MPS


def route_position(t_s: float) -> tuple[float, float, float, float]:
    """Where the simulated vehicle is `t_s` seconds after the start: (lat, lon, speed_mps, track).

    Pure. The vehicle drives HATTEM_LOOP at SPEED_MPS, round and round (period ROUTE_PERIOD_S;
    negative times run the loop backwards in time). Position is continuous in `t_s`; the track
    changes only at the corners. Raises ValueError for a non-finite time.
    """
    if not math.isfinite(t_s):
        raise ValueError(f"route time must be finite, not {t_s}")
    distance = (t_s * SPEED_MPS) % ROUTE_LENGTH_M
    for leg in _LEGS:
        if distance < leg.length_m:
            break
        distance -= leg.length_m
    else:  # only by rounding at the very end of the loop
        leg, distance = _LEGS[-1], _LEGS[-1].length_m
    share = distance / leg.length_m
    lat, lon = _to_latlon(leg.x0 + share * leg.dx, leg.y0 + share * leg.dy)
    return lat, lon, SPEED_MPS, leg.track_deg


# -- reports: pure --------------------------------------------------------------------------------


def iso_utc(ms: int) -> str:
    """Epoch milliseconds -> gpsd's time format: ISO 8601 UTC with milliseconds and a Z."""
    stamp = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % MS_PER_S:03d}Z"


def tpv_report(t_s: float, epoch_ms: int) -> dict[str, Any]:
    """The TPV report of a 3D fix at route time `t_s`, stamped with GPS time `epoch_ms`."""
    lat, lon, speed, track = route_position(t_s)
    return {
        "class": "TPV",
        "device": DEVICE_PATH,
        "mode": 3,
        "time": iso_utc(epoch_ms),
        "ept": 0.005,
        "lat": round(lat, 9),
        "lon": round(lon, 9),
        "altHAE": ALT_MSL_M + GEOID_SEP_M,
        "altMSL": ALT_MSL_M,
        "geoidSep": GEOID_SEP_M,
        "eph": 4.2,
        "epv": 6.1,
        "track": round(track, 4),
        "speed": speed,
        "climb": 0.0,
    }


def sky_report(epoch_ms: int) -> dict[str, Any]:
    """A plain SKY report (counts and dilution only; no satellite list is needed)."""
    return {
        "class": "SKY",
        "device": DEVICE_PATH,
        "time": iso_utc(epoch_ms),
        "hdop": 0.9,
        "vdop": 1.3,
        "pdop": 1.6,
        "nSat": 11,
        "uSat": 8,
    }


def version_report() -> dict[str, Any]:
    return {
        "class": "VERSION",
        "release": RELEASE,
        "rev": RELEASE,
        "proto_major": 3,
        "proto_minor": 15,
    }


def devices_report(activated_ms: int) -> dict[str, Any]:
    device = {
        "class": "DEVICE",
        "path": DEVICE_PATH,
        "driver": "MVB simulator",
        "activated": iso_utc(activated_ms),
        "flags": 1,
        "native": 0,
        "bps": 9600,
        "parity": "N",
        "stopbits": 1,
        "cycle": 1.0,
    }
    return {"class": "DEVICES", "devices": [device]}


def watch_report(enabled: bool) -> dict[str, Any]:
    return {"class": "WATCH", "enable": enabled, "json": enabled, "nmea": False, "raw": 0}


def error_report(message: str) -> dict[str, Any]:
    return {"class": "ERROR", "message": message}


def parse_watch(argument: str) -> bool | None:
    """The argument of `?WATCH=` -> whether to stream JSON, or None when it is not an object."""
    if not argument:
        return True  # `?WATCH;` alone reports the current state; a bare watch enables
    try:
        value = json.loads(argument)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    return value.get("enable", True) is True and value.get("json", True) is True


def _wall_ms() -> int:
    return time.time_ns() // NS_PER_MS


# -- the server -----------------------------------------------------------------------------------


class _Session:
    """One client: its writer and whether it watches."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.watching = asyncio.Event()

    def send(self, *reports: dict[str, Any]) -> None:
        for report in reports:
            self.writer.write(json.dumps(report, separators=(",", ":")).encode() + b"\r\n")


class GpsdSimulator:
    """The simulated gpsd. Use `async with GpsdSimulator() as gpsd:` (or start/stop) and connect
    a GpsdClient to `gpsd.host`, `gpsd.port`.

    Invariants: at most `max_clients` connections are served at once (`refused` counts the
    others); every handler ends when its client disconnects or at `stop()`; `stop()` leaves no
    task and no socket behind. Route time is the wall time since `start()` (`started_wall_ms`),
    so a client can tell from a TPV's `time` where on the route it must be.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        interval_s: float = 1.0,
    ) -> None:
        if max_clients < 1 or not interval_s > 0:
            raise ValueError("gps_sim: need max_clients >= 1 and interval_s > 0")
        self.host = host
        self._port = port
        self.max_clients = max_clients
        self.interval_ms = max(1, round(interval_s * MS_PER_S))
        self.started_wall_ms = 0
        self.refused = 0
        self.served = 0
        self.reports_sent = 0
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._handlers: dict[asyncio.Task[Any], _Session] = {}

    @property
    def port(self) -> int:
        """The bound port (the OS's choice when constructed with port 0)."""
        if self._server is None:
            raise RuntimeError("gps_sim: not started")
        return self._port

    @property
    def clients(self) -> int:
        """Connections being served now."""
        return len(self._handlers)

    async def start(self) -> int:
        """Listen; returns the bound port."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self._port, limit=MAX_COMMAND_BYTES
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        self.started_wall_ms = _wall_ms()
        return self._port

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for the handlers to end."""
        self._stopping = True  # a connection accepted just now is closed by its own handler
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Closing a transport delivers EOF to its reader, so each handler ends by itself (a
        # cancelled stream handler would make asyncio log a traceback).
        handlers = list(self._handlers.items())
        for _task, session in handlers:
            session.writer.close()
        await asyncio.gather(*(task for task, _session in handlers), return_exceptions=True)

    async def __aenter__(self) -> GpsdSimulator:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def route_time_s(self, epoch_ms: int) -> float:
        """Seconds along the route at wall (GPS) time `epoch_ms`."""
        return (epoch_ms - self.started_wall_ms) / MS_PER_S

    # -- one connection --

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._stopping or len(self._handlers) >= self.max_clients:
            self.refused += 1
            await _close(writer)
            return
        session = _Session(writer)
        self._handlers[task] = session
        self.served += 1
        try:
            await self._serve(reader, session)
        except (OSError, asyncio.LimitOverrunError):
            pass  # the client went away, or sent an over-long line: end this connection
        finally:
            self._handlers.pop(task, None)
            await _close(writer)

    async def _serve(self, reader: asyncio.StreamReader, session: _Session) -> None:
        session.send(version_report())
        await session.writer.drain()
        streamer = asyncio.create_task(self._stream(session))
        try:
            while (line := await _read_line(reader)) is not None:
                for command in line.decode("utf-8", "replace").split(";"):
                    if command.strip():
                        self._answer(command.strip(), session)
                await session.writer.drain()
        finally:
            streamer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streamer

    def _answer(self, command: str, session: _Session) -> None:
        name, _, argument = command.partition("=")
        if name == "?WATCH":
            enabled = parse_watch(argument)
            if enabled is None:
                session.send(error_report("Invalid WATCH: not a JSON object"))
                return
            session.send(devices_report(self.started_wall_ms), watch_report(enabled))
            if enabled:
                session.watching.set()
            else:
                session.watching.clear()
        elif name == "?VERSION":
            session.send(version_report())
        elif name == "?DEVICES":
            session.send(devices_report(self.started_wall_ms))
        elif name == "?POLL":
            now_ms = _wall_ms()
            tpv = tpv_report(self.route_time_s(now_ms), now_ms)
            session.send({"class": "POLL", "time": iso_utc(now_ms), "active": 1, "tpv": [tpv]})
        else:
            session.send(error_report(f"Unrecognized request '{command[:32]}'"))

    async def _stream(self, session: _Session) -> None:
        """TPV (and now and then SKY) at every epoch while the client watches."""
        epochs = 0
        while True:
            await session.watching.wait()
            epoch_ms = await self._next_epoch()
            if not session.watching.is_set():
                continue
            session.send(tpv_report(self.route_time_s(epoch_ms), epoch_ms))
            if epochs % SKY_EVERY == 0:
                session.send(sky_report(epoch_ms))
            epochs += 1
            self.reports_sent += 1
            try:
                await session.writer.drain()
            except OSError:
                session.writer.close()  # the reader then sees EOF and the session ends
                return

    async def _next_epoch(self) -> int:
        """Sleep until the next multiple of the interval on the wall clock; return it."""
        now_ms = _wall_ms()
        epoch_ms = (now_ms // self.interval_ms + 1) * self.interval_ms
        await asyncio.sleep((epoch_ms - now_ms) / MS_PER_S)
        return epoch_ms


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next command line, or None at EOF. Raises LimitOverrunError for an over-long one."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
