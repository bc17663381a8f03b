"""A real box with its web channel on 127.0.0.1, and an HTTPS client that trusts its certificate.

`web_rig` starts the box with `start_box` (web disabled in the file) and then the web channel
with `start_web` and a hand-driven clock, so lockout and session expiry are tested without
sleeping. Everything binds to loopback only.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backoffice.keys import create_recording_keys
from config.accounts import hash_password
from config.local import LocalConfig, load_config
from gateway.run import RunningBox, start_box, stop_box
from gateway.web.server import WebListener, start_web
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config

PASSWORDS = {"alice": "correct horse battery", "bob": "bob's own secret"}
OFFICER_IDS = {"alice": "BOA-1234", "bob": ""}


class ManualClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture(scope="session")
def password_hashes() -> dict[str, str]:
    """PBKDF2 at the schema's minimum cost is ~0.1 s per hash: made once per session."""
    return {name: hash_password(password) for name, password in PASSWORDS.items()}


def accounts_toml(hashes: dict[str, str], names: tuple[str, ...] = ("alice", "bob")) -> str:
    roles = {"alice": "officer", "bob": "admin"}
    tables = []
    for name in names:
        officer = f'officer_id = "{OFFICER_IDS[name]}"\n' if OFFICER_IDS[name] else ""
        tables.append(
            f'[[accounts]]\nname = "{name}"\nrole = "{roles[name]}"\n'
            f'password_hash = "{hashes[name]}"\n{officer}'
        )
    return "\n".join(tables)


def web_box_config(root: Path, hashes: dict[str, str], web_lines: str) -> Path:
    """A box with no cameras, a gpsd port nobody listens on, both accounts and `web_lines`."""
    _, public = create_recording_keys(root / "keys")
    return write_box_config(
        root / "box",
        public,
        storage_lines=f"""
[gps]
port = {free_port()}
[api]
port = {free_port()}
[web]
host = "127.0.0.1"
{web_lines}
[webui]
max_failed_logins = 5
lockout_s = 900
session_idle_s = 600
session_max_s = 3600
{accounts_toml(hashes)}
""",
    )


def client_context(cert_path: Path) -> ssl.SSLContext:
    """A client that trusts exactly the box's certificate, as a configured tablet would."""
    return ssl.create_default_context(cafile=str(cert_path))


@dataclass
class WebRig:
    running: RunningBox
    config: LocalConfig
    listener: WebListener
    clock: ManualClock
    base: str  # https://localhost:PORT
    context: ssl.SSLContext

    def client(self, **kwargs: Any) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self.base, connector=aiohttp.TCPConnector(ssl=self.context), **kwargs
        )

    def audit_events(self) -> list[dict[str, Any]]:
        lines = (self.config.state_dir / "audit.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


@pytest.fixture
async def web_rig(tmp_path: Path, password_hashes: dict[str, str]) -> AsyncIterator[WebRig]:
    https_port = free_port()
    config = load_config(
        web_box_config(
            tmp_path,
            password_hashes,
            f"enabled = false\nhttps_port = {https_port}\nhttp_port = {free_port()}",
        )
    )
    running = await start_box(config)
    clock = ManualClock()
    try:
        enabled = replace(config, web=replace(config.web, enabled=True))
        assert running.port is not None
        assert running.status is not None
        listener = await start_web(running.port, running.status, enabled, clock=clock)
        assert listener is not None
        assert listener.state == "listening", listener
        running.web = listener
        yield WebRig(
            running,
            enabled,
            listener,
            clock,
            f"https://localhost:{https_port}",
            client_context(enabled.state_dir / "web" / "web.crt"),
        )
    finally:
        await stop_box(running)


async def login(
    client: aiohttp.ClientSession, name: str, password: str | None = None
) -> tuple[int, dict[str, Any]]:
    reply = await client.post(
        "/api/session", json={"username": name, "password": password or PASSWORDS[name]}
    )
    return reply.status, await reply.json()
