"""gpsfake as a test peer: a real gpsd replaying the shipped NMEA track on a loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROUTE = Path(__file__).parent / "data" / "gps" / "route.nmea"
MPS_PER_KNOT = 1852.0 / 3600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class NmeaFix:
    lat: float
    lon: float
    speed_mps: float
    track_deg: float


def nmea_degrees(value: str, hemisphere: str, width: int) -> float:
    degrees = int(value[:width]) + float(value[width:]) / 60.0
    return -degrees if hemisphere in "SW" else degrees


def read_route() -> dict[int, NmeaFix]:
    """The shipped track's RMC sentences, keyed by GPS time in ms."""
    fixes: dict[int, NmeaFix] = {}
    for line in ROUTE.read_text("ascii").splitlines():
        fields = line.split("*")[0].split(",")
        if fields[0] != "$GPRMC":
            continue
        stamp = datetime.strptime(fields[9] + fields[1], "%d%m%y%H%M%S.%f").replace(tzinfo=UTC)
        fixes[int(stamp.timestamp() * 1000)] = NmeaFix(
            lat=nmea_degrees(fields[3], fields[4], 2),
            lon=nmea_degrees(fields[5], fields[6], 3),
            speed_mps=float(fields[7]) * MPS_PER_KNOT,
            track_deg=float(fields[8]),
        )
    return fixes


class Gpsfake:
    """gpsfake (and the gpsd it starts) replaying the route, in a process group of its own so
    that the test can freeze or kill both at once, by that group's id."""

    def __init__(
        self, port: int, log_dir: Path, *, singleshot: bool, sentence_interval_s: float = 0.02
    ) -> None:
        # -n: gpsd reads the device at once; -c 0.02: one sentence every 20 ms, i.e. a
        # 60 s drive in 2.4 s (0.5 is real time: RMC + GGA each second); -1: play the log once
        # (else it loops, GPS time jumping back).
        command = ["gpsfake", "-P", str(port), "-c", str(sentence_interval_s), "-q", "-n"]
        command += ["-1"] if singleshot else []
        self.log = (log_dir / f"gpsfake-{port}-{time.monotonic_ns()}.log").open("wb")
        self.proc = subprocess.Popen(
            [*command, str(ROUTE)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def crash(self) -> None:
        """gpsd dies (SIGKILL, with gpsfake): no goodbye, the kernel closes its sockets."""
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        # SIGKILL the group: nothing of a test's gpsd is worth a clean exit, and gpsfake
        # sometimes takes seconds to act on SIGTERM. Also reaps a frozen (SIGSTOP) gpsd.
        self.signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()
        # gpsfake leaves its control socket behind when it does not exit by itself.
        Path(f"/tmp/gpsfake-{self.proc.pid}.sock").unlink(missing_ok=True)
