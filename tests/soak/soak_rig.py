"""The whole-box soak (issue 7): real processes, scripted faults, and the audit-log oracle.

    mvb run (4 synthetic cameras, gpsd)  --wifi 127.0.0.2--+
                                                           +--> TcpFaultProxy --> mvb-admin serve
                                         --lte  127.0.0.3--+    (this process)    (same port and
                                                                                   store always)

- the box is the real `mvb run`, a subprocess, with four synthetic cameras and GPS replayed by a
  real gpsd (gpsfake, looping the shipped NMEA track);
- its two links differ by source address; one fault proxy in this process gives each address a
  plan of its own (labnet/proxy.py `plan_for_peer`): WiFi is refused, blackholed or reset while
  LTE carries on; LTE has a small monthly cap with a P0 reserve;
- the back office is the real `mvb-admin serve`, a subprocess, stopped (SIGTERM, and SIGKILL)
  and started again on the same port and store;
- the box is SIGKILLed at the cycle's kill phase (recording, upload, idle), then started again;
  with `SoakSettings.power` (issue 14) its card and state directory live on one labdisk mount
  (labdisk/), and once the killed box has exited the disk is cut too (strict POSIX or ext4-like,
  torn last write): everything not made durable is gone, as after a real power loss, and the
  oracle judges what the box claimed durable (a SIGKILL alone keeps the page cache);
- its wall clock (only its own: libfaketime reads the offset from a file at least every second,
  its monotonic clocks stay true) is stepped by the script now and then, 40 days forward and
  back: retention must delete nothing unattested, and the pinned link must keep working.

The script of cycles is tests/soak/script.py (pure, seeded); the oracle tests/soak/oracle.py.
Everything waits on observable state (the box's API, its audit log, the proxy's counters) with a
bound; the only sleeps are the script's own (how long to record, when to cut the power).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from common.durable import make_dirs
from labdisk import LabDisk
from labdisk.durability import Mode
from labnet.proxy import FaultPlan, TcpFaultProxy
from storage.audit import verify_audit_log
from storage.card import CardLayout
from storage.catalog import Catalog
from storage.devicekey import DevicePublicKey
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from tests.clock_helpers import stepped_by_file
from tests.evidence_helpers import write_box_config
from tests.gpsfake import Gpsfake, free_port
from tests.soak.oracle import AuditFacts, Totals, find_problems, read_back_office, totals
from tests.soak.script import BackOfficeFault, Cycle, CycleScript, KillPhase, Wifi
from tests.tls_helpers import SERVER_NAME, TestPki

MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
SOAK_BOX_ID = "MVB-TEST-0001"  # the CN of the test PKI's client certificate the box uses
SERVING = re.compile(r"serving https://127\.0\.0\.1:(?P<port>\d+)/files/ from .*")

WIFI_SOURCE = "127.0.0.2"
LTE_SOURCE = "127.0.0.3"
CELLULAR_LINKS = frozenset({"lte"})
CAMERAS = ("dashcam", "bodycam-left", "bodycam-right", "rearcam")
CLASSES_BY_SOURCE = {"officer": "P1", "patrol": "P2", "crash": "P0"}
LTE_CAP_BYTES = 4_000_000
LTE_P0_RESERVE_BYTES = 3_850_000  # P1 may use 150 kB: a recording or two, then WiFi only
WIFI_RATE_BYTES_PER_S = 600_000.0
SLOW_WIFI_RATE_BYTES_PER_S = 25_000.0  # 200 kbit/s: a weak hotspot, EDGE-like
LTE_RATE_BYTES_PER_S = 150_000.0

POLL_S = 0.1
START_TIMEOUT_S = 60.0
STATE_TIMEOUT_S = 20.0
API_TIMEOUT_S = 10.0
SLOW_CARD_FACTOR = 3.0
"""On labdisk every card write goes through a FUSE daemon in Python: on this shared 2-core
machine a start or a seal (fsyncs behind the capture lock) kept `POST /api/record/stop` from
answering for over 10 s twice in long soaks. The rig waits longer there; how the box copes with
a card that stalls is issue 14 item 3's (the dying card), not this oracle's."""
UPLOAD_TRAFFIC_BYTES = 16 * 1024  # more than a TLS handshake and a probe: file bytes flow
UPLOAD_WAIT_S = 8.0  # a little over the uplink's 5 s queue refresh
IDLE_WAIT_S = 15.0
EPISODE_WAIT_S = 40.0
CYCLE_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 30.0
DRAIN_REPORT_S = 5.0
MAX_LOGGED_ERRORS = 10


@dataclass(frozen=True, slots=True)
class SoakSettings:
    seed: int
    min_kills: int = 22
    minutes: float = 0.0  # keep cycling until this much wall time has passed (the long soak)
    drain_timeout_s: float = 180.0
    power: Mode | None = None  # a labdisk cut after every SIGKILL, in this mode (None: none)


@dataclass(frozen=True, slots=True)
class SoakPaths:
    root: Path
    on_labdisk: bool = False

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def box(self) -> Path:
        return self.root / "box"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def decrypted(self) -> Path:
        return self.root / "decrypted"

    @property
    def data(self) -> Path:
        """Where the card and the state directory live: the labdisk mount, or the box's folder."""
        return self.root / "disk" if self.on_labdisk else self.box

    @property
    def disk_backing(self) -> Path:
        return self.root / "disk-backing"

    @property
    def state(self) -> Path:
        return self.data / "state"

    @property
    def card(self) -> Path:
        return self.data / "card"

    @property
    def audit(self) -> Path:
        return self.state / "audit.jsonl"

    @property
    def clock_offset(self) -> Path:
        """The box's wall-clock offset for libfaketime ("+0", "+40d", "-40d")."""
        return self.root / "clock-offset"

    @property
    def device_pub(self) -> Path:
        """The box's public device key as the back office keeps it (taken at the first start)."""
        return self.root / "device_key.pub.pem"


@dataclass
class SoakStats:
    cycles: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    disk_cuts: int = 0
    disk_bytes_lost: int = 0
    disk_files_restored: int = 0
    disk_entries_reverted: int = 0
    startup_s: list[float] = field(default_factory=list)
    back_office_restarts: int = 0
    back_office_crashes: int = 0
    wifi_flaps: int = 0
    wifi_down_cycles: int = 0
    wifi_slow_cycles: int = 0
    clock_steps: list[str] = field(default_factory=list)
    lte_budget_used_up_seen: bool = False
    lte_p0_after_budget: bool = False
    drain_s: float = 0.0
    wall_s: float = 0.0


@dataclass
class SoakReport:
    seed: int
    stats: SoakStats
    totals: Totals
    facts: AuditFacts
    problems: list[str]
    audit_verify: str
    lte_bytes: int
    wifi_bytes: int
    lte_file_bytes: int

    def summary(self) -> str:
        s, t = self.stats, self.totals
        startup = sorted(s.startup_s)
        kills = ", ".join(f"{phase} {n}" for phase, n in sorted(s.kills.items()))
        return "\n".join(
            [
                f"soak seed {self.seed}: {s.cycles} cycles in {s.wall_s:.0f} s",
                f"  power cuts (SIGKILL): {sum(s.kills.values())} ({kills})",
                f"  labdisk cuts: {s.disk_cuts}; thrown away: {s.disk_bytes_lost:,} bytes not "
                f"durable, {s.disk_files_restored} files restored, {s.disk_entries_reverted} "
                "directory entries reverted",
                f"  mvb run start-up: median {startup[len(startup) // 2]:.2f} s, "
                f"max {startup[-1]:.2f} s (spawn to API answering and gateway.started audited)",
                f"  recordings: {len(self.facts.trigger_of)}; files recorded: "
                f"{t.recorded_files} ({t.interrupted_files} recovered after a cut)",
                f"  media seconds recorded: {t.recorded_s:.1f}; arrived: "
                f"{t.arrived_s:.1f} in {t.arrived_files} files, {t.arrived_bytes:,} bytes",
                f"  through the proxy: WiFi {self.wifi_bytes:,} bytes, LTE {self.lte_bytes:,} "
                f"bytes; files completed over LTE: {self.lte_file_bytes:,} bytes (cap "
                f"{LTE_CAP_BYTES:,}, P0 reserve {LTE_P0_RESERVE_BYTES:,})",
                f"  WiFi: {s.wifi_flaps} flaps, {s.wifi_down_cycles} cycles without WiFi, "
                f"{s.wifi_slow_cycles} at 200 kbit/s; LTE "
                f"budget used up seen: {s.lte_budget_used_up_seen}, P0 over LTE after: "
                f"{s.lte_p0_after_budget}",
                f"  the box's wall clock stepped {len(s.clock_steps)} time(s): "
                f"{' '.join(s.clock_steps) or 'never'}",
                f"  back office restarts: {s.back_office_restarts} (of which SIGKILL: "
                f"{s.back_office_crashes})",
                f"  time to drain the card at the end: {s.drain_s:.1f} s",
                f"  audit: {self.facts.events} entries, {self.facts.starts} starts, "
                f"{self.facts.torn_tails_repaired} torn tails repaired; {self.audit_verify}",
                f"  problems: {len(self.problems)}",
                *(f"    - {problem}" for problem in self.problems),
            ]
        )


# -- the processes --------------------------------------------------------------------------------


class BackOfficeProcess:
    """`mvb-admin serve` on one store; after the first start always on the same port."""

    def __init__(self, paths: SoakPaths, pki: TestPki, log: IO[bytes]) -> None:
        self.paths = paths
        self.pki = pki
        self.port = 0
        self._log = log
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        argv = [
            str(MVB_ADMIN), "serve", "--dir", str(self.paths.store),
            "--cert", str(self.pki.server_cert), "--key", str(self.pki.server_key),
            "--client-ca", str(self.pki.ca_cert), "--port", str(self.port),
            "--reserve-bytes", "0",
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=self._log
        )
        self._process = process
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
        match = SERVING.fullmatch(line.decode().strip())
        assert match is not None, f"mvb-admin serve did not start: {line!r}"
        self.port = int(match["port"])

    async def stop(self, signum: signal.Signals) -> int:
        process, self._process = self._process, None
        if process is None:
            return 0
        process.send_signal(signum)
        return await asyncio.wait_for(process.wait(), EXIT_TIMEOUT_S)


class BoxProcess:
    """The real `mvb run`. Started means: its API answers and it audited `gateway.started`."""

    def __init__(
        self,
        paths: SoakPaths,
        config: Path,
        api_port: int,
        log: IO[bytes],
        disk: LabDisk | None = None,
        stats: SoakStats | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.api = f"http://127.0.0.1:{api_port}"
        self._log = log
        self._process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._disk = disk
        self._stats = stats or SoakStats()

    async def start(self, session: aiohttp.ClientSession) -> float:
        """Spawn and wait until started; returns the seconds that took."""
        audit_offset = _size(self.paths.audit)
        began_s = time.monotonic()
        self._process = await asyncio.create_subprocess_exec(
            str(MVB),
            "--config",
            str(self.config),
            "run",
            stdout=self._log,
            stderr=self._log,
            env=self._environment(),
        )
        self.starts += 1
        async with asyncio.timeout(START_TIMEOUT_S):
            while not await self._answers(session) or not _audited_start(
                self.paths.audit, audit_offset
            ):
                if self._process.returncode is not None:
                    raise AssertionError(f"mvb run exited with {self._process.returncode}")
                await asyncio.sleep(POLL_S)
        return time.monotonic() - began_s

    def _environment(self) -> dict[str, str]:
        """libfaketime with the offset file: the box's wall clock moves when the file does (read
        at most a second late), its monotonic clocks never; the offset survives restarts."""
        offset = self.paths.clock_offset.read_text() if self.paths.clock_offset.exists() else None
        environment = stepped_by_file(self.paths.clock_offset)  # writes "+0"
        if offset is not None:
            self.paths.clock_offset.write_text(offset)
        del environment["FAKETIME_NO_CACHE"]  # re-read once a second: cheap for 4 cameras
        return {**environment, "FAKETIME_CACHE_DURATION": "1"}

    async def _answers(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.api}/api/status") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def power_cut(self) -> None:
        """SIGKILL: no goodbye, nothing flushed that was not already durable. On labdisk, once
        the box has exited (nothing of it may land after), the disk loses what was not durable."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), EXIT_TIMEOUT_S)
        if self._disk is not None:
            report = await asyncio.to_thread(self._disk.cut, torn=True)
            self._stats.disk_cuts += 1
            self._stats.disk_bytes_lost += int(report.get("bytes_lost", 0))
            self._stats.disk_files_restored += int(report.get("files_restored", 0))
            self._stats.disk_entries_reverted += int(report.get("entries_reverted", 0))

    async def terminate(self) -> int:
        process, self._process = self._process, None
        assert process is not None
        process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(process.wait(), EXIT_TIMEOUT_S)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _audited_start(audit: Path, offset: int) -> bool:
    """Whether `gateway.started` was appended after `offset` (lines are canonical JSON, so the
    member is spelt exactly so). Reads only the new tail: a long soak's log grows to megabytes."""
    if _size(audit) <= offset:
        return False
    with audit.open("rb") as log:
        log.seek(offset)
        return b'"event":"gateway.started"' in log.read()


class BoxApi:
    """The box's loopback API: what the officer's buttons and the vehicle's devices call."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def status(self) -> dict[str, Any]:
        async with self.session.get(f"{self.base}/api/status") as response:
            assert response.status == 200, response.status
            document: dict[str, Any] = await response.json()
            return document

    async def uploads(self) -> dict[str, Any]:
        """`mvb uploads --json`: every file waiting on the card, with its state and reason."""
        async with self.session.get(f"{self.base}/api/uploads") as response:
            document: dict[str, Any] = await response.json()
            return document

    async def post(self, path: str, body: dict[str, str] | None = None) -> int:
        async with self.session.post(f"{self.base}{path}", json=body) as response:
            return response.status

    async def trigger(self, source: str) -> None:
        if source == "officer":
            status = await self.post("/api/record/start")
        else:
            status = await self.post("/api/trigger", {"source": source})
        assert status == 200, f"trigger {source}: HTTP {status}"


# -- the world ------------------------------------------------------------------------------------


@dataclass
class World:
    paths: SoakPaths
    back_office: BackOfficeProcess
    box: BoxProcess
    api: BoxApi
    proxy: TcpFaultProxy
    plans: dict[str, FaultPlan]
    stats: SoakStats
    log: Callable[[str], None]
    state_timeout_s: float = STATE_TIMEOUT_S

    @property
    def wifi(self) -> FaultPlan:
        return self.plans[WIFI_SOURCE]

    def heal_wifi(self) -> None:
        self.wifi.blackhole = False
        self.wifi.refuse = False
        self.wifi.rate_bytes_per_s = WIFI_RATE_BYTES_PER_S

    async def state_until(self, state: str, what: str) -> None:
        """Until the box's recorder is in `state` (bounded by `state_timeout_s`)."""
        await self.status_until(lambda s: s["state"] == state, what, self.state_timeout_s)

    async def status_until(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout_s: float
    ) -> dict[str, Any]:
        """Poll the box's status until `predicate` holds; AssertionError naming `what`."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate(document := await self.api.status()):
                    await asyncio.sleep(POLL_S)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None
        return document


def link_plans() -> dict[str, FaultPlan]:
    """Per source address: a WiFi hop (fast, short delay) and an LTE one (slower, longer)."""
    return {
        WIFI_SOURCE: FaultPlan(delay_s=0.002, rate_bytes_per_s=WIFI_RATE_BYTES_PER_S),
        LTE_SOURCE: FaultPlan(delay_s=0.03, rate_bytes_per_s=LTE_RATE_BYTES_PER_S),
    }


def box_config(
    paths: SoakPaths, pki: TestPki, *, proxy_port: int, gps_port: int, api_port: int
) -> Path:
    """The box's local file: four synthetic cameras, gpsd, two links bound by source address.

    Small on purpose: files roll every 3 s (power cuts land on seals), 64 KiB upload chunks
    (a cut lands mid-upload), short retries and timeouts (a cycle lasts seconds), and the
    officer's web listener off (its fixed ports would clash between boxes run side by side).
    """
    cameras = "".join(
        f"""
[[cameras]]
name = "{name}"
kind = "synthetic"
serial = "SOAK-{index}"
width = 160
height = 96
fps = 10
bitrate_bps = 100000
"""
        for index, name in enumerate(CAMERAS)
    )
    sections = f"""file_target_s = 3.0
[recording]
prerecord_s = 5
postrecord_s = 1
segment_min_s = 1
[gps]
port = {gps_port}
[api]
port = {api_port}
[web]
enabled = false
[triggers.patrol]
upload_class = "P2"
postrecord_s = 1
[triggers.crash]
postrecord_s = 1
{cameras}
[uplink]
enabled = true
host = "127.0.0.1"
port = {proxy_port}
server_name = "{SERVER_NAME}"
ca_file = "{pki.ca_cert}"
client_cert_file = "{pki.client_cert}"
client_key_file = "{pki.client_key}"
pins = ["{pki.server_pin}", "{pki.backup_pin}"]
chunk_bytes = 65536
retry_initial_s = 0.2
retry_max_s = 2.0
attempts_per_assignment = 3
connect_timeout_s = 2
request_timeout_s = 10
[[links]]
name = "wifi"
cost_class = "wifi"
source_address = "{WIFI_SOURCE}"
headroom_fraction = 0.0
[[links]]
name = "lte"
cost_class = "cellular"
source_address = "{LTE_SOURCE}"
monthly_cap_bytes = {LTE_CAP_BYTES}
p0_reserve_bytes = {LTE_P0_RESERVE_BYTES}
headroom_fraction = 0.0
udp_allowed = false
"""
    return write_box_config(
        paths.box, paths.keys / "recording.pub", storage_lines=sections, data_dir=paths.data
    )


@contextlib.contextmanager
def card_disk(paths: SoakPaths, mode: Mode | None, seed: int) -> Iterator[LabDisk | None]:
    """The labdisk holding the card and the state directory (made durable before the box's
    first start), or None; unmounted at the end."""
    if mode is None:
        yield None
        return
    with LabDisk(paths.disk_backing, paths.data, mode=mode, seed=seed) as disk:
        make_dirs(paths.card)
        make_dirs(paths.state)
        yield disk


@contextlib.asynccontextmanager
async def soak_world(
    paths: SoakPaths, pki: TestPki, log: Callable[[str], None], disk: LabDisk | None = None
) -> AsyncIterator[World]:
    """Keys, GPS, back office, proxy and a configured (not yet started) box; all stopped after."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(MVB_ADMIN), "keys", "create", "--dir", str(paths.keys)],
        check=True,
        capture_output=True,
    )
    gps_port = free_port()
    gps = Gpsfake(gps_port, paths.logs, singleshot=False, sentence_interval_s=0.1)
    with (
        (paths.logs / "backoffice.log").open("ab") as bo_log,
        (paths.logs / "box.log").open("ab") as box_log,
    ):
        back_office = BackOfficeProcess(paths, pki, bo_log)
        box: BoxProcess | None = None
        try:
            await back_office.start()
            plans = link_plans()
            proxy = TcpFaultProxy("127.0.0.1", back_office.port, plan_for_peer=plans.get)
            slow = SLOW_CARD_FACTOR if disk is not None else 1.0
            timeout = aiohttp.ClientTimeout(API_TIMEOUT_S * slow)
            async with proxy, aiohttp.ClientSession(timeout=timeout) as session:
                api_port = free_port()
                config = box_config(
                    paths, pki, proxy_port=proxy.port, gps_port=gps_port, api_port=api_port
                )
                stats = SoakStats()
                box = BoxProcess(paths, config, api_port, box_log, disk, stats)
                api = BoxApi(session, box.api)
                yield World(
                    paths, back_office, box, api, proxy, plans, stats, log, STATE_TIMEOUT_S * slow
                )
        finally:
            if box is not None:
                await box.power_cut()
            await back_office.stop(signal.SIGKILL)
            gps.stop()


# -- one cycle ------------------------------------------------------------------------------------


async def run_cycle(world: World, cycle: Cycle, seed: int) -> None:
    """One life of the box: weather, start, the script's activity, the power cut."""
    world.stats.cycles += 1
    weather = _weather(world, cycle, random.Random(f"{seed}/{cycle.index}/wifi"))
    async with _background(weather) as _:
        world.stats.startup_s.append(await world.box.start(world.api.session))
        if world.stats.cycles == 1:
            shutil.copyfile(world.paths.state / "device_key.pub.pem", world.paths.device_pub)
        async with _background(_clock_step(world, cycle)) as step:
            phase = await _life(world, cycle)
            await step()  # a life shorter than the step's delay: set while the box was off
    world.heal_wifi()
    world.stats.kills[phase] += 1
    world.log(
        f"cycle {cycle.index}: {cycle.trigger}{' flagged' if cycle.flag else ''}, wifi "
        f"{cycle.wifi}, back office {cycle.back_office}"
        f"{f', clock {cycle.clock_step}' if cycle.clock_step else ''}: power cut while {phase}"
    )


async def _life(world: World, cycle: Cycle) -> str:
    """From the box's start to its power cut, with the back office's fault beside it; the
    phase the cut came in."""
    async with _background(_back_office_fault(world, cycle)) as fault:
        try:
            async with asyncio.timeout(CYCLE_TIMEOUT_S):
                phase = await _live(world, cycle)
        finally:
            await world.box.power_cut()
        await fault()  # the back office is back before the next cycle starts
    return phase


@contextlib.asynccontextmanager
async def _background(
    work: Awaitable[None] | None,
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Run `work` beside the block; `await joined()` waits for it; leaving the block without
    joining cancels it. Its failure is raised when joined, or when the block ends."""
    task = None if work is None else asyncio.ensure_future(work)

    async def joined() -> None:
        if task is not None:
            await task

    try:
        yield joined
    finally:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _weather(world: World, cycle: Cycle, rng: random.Random) -> Awaitable[None] | None:
    if cycle.wifi is Wifi.DOWN:
        world.stats.wifi_down_cycles += 1
        world.wifi.refuse = True  # out of range for the whole cycle: LTE only
        return None
    if cycle.wifi is Wifi.FLAPPING:
        return _flap_wifi(world, rng)
    if cycle.wifi is Wifi.SLOW:
        world.stats.wifi_slow_cycles += 1
        world.wifi.rate_bytes_per_s = SLOW_WIFI_RATE_BYTES_PER_S  # healed after the cycle
    return None


def _clock_step(world: World, cycle: Cycle) -> Awaitable[None] | None:
    if cycle.clock_step is None:
        return None
    return _step_clock(world, cycle.clock_step, cycle.clock_step_after_s)


async def _step_clock(world: World, offset: str, after_s: float) -> None:
    """Step the running box's wall clock to `offset` (atomically: libfaketime may read the file
    at any moment and must never see it half written)."""
    await asyncio.sleep(after_s)
    staged = world.paths.clock_offset.with_name("clock-offset.new")
    staged.write_text(f"{offset}\n")
    staged.replace(world.paths.clock_offset)
    world.stats.clock_steps.append(offset)


async def _flap_wifi(world: World, rng: random.Random) -> None:
    """WiFi at the edge of range: up a while, then gone (silence, then resets), and back."""
    try:
        while True:
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            world.wifi.blackhole = True
            world.stats.wifi_flaps += 1
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            world.proxy.reset_peer(WIFI_SOURCE)
            world.heal_wifi()
    finally:
        world.heal_wifi()


def _back_office_fault(world: World, cycle: Cycle) -> Awaitable[None] | None:
    if cycle.back_office is BackOfficeFault.NONE:
        return None
    return _restart_back_office(world, cycle)


async def _restart_back_office(world: World, cycle: Cycle) -> None:
    await asyncio.sleep(cycle.back_office_after_s)
    crash = cycle.back_office is BackOfficeFault.CRASH
    await world.back_office.stop(signal.SIGKILL if crash else signal.SIGTERM)
    world.stats.back_office_restarts += 1
    world.stats.back_office_crashes += int(crash)
    await asyncio.sleep(cycle.back_office_outage_s)
    await world.back_office.start()


async def _live(world: World, cycle: Cycle) -> str:
    """The scripted activity up to the moment of the power cut; returns the phase it reached."""
    api = world.api
    await api.trigger(cycle.trigger)
    await world.status_until(
        lambda s: s["state"] == "recording", "recording", world.state_timeout_s
    )
    if cycle.flag:
        assert await api.post("/api/record/flag") == 200
    if cycle.kill_phase is KillPhase.RECORDING:
        await asyncio.sleep(cycle.kill_delay_s)
        return KillPhase.RECORDING
    await asyncio.sleep(cycle.record_s)
    await _stop_recording(world)
    if cycle.lte_episode:
        await _lte_episode(world)
    if cycle.kill_phase is KillPhase.UPLOAD:
        return await _until_upload_traffic(world, cycle)
    return await _until_idle(world, cycle)


async def _stop_recording(world: World) -> None:
    assert await world.api.post("/api/record/stop") == 200
    await world.status_until(
        lambda s: s["state"] == "standby", "post-record", world.state_timeout_s
    )


async def _until_idle(world: World, cycle: Cycle) -> str:
    """Until no upload runs (bounded: a backlog on a healthy link keeps both slots busy, which
    is no fault of the box); then the script's delay."""
    try:
        async with asyncio.timeout(IDLE_WAIT_S):
            while (await world.api.status())["uplink"]["uploading"]:
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        return "idle (uploads never paused)"
    await asyncio.sleep(cycle.kill_delay_s)
    return KillPhase.IDLE


async def _until_upload_traffic(world: World, cycle: Cycle) -> str:
    """Until file bytes flow through the proxy (bounded: with WiFi gone and only routine files
    waiting, nothing may go); then the script's short delay."""
    proxy = world.proxy
    before = proxy.bytes_client_to_server
    try:
        await proxy.wait_until(
            lambda: proxy.bytes_client_to_server - before >= UPLOAD_TRAFFIC_BYTES, UPLOAD_WAIT_S
        )
    except TimeoutError:
        return "upload (none started)"
    await asyncio.sleep(cycle.kill_delay_s)
    return KillPhase.UPLOAD


async def _lte_episode(world: World) -> None:
    """WiFi is gone: the P1 files use up LTE's P1 budget and then wait for WiFi; a crash (P0)
    right after still goes out over LTE, from the P0 reserve."""
    await world.status_until(_budget_used_up, "the LTE budget to run out", EPISODE_WAIT_S)
    world.stats.lte_budget_used_up_seen = True
    started_before = _recordings(world.paths.audit)
    await world.api.trigger("crash")
    await world.status_until(
        lambda s: s["state"] == "recording", "recording", world.state_timeout_s
    )
    crash = next(r for r in _recordings(world.paths.audit) if r not in started_before)
    await _stop_recording(world)
    try:
        async with asyncio.timeout(EPISODE_WAIT_S):
            while not _uploaded_over(world.paths.audit, crash, "lte"):
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise AssertionError("the crash recording did not go out over LTE") from None
    world.stats.lte_p0_after_budget = True


def _budget_used_up(status: dict[str, Any]) -> bool:
    return any("budget used up" in reason for reason in status["uplink"]["waiting_reasons"])


def _audit_entries(audit: Path) -> list[dict[str, Any]]:
    """The complete lines of the box's audit log, read while the box appends to it."""
    data = audit.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def _recordings(audit: Path) -> list[str]:
    return [
        str(e["fields"]["recording_id"])
        for e in _audit_entries(audit)
        if e["event"] == "storage.recording_started"
    ]


def _uploaded_over(audit: Path, recording_id: str, link: str) -> bool:
    """Whether a file of `recording_id` was uploaded over `link` (per the audit log)."""
    entries = _audit_entries(audit)
    files = {
        str(e["fields"]["file_id"])
        for e in entries
        if e["event"] == "storage.file_sealed" and e["fields"]["recording_id"] == recording_id
    }
    return any(
        e["event"] == "uplink.uploaded" and e["fields"]["file_id"] in files
        for e in entries
        if e["fields"].get("link") == link
    )


# -- the end: drain, stop, judge -----------------------------------------------------------------


async def drain(world: World, timeout_s: float) -> None:
    """A last life with every link healthy, until the card is empty; then a clean stop."""
    world.heal_wifi()
    world.stats.startup_s.append(await world.box.start(world.api.session))
    began_s = time.monotonic()
    progress = _DrainProgress(world.log, began_s)
    try:
        await world.status_until(
            progress.empty, "the card to empty (files left on it or still uploading)", timeout_s
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await _left_on_card(world)}") from None
    world.stats.drain_s = time.monotonic() - began_s
    assert await world.box.terminate() == 0, "mvb run did not stop cleanly on SIGTERM"


async def _left_on_card(world: World) -> str:
    """What a drain that did not finish left: the catalog's records not deleted, and the
    uplink's own account of them (so a failed soak says why, not only that)."""
    catalog = Catalog.open(CardLayout(world.paths.card))
    try:
        left = [r for r in catalog.all() if r.state is not FileState.DELETED]
    finally:
        catalog.close()
    lines = [
        f"  {r.file_id} {r.state.value} class {r.upload_class} held {r.held} "
        f"attested {r.attested_sha256_hex is not None} created {r.created_at_ms}"
        for r in left
    ]
    uploads = json.dumps(await world.api.uploads(), sort_keys=True)
    return "\n".join(["left on the card (catalog):", *lines, f"uplink: {uploads}"])


class _DrainProgress:
    """Says every DRAIN_REPORT_S how far the drain is (a long soak leaves a backlog)."""

    def __init__(self, log: Callable[[str], None], began_s: float) -> None:
        self._log = log
        self._began_s = began_s
        self._next_report_s = began_s + DRAIN_REPORT_S

    def empty(self, status: dict[str, Any]) -> bool:
        uplink = status["uplink"]
        on_card = status["storage"]["files_on_card"]
        now_s = time.monotonic()
        reasons = uplink["waiting_reasons"]
        if now_s >= self._next_report_s:
            self._next_report_s = now_s + DRAIN_REPORT_S
            self._log(
                f"drain {now_s - self._began_s:.0f} s: {on_card} files on the card, "
                f"{len(uplink['uploading'])} uploading, waiting: {reasons}"
            )
        return bool(on_card == 0 and not uplink["uploading"] and not reasons)


def judge(world: World, stats: SoakStats, seed: int) -> SoakReport:
    """The oracle over everything the processes left behind (all of them stopped)."""
    paths = world.paths
    audit_bytes = paths.audit.read_bytes()
    facts = AuditFacts.parse(audit_bytes.splitlines())
    device_key = DevicePublicKey.load(paths.device_pub)
    key = RecipientPrivateKey.load(paths.keys / "recording.key")
    stored = read_back_office(paths.store, key, device_key, paths.decrypted)
    problems = find_problems(facts, stored, CLASSES_BY_SOURCE, CELLULAR_LINKS)
    problems += _card_problems(paths)
    problems += [f"back office kept a corrupt upload: {p.name}" for p in _corrupt(paths)]
    for log in ("box.log", "backoffice.log"):
        problems += _logged_errors(paths.logs / log)
    verify = _audit_verify(paths)
    if not verify.startswith("audit log OK"):
        problems.append(f"mvb-admin audit verify: {verify}")
    problems += _custody_problems(paths, audit_bytes)
    if facts.starts != world.box.starts:
        problems.append(f"{world.box.starts} starts of mvb run, {facts.starts} audited")
    if verify_audit_log(audit_bytes, device_key).entries != facts.events:
        problems.append("the audit log holds entries the verifier did not reach")
    peer_bytes = world.proxy.peer_bytes_client_to_server
    return SoakReport(
        seed=seed,
        stats=stats,
        totals=totals(facts, stored),
        facts=facts,
        problems=problems,
        audit_verify=verify,
        lte_bytes=peer_bytes.get(LTE_SOURCE, 0),
        wifi_bytes=peer_bytes.get(WIFI_SOURCE, 0),
        lte_file_bytes=sum(
            stored[f].size_bytes
            for f, link in facts.uploaded_on.items()
            if link in CELLULAR_LINKS and f in stored
        ),
    )


def _card_problems(paths: SoakPaths) -> list[str]:
    evidence = paths.card / "evidence"
    left = sorted(p for p in evidence.rglob("*") if p.is_file()) if evidence.exists() else []
    return [f"left on the card: {p.relative_to(paths.card)}" for p in left]


# The box logs in logfmt (`level=error ...`), the back office as `<time> ERROR <logger>`;
# a Traceback at the start of a line is a crash Python printed itself.
LOGGED_ERROR = re.compile(r"(^|\d )(ERROR|CRITICAL) |(^|\s)level=(error|critical) |^Traceback ")


def _logged_errors(log: Path) -> list[str]:
    """ERROR lines and tracebacks of a process: the box logs a bug that way and carries on
    (a round, an upload), so a soak that lost nothing may still have hit one."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = sorted({line.strip() for line in lines if LOGGED_ERROR.search(line)})
    return [f"{log.name}: {line}" for line in errors[:MAX_LOGGED_ERRORS]]


def _corrupt(paths: SoakPaths) -> list[Path]:
    corrupt = paths.store / "corrupt"
    return sorted(corrupt.iterdir()) if corrupt.exists() else []


def _custody_problems(paths: SoakPaths, audit_bytes: bytes) -> list[str]:
    """The back office holds the box's audit log (docs/audit-custody.md) through every power
    cut and restart: its check passes with no alarm, what it holds is the start of the box's
    log byte for byte, and the box's log reaches the head it prints."""
    check = _admin("audit", "check", "--store", str(paths.store), "--box-id", SOAK_BOX_ID)
    if check.returncode != 0:
        return [f"mvb-admin audit check: {check.stdout.strip()} {check.stderr.strip()}"]
    held = (paths.store / "audit" / SOAK_BOX_ID / "log.jsonl").read_bytes()
    if not held or not audit_bytes.startswith(held):
        return ["the back office's copy of the audit log is not the start of the box's log"]
    heads = [line for line in check.stdout.splitlines() if line.startswith("last head: ")]
    head = heads[0].removeprefix("last head: ") if heads else "?"
    against = _admin(
        "audit", "verify", str(paths.audit), "--device-key", str(paths.device_pub), "--head", head
    )
    if against.returncode != 0:
        return [f"mvb-admin audit verify --head: {against.stdout.strip()}"]
    return []


def _admin(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(MVB_ADMIN), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def _audit_verify(paths: SoakPaths) -> str:
    """The back office's check of the whole chain, first entry to last, across all restarts."""
    command = [str(MVB_ADMIN), "audit", "verify", str(paths.audit)]
    result = subprocess.run(
        [*command, "--device-key", str(paths.device_pub)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return (result.stdout + result.stderr).strip()


async def run_soak(
    settings: SoakSettings, root: Path, pki: TestPki, log: Callable[[str], None] = print
) -> SoakReport:
    """The whole soak: cycles until `min_kills` power cuts (and `minutes`), drain, judge."""
    log(f"soak seed {settings.seed} (rerun with this seed to replay the script)")
    began_s = time.monotonic()
    paths = SoakPaths(root, on_labdisk=settings.power is not None)
    script = CycleScript(settings.seed)
    with card_disk(paths, settings.power, settings.seed) as disk:
        return await _soak(settings, paths, script, pki, log, disk, began_s)


async def _soak(
    settings: SoakSettings,
    paths: SoakPaths,
    script: CycleScript,
    pki: TestPki,
    log: Callable[[str], None],
    disk: LabDisk | None,
    began_s: float,
) -> SoakReport:
    async with soak_world(paths, pki, log, disk) as world:
        index = 0
        while sum(world.stats.kills.values()) < settings.min_kills or (
            time.monotonic() - began_s < settings.minutes * 60
        ):
            await run_cycle(world, script.cycle(index), settings.seed)
            index += 1
        await drain(world, settings.drain_timeout_s)
        await world.back_office.stop(signal.SIGTERM)
        world.stats.wall_s = time.monotonic() - began_s
        return await asyncio.to_thread(judge, world, world.stats, settings.seed)
