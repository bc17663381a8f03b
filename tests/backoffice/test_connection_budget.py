"""Each listener holds at most its budget of connections, in all and per client address.

The book (backoffice/connection_book.py) directly; then the real listeners on 127.0.0.1 (real
TLS, real sockets; several loopback source addresses stand for several clients): bare
connections to the pairing port are held up to its budget only, closed at once beyond their
address's share, and freed by the handshake timeout, while the evidence listener serves a box
as if nothing happened; `mvb-admin serve` refuses to start when RLIMIT_NOFILE cannot hold its
budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backoffice.connection_book import Admission, ConnectionBook, ConnectionLimits, address_key
from backoffice.fleet_repo import init_repository
from backoffice.pairing_service import (
    LedgerStore,
    PairingService,
    back_office_pins,
    load_back_office_ca,
    start_pairing_server,
)
from backoffice.serve_limits import ServeLimits
from backoffice.server import RunningServer, start_https_server
from backoffice.tus_app import TusApp
from backoffice.upload_store import UploadStore
from protocol.pairing_messages import ServiceEndpoint
from tests.backoffice.test_serve_both_transports import read_lines
from tests.backoffice.test_server_https import STEP_TIMEOUT_S, box_context, box_session
from tests.tls_helpers import TestPki

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
ADMITTED, ADDRESS_FULL = Admission.ADMITTED, Admission.ADDRESS_FULL

# -- the book ---------------------------------------------------------------------------------


def test_the_book_bounds_connections_in_all_and_per_address() -> None:
    book = ConnectionBook(ConnectionLimits(max_connections=3, max_per_address=2))
    assert [book.admit("10.0.0.1", 0.0) for _ in range(3)] == [ADMITTED, ADMITTED, ADDRESS_FULL]
    assert book.admit("10.0.0.2", 0.0) is ADMITTED
    assert book.full
    assert book.admit("10.0.0.3", 0.0) is Admission.FULL  # full: nobody new
    book.release("10.0.0.1")
    assert book.admit("10.0.0.3", 0.0) is ADMITTED
    book.release("10.0.0.9")  # never admitted: nothing changes
    assert book.total == 3


def test_the_book_bounds_new_connections_a_second_per_address() -> None:
    limits = ConnectionLimits(
        max_connections=100, max_per_address=100, new_per_address_per_s=2, new_burst_per_address=3
    )
    book = ConnectionBook(limits)
    for _ in range(3):
        assert book.admit("10.0.0.1", 0.0) is ADMITTED
        book.release("10.0.0.1")  # short connections: the count stays low, the rate does not
    assert book.admit("10.0.0.1", 0.0) is Admission.TOO_FAST
    assert book.admit("10.0.0.2", 0.0) is ADMITTED  # another address has its own rate
    assert book.admit("10.0.0.1", 0.5) is ADMITTED  # half a second: one more at 2 a second
    assert book.total == 2


def test_an_ipv6_subscriber_counts_as_its_slash_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("fe80::1%eth0") == address_key("fe80::2")
    book = ConnectionBook(ConnectionLimits(max_connections=10, max_per_address=2))
    answers = [book.admit(f"2001:db8:1:2::{n}", 0.0) for n in range(1, 4)]
    assert answers == [ADMITTED, ADMITTED, ADDRESS_FULL]


def test_limits_that_contradict_are_refused() -> None:
    with pytest.raises(ValueError, match="max_per_address"):
        ConnectionLimits(max_connections=2, max_per_address=3)


# -- the real listeners -----------------------------------------------------------------------


@dataclass
class Listeners:
    pairing: RunningServer
    evidence: RunningServer


@pytest.fixture
async def listeners(pki: TestPki, tmp_path: Path) -> AsyncIterator[Listeners]:
    fleet = init_repository(tmp_path / "repo", tmp_path / "keys", now=datetime.now(UTC))
    ledger = LedgerStore(tmp_path / "pairing")
    service = PairingService(
        ledger,
        load_back_office_ca(pki.directory),
        back_office_pins(pki.directory),
        fleet.trust_root_bytes,
        service=ServiceEndpoint.of("127.0.0.1:1", "backoffice.test", 0),
    )
    store = UploadStore.open(tmp_path / "uploads", reserve_bytes=0)
    pairing = await start_pairing_server(
        service,
        host="127.0.0.1",
        port=0,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        connections=ConnectionLimits(
            max_connections=8, max_per_address=4, new_burst_per_address=50
        ),
        handshake_timeout_s=4.0,  # long enough to fill the budget first on a loaded machine
    )
    evidence = await start_https_server(
        TusApp(store, max_upload_bytes=1 << 20, max_chunk_bytes=1 << 16),
        host="127.0.0.1",
        port=0,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        client_ca_file=pki.ca_cert,
        connections=ConnectionLimits(1024, 128, new_burst_per_address=1000),  # shares, not rates
    )
    try:
        yield Listeners(pairing, evidence)
    finally:
        await evidence.close()
        await pairing.close()
        store.close()


async def bare_connection(port: int, source: str) -> socket.socket:
    """A TCP connection from `source` that never says a word (a listener that refuses it resets
    it, which the connect may already see)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((source, 0))
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def bare_connections(port: int, sources: list[str]) -> list[socket.socket]:
    return [await bare_connection(port, source) for source in sources]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline_s = time.monotonic() + STEP_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline_s, what
        await asyncio.sleep(0.02)


async def box_is_served(listeners: Listeners, pki: TestPki) -> None:
    async with (
        box_session(box_context(pki)) as session,
        session.options(f"https://127.0.0.1:{listeners.evidence.port}/files/") as answer,
    ):
        assert answer.status == 204


async def test_bare_connections_to_the_pairing_port_take_its_budget_only(
    listeners: Listeners, pki: TestPki
) -> None:
    site = listeners.pairing.site
    held: list[socket.socket] = []
    try:
        # Forty from one address: four are held, the rest closed at once.
        held += await bare_connections(site.port, ["127.0.0.2"] * 40)
        refused = site.stats.refused
        await eventually(lambda: refused["address_full"] == 36, "not refused per address")
        assert site.book.count("127.0.0.2") == 4
        # Four more addresses fill the budget of 8; what comes next waits in the backlog.
        held += await bare_connections(site.port, [f"127.0.0.{n}" for n in (3, 3, 3, 3, 4)])
        await eventually(lambda: site.book.full, "the budget never filled")
        assert site.stats.accepted == 8
        assert site.book.total == 8
        await box_is_served(listeners, pki)  # the evidence listener is untouched
        # The handshake timeout frees the slots; the waiting connection gets one.
        await eventually(lambda: site.stats.accepted == 9, "the backlog was never accepted")
        assert site.stats.handshakes_failed >= 1
    finally:
        for sock in held:
            sock.close()


async def test_the_evidence_listener_closes_what_exceeds_an_address_share(
    listeners: Listeners, pki: TestPki
) -> None:
    site = listeners.evidence.site
    share = site.book.limits.max_per_address
    held = await bare_connections(site.port, ["127.0.0.5"] * (share + 5))
    try:
        refused = site.stats.refused
        await eventually(lambda: refused["address_full"] == 5, "no per-address refusal")
        await box_is_served(listeners, pki)  # from 127.0.0.1: its own share
    finally:
        for sock in held:
            sock.close()


def test_serve_refuses_budgets_the_descriptor_limit_cannot_hold(
    pki: TestPki, tmp_path: Path
) -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    command = [
        str(MVB_ADMIN), "serve", "--dir", str(tmp_path / "store"), "--cert", str(pki.server_cert),
        "--key", str(pki.server_key), "--client-ca", str(pki.ca_cert), "--port", "0",
        "--max-connections", "1024",
    ]  # fmt: skip
    result = subprocess.run(
        command, preexec_fn=low_limit, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "LimitNOFILE" in result.stderr
    assert not (tmp_path / "store").exists()  # refused before anything was opened


def test_serve_raises_its_soft_descriptor_limit_to_what_its_budgets_need(
    pki: TestPki, tmp_path: Path
) -> None:
    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 4096))

    command = [
        str(MVB_ADMIN), "serve", "--dir", str(tmp_path / "store"), "--cert", str(pki.server_cert),
        "--key", str(pki.server_key), "--client-ca", str(pki.ca_cert), "--port", "0",
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, preexec_fn=low_soft_limit
    ) as process:
        try:
            read_lines(process, 1, timeout_s=30)  # serving: the limit is set by now
            limits = Path(f"/proc/{process.pid}/limits").read_text()
        finally:
            process.terminate()
            process.wait(30)
    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    needed = ServeLimits().descriptors_needed(pairing=False)  # 1024 + 256 + 256 by default
    assert line.split()[3:5] == [str(needed), "4096"]
