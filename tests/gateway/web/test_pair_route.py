"""POST /api/pair on a running box against the real back office (`mvb-admin serve` with its
pairing listener over TLS, codes from `mvb-admin pair-code`): the officer types the code in the
page, the box pairs in-process; refusals are one plain sentence, never echoing the code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backoffice.fleet_repo import init_repository, load_fleet_signers
from gateway.pairing_client import is_paired, pairing_files
from tests.gateway.web.feature_rig import (
    REPO,
    LocalBox,
    feature_box_config,
    run_command,
    running_box,
)
from tests.tls_helpers import TestPki

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
BOX_ID = "MVB-TEST-0001"  # the feature rig's device serial
STARTUP_TIMEOUT_S = 30.0


@dataclass
class BackOffice:
    pki: TestPki
    state: Path
    pair_port: int

    async def code(self, *extra: str) -> str:
        made = await run_command(
            str(MVB_ADMIN), "pair-code", "--state", str(self.state),
            "--pki", str(self.pki.directory), "--box-id", BOX_ID,
            "--address", f"127.0.0.1:{self.pair_port}", *extra,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        return made.stdout.strip().splitlines()[-1]


def pairing_port(process: subprocess.Popen[str]) -> int:
    """Read `serving ...` lines until the pairing listener's; its port."""
    found: list[int] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("serving pairing at https://127.0.0.1:"):
                found.append(int(line.split(":")[2].split("/")[0]))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(STARTUP_TIMEOUT_S)
    assert found, "the back office did not start its pairing listener"
    return found[0]


@pytest.fixture
def back_office(pki: TestPki, tmp_path: Path) -> Iterator[BackOffice]:
    now = datetime.now(UTC)
    repo = init_repository(tmp_path / "repo", tmp_path / "fleet-keys", now=now)
    signers = load_fleet_signers(tmp_path / "fleet-keys")
    repo.publish(signers.snapshot, signers.timestamp, now=now)
    state = tmp_path / "pairing-state"
    command = [
        str(MVB_ADMIN), "serve", "--dir", str(tmp_path / "uploads"),
        "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.ca_cert), "--port", "0", "--reserve-bytes", "0",
        "--pair-port", "0", "--pairing-state", str(state), "--pki-dir", str(pki.directory),
        "--fleet-repo", str(tmp_path / "repo"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as process:
        try:
            yield BackOffice(pki, state, pairing_port(process))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(STARTUP_TIMEOUT_S)


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[LocalBox]:
    async with running_box(feature_box_config(tmp_path / "vehicle")) as running:
        yield running


async def pair(client: aiohttp.ClientSession, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await client.post("/api/pair", data=data, headers={"Content-Type": "application/json"})
    return reply.status, await reply.json()


async def test_the_officer_pairs_the_running_box_with_a_code(
    back_office: BackOffice, box: LocalBox
) -> None:
    code = await back_office.code()
    async with box.client() as client:
        status, answer = await pair(client, {"code": code})
        assert status == 200, answer
        assert answer["paired"] is True
        assert answer["box_id"] == BOX_ID
        assert answer["address"] == f"127.0.0.1:{back_office.pair_port}"
        assert "next start" in answer["note"]
        document = await (await client.get("/api/status")).json()
        assert document["pairing"] == {"paired": True, "box_id": BOX_ID}

        second = await back_office.code("--re-pair")
        status, refused = await pair(client, {"code": second})
        assert (status, refused["error"]) == (409, "already_paired")
        assert second not in refused["message"]

    state_dir = box.config.state_dir
    assert is_paired(state_dir)
    assert pairing_files(state_dir).client_cert.is_file()
    assert ("gateway.paired", {"box_id": BOX_ID, "re_pair": False}) in box.audit_events("gateway.")
    assert code.split("/")[-1] not in (state_dir / "audit.jsonl").read_text()


async def test_bad_pairing_requests_get_clear_errors_and_the_box_keeps_running(
    box: LocalBox,
) -> None:
    cases: list[tuple[Any, int, str, str]] = [
        (b"{", 400, "bad_json", ""),
        (b"null", 422, "invalid", ""),
        ({}, 422, "invalid", "code"),
        ({"code": 42}, 422, "invalid", "code"),
        ({"code": "   "}, 422, "invalid", "code"),
        ({"code": "x" * 401}, 422, "invalid", "code"),
        ({"code": "127.0.0.1:9/ABCD", "re_pair": "yes"}, 422, "invalid", "re_pair"),
        ({"code": "127.0.0.1:9/ABCD", "pin": "1234"}, 422, "invalid", "pin"),
    ]
    async with box.client() as client:
        for body, status, error, field in cases:
            code, answer = await pair(client, body)
            assert (code, answer["error"], answer.get("field", "")) == (status, error, field), body
        typed = "no pairing code at all"
        code, answer = await pair(client, {"code": typed})
        assert (code, answer["error"]) == (422, "pairing_failed")
        assert answer["message"].startswith("this is not a pairing code")
        assert typed not in answer["message"]
        assert (await client.get("/api/status")).status == 200
    assert not is_paired(box.config.state_dir)
