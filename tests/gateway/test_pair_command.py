"""`mvb pair CODE` against `mvb-admin serve --pair-port ...`, as an admin and an officer run them.

Real processes: the back office (`mvb-admin serve` with its pairing listener, gate and fleet
routes), `mvb-admin pair-code` / `unpair`, and `mvb pair` on a box configuration. The box's
later link (fleet metadata, tus) is our own pinned transports in this process.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl
import stat
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from backoffice.fleet_repo import init_repository
from backoffice.fleet_reports import ReportLog
from backoffice.pairing import ALPHABET, CODE_VALIDITY_S, NONCE_BYTES, issue_code
from backoffice.pairing_ledger import CodeState
from backoffice.pairing_service import (
    LedgerStore,
    PairingService,
    back_office_pins,
    load_back_office_ca,
)
from config.fleet_client import FleetConfigClient
from config.fleet_fetch import FleetLink, LinkFetch
from config.fleet_targets import AppliedState
from demo.synthetic import generate_clip
from gateway.pairing import PairedCredentials, WrongServerKey
from gateway.pairing_client import (
    fleet_metadata_dir,
    install_credentials,
    pair,
    pairing_files,
    recover_pairing_dir,
    store_credentials,
)
from protocol.pairing_messages import ServiceEndpoint
from storage.devicekey import DeviceKey
from tests.gateway.fleet_rig import (
    BOX,
    DOCUMENT,
    MVB,
    MVB_ADMIN,
    STEP_TIMEOUT_S,
    BackOffice,
    box_config,
    camera_prerecord_s,
    fleet_status,
    mvb_pair,
    mvb_run,
    run,
    run_async,
    running_box_config,
    start_back_office,
    wait_for,
    write_recipient_pub,
)
from tests.tls_helpers import SERVER_NAME, TestPki
from transport.http import HttpRequest
from transport.https import HttpsTransport

DEVICE_KEY = DeviceKey.generate().public_key().raw()
"""The box's device public key its pairing requests enroll."""

TUS_OPTIONS = HttpRequest("OPTIONS", "/files/", (("Tus-Resumable", "1.0.0"),))
# Where paired boxes would reach the mutual-TLS listener: not reached by the tests using it.
SERVICE = ServiceEndpoint.of("127.0.0.1:8443", SERVER_NAME, 0)


@pytest.fixture
def back_office(pki: TestPki, tmp_path: Path) -> Iterator[BackOffice]:
    with start_back_office(pki, tmp_path) as office:
        yield office


@pytest.fixture(scope="module")
def recipient_pub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_recipient_pub(tmp_path_factory.mktemp("recipient"))


def certificate_serial(state: Path) -> int:
    pem = pairing_files(state).client_cert.read_bytes()
    return x509.load_pem_x509_certificate(pem).serial_number


def mistype(typed: str) -> str:
    """The code with its first symbol replaced by another symbol."""
    address, _, symbols = typed.rpartition("/")
    first = symbols[0]
    other = ALPHABET[(ALPHABET.index(first) + 1) % len(ALPHABET)]
    return f"{address}/{other}{symbols[1:]}"


# --- pairing, then the pinned link ----------------------------------------------------------------


async def test_box_pairs_fetches_its_fleet_document_and_stops_at_unpair(
    back_office: BackOffice, pki: TestPki, recipient_pub: Path, tmp_path: Path
) -> None:
    config = box_config(tmp_path / "box", recipient_pub)
    state = tmp_path / "box" / "state"
    code = back_office.code()

    paired = mvb_pair(config, code)

    assert paired.returncode == 0, paired.stderr
    assert paired.stdout.strip() == (
        f"paired box {BOX} with the back office at {back_office.address}: credentials in "
        f"{state / 'pairing'}, fleet trust root installed"
    )
    files = pairing_files(state)
    assert stat.S_IMODE(files.client_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    assert files.ca_cert.read_bytes() == pki.ca_cert.read_bytes()
    assert files.pins() == back_office_pins(pki.directory) == (pki.server_pin, pki.backup_pin)
    assert files.address() == back_office.address
    root = fleet_metadata_dir(state) / "root.json"
    assert root.read_bytes() == back_office.fleet.trust_root_bytes()
    assert back_office.ledger_state_of(code) is CodeState.USED
    # The key and certificate are a pair that TLS loads.
    ssl.create_default_context().load_cert_chain(files.client_cert, files.client_key)

    link = await FleetLink.connect("127.0.0.1", back_office.mutual_port, files.tls_settings())
    tus = await HttpsTransport.connect(
        "127.0.0.1", back_office.mutual_port, files.tls_settings(), max_connections=1
    )
    try:
        fetch = LinkFetch(link, asyncio.get_running_loop())
        client = FleetConfigClient(fleet_metadata_dir(state), BOX, (), fetch, AppliedState())
        document = await asyncio.to_thread(client.check)
        before = await tus.request(TUS_OPTIONS, None)
        unpaired = await run_async(
            MVB_ADMIN, "unpair", "--state", back_office.state, "--box-id", BOX
        )
        after = await tus.request(TUS_OPTIONS, None)
    finally:
        await tus.aclose()
        await link.aclose()

    assert document is not None
    assert (document.document, document.config_serial) == (DOCUMENT, 1)
    assert before.status == 204
    assert unpaired.returncode == 0, unpaired.stderr
    assert after.status == 403
    assert tus.connections_opened == 1  # refused on the connection it already had


async def test_a_paired_box_needs_re_pair_and_a_re_pair_code(
    back_office: BackOffice, recipient_pub: Path, tmp_path: Path
) -> None:
    config = box_config(tmp_path / "box", recipient_pub)
    state = tmp_path / "box" / "state"
    assert mvb_pair(config, back_office.code()).returncode == 0
    first_serial = certificate_serial(state)

    again = mvb_pair(config, back_office.code("--re-pair"))
    plain_code_refused = back_office.pair_code()
    re_paired = mvb_pair(config, back_office.code("--re-pair"), "--re-pair")

    assert again.returncode == 1
    assert again.stderr.strip() == (
        "mvb pair: this box is already paired; pairing again needs a re-pair code and --re-pair"
    )
    assert plain_code_refused.returncode == 1
    assert re_paired.returncode == 0, re_paired.stderr
    assert certificate_serial(state) != first_serial
    denied = LedgerStore(back_office.state).read()
    assert denied.is_denied(first_serial)
    assert not denied.is_denied(certificate_serial(state))


# --- refusals -------------------------------------------------------------------------------------


def test_an_expired_code_is_refused(
    back_office: BackOffice, recipient_pub: Path, tmp_path: Path
) -> None:
    # The admin made this code 16 minutes ago (on the back office's clock, the only one that
    # counts): written into the served ledger as `pair-code` would have.
    issued_at_s = time.time() - CODE_VALIDITY_S - 60
    pins = back_office_pins(back_office.pki.directory)
    code = LedgerStore(back_office.state).transact(
        lambda ledger: issue_code(
            ledger, BOX, back_office.address, pins, issued_at_s, secrets.token_bytes(NONCE_BYTES)
        )
    )
    config = box_config(tmp_path / "box", recipient_pub)

    result = mvb_pair(config, code.text())

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "mvb pair: refused (code-expired): the code has expired (a code is valid for 15 "
        "minutes): ask the admin for a new one"
    )
    assert not (tmp_path / "box" / "state" / "pairing").exists()


def test_a_used_code_is_refused_to_anyone_else(
    back_office: BackOffice, recipient_pub: Path, tmp_path: Path
) -> None:
    code = back_office.code()
    assert mvb_pair(box_config(tmp_path / "box", recipient_pub), code).returncode == 0
    thief = box_config(tmp_path / "thief", recipient_pub)  # same box id, its own key

    result = mvb_pair(thief, code)

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "mvb pair: refused (code-reused): the code was already used. If this box did not use "
        "it, tell the admin at once: someone else may have paired with it"
    )
    assert not (tmp_path / "thief" / "state" / "pairing").exists()


def test_a_mistyped_code_is_refused_before_any_connection(
    back_office: BackOffice, recipient_pub: Path, tmp_path: Path
) -> None:
    code = back_office.code()
    config = box_config(tmp_path / "box", recipient_pub)

    typo = mvb_pair(config, mistype(code))
    not_a_code = mvb_pair(config, code.rpartition("/")[0] + "/UUUU")

    assert typo.returncode == 1
    assert typo.stderr.startswith("mvb pair: the code has a typing error: the code does not check")
    assert code.rpartition("/")[2] not in typo.stderr
    assert not_a_code.returncode == 1
    assert not_a_code.stderr.startswith("mvb pair: this is not a pairing code: 'U' is not used")
    # Nothing reached the back office: the code is still open and still pairs the box.
    assert back_office.ledger_state_of(code) is CodeState.OPEN
    assert mvb_pair(config, code).returncode == 0


# --- a listener with another key ------------------------------------------------------------------


@dataclass
class Impostor:
    """A TLS listener with a certificate from our own CA but another key (a stolen CA key or a
    mis-routed address). It records every byte a client sends after the handshake."""

    port: int
    received: bytearray
    closed_by_client: asyncio.Event
    connections: list[int]


@pytest.fixture
async def impostor(pki: TestPki) -> AsyncIterator[Impostor]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.impostor_server_cert, pki.impostor_server_key)
    received = bytearray()
    closed = asyncio.Event()

    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        try:
            while data := await reader.read(4096):
                received.extend(data)
        except (ConnectionError, ssl.SSLError):
            pass  # an aborted connection is what the box should do
        finally:
            closed.set()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield Impostor(server.sockets[0].getsockname()[1], received, closed, connections)
    finally:
        server.close()
        await server.wait_closed()


def impostor_code(pki: TestPki, tmp_path: Path, port: int) -> str:
    """A genuine code of our back office (its pins) whose address leads to the impostor."""
    pins = back_office_pins(pki.directory)
    code = LedgerStore(tmp_path / "ledger").transact(
        lambda ledger: issue_code(
            ledger, BOX, f"127.0.0.1:{port}", pins, time.time(), secrets.token_bytes(NONCE_BYTES)
        )
    )
    return code.text()


async def test_box_refuses_a_listener_with_another_key_before_sending_a_byte(
    impostor: Impostor, pki: TestPki, recipient_pub: Path, tmp_path: Path
) -> None:
    config = box_config(tmp_path / "box", recipient_pub)
    code = impostor_code(pki, tmp_path, impostor.port)

    result = await run_async(MVB, "--config", config, "pair", code)
    await asyncio.wait_for(impostor.closed_by_client.wait(), STEP_TIMEOUT_S)

    assert result.returncode == 1
    assert result.stderr.startswith(
        f"mvb pair: the server at 127.0.0.1:{impostor.port} is not the back office this code "
        "names (wrong address or an interception); pairing withdrawn, ask for a new code."
    )
    assert "Report a possible interception" in result.stderr
    assert impostor.received == b""  # not one request byte
    state = tmp_path / "box" / "state"
    assert not (state / "pairing").exists()
    assert not fleet_metadata_dir(state).exists()


async def test_pair_raises_wrong_server_key_and_keeps_nothing(
    impostor: Impostor, pki: TestPki, tmp_path: Path
) -> None:
    code = impostor_code(pki, tmp_path, impostor.port)

    with pytest.raises(WrongServerKey) as raised:
        await pair(code, BOX, tmp_path / "state", DEVICE_KEY, attempts=3, retry_delay_s=0)
    await asyncio.wait_for(impostor.closed_by_client.wait(), STEP_TIMEOUT_S)

    assert raised.value.withdraws
    assert impostor.received == b""
    assert impostor.connections == [1]  # a wrong key is never retried
    assert not (tmp_path / "state" / "pairing").exists()
    assert code.rpartition("/")[2] not in str(raised.value)


# --- a lost answer (docs/pairing.md 5.3) ----------------------------------------------------------


async def test_a_lost_grant_is_asked_for_again_with_the_identical_request(
    pki: TestPki, tmp_path: Path
) -> None:
    fleet = init_repository(tmp_path / "repo", tmp_path / "fleet-keys", now=datetime.now(UTC))
    store = LedgerStore(tmp_path / "ledger")
    pins = back_office_pins(pki.directory)
    ca = load_back_office_ca(pki.directory)
    service = PairingService(store, ca, pins, fleet.trust_root_bytes, service=SERVICE)
    bodies: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The real back office's answers, but the first one is lost after the redeem."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            assert length is not None
            body = await reader.readexactly(int(length[1]))
            bodies.append(body)
            answer = await service.answer(body)
            if len(bodies) > 1:
                writer.write(
                    b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (answer.status, len(answer.body), answer.body)
                )
                await writer.drain()
        finally:
            writer.close()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        port = server.sockets[0].getsockname()[1]
        code = store.transact(
            lambda ledger: issue_code(
                ledger,
                BOX,
                f"127.0.0.1:{port}",
                pins,
                time.time(),
                secrets.token_bytes(NONCE_BYTES),
            )
        )
        credentials = await pair(
            code.text(), BOX, tmp_path / "box", DEVICE_KEY, attempts=2, retry_delay_s=0
        )
    finally:
        server.close()
        await server.wait_closed()

    assert len(bodies) == 2
    assert bodies[0] == bodies[1]  # the same key, CSR and proof: not a new attempt
    pairing = store.read().pairing_of(BOX)
    assert pairing is not None
    certificate = x509.load_pem_x509_certificate(credentials.certificate_pem)
    assert pairing.serial == certificate.serial_number == certificate_serial(tmp_path / "box")


def test_an_interrupted_credentials_swap_is_finished_not_lost(pki: TestPki, tmp_path: Path) -> None:
    def credentials(address: str) -> PairedCredentials:
        return PairedCredentials(
            box_id=BOX,
            address=address,
            certificate_pem=pki.client_cert.read_bytes(),
            key_pem=pki.client_key.read_bytes(),
            ca_certificate_pem=pki.ca_cert.read_bytes(),
            pins=(pki.server_pin,),
            tuf_root=b"{}",
            service=SERVICE,
        )

    state = tmp_path / "state"
    store_credentials(state, credentials("old.example"))
    store_credentials(state, credentials("new.example"))
    assert pairing_files(state).address() == "new.example"
    assert sorted(path.name for path in state.iterdir()) == ["pairing"]
    # A crash between the two renames of the next swap: the complete new set is promoted.
    (state / "pairing").rename(state / ".pairing-old")
    store_credentials(tmp_path / "elsewhere", credentials("newest.example"))
    (tmp_path / "elsewhere" / "pairing").rename(state / ".pairing-new")

    recover_pairing_dir(state)

    assert pairing_files(state).address() == "newest.example"
    assert sorted(path.name for path in state.iterdir()) == ["pairing"]


def test_a_re_pair_resets_what_the_fleet_sync_kept_under_the_old_root(
    pki: TestPki, tmp_path: Path
) -> None:
    repo = init_repository(tmp_path / "repo", tmp_path / "keys", now=datetime.now(UTC))
    credentials = PairedCredentials(
        box_id=BOX,
        address="127.0.0.1:1",
        certificate_pem=pki.client_cert.read_bytes(),
        key_pem=pki.client_key.read_bytes(),
        ca_certificate_pem=pki.ca_cert.read_bytes(),
        pins=(pki.server_pin,),
        tuf_root=repo.trust_root_bytes(),
        service=SERVICE,
    )
    state = tmp_path / "state"
    install_credentials(state, credentials, re_pair=False)
    kept = ("fleet-state.json", "fleet-pending.json", "fleet-outbox.json")
    for name in kept:
        (state / name).write_text("{}")
    install_credentials(state, credentials, re_pair=True)
    assert [name for name in kept if (state / name).exists()] == []


# --- the whole story: pair, receive signed configuration, apply it, refuse a bad one ------------


def test_a_fresh_box_pairs_applies_its_signed_configuration_and_refuses_a_bad_one(
    back_office: BackOffice, recipient_pub: Path, tmp_path: Path
) -> None:
    root = tmp_path / "box"
    paired = mvb_pair(box_config(root, recipient_pub), back_office.code())
    assert paired.returncode == 0, paired.stderr
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    config = running_box_config(root, recipient_pub, clip)

    with mvb_run(config):
        # serial 1 (pre-record 60 s) was published before the box started
        wait_for(lambda: fleet_status(config)["applied_serial"] == 1, "the first configuration")
        assert camera_prerecord_s(config) == 60.0
        # the back office sees the applied serial, signed by the box's device key
        wait_for(lambda: fleet_status(config)["reported_serial"] == 1, "the report")
        reports = ReportLog(back_office.uploads / "fleet-reports.jsonl")
        latest = reports.latest(BOX)
        assert latest is not None
        assert (latest.config_serial, latest.target_path) == (1, f"boxes/{BOX}.toml")
        # the admin signs a document outside the schema: correctly signed, still refused
        bad = back_office.publish_document(b'[box]\ncard_dir = "/x"\n')
        wait_for(
            lambda: "cannot be set" in str(fleet_status(config)["last_outcome"]),
            "the refusal of the bad document",
        )
        assert fleet_status(config)["applied_serial"] == 1
        assert camera_prerecord_s(config) == 60.0, "the last good configuration stays"
        assert bad == 2
    with mvb_run(config):  # after a restart the box runs on its last good configuration
        assert camera_prerecord_s(config) == 60.0
    audit = (root / "state" / "audit.jsonl").read_text()
    assert audit.count('"config.applied"') == 1
    assert '"config.refused"' in audit


def test_a_box_without_a_link_takes_a_pushed_bundle_and_refuses_a_tampered_one(
    back_office: BackOffice, recipient_pub: Path, tmp_path: Path
) -> None:
    root = tmp_path / "box"
    assert mvb_pair(box_config(root, recipient_pub), back_office.code()).returncode == 0
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    config = running_box_config(root, recipient_pub, clip)
    config.write_text(config.read_text().replace("enabled = true", "enabled = false"))
    bundle = back_office.fleet.export_bundle([f"boxes/{BOX}.toml"])
    tampered = bundle.replace(b"prerecord_s = 60", b"prerecord_s = 90")
    assert tampered != bundle
    (tmp_path / "good.tar").write_bytes(bundle)
    (tmp_path / "tampered.tar").write_bytes(tampered)

    with mvb_run(config):
        assert fleet_status(config)["applied_serial"] == 0, "no link: nothing was fetched"
        refused = run(MVB, "--config", config, "config", "push", tmp_path / "tampered.tar")
        assert refused.returncode == 1
        assert "refused" in refused.stderr
        assert camera_prerecord_s(config) == 30.0
        pushed = run(MVB, "--config", config, "config", "push", tmp_path / "good.tar")
        assert pushed.returncode == 0, pushed.stderr
        assert "applied configuration serial 1" in pushed.stdout
        assert camera_prerecord_s(config) == 60.0
        again = run(MVB, "--config", config, "config", "push", tmp_path / "good.tar")
        assert again.returncode == 1
        assert "already applied" in again.stderr
