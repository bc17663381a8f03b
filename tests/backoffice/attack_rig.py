"""A thief with one paired box's certificate against the real back office, and an honest box.

Shared by tests/backoffice/test_serve_attack.py (fast, asserts behaviour) and
bench/backoffice_attack.py (repeats, prints the ratio of box B's upload time under attack to
its time without). Everything is real: `mvb-admin serve` as its own process (pairing listener,
ledger, fleet repository, every limit of backoffice/serve_limits.py, a low RLIMIT_NOFILE as in a
tight unit), both boxes paired through `mvb-admin pair-code` and the box's own pairing client,
box B uploading with the box's tus session over its pinned mutual-TLS transport, and the thief
in a process of its own (`python -m tests.backoffice.attack_rig ...`) so its CPU is not B's:

- **creations**: workers creating empty uploads as fast as the back office answers;
- **slow POSTs**: connections each sending a creation-with-upload body at 2 KiB/s (above the
  minimum pace), reconnecting as soon as one is answered;
- **bare connections**: TCP connections to the unauthenticated pairing port that never say a
  word, reopened when the back office closes them.

The thief prints one JSON line when its attack runs ("attacking") and one with its counts when
it is told to stop (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import os
import re
import resource
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from backoffice.fleet_repo import init_repository
from gateway.pairing_client import pair, pairing_files
from storage.devicekey import DeviceKey
from tests.backoffice.test_serve_both_transports import read_lines
from tests.tls_helpers import TestPki
from transport.https import HttpsTransport
from transport.tls import ClientTlsSettings
from transport.tus_messages import UploadOutcome, UploadSpec
from transport.tus_session import TusSession
from transport.upload import SliceReader, drive

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
SERVING = re.compile(r"serving (?:pairing at )?https://127\.0\.0\.1:(?P<port>\d+)/(?P<what>\S+)")
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
BOX_A = "MVB-THIEF-A"
BOX_B = "MVB-HONEST-B"
THIEF_ADDRESS = "127.0.0.66"
"""The thief's own network (a loopback address of its own): box B comes from 127.0.0.1."""
RLIMIT_NOFILE = 768
"""A tight unit: the listeners' budgets below fit it, an unbudgeted pairing flood would not."""
LIMITS = (
    "--max-connections", "128", "--max-connections-per-address", "64",
    "--pair-max-connections", "16", "--pair-max-connections-per-address", "8",
    "--max-concurrent-requests", "128", "--client-max-requests", "8",
    "--client-rate-limit", "100", "--client-burst", "100",
)  # fmt: skip
"""Budgets that fit RLIMIT_NOFILE (128 + 16 + 128 + 256 headroom), and a request rate five
times the default: over loopback box B sends its 4 MiB chunks a hundred times faster than over
any link a box has. The rest are the defaults."""


# -- the back office -----------------------------------------------------------------------------


@dataclass
class BackOffice:
    """`mvb-admin serve` in its own process, with the files a test looks at."""

    process: subprocess.Popen[str]
    root: Path
    pki: TestPki
    port: int
    pair_port: int

    @property
    def state(self) -> Path:
        return self.root / "pairing"

    @property
    def store(self) -> Path:
        return self.root / "uploads"

    def admin(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MVB_ADMIN), *map(str, args)], capture_output=True, text=True, timeout=60
        )

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the back office's process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_descriptors(self) -> int:
        """How many file descriptors the back office's process holds now."""
        return sum(1 for _ in Path(f"/proc/{self.process.pid}/fd").iterdir())


def _low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (RLIMIT_NOFILE, RLIMIT_NOFILE))


@contextlib.contextmanager
def back_office(pki: TestPki, root: Path, *extra: str) -> Iterator[BackOffice]:
    """`mvb-admin serve` with pairing, the fleet repository and LIMITS, until the block ends."""
    init_repository(root / "repo", root / "keys", now=datetime.now(UTC))
    command = [
        str(MVB_ADMIN), "serve", "--dir", str(root / "uploads"), "--cert", str(pki.server_cert),
        "--key", str(pki.server_key), "--client-ca", str(pki.ca_cert), "--port", "0",
        "--reserve-bytes", "0", "--pair-port", "0", "--pairing-state", str(root / "pairing"),
        "--pki-dir", str(pki.directory), "--fleet-repo", str(root / "repo"), *LIMITS, *extra,
    ]  # fmt: skip
    log = (root / "serve.log").open("w")
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=_low_descriptor_limit
    ) as process:
        try:
            ports = {}
            for line in read_lines(process, 3, timeout_s=30):
                match = SERVING.search(line)
                assert match is not None, line
                ports[match["what"]] = int(match["port"])
            yield BackOffice(process, root, pki, ports["files/"], ports["pair/v1"])
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            log.close()


@dataclass
class Box:
    """A paired box: its id, state directory and device key."""

    box_id: str
    state: Path
    device_key: DeviceKey = field(repr=False)

    def tls(self) -> ClientTlsSettings:
        return pairing_files(self.state).tls_settings()


async def paired_box(office: BackOffice, box_id: str) -> Box:
    """A box paired as an officer pairs one: a code from `mvb-admin pair-code`, typed in."""
    made = office.admin(
        "pair-code", "--state", office.state, "--pki", office.pki.directory,
        "--box-id", box_id, "--address", f"127.0.0.1:{office.pair_port}",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    code = made.stdout.strip().splitlines()[-1]
    state = office.root / box_id
    device_key = DeviceKey.generate()
    await pair(code, box_id, state, device_key.public_key().raw(), attempts=3, retry_delay_s=0.5)
    return Box(box_id, state, device_key)


# -- box B: an honest upload -----------------------------------------------------------------------


def evidence_file(directory: Path, name: str, size_bytes: int) -> Path:
    path = directory / name
    path.write_bytes(secrets.token_bytes(size_bytes))
    return path


async def upload(
    office: BackOffice, box: Box, path: Path, file_id: str, *, chunk_bytes: int = 4 << 20
) -> tuple[UploadOutcome, float]:
    """The box's own tus session over its pinned link: the outcome and the seconds it took."""
    data = path.read_bytes()
    spec = UploadSpec(file_id, len(data), hashlib.sha256(data).hexdigest())
    session = TusSession(spec, chunk_bytes=chunk_bytes)
    transport = await HttpsTransport.connect(
        "127.0.0.1", office.port, box.tls(), request_timeout_s=120, read_timeout_s=60
    )
    reader = SliceReader(path)
    started_s = time.monotonic()
    try:
        outcome = await drive(session, transport, reader)
    finally:
        reader.close()
        await transport.aclose()
    return outcome, time.monotonic() - started_s


# -- the thief, in a process of its own ----------------------------------------------------------


@dataclass
class Counts:
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, what: str, status: object) -> None:
        self.statuses[f"{what} {status}"] += 1


def thief_command(office: BackOffice, thief: Box, *, slow_posts: int, bare: int) -> list[str]:
    tls = thief.tls()
    return [
        sys.executable, "-m", "tests.backoffice.attack_rig",
        "--port", str(office.port), "--pair-port", str(office.pair_port),
        "--cert", str(tls.client_cert_file), "--key", str(tls.client_key_file),
        "--ca", str(tls.ca_file), "--server-name", tls.server_name,
        "--slow-posts", str(slow_posts), "--bare", str(bare),
    ]  # fmt: skip


def _thief_yields() -> None:
    """The thief runs on this machine only because the test has one: at the lowest priority it
    takes the CPU box B and the back office leave idle, as a thief's own machine would be, and
    what B measures is the back office's work for the attack, not the attacker's own."""
    os.nice(19)


@contextlib.contextmanager
def thief_attacking(
    office: BackOffice,
    thief: Box,
    *,
    slow_posts: int = 260,
    bare: int = 450,
    yields: bool = True,
) -> Iterator[dict[str, Any]]:
    """The thief's process, attacking until the block ends; its counts land in the dict.
    `yields`: at the lowest CPU priority (see `_thief_yields`)."""
    counts: dict[str, Any] = {}
    command = thief_command(office, thief, slow_posts=slow_posts, bare=bare)
    preexec = _thief_yields if yields else None
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, preexec_fn=preexec
    ) as process:
        try:
            [started] = read_lines(process, 1, timeout_s=60)
            assert json.loads(started) == {"attacking": True}, started
            yield counts
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=60)
            if out.strip():
                counts.update(json.loads(out.strip().splitlines()[-1]))


async def _creations(session: aiohttp.ClientSession, url: str, counts: Counts) -> None:
    while True:
        file_id = "thief-" + secrets.token_hex(8)
        sha = hashlib.sha256(b"").hexdigest()
        meta = f"file_id {_b64(file_id)},sha256 {_b64(sha)}"
        headers = {**TUS, "Upload-Length": "0", "Upload-Metadata": meta}
        try:
            async with session.post(url, headers=headers) as answer:
                counts.add("create", answer.status)
        except (TimeoutError, aiohttp.ClientError, OSError):
            counts.add("create", "error")
            await asyncio.sleep(0.01)


async def _slow_post(port: int, context: ssl.SSLContext, server_name: str, counts: Counts) -> None:
    """Creation-with-upload at 2 KiB/s; as soon as it is answered, another."""
    length = 1 << 20
    while True:
        writer = None
        answer: asyncio.Future[bytes] | None = None
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=context,
                server_hostname=server_name,
                local_addr=(THIEF_ADDRESS, 0),
            )
            file_id = "slow-" + secrets.token_hex(8)
            meta = f"file_id {_b64(file_id)},sha256 {_b64('0' * 64)}"
            head = (
                f"POST /files/ HTTP/1.1\r\nHost: {server_name}\r\nTus-Resumable: 1.0.0\r\n"
                f"Upload-Length: {length}\r\nUpload-Metadata: {meta}\r\n"
                f"Content-Type: {OFFSET_STREAM}\r\nContent-Length: {length}\r\n\r\n"
            )
            writer.write(head.encode())
            answer = asyncio.ensure_future(reader.readline())
            while not answer.done():
                writer.write(b"x" * 2048)
                await writer.drain()
                await asyncio.wait({answer}, timeout=1.0)
            line = answer.result().split(b" ")
            counts.add("slow", line[1].decode() if len(line) > 1 else "closed")
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError):
            counts.add("slow", "error")
            await asyncio.sleep(0.05)
        finally:
            if answer is not None and not answer.done():
                answer.cancel()
            elif answer is not None and not answer.cancelled():
                answer.exception()  # retrieved: a reset after the answer is no news
            if writer is not None:
                writer.close()


async def _bare(port: int, counts: Counts) -> None:
    """A TCP connection to the pairing port that never says a word; reopened once closed."""
    loop = asyncio.get_running_loop()
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((THIEF_ADDRESS, 0))
        try:
            async with asyncio.timeout(5):
                await loop.sock_connect(sock, ("127.0.0.1", port))
            counts.add("bare", "open")
            data = await loop.sock_recv(sock, 1)  # returns when the back office closes it
            counts.add("bare", "closed" if not data else "data")
        except (OSError, TimeoutError):
            counts.add("bare", "error")
            await asyncio.sleep(0.2)
        finally:
            sock.close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _attack(args: argparse.Namespace) -> None:
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    counts = Counts()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    url = f"https://127.0.0.1:{args.port}/files/"
    connector = aiohttp.TCPConnector(ssl=context, limit=4, local_addr=(THIEF_ADDRESS, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(_creations(session, url, counts)) for _ in range(4)]
        tasks += [
            asyncio.create_task(_slow_post(args.port, context, args.server_name, counts))
            for _ in range(args.slow_posts)
        ]
        tasks += [asyncio.create_task(_bare(args.pair_port, counts)) for _ in range(args.bare)]
        await asyncio.sleep(1.0)  # every task has made its first move
        print(json.dumps({"attacking": True}), flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(dict(counts.statuses)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="the thief's attack (see the module docstring)")
    for name in ("--port", "--pair-port", "--slow-posts", "--bare"):
        parser.add_argument(name, type=int, required=True)
    for name in ("--cert", "--key", "--ca", "--server-name"):
        parser.add_argument(name, required=True)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )
    asyncio.run(_attack(parser.parse_args()))


if __name__ == "__main__":
    main()
