"""One client run of the uplink benchmark (run by bench/uplink.py inside the box's namespace).

Uploads `--files` random files of `--size-bytes` each, concurrently, to the reference back office
with one of: our tus session over our HTTPS transport (`https`), over our HTTP/3 transport
(`h3`), or tuspy (`tuspy`, the peer client: requests, one file after another in one thread per
file). Prints one JSON line: wall seconds, CPU seconds of this process during the uploads, body
bytes sent, and whether every file was attested with the right SHA-256.

`--cuts N` (https and h3 only) cuts the connection N times at random points through the
project's fault proxy placed in front of the back office, and reports the body bytes re-sent.
"""

from __future__ import annotations

import argparse
import asyncio
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

from labnet.proxy import FaultPlan, TcpFaultProxy
from labnet.udp_proxy import UdpFaultProxy
from transport.h3_io import H3Transport
from transport.http import Transport
from transport.https import HttpsTransport
from transport.pinning import PinSet, pin_of_pem_file
from transport.tls import ClientTlsSettings
from transport.tus_session import TusSession, UploadOutcome, UploadSpec
from transport.upload import RetryPolicy, SliceReader, drive, drive_with_retries

SERVER_NAME = "backoffice.test"


@dataclass(frozen=True)
class Upload:
    path: Path
    sha256_hex: str
    size_bytes: int


def make_files(directory: Path, count: int, size_bytes: int) -> list[Upload]:
    uploads = []
    for index in range(count):
        data = os.urandom(size_bytes)
        path = directory / f"file{index}.bin"
        path.write_bytes(data)
        uploads.append(Upload(path, hashlib.sha256(data).hexdigest(), size_bytes))
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
    settings = tls_settings(pki)
    if kind == "h3":
        return await H3Transport.connect(host, port, settings, request_timeout_s=300)
    return await HttpsTransport.connect(
        host, port, settings, request_timeout_s=300, max_connections=streams
    )


async def upload_ours(
    kind: str, host: str, port: int, pki: Path, uploads: list[Upload], chunk_bytes: int
) -> dict[str, Any]:
    transport = await connect(kind, host, port, pki, len(uploads))
    sessions: list[TusSession] = []

    async def one(index: int, upload: Upload) -> UploadOutcome:
        spec = UploadSpec(f"{index:032x}", upload.size_bytes, upload.sha256_hex)
        session = TusSession(spec, chunk_bytes=chunk_bytes)
        sessions.append(session)
        reader = SliceReader(upload.path)
        try:
            return await drive(session, transport, reader)
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
        "attested": attested,
    }


def upload_tuspy(
    host: str, port: int, pki: Path, uploads: list[Upload], chunk_bytes: int
) -> dict[str, Any]:
    from tusclient.client import TusClient  # the peer client; imported only for its run

    os.environ["REQUESTS_CA_BUNDLE"] = str(pki / "ca.crt")
    url = f"https://{host}:{port}/files/"  # the bench's server certificate names the address
    errors: list[BaseException] = []

    def one(index: int, upload: Upload) -> None:
        try:
            client = TusClient(url, client_cert=(str(pki / "client.crt"), str(pki / "client.key")))
            uploader = client.uploader(
                file_path=str(upload.path),
                chunk_size=chunk_bytes,
                metadata={"file_id": f"{index:032x}", "sha256": upload.sha256_hex},
            )
            uploader.upload()
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
    return {"seconds": wall_s, "cpu_s": cpu_s, "body_bytes_sent": total, "attested": None}


async def upload_with_cuts(
    kind: str,
    host: str,
    port: int,
    pki: Path,
    upload: Upload,
    chunk_bytes: int,
    cuts: int,
    seed: int,
) -> dict[str, Any]:
    """Cut the link `cuts` times at random moments during one upload; count body bytes re-sent.

    HTTPS: the proxy resets every TCP connection (the in-flight PATCH dies; the session asks the
    server for its offset on a new connection). HTTP/3: the proxy forgets its UDP mappings, as a
    carrier NAT does when a radio reattaches, so the box's next datagrams come from a new port.
    """
    rng = random.Random(seed)
    proxy_cls = UdpFaultProxy if kind == "h3" else TcpFaultProxy
    async with proxy_cls(host, port, FaultPlan()) as proxy:
        spec = UploadSpec("c" * 32, upload.size_bytes, upload.sha256_hex)
        session = TusSession(spec, chunk_bytes=chunk_bytes)
        reader = SliceReader(upload.path)
        cuts_done = 0

        async def attempt() -> UploadOutcome:
            transport = await connect(kind, "127.0.0.1", proxy.port, pki, 1)
            try:
                return await drive(session, transport, reader)
            finally:
                await transport.aclose()

        async def cutter() -> None:
            nonlocal cuts_done
            for _ in range(cuts):
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                proxy.reset_all()
                cuts_done += 1

        cutting = asyncio.create_task(cutter())
        try:
            outcome = await drive_with_retries(
                attempt, RetryPolicy(initial_s=0.01, max_s=0.1, attempts=cuts + 5)
            )
        finally:
            cutting.cancel()
            reader.close()
    return {
        "cuts": cuts_done,
        "resent_bytes": session.body_bytes_sent - upload.size_bytes,
        "chunk_bytes": chunk_bytes,
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
    parser.add_argument("--cuts", type=int, default=0)
    args = parser.parse_args()
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
