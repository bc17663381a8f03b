"""Regenerate `route.nmea`: a 60 s drive out of Hattem (NL) towards Zwolle, 1 Hz RMC + GGA.

    .venv/bin/python tests/data/gps/make_route.py            # rewrites route.nmea beside it
    .venv/bin/python tests/data/gps/make_route.py --out -    # prints it

Deterministic (no randomness, no clock), so the shipped file only changes when this script does.
The car follows a polyline of road waypoints at about 13 m/s (a gentle sinusoidal speed
variation between 12 and 14 m/s); heading is the bearing of the leg it is on. Positions use a
local flat-earth approximation, which over a kilometre is far more precise than the track needs.

Each second holds one RMC (date, time, position, speed in knots, course) followed by one GGA
(time, position, fix quality 1, satellites, HDOP, altitude above MSL, geoid separation): that
GGA carries an altitude, so gpsd reports a 3D fix (mode 3). Latitude and longitude are written
with five decimals of minutes (about 2e-7 degrees), well under the 1e-5 degrees the tests allow.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

START = datetime(2024, 5, 14, 9, 30, 0, tzinfo=UTC)
DURATION_S = 60
# Waypoints (lat, lon) in degrees: the road north-west out of Hattem.
WAYPOINTS: tuple[tuple[float, float], ...] = (
    (52.47260, 6.06050),
    (52.47650, 6.05400),
    (52.48010, 6.04600),
)
ALT_MSL_M = 5.2
GEOID_SEP_M = 46.1  # EGM96 separation around Zwolle, so altHAE = altMSL + 46.1
MPS_PER_KNOT = 1852.0 / 3600.0
EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True, slots=True)
class Point:
    """One second of the drive."""

    when: datetime
    lat: float
    lon: float
    speed_mps: float
    track_deg: float


def checksum(body: str) -> str:
    """XOR of every character between '$' and '*', as two upper-case hex digits (NMEA 0183)."""
    value = 0
    for char in body.encode("ascii"):
        value ^= char
    return f"{value:02X}"


def sentence(body: str) -> str:
    return f"${body}*{checksum(body)}"


def _leg_metres(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """North and east offsets in metres from a to b (flat earth at a's latitude)."""
    north = math.radians(b[0] - a[0]) * EARTH_RADIUS_M
    east = math.radians(b[1] - a[1]) * EARTH_RADIUS_M * math.cos(math.radians(a[0]))
    return north, east


def position_at(distance_m: float) -> tuple[float, float, float]:
    """Latitude, longitude and heading (degrees) after `distance_m` along the waypoints."""
    for a, b in itertools.pairwise(WAYPOINTS):
        north, east = _leg_metres(a, b)
        length = math.hypot(north, east)
        heading = math.degrees(math.atan2(east, north)) % 360.0
        if distance_m <= length:
            f = distance_m / length
            return a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), heading
        distance_m -= length
    raise ValueError("the drive is longer than the waypoints")


def drive() -> list[Point]:
    """One point per second; speed integrated with the trapezoid rule."""
    points: list[Point] = []
    distance_m = 0.0
    previous_speed = 0.0
    for second in range(DURATION_S):
        speed = 13.0 + math.sin(second / 9.0)
        if second:
            distance_m += (previous_speed + speed) / 2.0
        previous_speed = speed
        lat, lon, heading = position_at(distance_m)
        points.append(Point(START + timedelta(seconds=second), lat, lon, speed, heading))
    return points


def _lat(lat: float) -> str:
    degrees = int(abs(lat))
    minutes = (abs(lat) - degrees) * 60.0
    return f"{degrees:02d}{minutes:08.5f},{'N' if lat >= 0 else 'S'}"


def _lon(lon: float) -> str:
    degrees = int(abs(lon))
    minutes = (abs(lon) - degrees) * 60.0
    return f"{degrees:03d}{minutes:08.5f},{'E' if lon >= 0 else 'W'}"


def rmc(p: Point) -> str:
    hms = p.when.strftime("%H%M%S") + ".00"
    dmy = p.when.strftime("%d%m%y")
    knots = p.speed_mps / MPS_PER_KNOT
    return sentence(
        f"GPRMC,{hms},A,{_lat(p.lat)},{_lon(p.lon)},{knots:.2f},{p.track_deg:.1f},{dmy},,,A"
    )


def gga(p: Point) -> str:
    hms = p.when.strftime("%H%M%S") + ".00"
    return sentence(
        f"GPGGA,{hms},{_lat(p.lat)},{_lon(p.lon)},1,09,0.9,{ALT_MSL_M:.1f},M,{GEOID_SEP_M:.1f},M,,"
    )


def render() -> str:
    """The whole track; NMEA lines end in CR LF."""
    lines = []
    for p in drive():
        lines += [rmc(p), gga(p)]
    return "".join(line + "\r\n" for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("route.nmea")))
    args = parser.parse_args(argv)
    text = render()
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_bytes(text.encode("ascii"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
