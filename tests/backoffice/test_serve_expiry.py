"""`mvb-admin serve` removes unfinished uploads nobody continues (tus `expiration`): at start, and
on its timer while it runs. The installed command, a real box client (pinned mutual TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tests.backoffice.test_serve_both_transports import read_lines
from tests.tls_helpers import TestPki
from transport.http import BodySlice, HttpRequest, HttpResponse
from transport.https import HttpsTransport
from transport.tus_messages import ServerCapabilities

MVB_ADMIN = Path(sys.executable).parent / "mvb-admin"
SERVING = re.compile(r"serving https://127\.0\.0\.1:(?P<port>\d+)/files/ from .*")
TUS = ("Tus-Resumable", "1.0.0")
METADATA = "file_id ZmlsZS0x,sha256 " + "MDAw" * 21 + "MA=="  # base64 of 64 zeros


@contextlib.asynccontextmanager
async def serving(pki: TestPki, store: Path, *options: str) -> AsyncIterator[HttpsTransport]:
    command = [
        str(MVB_ADMIN), "serve", "--dir", str(store), "--cert", str(pki.server_cert),
        "--key", str(pki.server_key), "--client-ca", str(pki.ca_cert), "--port", "0",
        "--reserve-bytes", "0", *options,
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            [line] = read_lines(process, 1, timeout_s=20)
            match = SERVING.fullmatch(line.strip())
            assert match is not None, line
            transport = await HttpsTransport.connect(
                "127.0.0.1", int(match["port"]), pki.client_settings()
            )
            try:
                yield transport
            finally:
                await transport.aclose()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


async def partial_upload(transport: HttpsTransport) -> str:
    """An upload of 1000 bytes that got 100 and no more: its path."""
    created = await transport.request(
        HttpRequest(
            "POST", "/files/", (TUS, ("Upload-Length", "1000"), ("Upload-Metadata", METADATA))
        ),
        None,
    )
    assert created.status == 201
    path = created.headers["location"]
    patch = HttpRequest(
        "PATCH",
        path,
        (TUS, ("Upload-Offset", "0"), ("Content-Type", "application/offset+octet-stream")),
        BodySlice(0, 100),
    )
    patched = await transport.request(patch, b"x" * 100)
    assert patched.status == 204
    assert "upload-expires" in patched.headers
    return path


async def head(transport: HttpsTransport, path: str) -> HttpResponse:
    return await transport.request(HttpRequest("HEAD", path, (TUS,)), None)


async def test_serve_removes_expired_uploads_when_it_starts(tmp_path: Path, pki: TestPki) -> None:
    store = tmp_path / "store"
    async with serving(pki, store) as transport:
        options = await transport.request(HttpRequest("OPTIONS", "/files/", (TUS,)), None)
        assert ServerCapabilities.from_response(options).offers("expiration")
        path = await partial_upload(transport)
    data = store / "uploads" / path.rsplit("/", 1)[1] / "data"
    eight_days_ago_s = time.time() - 8 * 86_400  # the box never came back
    os.utime(data, (eight_days_ago_s, eight_days_ago_s))

    async with serving(pki, store) as transport:
        assert not data.parent.exists()  # removed before the first request was answered
        assert (await head(transport, path)).status == 404


async def test_serve_removes_idle_uploads_on_its_timer(tmp_path: Path, pki: TestPki) -> None:
    store = tmp_path / "store"
    async with serving(pki, store, "--upload-expiry", "1") as transport:
        path = await partial_upload(transport)
        upload = store / "uploads" / path.rsplit("/", 1)[1]
        deadline = time.monotonic() + 20
        while upload.exists():  # the sweep runs every second with a one-second expiry
            assert time.monotonic() < deadline, "the idle upload was not removed"
            await asyncio.sleep(0.1)
        assert (await head(transport, path)).status == 404
