"""config/fleet_fetch.py: a paired box's `fetch` for FleetConfigClient over real mutual TLS.

The back office runs in this process (its pairing listener and its mutual-TLS listener with the
client gate and the fleet routes); the box pairs with gateway/pairing_client.py and then fetches
through FleetLink + LinkFetch from ngclient's worker thread, as the box service will.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tuf.api.exceptions import DownloadError, DownloadHTTPError, DownloadLengthMismatchError

from backoffice.fleet_access import FleetAccess
from backoffice.fleet_repo import FleetRepository, init_repository, load_fleet_signers
from backoffice.pairing import NONCE_BYTES, issue_code, unpair
from backoffice.pairing_service import (
    LedgerGate,
    LedgerStore,
    PairingService,
    back_office_pins,
    load_back_office_ca,
    start_pairing_server,
)
from backoffice.server import RunningServer, start_https_server
from backoffice.tus_app import TusApp
from backoffice.upload_store import UploadStore
from common.alarms import Alarms
from config.fleet_client import FleetConfigClient
from config.fleet_fetch import FleetLink, LinkFetch, UnpairedByBackOffice
from config.fleet_targets import AppliedState
from config.local import parse_config
from gateway.fleet_apply import ConfigSlots, FleetApplier
from gateway.fleet_sync import FleetSync
from gateway.pairing_client import fleet_metadata_dir, pair, pairing_files
from gateway.unpairing import Unpairing
from protocol.pairing_messages import ServiceEndpoint
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from tests.tls_helpers import TestPki
from transport.connect import BackOffice
from transport.errors import PinMismatch
from transport.pinning import PinSet
from transport.tls import ClientTlsSettings

DEVICE_KEY = DeviceKey.generate().public_key().raw()
"""The box's device public key its pairing requests enroll."""

BOX = "MVB-0042"
DOCUMENT = b"[recording]\nprerecord_s = 60\n"


@dataclass
class PairedBox:
    state: Path
    fleet: FleetRepository
    store: LedgerStore
    port: int

    def tls(self) -> ClientTlsSettings:
        return pairing_files(self.state).tls_settings()

    def client(self, fetch: LinkFetch) -> FleetConfigClient:
        return FleetConfigClient(fleet_metadata_dir(self.state), BOX, (), fetch, AppliedState())


@pytest.fixture
async def paired(pki: TestPki, tmp_path: Path) -> AsyncIterator[PairedBox]:
    """A back office with one published document for BOX, and BOX paired with it."""
    now = datetime.now(UTC)
    fleet = init_repository(tmp_path / "repo", tmp_path / "keys", now=now)
    signers = load_fleet_signers(tmp_path / "keys")
    fleet.add_config(
        f"boxes/{BOX}.toml",
        DOCUMENT,
        boxes=[BOX],
        config_serial=1,
        targets_signer=signers.targets,
        now=now,
    )
    fleet.publish(signers.snapshot, signers.timestamp, now=now)
    store = LedgerStore(tmp_path / "pairing")
    pins = back_office_pins(pki.directory)
    service = PairingService(
        store,
        load_back_office_ca(pki.directory),
        pins,
        fleet.trust_root_bytes,
        service=ServiceEndpoint.of("127.0.0.1:443", "backoffice.test", 0),
    )
    uploads = UploadStore.open(tmp_path / "uploads", reserve_bytes=0)
    servers: list[RunningServer] = []
    try:
        pairing = await start_pairing_server(
            service, host="127.0.0.1", port=0, cert_file=pki.server_cert, key_file=pki.server_key
        )
        servers.append(pairing)
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
        servers.append(mutual)
        code = store.transact(
            lambda ledger: issue_code(
                ledger,
                BOX,
                f"127.0.0.1:{pairing.port}",
                pins,
                time.time(),
                secrets.token_bytes(NONCE_BYTES),
            )
        )
        await pair(code.text(), BOX, tmp_path / "box", DEVICE_KEY)
        yield PairedBox(tmp_path / "box", fleet, store, mutual.port)
    finally:
        for server in servers:
            await server.close()
        uploads.close()


@pytest.fixture
async def link(paired: PairedBox) -> AsyncIterator[FleetLink]:
    connected = await FleetLink.connect("127.0.0.1", paired.port, paired.tls())
    try:
        yield connected
    finally:
        await connected.aclose()


async def test_paired_box_fetches_metadata_and_its_document_over_one_pinned_connection(
    paired: PairedBox, link: FleetLink
) -> None:
    client = paired.client(LinkFetch(link, asyncio.get_running_loop()))

    document = await asyncio.to_thread(client.check)

    assert document is not None
    assert (document.target_path, document.config_serial) == (f"boxes/{BOX}.toml", 1)
    assert document.document == DOCUMENT
    assert link.connections_opened == 1  # kept alive across every metadata file and the target


async def test_a_missing_file_is_download_http_error_404(link: FleetLink) -> None:
    fetch = LinkFetch(link, asyncio.get_running_loop())

    with pytest.raises(DownloadHTTPError) as raised:
        await asyncio.to_thread(fetch, "/fleet/metadata/2.root.json", 64 * 1024)

    assert raised.value.status_code == 404


async def test_a_body_over_max_bytes_stops_as_a_length_mismatch(
    paired: PairedBox, link: FleetLink
) -> None:
    fetch = LinkFetch(link, asyncio.get_running_loop())
    root_bytes = len(paired.fleet.trust_root_bytes())

    whole = await asyncio.to_thread(fetch, "/fleet/metadata/1.root.json", root_bytes)
    with pytest.raises(DownloadLengthMismatchError):
        await asyncio.to_thread(fetch, "/fleet/metadata/1.root.json", root_bytes - 1)

    assert whole == paired.fleet.trust_root_bytes()


async def test_an_unpaired_box_gets_403_at_its_next_fetch(
    paired: PairedBox, link: FleetLink
) -> None:
    fetch = LinkFetch(link, asyncio.get_running_loop())
    await asyncio.to_thread(fetch, "/fleet/metadata/timestamp.json", 16 * 1024)
    paired.store.transact(lambda ledger: (unpair(ledger, BOX, time.time()), None))

    with pytest.raises(UnpairedByBackOffice) as raised:
        await asyncio.to_thread(fetch, "/fleet/metadata/timestamp.json", 16 * 1024)

    assert raised.value.status_code == 403  # and it says unpaired: the box forgets the office
    assert isinstance(raised.value, DownloadHTTPError)


async def test_an_unreachable_back_office_is_a_download_error(paired: PairedBox) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    link = await FleetLink.connect("127.0.0.1", port, paired.tls(), connect_timeout_s=5)
    try:
        fetch = LinkFetch(link, asyncio.get_running_loop())
        with pytest.raises(DownloadError) as raised:
            await asyncio.to_thread(fetch, "/fleet/metadata/timestamp.json", 16 * 1024)
    finally:
        await link.aclose()
    assert not isinstance(raised.value, DownloadHTTPError)


async def test_a_key_outside_the_pins_stays_a_pin_mismatch(paired: PairedBox, pki: TestPki) -> None:
    tls = paired.tls()
    backup_only = ClientTlsSettings(
        tls.ca_file,
        tls.client_cert_file,
        tls.client_key_file,
        PinSet.from_strings([pki.backup_pin]),
        tls.server_name,
    )
    link = await FleetLink.connect("127.0.0.1", paired.port, backup_only)
    try:
        client = paired.client(LinkFetch(link, asyncio.get_running_loop()))
        with pytest.raises(PinMismatch):
            await asyncio.to_thread(client.check)
    finally:
        await link.aclose()
    assert link.connections_opened == 0


async def test_fetch_on_the_event_loop_thread_is_refused(link: FleetLink) -> None:
    fetch = LinkFetch(link, asyncio.get_running_loop())

    with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
        fetch("/fleet/metadata/timestamp.json", 16 * 1024)


async def test_the_fleet_sync_that_hears_unpaired_makes_the_box_forget_its_back_office(
    paired: PairedBox, tmp_path: Path
) -> None:
    """The fleet poll may be the box's first contact after an unpair (RULES L5): the box
    forgets its pairing and fleet trust (gateway/unpairing.py), raises `unpaired`, audits it,
    and polls nothing after; the evidence is not the fleet sync's to touch."""
    state = paired.state
    device = DeviceKey.load_or_create(state)
    audit = AuditLog.open(state / "audit.jsonl", device)
    alarms = Alarms()
    applier = FleetApplier(
        parse_config({"box": {"recipient_keys": ["r.pub"], "device_serial": BOX}}, "box.toml"),
        _NoTarget(),
        ConfigSlots(state),
        [],
        settle_s=0,
    )
    unpairing = Unpairing(state, alarms, audit)
    sync = FleetSync(
        state_dir=state,
        metadata_dir=fleet_metadata_dir(state),
        box_id=BOX,
        groups=(),
        back_office=BackOffice("127.0.0.1", paired.port, 0, paired.tls()),
        applier=applier,
        audit=audit,
        alarms=alarms,
        sign=device.sign,
        device_public_pem=device.public_pem(),
        pairing_dir=pairing_files(state).directory,
        on_unpaired=unpairing.unpaired,
    )
    try:
        assert (await sync.check_once()) is not None  # paired: serial 1 applied
        paired.store.transact(lambda ledger: (unpair(ledger, BOX, time.time()), None))

        assert await sync.check_once() is None

        assert not pairing_files(state).directory.exists()
        assert not fleet_metadata_dir(state).exists()
        assert not (state / "fleet-state.json").exists()
        assert "unpaired" in alarms
        assert sync.back_office is None, "nothing is polled any more"
        assert sync.status.last_check == "the back office unpaired this box"
        events = (state / "audit.jsonl").read_text().splitlines()
        assert sum('"gateway.unpaired"' in line for line in events) == 1
    finally:
        alarms.close()
        audit.close()


class _NoTarget:
    def hand_out(self, effective: object) -> None:
        return None
