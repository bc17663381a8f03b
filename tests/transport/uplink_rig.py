"""A box's store, two links (each its own fault proxy) and the reference back office, for tests.

Each link reaches the same back office through its own `TcpFaultProxy`, so a test can cut,
blackhole or reset "WiFi" while "LTE" keeps working, with real TLS, pins and client certificates
end to end. Time for link health and budgets is a `FakeClock` the test advances; the network is
real.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from backoffice.audit_routes import HeadTappingTusApp
from backoffice.audit_store import AuditStore
from backoffice.blocked_log import BLOCKED_FILE, BlockedLog
from backoffice.client_gate import ClientGate
from backoffice.h3_server import RunningH3Server, start_h3_server
from backoffice.rate_limit import ClientRateLimit
from backoffice.server import DEFAULT_IDLE_TIMEOUT_S, RunningServer, start_https_server
from backoffice.tus_app import MAX_CHUNK_HEADER, IncomingRequest, OutgoingResponse, TusApp
from backoffice.upload_store import UploadStore
from labnet.proxy import FaultPlan, TcpFaultProxy
from labnet.udp_proxy import UdpFaultProxy
from storage.envelope import RecipientPrivateKey
from storage.models import FileRecord
from storage.store import EvidenceStore
from tests.capture_helpers import store_on
from tests.tls_helpers import TestPki
from transport.binding import LinkBinding
from transport.credentials import Credentials
from transport.h3_io import H3Transport
from transport.http import Transport
from transport.https import HttpsTransport
from transport.ledger import UplinkLedger
from transport.links import HOLD_DOWN_MAX_S, CostClass, LinkConfig
from transport.scheduler import SchedulerPolicy
from transport.tls import ClientTlsSettings
from transport.uplink import UplinkService, UplinkSettings
from transport.upload import RetryPolicy

CHUNK_BYTES = 64 * 1024
FAST_RETRY = RetryPolicy(initial_s=0.01, max_s=0.05, attempts=3)


class FakeClock:
    """Monotonic seconds and a calendar day that only move when the test says so."""

    def __init__(self) -> None:
        self.now_s = 1000.0
        self.day = datetime.date(2026, 11, 23)

    def __call__(self) -> float:
        return self.now_s

    def today(self) -> datetime.date:
        return self.day

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
        self.day += (
            datetime.timedelta(seconds=seconds)
            // datetime.timedelta(days=1)
            * (datetime.timedelta(days=1))
        )


def wifi(**changes: object) -> LinkConfig:
    return _link("wifi", CostClass.WIFI, changes)


def lte(**changes: object) -> LinkConfig:
    return _link("lte", CostClass.CELLULAR, changes)


def _link(name: str, cost: CostClass, changes: dict[str, object]) -> LinkConfig:
    fields: dict[str, object] = {
        "name": name,
        "cost_class": cost,
        "binding": LinkBinding(),
        "headroom_fraction": 0.0,
        "udp_allowed": False,
    }
    fields.update(changes)
    return LinkConfig(**fields)  # type: ignore[arg-type]


@dataclass
class LinkConnector:
    """Connects link `name` through `proxies[name]` (HTTPS) or `udp_proxies[name]` (HTTP/3);
    counts connects per link and kind."""

    tls: ClientTlsSettings
    proxies: dict[str, TcpFaultProxy]
    udp_proxies: dict[str, UdpFaultProxy]
    connects: dict[str, int] = field(default_factory=dict)
    h3_connects: dict[str, int] = field(default_factory=dict)
    request_timeout_s: float = 5.0
    read_timeout_s: float = 2.0

    async def __call__(self, link: LinkConfig, kind: str) -> Transport:
        if kind == "h3":
            self.h3_connects[link.name] = self.h3_connects.get(link.name, 0) + 1
            return await H3Transport.connect(
                "127.0.0.1",
                self.udp_proxies[link.name].port,
                self.tls,
                connect_timeout_s=1,
                request_timeout_s=self.request_timeout_s,
                idle_timeout_s=2,
            )
        self.connects[link.name] = self.connects.get(link.name, 0) + 1
        proxy = self.proxies[link.name]
        return await HttpsTransport.connect(
            "127.0.0.1",
            proxy.port,
            self.tls,
            connect_timeout_s=2,
            request_timeout_s=self.request_timeout_s,
            read_timeout_s=min(self.request_timeout_s, self.read_timeout_s),
        )


@dataclass
class BackOfficeProcess:
    """The reference back office in this process; `stop()` then `start()` keeps its directory
    and ports. Its limits are its own (what `mvb-admin serve` options set): change them between
    a stop and a start; `answers` counts its answers by status."""

    directory: Path
    pki: TestPki
    cert_file: Path
    key_file: Path
    port: int = 0
    h3_port: int = 0
    server: RunningServer | None = None
    h3_server: RunningH3Server | None = None
    store: UploadStore | None = None
    app: TusApp | None = None
    audit: AuditStore | None = None
    max_chunk_bytes: int = 16 << 20
    advertise_max_chunk: bool = True  # False: its limit is learnt from 413s, as from a plain tus
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    rate_limit: ClientRateLimit | None = None
    client_gate: ClientGate | None = None
    answers: Counter[int] = field(default_factory=Counter)

    async def start(self) -> None:
        self.store = UploadStore.open(self.directory)
        self.audit = AuditStore(self.directory)  # as `mvb-admin serve` keeps it
        app = CountingTusApp(
            self.answers,
            self.store,
            max_upload_bytes=1 << 30,
            max_chunk_bytes=self.max_chunk_bytes,
            advertise_max_chunk=self.advertise_max_chunk,
            audit_store=self.audit,
        )
        self.app = app
        cert, key, ca = self.cert_file, self.key_file, self.pki.ca_cert
        self.server = await start_https_server(
            app,
            host="127.0.0.1",
            port=self.port,
            cert_file=cert,
            key_file=key,
            client_ca_file=ca,
            idle_timeout_s=self.idle_timeout_s,
            pace_window_s=self.idle_timeout_s,  # a stalled body is cut as soon as the idle link
            rate_limit=self.rate_limit,
            client_gate=self.client_gate,
            blocked_log=self.blocked_log(),
            audit_store=self.audit,
        )
        self.port = self.server.port
        self.h3_server = await start_h3_server(
            app,
            host="127.0.0.1",
            port=self.h3_port,
            cert_file=cert,
            key_file=key,
            client_ca_file=ca,
        )
        self.h3_port = self.h3_server.port

    async def stop(self) -> None:
        if self.h3_server is not None:
            await self.h3_server.close()
            self.h3_server = None
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def blocked_log(self) -> BlockedLog:
        """What boxes reported blocking (POST /uplink/blocked), as `mvb-admin serve` keeps it."""
        return BlockedLog(self.directory / BLOCKED_FILE)

    def completed_sha256(self) -> set[str]:
        complete = self.directory / "complete"
        if not complete.is_dir():
            return set()
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in complete.iterdir()}


class CountingTusApp(HeadTappingTusApp):
    """The reference TusApp (with the audit heads of creations, as `mvb-admin serve` runs it),
    counting its answers by status (the rate limit's 429 is answered in front of it, by the
    HTTPS shell: see `BackOfficeProcess.rate_limit`)."""

    def __init__(
        self,
        answers: Counter[int],
        store: UploadStore,
        *,
        max_upload_bytes: int,
        max_chunk_bytes: int,
        advertise_max_chunk: bool = True,
        audit_store: AuditStore,
    ) -> None:
        super().__init__(
            store,
            max_upload_bytes=max_upload_bytes,
            max_chunk_bytes=max_chunk_bytes,
            audit_store=audit_store,
        )
        self.answers = answers
        self.advertise_max_chunk = advertise_max_chunk

    async def handle(self, request: IncomingRequest) -> OutgoingResponse:
        response = await super().handle(request)
        if not self.advertise_max_chunk and request.method == "OPTIONS":
            headers = {k: v for k, v in response.headers.items() if k != MAX_CHUNK_HEADER}
            response = replace(response, headers=headers)
        self.answers[response.status] += 1
        return response


@dataclass
class Rig:
    store: EvidenceStore
    service: UplinkService
    clock: FakeClock
    proxies: dict[str, TcpFaultProxy]
    udp_proxies: dict[str, UdpFaultProxy]
    connector: LinkConnector
    back_office: BackOfficeProcess
    carrier: dict[str, bool]

    async def settle(self, rounds: int = 60) -> None:
        """Run scheduling rounds until nothing is in flight and nothing new starts."""
        for _ in range(rounds):
            started = await self.service.run_once()
            pending = [
                t
                for link in self.service.links.values()
                for t in [*link.uploads.values(), link.probing]
                if t is not None
            ]
            if pending:
                await asyncio.wait(pending, timeout=30)
            elif not started:
                return
        raise AssertionError("the uplink did not settle")

    async def probe(self) -> None:
        """One round that probes the links; wait for the probes only (uploads may follow)."""
        await self.service.run_once()
        probes = [link.probing for link in self.service.links.values() if link.probing]
        if probes:
            await asyncio.wait(probes, timeout=30)

    async def probe_until_up(self, name: str, attempts: int = 5) -> None:
        """Probe until link `name` is UP. Under load a probe may time out and put the link in
        hold-down; the rig's clock then skips the hold-down and the link is probed again."""
        link = self.service.links[name]
        for _ in range(attempts):
            await self.probe()
            if link.health.usable(self.clock()):
                return
            self.clock.advance(HOLD_DOWN_MAX_S + 1)
        raise AssertionError(f"link {name} did not come up in {attempts} probes")

    def records(self) -> list[FileRecord]:
        return self.store.catalog.all()


def record_evidence(store: EvidenceStore, size_bytes: int, upload_class: str = "P1") -> str:
    """One sealed single-file recording of `size_bytes` of media; returns its recording id."""
    recording = store.start_recording({"upload_class": upload_class})
    stream = recording.open_stream("dashcam")
    stream.append_media(os.urandom(size_bytes))
    stream.end_segment({"index": 0})
    recording.close()
    return recording.recording_id


@contextlib.asynccontextmanager
async def uplink_rig(
    tmp_path: Path,
    recipient: RecipientPrivateKey,
    pki: TestPki,
    links: tuple[LinkConfig, ...],
    *,
    server_cert: tuple[Path, Path] | None = None,
    policy: SchedulerPolicy | None = None,
    credentials: Credentials | None = None,
) -> AsyncIterator[Rig]:
    cert_file, key_file = server_cert or (pki.server_cert, pki.server_key)
    back_office = BackOfficeProcess(tmp_path / "backoffice", pki, cert_file, key_file)
    await back_office.start()
    clock = FakeClock()
    carrier = {link.name: True for link in links}
    try:
        with _store(tmp_path, recipient) as store:
            async with contextlib.AsyncExitStack() as stack:
                proxies = {
                    link.name: await stack.enter_async_context(
                        TcpFaultProxy("127.0.0.1", back_office.port, FaultPlan())
                    )
                    for link in links
                }
                udp_proxies = {
                    link.name: await stack.enter_async_context(
                        UdpFaultProxy("127.0.0.1", back_office.h3_port, FaultPlan())
                    )
                    for link in links
                }
                connector = LinkConnector(pki.client_settings(), proxies, udp_proxies)
                ledger = UplinkLedger(tmp_path / "card" / "uplink")
                settings = UplinkSettings(
                    links=links,
                    chunk_bytes=CHUNK_BYTES,
                    retry=FAST_RETRY,
                    policy=policy or SchedulerPolicy(),
                    device_serial="MVB-TEST-0001",
                    h3_available=True,
                )
                service = UplinkService(
                    store,
                    ledger,
                    settings,
                    connector,
                    carrier_up=lambda link: carrier[link.name],
                    clock_s=clock,
                    today=clock.today,
                    credentials=credentials,
                )
                try:
                    yield Rig(
                        store, service, clock, proxies, udp_proxies, connector, back_office, carrier
                    )
                finally:
                    await service.stop()
                    ledger.close()
    finally:
        await back_office.stop()


@contextlib.contextmanager
def _store(tmp_path: Path, recipient: RecipientPrivateKey) -> Iterator[EvidenceStore]:
    with store_on(tmp_path, recipient) as store:
        yield store
