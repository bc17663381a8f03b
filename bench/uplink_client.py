"""One client run of the uplink benchmark (run by bench/uplink.py inside the box's namespace).

Uploads `--files` random files of `--size-bytes` each, concurrently, to the reference back office
with one of: our tus session over our HTTPS transport (`https`), over our HTTP/3 transport
(`h3`), or tuspy (`tuspy`, the peer client: requests, one file after another in one thread per
file). Ours runs as the box does: one chunk sizer shared by the uploads (as by a link's), chunks
from its floor up to `--chunk-bytes`, and the box's default timeouts. tuspy sends
`--chunk-bytes` chunks and has no timeouts. Prints one JSON line: wall seconds, CPU seconds of
this process during the uploads, body bytes sent, the chunk sizes sent, and whether every file
was attested with the right SHA-256 (for tuspy, which ignores the header, a HEAD of ours asks the
back office afterwards, outside the measured time).

`--cuts N` (https and h3 only) cuts the connection N times at random moments, `--cut-every-s
LOW,HIGH` apart, and reports the body bytes re-sent against the chunks in flight at the cuts.
HTTPS: the box's TCP sockets to the back office are destroyed (`ss -K`: the radio's reset, with no
proxy between that would acknowledge bytes the link has not carried). HTTP/3: the project's UDP
proxy in front of the back office forgets its mappings, as a carrier NAT does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from labnet.proxy import FaultPlan
from labnet.udp_proxy import UdpFaultProxy
from transport.chunk_size import (
    DEFAULT_CHUNK_TARGET_S,
    DEFAULT_MIN_CHUNK_BYTES,
    ChunkBounds,
    ChunkSizer,
)
from transport.h3_io import H3Transport
from transport.http import HttpRequest, Transport
from transport.https import HttpsTransport
from transport.pinning import PinSet, pin_of_pem_file
from transport.progress import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_STALL_TIMEOUT_S,
)
from transport.tls import ClientTlsSettings
from transport.tus_headers import ATTESTATION_HEADER
from transport.tus_messages import UploadOutcome, UploadSpec
from transport.tus_session import TusSession
from transport.upload import RetryPolicy, SliceReader, drive, drive_with_retries

SERVER_NAME = "backoffice.test"


@dataclass(frozen=True)
class Upload:
    path: Path
    sha256_hex: str
    size_bytes: int
    file_id: str  # random per run: the back office never attests a file id that names other bytes


def make_files(directory: Path, count: int, size_bytes: int) -> list[Upload]:
    uploads = []
    for index in range(count):
        data = os.urandom(size_bytes)
        path = directory / f"file{index}.bin"
        path.write_bytes(data)
        sha256_hex = hashlib.sha256(data).hexdigest()
        uploads.append(Upload(path, sha256_hex, size_bytes, os.urandom(16).hex()))
    return uploads


def tls_settings(pki: Path) -> ClientTlsSettings:
    return ClientTlsSettings(
        ca_file=pki / "ca.crt",
        client_cert_file=pki / "client.crt",
        client_key_file=pki / "client.key",
        pins=PinSet.from_strings([pin_of_pem_file((pki / "server.crt").read_bytes())]),
        server_name=SERVER_NAME,
    )


async def connect(kind: str, host: str, port: int, pki: Path, streams: int) -> Transport:
    """A transport with the box's default timeouts (config/local.py [uplink])."""
    settings = tls_settings(pki)
    if kind == "h3":
        return await H3Transport.connect(
            host,
            port,
            settings,
            connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S,
            request_timeout_s=DEFAULT_REQUEST_TIMEOUT_S,
            read_timeout_s=DEFAULT_READ_TIMEOUT_S,
            stall_timeout_s=DEFAULT_STALL_TIMEOUT_S,
        )
    return await HttpsTransport.connect(
        host,
        port,
        settings,
        max_connections=streams,
        connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S,
        request_timeout_s=DEFAULT_REQUEST_TIMEOUT_S,
        read_timeout_s=DEFAULT_READ_TIMEOUT_S,
        stall_timeout_s=DEFAULT_STALL_TIMEOUT_S,
    )


MIN_CHUNK_BYTES = [DEFAULT_MIN_CHUNK_BYTES]
"""The floor of our chunks: the box's default unless `--chunk-min-bytes` says (set by main)."""


def chunk_sizer(max_chunk_bytes: int) -> ChunkSizer:
    """A link's chunk sizer with the box's defaults, up to `max_chunk_bytes`."""
    return ChunkSizer(
        ChunkBounds.clamped(MIN_CHUNK_BYTES[0], max_chunk_bytes, DEFAULT_CHUNK_TARGET_S)
    )


def new_session(spec: UploadSpec, sizer: ChunkSizer) -> TusSession:
    return TusSession(spec, chunk_bytes=sizer.size_bytes(), min_chunk_bytes=sizer.bounds.min_bytes)


class ChunkLog:
    """The body sizes a transport was asked to send (to report the sizes chosen)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.sizes: list[int] = []

    @property
    def name(self) -> str:
        return self._transport.name

    async def request(self, request: HttpRequest, body: bytes | bytearray | None) -> Any:
        if body:
            self.sizes.append(len(body))
        return await self._transport.request(request, body)

    async def aclose(self) -> None:
        await self._transport.aclose()


async def upload_ours(
    kind: str, host: str, port: int, pki: Path, uploads: list[Upload], chunk_bytes: int
) -> dict[str, Any]:
    transport = ChunkLog(await connect(kind, host, port, pki, len(uploads)))
    sessions: list[TusSession] = []
    sizer = chunk_sizer(chunk_bytes)

    async def one(index: int, upload: Upload) -> UploadOutcome:
        spec = UploadSpec(upload.file_id, upload.size_bytes, upload.sha256_hex)
        session = new_session(spec, sizer)
        sessions.append(session)
        reader = SliceReader(upload.path)
        try:
            return await drive(session, transport, reader, sizer=sizer)
        finally:
            reader.close()

    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        outcomes = await asyncio.gather(*(one(i, u) for i, u in enumerate(uploads)))
    finally:
        await transport.aclose()
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    attested = all(
        o.attested_sha256_hex == u.sha256_hex for o, u in zip(outcomes, uploads, strict=True)
    )
    return {
        "seconds": wall_s,
        "cpu_s": cpu_s,
        "body_bytes_sent": sum(s.body_bytes_sent for s in sessions),
        "chunk_sizes": _sizes(transport.sizes),
        "attested": attested,
    }


def _sizes(sizes: list[int]) -> dict[str, int]:
    return {"count": len(sizes), "min": min(sizes, default=0), "max": max(sizes, default=0)}


async def attested_by_head(
    host: str, port: int, pki: Path, uploads: list[Upload], urls: list[str]
) -> bool:
    """Whether the back office attests each upload with its file's SHA-256 (a HEAD of ours)."""
    transport = await connect("https", host, port, pki, 1)
    try:
        for upload, url in zip(uploads, urls, strict=True):
            head = HttpRequest("HEAD", urlsplit(url).path, (("Tus-Resumable", "1.0.0"),))
            answer = await transport.request(head, None)
            if answer.headers.get(ATTESTATION_HEADER.lower()) != upload.sha256_hex:
                return False
        return True
    finally:
        await transport.aclose()


def upload_tuspy(
    host: str, port: int, pki: Path, uploads: list[Upload], chunk_bytes: int
) -> dict[str, Any]:
    from tusclient.client import TusClient  # the peer client; imported only for its run

    os.environ["REQUESTS_CA_BUNDLE"] = str(pki / "ca.crt")
    url = f"https://{host}:{port}/files/"  # the bench's server certificate names the address
    errors: list[BaseException] = []
    urls = [""] * len(uploads)

    def one(index: int, upload: Upload) -> None:
        try:
            client = TusClient(url, client_cert=(str(pki / "client.crt"), str(pki / "client.key")))
            uploader = client.uploader(
                file_path=str(upload.path),
                chunk_size=chunk_bytes,
                metadata={"file_id": upload.file_id, "sha256": upload.sha256_hex},
                upload_checksum=True,  # as ours: every chunk checksummed (tuspy: SHA-1)
            )
            uploader.upload()
            urls[index] = str(uploader.url)
        except BaseException as exc:  # reported, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i, u)) for i, u in enumerate(uploads)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    if errors:
        raise RuntimeError(f"tuspy failed: {errors[0]!r}")
    total = sum(u.size_bytes for u in uploads)
    attested = asyncio.run(attested_by_head(host, port, pki, uploads, urls))
    return {"seconds": wall_s, "cpu_s": cpu_s, "body_bytes_sent": total, "attested": attested}


async def destroy_tcp(host: str, port: int) -> None:
    """Destroy this namespace's TCP sockets to host:port (`ss -K`): each sends a reset and its
    owner gets ECONNABORTED, as when a modem drops the bearer."""
    process = await asyncio.create_subprocess_exec(
        *("ss", "-K", "dst", host, "dport", "=", f":{port}"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await process.wait()


async def upload_with_cuts(
    kind: str,
    host: str,
    port: int,
    pki: Path,
    upload: Upload,
    chunk_bytes: int,
    cuts: int,
    cut_every_s: tuple[float, float],
    seed: int,
) -> dict[str, Any]:
    """Cut the link `cuts` times at random moments during one upload; count body bytes re-sent
    and the chunk in flight at each cut (0 when no body was in flight)."""
    rng = random.Random(seed)
    sizer = chunk_sizer(chunk_bytes)
    spec = UploadSpec(upload.file_id, upload.size_bytes, upload.sha256_hex)
    session = new_session(spec, sizer)
    reader = SliceReader(upload.path)
    in_force: list[int] = []
    async with contextlib.AsyncExitStack() as stack:
        target_port = port
        cut = None
        if kind == "h3":
            proxy = await stack.enter_async_context(UdpFaultProxy(host, port, FaultPlan()))
            host, target_port, cut = "127.0.0.1", proxy.port, proxy.reset_all

        async def attempt() -> UploadOutcome:
            transport = await connect(kind, host, target_port, pki, 1)
            try:
                return await drive(session, transport, reader, sizer=sizer)
            finally:
                await transport.aclose()

        async def cutter() -> None:
            for _ in range(cuts):
                await asyncio.sleep(rng.uniform(*cut_every_s))
                request = session.in_flight
                in_force.append(
                    0 if request is None or request.body is None else request.body.length_bytes
                )
                if cut is not None:
                    cut()
                else:
                    await destroy_tcp(host, port)

        cutting = asyncio.create_task(cutter())
        try:
            outcome = await drive_with_retries(
                attempt, RetryPolicy(initial_s=0.01, max_s=0.1, attempts=cuts + 5)
            )
        finally:
            cutting.cancel()
            reader.close()
    return {
        "cuts": len(in_force),
        "resent_bytes": session.body_bytes_sent - upload.size_bytes,
        "chunk_bytes_in_force": in_force,
        "attested": outcome.attested_sha256_hex == upload.sha256_hex,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["https", "h3", "tuspy"], required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--size-bytes", type=int, required=True)
    parser.add_argument("--chunk-bytes", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--chunk-min-bytes", type=int, default=DEFAULT_MIN_CHUNK_BYTES)
    parser.add_argument("--cuts", type=int, default=0)
    parser.add_argument("--cut-every-s", default="0.2,1.0", help="LOW,HIGH seconds between cuts")
    args = parser.parse_args()
    low_s, high_s = (float(part) for part in args.cut_every_s.split(","))
    MIN_CHUNK_BYTES[0] = args.chunk_min_bytes
    with tempfile.TemporaryDirectory(prefix="mvb-bench-up-") as tmp:
        uploads = make_files(Path(tmp), args.files, args.size_bytes)
        if args.cuts:
            result = asyncio.run(
                upload_with_cuts(
                    args.kind,
                    args.host,
                    args.port,
                    args.pki,
                    uploads[0],
                    args.chunk_bytes,
                    args.cuts,
                    (low_s, high_s),
                    7,
                )
            )
        elif args.kind == "tuspy":
            result = upload_tuspy(args.host, args.port, args.pki, uploads, args.chunk_bytes)
        else:
            result = asyncio.run(
                upload_ours(args.kind, args.host, args.port, args.pki, uploads, args.chunk_bytes)
            )
    result.update(kind=args.kind, files=args.files, size_bytes=args.size_bytes)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
