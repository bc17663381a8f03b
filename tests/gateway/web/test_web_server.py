"""The web channel as `mvb run` starts it (start_box): HTTPS with the box's certificate, plain
HTTP that only redirects, hostile clients, a taken port, a municipality's own certificate, and
what `mvb status` shows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from backoffice.pki import create_ca, issue_server_cert
from config.local import load_config
from gateway import cli
from gateway.run import RunningBox, start_box, stop_box
from gateway.web.certs import fingerprint_sha256
from tests.cameras import free_port
from tests.gateway.web.conftest import client_context, login, web_box_config


@contextlib.asynccontextmanager
async def box(root: Path, hashes: dict[str, str], web_lines: str) -> AsyncIterator[RunningBox]:
    running = await start_box(load_config(web_box_config(root, hashes, web_lines)))
    try:
        yield running
    finally:
        await stop_box(running)


def served_fingerprint(port: int) -> str:
    """The certificate a client actually receives on `port` (no trust decision involved);
    blocking: run it off the loop that serves the box."""
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return fingerprint_sha256(x509.load_pem_x509_certificate(pem.encode()))


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a plain TCP connection and read until the box closes or 5 s of silence."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5)
    except (ConnectionResetError, TimeoutError):
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()


async def local_status(running: RunningBox) -> dict[str, object]:
    config_port = running.box.config.api.port
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{config_port}/api/status") as reply,
    ):
        assert reply.status == 200
        document: dict[str, object] = await reply.json()
        return document


async def test_start_box_serves_https_and_http_only_redirects(
    tmp_path: Path, password_hashes: dict[str, str]
) -> None:
    https_port, http_port = free_port(), free_port()
    lines = f"https_port = {https_port}\nhttp_port = {http_port}"
    async with box(tmp_path, password_hashes, lines) as running:
        state_web = running.box.config.state_dir / "web"
        fingerprint = fingerprint_sha256(
            x509.load_pem_x509_certificate((state_web / "web.crt").read_bytes())
        )
        assert await asyncio.to_thread(served_fingerprint, https_port) == fingerprint
        status = await local_status(running)
        assert status["web"] == {
            "state": "listening",
            "url": f"https://127.0.0.1:{https_port}/",
            "certificate_sha256": fingerprint,
        }
        async with aiohttp.ClientSession() as plain:
            for method, host, path in [
                ("GET", f"127.0.0.1:{http_port}", "/api/status?x=1"),
                ("POST", f"localhost:{http_port}", "/api/session"),
                ("GET", f"[::1]:{http_port}", "/"),
            ]:
                reply = await plain.request(
                    method,
                    f"http://127.0.0.1:{http_port}{path}",
                    headers={"Host": host},
                    allow_redirects=False,
                )
                name = host.rsplit(":", 1)[0]
                assert reply.status == 301
                assert reply.headers["Location"] == f"https://{name}:{https_port}{path}"
            bad = await plain.get(
                f"http://127.0.0.1:{http_port}/", headers={"Host": "evil.example/x"}
            )
            assert (bad.status, (await bad.json())["error"]) == (400, "bad_request")
        async with aiohttp.ClientSession(
            base_url=f"https://localhost:{https_port}",
            connector=aiohttp.TCPConnector(ssl=client_context(state_web / "web.crt")),
        ) as tablet:
            assert (await login(tablet, "bob"))[0] == 200
            traversal = await tablet.get("/static/%2e%2e/server.py")
            assert traversal.status in (403, 404)
            assert (await tablet.get("/static/../server.py")).status in (403, 404)


async def test_plain_http_on_the_https_port_is_redirected(
    tmp_path: Path, password_hashes: dict[str, str]
) -> None:
    https_port = free_port()
    async with box(tmp_path, password_hashes, f"https_port = {https_port}\nhttp_port = 0"):
        answer = await raw_exchange(
            https_port, b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 301")
    assert f"Location: https://127.0.0.1:{https_port}/api/status" in head


async def test_hostile_clients_get_an_answer_or_a_closed_connection_and_the_box_runs_on(
    tmp_path: Path, password_hashes: dict[str, str]
) -> None:
    https_port = free_port()
    lines = f"https_port = {https_port}\nhttp_port = {free_port()}"
    async with box(tmp_path, password_hashes, lines) as running:
        not_http = await raw_exchange(https_port, b"\x00\x01\x02 hello\r\n\r\n")
        assert not_http.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), not_http[:80]
        garbage_tls = await raw_exchange(https_port, b"\x16\x03\x01\x00\x05" + os.urandom(2000))
        assert b"HTTP" not in garbage_tls  # a TLS alert at most, then the box closes
        truncated_hello = await raw_exchange(https_port, b"\x16\x03\x01\x02\x00\x01")
        assert b"HTTP" not in truncated_hello
        with socket.create_connection(("127.0.0.1", https_port)):
            pass  # connect and leave without a byte

        cert = running.box.config.state_dir / "web" / "web.crt"
        async with aiohttp.ClientSession(
            base_url=f"https://localhost:{https_port}",
            connector=aiohttp.TCPConnector(ssl=client_context(cert)),
        ) as tablet:
            status, body = await login(tablet, "alice")
            assert status == 200
            reply = await tablet.post(
                "/api/record/start", headers={"X-CSRF-Token": str(body["csrf_token"])}
            )
            assert (reply.status, (await reply.json())["state"]) == (200, "recording")
        assert (await local_status(running))["state"] == "recording"


async def test_a_taken_web_port_leaves_the_box_recording(
    tmp_path: Path, password_hashes: dict[str, str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines = f"https_port = {port}\nhttp_port = {free_port()}"
        async with box(tmp_path, password_hashes, lines) as running:
            web = (await local_status(running))["web"]
            assert isinstance(web, dict)
            assert web["state"] == "failed"
            assert "the web UI cannot start" in web["reason"]
            assert "web_listener" in running.service.alarms
            assert running.service.recorder.state.value == "standby"


async def test_a_municipality_certificate_is_served_and_no_own_one_is_made(
    tmp_path: Path, password_hashes: dict[str, str]
) -> None:
    ca = create_ca("Gemeente CA")
    cert, key = issue_server_cert(ca, ["localhost", "127.0.0.1"]).write(tmp_path / "tls", "mvb")
    https_port = free_port()
    lines = (
        f'https_port = {https_port}\nhttp_port = 0\ntls_cert_file = "{cert}"\n'
        f'tls_key_file = "{key}"'
    )
    async with box(tmp_path, password_hashes, lines) as running:
        expected = fingerprint_sha256(x509.load_pem_x509_certificate(cert.read_bytes()))
        assert await asyncio.to_thread(served_fingerprint, https_port) == expected
        web = (await local_status(running))["web"]
        assert isinstance(web, dict)
        assert web["certificate_sha256"] == expected
        assert not (running.box.config.state_dir / "web").exists()


async def test_a_disabled_web_channel_listens_nowhere(
    tmp_path: Path, password_hashes: dict[str, str]
) -> None:
    https_port = free_port()
    async with box(
        tmp_path, password_hashes, f"enabled = false\nhttps_port = {https_port}"
    ) as running:
        assert running.web is None
        assert (await local_status(running))["web"] is None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", https_port), timeout=2).close()


async def test_mvb_status_prints_the_web_url_and_fingerprint(
    tmp_path: Path, password_hashes: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    https_port = free_port()
    lines = f"https_port = {https_port}\nhttp_port = 0"
    async with box(tmp_path, password_hashes, lines) as running:
        config = Path(running.box.config.source)
        code = await asyncio.to_thread(cli.main, ["--config", str(config), "status"])
    out, err = capsys.readouterr()
    assert code == 0
    web = json.loads(out)["web"]
    assert err.strip() == (
        f"web UI: https://127.0.0.1:{https_port}/ (certificate SHA-256 {web['certificate_sha256']})"
    )
