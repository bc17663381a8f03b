"""The web channel on 127.0.0.1 in front of an in-memory box, and an HTTPS client that trusts
its certificate.

`web_rig` starts the web channel with `start_web` and a hand-driven clock (lockout and session
expiry are tested without sleeping) in front of `FakeBox` (fake_box.py), the port's in-memory
implementation: these tests test the web layer. The same routes on a real box are tested by
test_web_server.py and the feature tests (feature_rig.py). Everything binds to loopback only.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backoffice.keys import create_recording_keys
from common.passwords import hash_password
from config.local import LocalConfig, load_config
from gateway.web.server import WebListener, start_web
from gateway.web.status_source import StatusSource
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config
from tests.gateway.web.fake_box import FakeBox

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
    box: FakeBox
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
        return [json.loads(line) for line in self.box.audit_text().splitlines()]


@pytest.fixture
async def web_rig(tmp_path: Path, password_hashes: dict[str, str]) -> AsyncIterator[WebRig]:
    https_port = free_port()
    config = load_config(
        web_box_config(
            tmp_path,
            password_hashes,
            f"enabled = true\nhttps_port = {https_port}\nhttp_port = {free_port()}",
        )
    )
    config.state_dir.mkdir(parents=True, exist_ok=True)
    box = FakeBox(config)
    clock = ManualClock()
    started: list[WebListener] = []

    def web_member(document: dict[str, Any]) -> None:  # as gateway/run.py adds it
        document["web"] = started[0].status() if started else None

    listener = await start_web(box, StatusSource(box, web_member), config, clock=clock)
    assert listener is not None
    started.append(listener)
    assert listener.state == "listening", listener
    try:
        yield WebRig(
            box,
            config,
            listener,
            clock,
            f"https://localhost:{https_port}",
            client_context(config.state_dir / "web" / "web.crt"),
        )
    finally:
        await listener.stop()


async def login(
    client: aiohttp.ClientSession, name: str, password: str | None = None
) -> tuple[int, dict[str, Any]]:
    reply = await client.post(
        "/api/session", json={"username": name, "password": password or PASSWORDS[name]}
    )
    return reply.status, await reply.json()
