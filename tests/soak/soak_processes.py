"""The soak's real processes: the back office (`mvb-admin serve`) and the box (`mvb run`),
started, stopped and killed by the rig, and the box's local API as the rig reads it
(tests/soak/soak_rig.py is the rig).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import IO, Any

import aiohttp

from labdisk import LabDisk
from tests.clock_helpers import stepped_by_file
from tests.soak.soak_settings import (
    EXIT_TIMEOUT_S,
    MVB,
    MVB_ADMIN,
    POLL_S,
    SERVING,
    START_TIMEOUT_S,
    SoakPaths,
    SoakStats,
)
from tests.tls_helpers import TestPki

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
