"""The soak's world: the box's configuration, its card (on labdisk when the power is cut),
the fault proxy's plan per link, and the processes and services the cycles run in
(tests/soak/soak_rig.py is the rig).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from common.durable import make_dirs
from labdisk import LabDisk
from labdisk.durability import Mode
from labnet.proxy import FaultPlan, TcpFaultProxy
from tests.evidence_helpers import write_box_config
from tests.gpsfake import Gpsfake, free_port
from tests.soak.soak_processes import BackOfficeProcess, BoxApi, BoxProcess
from tests.soak.soak_settings import (
    API_TIMEOUT_S,
    CAMERAS,
    LTE_CAP_BYTES,
    LTE_P0_RESERVE_BYTES,
    LTE_RATE_BYTES_PER_S,
    LTE_SOURCE,
    MVB_ADMIN,
    POLL_S,
    SLOW_CARD_FACTOR,
    STATE_TIMEOUT_S,
    WIFI_RATE_BYTES_PER_S,
    WIFI_SOURCE,
    SoakPaths,
    SoakStats,
)
from tests.tls_helpers import SERVER_NAME, TestPki

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
