"""The back office's pairing shell on 127.0.0.1: the ledger file, `POST /pair/v1` on its own TLS
listener, the client gate and the fleet routes of the mutual-TLS listener, `mvb-admin pair-code`
and `unpair` as real processes.

Real TLS with the session's test PKI, real aiohttp servers, a real fleet TUF repository; the box
side is gateway/pairing_client.py (or a raw client where a request must misbehave).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from backoffice.fleet_access import FleetAccess
from backoffice.fleet_repo import FleetRepository, init_repository
from backoffice.pairing import BackOfficeTrust, issue_code, redeem, unpair
from backoffice.pairing_ledger import CodeState, PairingLedger
from backoffice.pairing_service import (
    LEDGER_FILE,
    LedgerGate,
    LedgerStore,
    PairingService,
    PairRateLimiter,
    RateLimits,
    back_office_pins,
    load_back_office_ca,
    retry_after_header,
    start_pairing_server,
)
from backoffice.server import RunningServer, start_https_server
from backoffice.tus_app import TusApp
from backoffice.upload_store import UploadStore
from gateway.pairing import start_pairing
from gateway.pairing_client import pair, pairing_files
from protocol.pairing_code import NONCE_BYTES, PairingCode
from protocol.pairing_messages import ServiceEndpoint
from storage.devicekey import DeviceKey
from tests.tls_helpers import SERVER_NAME, TestPki
from transport.http import HttpRequest
from transport.https import HttpsTransport
from transport.pinning import parse_pin, pin_of_certificate

DEVICE_KEY = DeviceKey.generate().public_key().raw()
"""The box's device public key its pairing requests enroll."""

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
BOX = "MVB-0042"
STEP_TIMEOUT_S = 15.0
TUS_OPTIONS = HttpRequest("OPTIONS", "/files/", (("Tus-Resumable", "1.0.0"),))


def run_admin(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MVB_ADMIN), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def new_code(
    store: LedgerStore, pins: tuple[str, ...], address: str, box_id: str = BOX, **kwargs: bool
) -> PairingCode:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return store.transact(
        lambda ledger: issue_code(ledger, box_id, address, pins, time.time(), nonce, **kwargs)
    )


@dataclass
class BackOffice:
    """Both listeners of one back office, in this process."""

    pki: TestPki
    store: LedgerStore
    fleet: FleetRepository
    pins: tuple[str, ...]
    pairing: RunningServer
    mutual: RunningServer
    uploads: UploadStore

    @property
    def pair_address(self) -> str:
        return f"127.0.0.1:{self.pairing.port}"

    @property
    def pair_url(self) -> str:
        return f"https://{self.pair_address}/pair/v1"

    def code(self, box_id: str = BOX) -> PairingCode:
        return new_code(self.store, self.pins, self.pair_address, box_id)


@pytest.fixture
async def back_office(pki: TestPki, tmp_path: Path) -> AsyncIterator[BackOffice]:
    fleet = init_repository(tmp_path / "repo", tmp_path / "keys", now=datetime.now(UTC))
    store = LedgerStore(tmp_path / "pairing")
    pins = back_office_pins(pki.directory)
    uploads = UploadStore.open(tmp_path / "uploads", reserve_bytes=0)
    pairing = mutual = None
    try:
        mutual = await start_https_server(
            TusApp(uploads, max_upload_bytes=1 << 20, max_chunk_bytes=1 << 16),
            host="127.0.0.1",
            port=0,
            cert_file=pki.server_cert,
            key_file=pki.server_key,
            client_ca_file=pki.ca_cert,
            client_gate=LedgerGate(store),
            fleet_files=FleetAccess(fleet),
        )
        service = PairingService(
            store,
            load_back_office_ca(pki.directory),
            pins,
            fleet.trust_root_bytes,
            service=ServiceEndpoint.of(f"127.0.0.1:{mutual.port}", SERVER_NAME, 0),
        )
        pairing = await start_pairing_server(
            service, host="127.0.0.1", port=0, cert_file=pki.server_cert, key_file=pki.server_key
        )
        yield BackOffice(pki, store, fleet, pins, pairing, mutual, uploads)
    finally:
        for server in (mutual, pairing):
            if server is not None:
                await server.close()
        uploads.close()


def unverified_context() -> ssl.SSLContext:
    """A client that checks nothing (like a box before pairing, minus the key check)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def post(
    url: str, body: bytes, *, source_address: str = "127.0.0.1"
) -> tuple[int, str, dict[str, object]]:
    status, content_type, document, _ = await post_with_headers(
        url, body, source_address=source_address
    )
    return status, content_type, document


async def post_with_headers(
    url: str, body: bytes, *, source_address: str = "127.0.0.1"
) -> tuple[int, str, dict[str, object], dict[str, str]]:
    """POST from `source_address` (any 127.0.0.0/8 address is this machine's loopback)."""
    connector = aiohttp.TCPConnector(local_addr=(source_address, 0), force_close=True)
    async with (
        aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=STEP_TIMEOUT_S)
        ) as session,
        session.post(
            url, data=body, ssl=unverified_context(), headers={"Content-Type": "application/json"}
        ) as response,
    ):
        text = await response.text()
        document = json.loads(text) if response.content_type == "application/json" else {}
        return response.status, response.content_type, document, dict(response.headers)


# --- the ledger file ------------------------------------------------------------------------------


def test_ledger_is_written_0600_atomically_and_read_back(pki: TestPki, tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "pairing")
    code = new_code(store, back_office_pins(pki.directory), "bo.example:8443")

    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.state_dir.stat().st_mode) == 0o700
    # Only the ledger and its lock file: no temporary file is left behind.
    assert sorted(p.name for p in store.state_dir.iterdir()) == [
        LEDGER_FILE,
        "pairing-ledger.lock",
    ]
    record = LedgerStore(store.state_dir).read().code(code.code_id)
    assert record is not None
    assert (record.box_id, record.state) == (BOX, CodeState.OPEN)


def test_concurrent_transactions_in_one_process_lose_no_update(
    pki: TestPki, tmp_path: Path
) -> None:
    store = LedgerStore(tmp_path / "pairing")
    pins = back_office_pins(pki.directory)
    boxes = [f"MVB-{n:04d}" for n in range(8)]
    start = threading.Barrier(len(boxes))

    def issue(box_id: str) -> None:
        start.wait(STEP_TIMEOUT_S)
        new_code(store, pins, "bo.example", box_id)

    threads = [threading.Thread(target=issue, args=(box,)) for box in boxes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STEP_TIMEOUT_S)
    assert sorted(record.box_id for record in store.read().codes) == boxes


def test_pair_code_processes_serialise_on_the_ledger(pki: TestPki, tmp_path: Path) -> None:
    state = tmp_path / "pairing"
    boxes = [f"MVB-{n:04d}" for n in range(4)]
    commands = [
        [str(MVB_ADMIN), "pair-code", "--state", str(state), "--pki", str(pki.directory),
         "--box-id", box, "--address", "bo.example:8443"]
        for box in boxes
    ]  # fmt: skip
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    outputs = [process.communicate(timeout=60) for process in processes]

    assert [process.returncode for process in processes] == [0, 0, 0, 0], outputs
    ledger = LedgerStore(state).read()
    assert sorted(record.box_id for record in ledger.codes) == boxes
    for box, (stdout, _) in zip(boxes, outputs, strict=True):
        header, typed = stdout.strip().splitlines()
        assert header.startswith(f"pairing code for box {box}, single use, valid until ")
        assert header.endswith("UTC (15 minutes):")
        code = PairingCode.parse(typed)
        assert code.address == "bo.example:8443"
        assert code.matches_server_key(parse_pin(pki.server_pin))
        assert ledger.code(code.code_id) is not None


def test_pair_code_refuses_a_paired_box_unless_re_pair(pki: TestPki, tmp_path: Path) -> None:
    state = tmp_path / "pairing"
    store = LedgerStore(state)
    pins = back_office_pins(pki.directory)
    code = new_code(store, pins, "bo.example")
    attempt = start_pairing(code.text(), BOX, DEVICE_KEY)
    ca = load_back_office_ca(pki.directory)
    trust = BackOfficeTrust(pins, b"root", ServiceEndpoint.of("bo.example", "bo.example", 0))
    store.transact(lambda ledger: redeem(ledger, attempt.request_json(), time.time(), ca, trust))
    paired = store.read().pairing_of(BOX)
    assert paired is not None
    base = ("pair-code", "--state", state, "--pki", pki.directory, "--box-id", BOX)

    refused = run_admin(*base, "--address", "bo.example")
    re_pair = run_admin(*base, "--address", "bo.example", "--re-pair")

    assert refused.returncode == 1
    assert f"box {BOX} is paired" in refused.stderr
    assert "make a re-pair code" in refused.stderr
    assert re_pair.returncode == 0, re_pair.stderr
    assert f"re-pair code for box {BOX} (replaces certificate {paired.serial:x})" in re_pair.stdout


def test_unpair_refuses_a_box_that_is_not_paired(tmp_path: Path) -> None:
    result = run_admin("unpair", "--state", tmp_path / "pairing", "--box-id", BOX)
    assert result.returncode == 1
    assert result.stderr.strip() == f"mvb-admin unpair: box {BOX} is not paired"


def test_serve_refuses_an_incomplete_pairing_setup(pki: TestPki, tmp_path: Path) -> None:
    result = run_admin(
        "serve", "--dir", tmp_path / "store", "--cert", pki.server_cert, "--key", pki.server_key,
        "--client-ca", pki.ca_cert, "--port", "0", "--pair-port", "0",
    )  # fmt: skip
    assert result.returncode == 2
    assert "--pair-port needs --pairing-state, --pki-dir, --fleet-repo" in result.stderr
    assert not (tmp_path / "store").exists()  # refused before anything was started


def test_serve_refuses_a_server_name_its_certificate_does_not_carry(
    pki: TestPki, tmp_path: Path
) -> None:
    result = run_admin(
        "serve", "--dir", tmp_path / "store", "--cert", pki.server_cert, "--key", pki.server_key,
        "--client-ca", pki.ca_cert, "--port", "0", "--pair-port", "0",
        "--pairing-state", tmp_path / "pairing", "--pki-dir", pki.directory,
        "--fleet-repo", tmp_path / "repo", "--server-name", "elsewhere.test",
    )  # fmt: skip
    assert result.returncode == 2
    assert "--server-name elsewhere.test is not a name of --cert" in result.stderr
    assert not (tmp_path / "store").exists()  # refused before anything was started


# --- POST /pair/v1 --------------------------------------------------------------------------------


async def test_pairing_listener_presents_the_serving_key_and_wants_no_client_certificate(
    back_office: BackOffice, pki: TestPki
) -> None:
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", back_office.pairing.port, ssl=unverified_context()),
        STEP_TIMEOUT_S,
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    assert pin_of_certificate(der) == pki.server_pin == back_office.pins[0]


async def test_a_request_without_the_nonce_withdraws_the_code_on_disk(
    back_office: BackOffice,
) -> None:
    code = back_office.code()
    request = json.loads(start_pairing(code.text(), BOX, DEVICE_KEY).request_json())
    request["proof"] = "00" * 32  # made without the nonce

    status, content_type, answer = await post(back_office.pair_url, json.dumps(request).encode())

    assert (status, content_type) == (403, "application/json")
    assert answer["version"] == 1
    assert answer["refusal"] == "proof-invalid"
    assert code.text().split("/")[1] not in str(answer["message"])
    record = LedgerStore(back_office.store.state_dir).read().code(code.code_id)
    assert record is not None
    assert record.state is CodeState.WITHDRAWN


async def test_an_unknown_code_is_404_code_unknown(back_office: BackOffice, tmp_path: Path) -> None:
    elsewhere = LedgerStore(tmp_path / "other-ledger")  # a code this back office never made
    code = new_code(elsewhere, back_office.pins, back_office.pair_address)
    body = start_pairing(code.text(), BOX, DEVICE_KEY).request_json()

    status, _, answer = await post(back_office.pair_url, body)

    assert (status, answer["refusal"]) == (404, "code-unknown")


async def test_an_oversized_body_is_refused_as_malformed_without_touching_the_ledger(
    back_office: BackOffice,
) -> None:
    code = back_office.code()
    before = back_office.store.path.read_bytes()

    status, _, answer = await post(back_office.pair_url, b"{" + b" " * (9 * 1024) + b"}")

    assert (status, answer["refusal"]) == (400, "malformed-request")
    assert "8192" in str(answer["message"])
    assert back_office.store.path.read_bytes() == before
    record = back_office.store.read().code(code.code_id)
    assert record is not None
    assert record.state is CodeState.OPEN


async def test_pairing_listener_serves_only_post_pair_v1(back_office: BackOffice) -> None:
    origin = f"https://{back_office.pair_address}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STEP_TIMEOUT_S)) as s:
        async with s.get(f"{origin}/pair/v1", ssl=unverified_context()) as get:
            assert (get.status, get.headers["Allow"]) == (405, "POST")
        async with s.post(f"{origin}/files/", data=b"{}", ssl=unverified_context()) as other:
            assert other.status == 404


# --- the gate and the fleet routes of the mutual-TLS listener -------------------------------------


async def test_unpair_stops_a_kept_alive_connection_at_its_next_request(
    back_office: BackOffice, tmp_path: Path
) -> None:
    state = tmp_path / "box"
    await pair(back_office.code().text(), BOX, state, DEVICE_KEY)
    transport = await HttpsTransport.connect(
        "127.0.0.1", back_office.mutual.port, pairing_files(state).tls_settings(), max_connections=1
    )
    try:
        before = await transport.request(TUS_OPTIONS, None)
        result = await asyncio.to_thread(
            run_admin, "unpair", "--state", back_office.store.state_dir, "--box-id", BOX
        )
        after = await transport.request(TUS_OPTIONS, None)
        opened = transport.connections_opened
    finally:
        await transport.aclose()

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"unpaired box {BOX}: certificate ")
    assert before.status == 204
    assert after.status == 403
    assert b"unpaired" in after.body
    assert after.headers["mvb-credentials"] == "unpaired"  # the box forgets the back office
    assert opened == 1  # the same kept-alive connection: checked per request, not per handshake


async def test_gate_fails_closed_when_the_ledger_is_unreadable(
    back_office: BackOffice, pki: TestPki
) -> None:
    back_office.store.state_dir.mkdir()
    back_office.store.path.write_bytes(b"not a ledger")
    transport = await HttpsTransport.connect(
        "127.0.0.1", back_office.mutual.port, pki.client_settings()
    )
    try:
        answer = await transport.request(TUS_OPTIONS, None)
    finally:
        await transport.aclose()
    assert answer.status == 503


async def test_fleet_routes_serve_the_repository_read_only(
    back_office: BackOffice, pki: TestPki
) -> None:
    root = back_office.fleet.trust_root_bytes()
    transport = await HttpsTransport.connect(
        "127.0.0.1", back_office.mutual.port, pki.client_settings()
    )

    async def status_and_body(method: str, target: str) -> tuple[int, bytes]:
        answer = await transport.request(HttpRequest(method, target), None)
        return answer.status, answer.body

    try:
        served = await status_and_body("GET", "/fleet/metadata/1.root.json")
        missing = await status_and_body("GET", "/fleet/metadata/2.root.json")
        outside = await status_and_body("GET", "/fleet/metadata/%2E%2E/targets")
        keys = await status_and_body("GET", "/fleet/keys/targets.key")
        query = await status_and_body("GET", "/fleet/metadata/1.root.json?x=1")
        written = await status_and_body("PUT", "/fleet/metadata/1.root.json")
        tus = await status_and_body("OPTIONS", "/files/")
    finally:
        await transport.aclose()

    assert served == (200, root)
    assert [missing[0], outside[0], keys[0], query[0]] == [404, 404, 404, 404]
    assert written[0] == 405
    assert tus[0] == 204  # tus is still served beside the fleet


async def test_unpair_withdraws_the_boxs_open_codes(back_office: BackOffice) -> None:
    spare = back_office.code()
    used = back_office.code()
    status, _, _ = await post(
        back_office.pair_url, start_pairing(used.text(), BOX, DEVICE_KEY).request_json()
    )
    assert status == 200
    back_office.store.transact(lambda ledger: (unpair(ledger, BOX, time.time()), None))

    body = start_pairing(spare.text(), BOX, DEVICE_KEY).request_json()
    status, _, answer = await post(back_office.pair_url, body)

    assert (status, answer["refusal"]) == (410, "code-withdrawn")


def test_empty_store_reads_as_an_empty_ledger(tmp_path: Path) -> None:
    assert LedgerStore(tmp_path / "nothing-yet").read() == PairingLedger()


# --- rate limits on /pair/v1 (docs/pairing.md 4.4) -----------------------------------------------


def test_limiter_admits_a_burst_per_address_then_refills_at_its_rate() -> None:
    limiter = PairRateLimiter(RateLimits(per_address_per_min=3, overall_per_min=100))
    t0_s = 1000.0

    burst = [limiter.admit("192.0.2.1", t0_s) for _ in range(4)]

    assert [decision.admitted for decision in burst] == [True, True, True, False]
    assert burst[3].retry_after_s == pytest.approx(20.0)  # one token every 60/3 s
    assert limiter.admit("192.0.2.2", t0_s).admitted  # another address has its own bucket
    assert not limiter.admit("192.0.2.1", t0_s + 19.9).admitted
    assert limiter.admit("192.0.2.1", t0_s + 20.0).admitted
    assert not limiter.admit("192.0.2.1", t0_s + 20.0).admitted


def test_limiter_bounds_all_addresses_together() -> None:
    limiter = PairRateLimiter(RateLimits(per_address_per_min=10, overall_per_min=4))
    decisions = [limiter.admit(f"192.0.2.{n}", 0.0) for n in range(5)]
    assert [decision.admitted for decision in decisions] == [True] * 4 + [False]
    assert decisions[4].retry_after_s == pytest.approx(15.0)
    assert limiter.tracked_addresses == 4  # a refused address left nothing behind


def test_limiter_refusal_takes_no_token_and_a_clock_going_back_refills_nothing() -> None:
    limiter = PairRateLimiter(RateLimits(per_address_per_min=1, overall_per_min=2))
    assert limiter.admit("192.0.2.1", 100.0).admitted
    assert not limiter.admit("192.0.2.1", 100.0).admitted  # its own bucket is empty ...
    assert limiter.admit("192.0.2.2", 100.0).admitted  # ... and that refusal took no overall token
    assert not limiter.admit("192.0.2.1", 40.0).admitted


def test_limiter_keeps_a_bounded_number_of_addresses() -> None:
    limiter = PairRateLimiter(
        RateLimits(per_address_per_min=2, overall_per_min=1000, max_tracked_addresses=2)
    )
    assert limiter.admit("192.0.2.1", 0.0).admitted
    assert limiter.admit("192.0.2.2", 10.0).admitted
    crowded = limiter.admit("192.0.2.3", 10.0)
    assert not crowded.admitted
    assert crowded.retry_after_s == pytest.approx(20.0)  # 192.0.2.1's bucket is full at 30 s
    assert limiter.admit("192.0.2.3", 30.0).admitted  # the full bucket was forgotten
    assert limiter.tracked_addresses == 2


@pytest.mark.parametrize(("seconds", "header"), [(0.0, "1"), (0.2, "1"), (19.01, "20"), (20, "20")])
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


class FakeClock:
    """The monotonic clock the listener hands its limiter: moved by the test, never by time."""

    def __init__(self) -> None:
        self.now_s = 500.0

    def __call__(self) -> float:
        return self.now_s


async def test_pairing_listener_answers_a_burst_with_429_and_retry_after(
    back_office: BackOffice, pki: TestPki
) -> None:
    clock = FakeClock()
    limited = await start_pairing_server(
        PairingService(
            back_office.store,
            load_back_office_ca(pki.directory),
            back_office.pins,
            back_office.fleet.trust_root_bytes,
            service=ServiceEndpoint.of(f"127.0.0.1:{back_office.mutual.port}", SERVER_NAME, 0),
        ),
        host="127.0.0.1",
        port=0,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        rate_limits=RateLimits(per_address_per_min=3, overall_per_min=5),
        clock=clock,
    )
    url = f"https://127.0.0.1:{limited.port}/pair/v1"
    code = back_office.code()
    request = start_pairing(code.text(), BOX, DEVICE_KEY).request_json()
    try:
        burst = [(await post(url, b"{}"))[0] for _ in range(3)]
        status, content_type, refusal, headers = await post_with_headers(url, request)
        elsewhere, _, _ = await post(url, b"{}", source_address="127.0.0.2")
        clock.now_s += 20.0  # one token back for 127.0.0.1
        granted, _, _ = await post(url, request)
    finally:
        await limited.close()

    assert burst == [400, 400, 400]  # admitted: malformed bodies, read and refused
    assert (status, content_type) == (429, "application/json")
    assert headers["Retry-After"] == "20"
    assert refusal["refusal"] == "rate-limited"
    assert refusal["version"] == 1
    assert "try again in 20 s" in str(refusal["message"])
    assert elsewhere == 400  # another address is not limited by this one's burst
    assert granted == 200  # the refused request touched nothing: the code still pairs
