"""The rig of the fleet end-to-end tests: the real back office and a real box, as processes.

`start_back_office` runs `mvb-admin serve` (pairing listener, client gate, fleet routes) on a
fresh fleet TUF repository; `mvb_pair` pairs a box configuration with one of its codes;
`running_box_config` writes the configuration of a paired box with a replayed camera and its
uplink on; `mvb_run` runs the box. The test process plays the fleet admin: it signs and publishes
into the repository the back office serves (`BackOffice.publish_document`).

Invariants: every process started here is stopped when its context ends (SIGTERM, then kill);
every wait is bounded and fails naming what it waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backoffice.fleet_repo import FleetRepository, FleetSigners, init_repository, load_fleet_signers
from backoffice.fleet_reports import ConfigReport
from backoffice.fleet_trust_io import AdminTrust
from backoffice.pairing import PairingCode
from backoffice.pairing_ledger import CodeState
from backoffice.pairing_service import LedgerStore
from config.fleet_targets import box_target_path
from storage.envelope import RecipientPrivateKey
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config
from tests.test_run import mvb_run as mvb_run  # the fleet tests take it from here
from tests.tls_helpers import TestPki

MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
BOX = "MVB-0042"
DOCUMENT = b"[recording]\nprerecord_s = 60\n"
STEP_TIMEOUT_S = 20.0
TRUST_DIR = "fleet-trust"
SERVING = re.compile(r"serving (?:pairing at )?https://127\.0\.0\.1:(?P<port>\d+)/(?P<what>\S+)")
REPORTS_FILE = "fleet-reports.jsonl"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=60, check=False
    )


async def run_async(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """A command run while this event loop keeps serving (in-process servers answer it)."""
    return await asyncio.to_thread(run, *args)


def read_lines(process: subprocess.Popen[str], count: int, timeout_s: float) -> list[str]:
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout.readline() for _ in range(count))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert not reader.is_alive(), f"only {len(lines)} of {count} lines in {timeout_s} s"
    return lines


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# --- the back office ------------------------------------------------------------------------------


@dataclass
class BackOffice:
    """`mvb-admin serve` in a process of its own, with its state directories. `keys` holds every
    fleet key (in production they are apart: docs/fleet-config.md 2)."""

    pki: TestPki
    state: Path
    fleet: FleetRepository
    keys: Path
    uploads: Path
    mutual_port: int
    pair_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.pair_port}"

    @property
    def trust(self) -> Path:
        """The fleet admin's trust (docs/fleet-config.md 7.1), written at `config init`."""
        return self.keys.parent / TRUST_DIR

    def signers(self) -> FleetSigners:
        return load_fleet_signers(self.keys)

    def pair_code(self, *extra: str, box_id: str = BOX) -> subprocess.CompletedProcess[str]:
        return run(
            MVB_ADMIN, "pair-code", "--state", self.state, "--pki", self.pki.directory,
            "--box-id", box_id, "--address", self.address, *extra,
        )  # fmt: skip

    def code(self, *extra: str) -> str:
        result = self.pair_code(*extra)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def ledger_state_of(self, typed: str) -> CodeState:
        record = LedgerStore(self.state).read().code(PairingCode.parse(typed).code_id)
        assert record is not None
        return record.state

    def publish_document(self, document: bytes, *, config_serial: int | None = None) -> int:
        """The admin signs `document` for BOX and the back office publishes it; its serial."""
        return publish_document(self.fleet, self.signers(), document, config_serial=config_serial)

    def reports(self) -> list[ConfigReport]:
        """Every applied-configuration report the back office accepted, oldest first."""
        path = self.uploads / REPORTS_FILE
        if not path.exists():
            return []
        return [ConfigReport(**json.loads(line)) for line in path.read_text().splitlines()]


def publish_document(
    fleet: FleetRepository,
    signers: FleetSigners,
    document: bytes,
    *,
    config_serial: int | None = None,
) -> int:
    now = datetime.now(UTC)
    serial = fleet.next_config_serial() if config_serial is None else config_serial
    fleet.add_config(
        box_target_path(BOX),
        document,
        boxes=[BOX],
        config_serial=serial,
        targets_signer=signers.targets,
        now=now,
    )
    fleet.publish(signers.snapshot, signers.timestamp, now=now)
    return serial


@contextlib.contextmanager
def start_back_office(
    pki: TestPki,
    root: Path,
    documents: Sequence[bytes] = (DOCUMENT,),
    *,
    mutual_port: int = 0,
    pair_port: int = 0,
) -> Iterator[BackOffice]:
    """A fleet created under `root`, `documents` signed for BOX and published (serials 1, 2, ...)
    before the back office starts serving it. Ports 0: any free ones; fixed ports let a test stop
    the back office and serve it again where its boxes look for it (`serve_again`)."""
    new_fleet(root, documents)
    with serve_again(pki, root, mutual_port=mutual_port, pair_port=pair_port) as office:
        yield office


def new_fleet(root: Path, documents: Sequence[bytes]) -> None:
    fleet = init_repository(
        root / "repo", root / "fleet-keys", now=datetime.now(UTC), trust_dir=root / TRUST_DIR
    )
    signers = load_fleet_signers(root / "fleet-keys")
    for document in documents:
        publish_document(fleet, signers, document)


@contextlib.contextmanager
def start_back_office_with(
    pki: TestPki, root: Path, serve_args: Sequence[str], documents: Sequence[bytes] = (DOCUMENT,)
) -> Iterator[BackOffice]:
    """`start_back_office` on any free ports, with more options of `mvb-admin serve` (a
    release key)."""
    new_fleet(root, documents)
    with _serve(pki, root, 0, 0, serve_args) as office:
        yield office


@contextlib.contextmanager
def serve_again(
    pki: TestPki,
    root: Path,
    *,
    mutual_port: int = 0,
    pair_port: int = 0,
) -> Iterator[BackOffice]:
    """`mvb-admin serve` on the fleet, pairing state and uploads already under `root`."""
    with _serve(pki, root, mutual_port, pair_port, ()) as office:
        yield office


@contextlib.contextmanager
def _serve(
    pki: TestPki, root: Path, mutual_port: int, pair_port: int, serve_args: Sequence[str]
) -> Iterator[BackOffice]:
    state = root / "pairing-state"
    command = [
        str(MVB_ADMIN), "serve", "--dir", str(root / "uploads"),
        "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.ca_cert), "--port", str(mutual_port), "--reserve-bytes", "0",
        "--pair-port", str(pair_port), "--pairing-state", str(state),
        "--pki-dir", str(pki.directory), "--fleet-repo", str(root / "repo"), *serve_args,
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            ports: dict[str, int] = {}
            for line in read_lines(process, 3, timeout_s=STEP_TIMEOUT_S):
                match = SERVING.match(line.strip())
                assert match is not None, line
                ports[match["what"].split("/")[0]] = int(match["port"])
            assert ports["files"] == ports["fleet"]
            yield BackOffice(
                pki,
                state,
                FleetRepository(root / "repo", trust=AdminTrust.load(root / TRUST_DIR)),
                root / "fleet-keys",
                root / "uploads",
                ports["files"],
                ports["pair"],
            )
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(STEP_TIMEOUT_S)


# --- the box --------------------------------------------------------------------------------------


def write_recipient_pub(directory: Path) -> Path:
    """The back office's recording public key, as a box configuration names it."""
    path = directory / "recording.pub"
    path.write_text(RecipientPrivateKey.generate().public().pem() + "\n")
    return path


def box_config(root: Path, recipient_pub: Path) -> Path:
    return write_box_config(root, recipient_pub, device_serial=BOX)


def mvb_pair(config: Path, code: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(MVB, "--config", config, "pair", code, *extra)


def running_box_config(
    root: Path, recipient_pub: Path, clip: Path, *, config_poll_s: int = 1, prerecord_s: int = 30
) -> Path:
    """A paired box (`root/state`) with one replayed camera, pre-record `prerecord_s` in its
    local file, and its uplink on, asking for fleet configuration every `config_poll_s`.
    [uplink] names no address and no credentials: the box takes them from its pairing (as a
    real box does)."""
    return write_box_config(
        root,
        recipient_pub,
        device_serial=BOX,
        storage_lines=f"""
[recording]
prerecord_s = {prerecord_s}
[gps]
port = {free_port()}
[api]
port = {free_port()}
[[cameras]]
name = "dashcam"
kind = "replay"
url = "{clip}"
serial = "DC-9"
[uplink]
enabled = true
config_poll_s = {config_poll_s}
[[links]]
name = "wifi"
cost_class = "wifi"
""",
    )


def box_status(config: Path) -> dict[str, Any]:
    """The running box's status, as `mvb status` prints it."""
    result = run(MVB, "--config", config, "status")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def api_url(config: Path, path: str) -> str:
    """The URL of `path` on the box's loopback API, whose port `config` names."""
    api = tomllib.loads(config.read_text())["api"]
    return f"http://127.0.0.1:{api['port']}{path}"


def api_status(config: Path) -> dict[str, Any]:
    """The running box's status straight from its local API (GET /api/status): no process start
    per look, for tests that watch the box closely."""
    with urllib.request.urlopen(api_url(config, "/api/status"), timeout=STEP_TIMEOUT_S) as answer:  # noqa: S310 (loopback)
        document: dict[str, Any] = json.loads(answer.read())
    return document


def api_post(config: Path, path: str) -> int:
    """POST an empty body to the box's local API (a command); the status code."""
    url = api_url(config, path)
    request = urllib.request.Request(url, method="POST", data=b"")  # noqa: S310 (loopback)
    with urllib.request.urlopen(request, timeout=STEP_TIMEOUT_S) as answer:  # noqa: S310 (loopback)
        status: int = answer.status
    return status


def fleet_status(config: Path) -> dict[str, Any]:
    fleet: dict[str, Any] = box_status(config)["fleet"]
    return fleet


def camera_prerecord_s(config: Path) -> float:
    return float(box_status(config)["cameras"]["dashcam"]["prerecord_s"])
