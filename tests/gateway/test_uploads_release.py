"""An integrity block outlives a restart, shows on the officer's page, and only a person's
`mvb uploads retry` releases it.

Real parts: `mvb import` and `mvb run` as processes, whose uplink reaches, through the fault
proxy over pinned mutual TLS, first a hostile back office (it takes every byte and attests other
bytes: an integrity fault), then, once the test points the proxy elsewhere, the reference back
office. The hostile server and the reference back office run in this process; every call to the
box goes through a worker thread, so they keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from backoffice.server import server_ssl_context
from demo.synthetic import generate_clip
from labnet.proxy import TcpFaultProxy
from storage.envelope import RecipientPrivateKey
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config
from tests.gateway.fleet_rig import api_url
from tests.tls_helpers import SERVER_NAME, TestPki
from tests.transport.test_uplink_hostile import (
    create,
    head_zero,
    options,
    patch_wrong_attestation,
)
from tests.transport.uplink_rig import BackOfficeProcess

MVB = Path(sys.executable).with_name("mvb")
STEP_TIMEOUT_S = 30.0


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, check=False
    )


def get(config: Path, path: str) -> dict[str, Any]:
    """GET on the box's loopback API (what `mvb status` and `mvb uploads --json` read)."""
    with urllib.request.urlopen(api_url(config, path), timeout=STEP_TIMEOUT_S) as answer:  # noqa: S310 (loopback)
        document: dict[str, Any] = json.loads(answer.read())
    return document


def alert_codes(config: Path) -> list[str]:
    return [alert["code"] for alert in get(config, "/api/status")["alerts"]]


def states(config: Path) -> list[str]:
    return [row["state"] for row in get(config, "/api/uploads")["files"]]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (it calls the box: a worker thread) until it holds, within a deadline."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def mvb_run(config: Path) -> AsyncIterator[None]:
    """`mvb run` until the context ends; it must then stop cleanly on SIGTERM."""
    process = subprocess.Popen([str(MVB), "--config", str(config), "run"], text=True)
    try:
        await until(lambda: run(MVB, "--config", config, "status").returncode == 0, "the API")
        yield
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


class HostileBackOffice:
    """A back office with the pinned key that attests other bytes than it received; counts the
    PATCH requests that reach it."""

    def __init__(self) -> None:
        self.patches = 0

    async def patch(self, request: web.Request) -> web.Response:
        self.patches += 1
        return await patch_wrong_attestation(request)

    @contextlib.asynccontextmanager
    async def serving(self, pki: TestPki) -> AsyncIterator[int]:
        app = web.Application()
        app.router.add_route("OPTIONS", "/files/", options)
        app.router.add_post("/files/", create)
        app.router.add_route("HEAD", "/files/x", head_zero)
        app.router.add_patch("/files/x", self.patch)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        context = server_ssl_context(pki.server_cert, pki.server_key, pki.ca_cert)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        try:
            yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        finally:
            await runner.cleanup()


def box_config(root: Path, recipient: RecipientPrivateKey, pki: TestPki, port: int) -> Path:
    """A box without cameras (its evidence comes from `mvb import`), uploading to `port`."""
    public = root / "recording.pub"
    root.mkdir(parents=True)
    public.write_text(recipient.public().pem() + "\n")
    return write_box_config(
        root / "box",
        public,
        storage_lines=f"""
[gps]
port = {free_port()}
[api]
port = {free_port()}
[uplink]
enabled = true
host = "127.0.0.1"
port = {port}
h3_port = 0
server_name = "{SERVER_NAME}"
ca_file = "{pki.ca_cert}"
client_cert_file = "{pki.client_cert}"
client_key_file = "{pki.client_key}"
pins = ["{pki.server_pin}", "{pki.backup_pin}"]
[[links]]
name = "wifi"
cost_class = "wifi"
""",
    )


async def test_an_integrity_block_outlives_a_restart_until_mvb_uploads_retry(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    clip = generate_clip(tmp_path / "clip.ts", seconds=2, keyframe_interval_frames=25)
    hostile = HostileBackOffice()
    reference = BackOfficeProcess(tmp_path / "backoffice", pki, pki.server_cert, pki.server_key)
    await reference.start()
    try:
        async with (
            hostile.serving(pki) as hostile_port,
            TcpFaultProxy("127.0.0.1", hostile_port) as proxy,
        ):
            config = box_config(tmp_path / "box", recipient, pki, proxy.port)
            imported = await asyncio.to_thread(run, MVB, "--config", config, "import", clip)
            assert imported.returncode == 0, imported.stderr

            async with mvb_run(config):
                await until(lambda: states(config) == ["blocked"], "the integrity block")
                assert "upload_blocked" in await asyncio.to_thread(alert_codes, config)
                listed = await asyncio.to_thread(run, MVB, "--config", config, "uploads")
            assert listed.returncode == 0, listed.stderr
            assert "blocked" in listed.stdout
            assert "the back office holds other bytes" in listed.stdout
            assert "release: mvb uploads retry FILE_ID... | --all-blocked" in listed.stdout

            async with mvb_run(config):  # a restart: the block and its alert are still there
                assert "upload_blocked" in await asyncio.to_thread(alert_codes, config)
                [row] = (await asyncio.to_thread(get, config, "/api/uploads"))["files"]
                assert row["state"] == "blocked"
                patches = hostile.patches
                proxy.upstream_port = reference.port  # the fleet admin put things right
                proxy.close_all()  # the box's kept-alive connections went to the other server

                released = await asyncio.to_thread(
                    run, MVB, "--config", config, "uploads", "retry", row["file_id"]
                )

                assert released.returncode == 0, released.stderr
                assert f"{row['file_id']}: released (was blocked)" in released.stdout
                await until(lambda: states(config) == [], "the upload after the release")
                assert "upload_blocked" not in await asyncio.to_thread(alert_codes, config)
                assert hostile.patches == patches  # nothing went out for it until released
    finally:
        await reference.stop()
    assert len(reference.completed_sha256()) == 1
    audit = [json.loads(line) for line in (config.parent / "state" / "audit.jsonl").open()]
    events = [(entry["event"], entry["fields"].get("file_id")) for entry in audit]
    file_id = row["file_id"]
    assert events.count(("uplink.upload_blocked", file_id)) == 1  # once: not again at restart
    released_entry = next(e for e in audit if e["event"] == "uplink.upload_released")
    assert released_entry["fields"] == {"by": "local", "file_id": file_id, "was_blocked": True}
    assert events.index(("uplink.upload_released", file_id)) < events.index(
        ("uplink.uploaded", file_id)
    )
