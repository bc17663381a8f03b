"""Slow and stalled links with real parts: `mvb-admin serve` (a process of its own, real TLS with
client certificates), the project's fault proxies (labnet/) between it and the box, and the
box's real uplink, transports and tus session.

The proxies are the link: a rate cap for a slow one, `stall` (TCP: nothing read, so the box's
socket soon accepts nothing) or `blackhole` (UDP) for a dead one. A rate-capped TCP proxy takes
few bytes ahead of what it forwarded (`receive_buffer_bytes`), as a radio link's queue would:
otherwise loopback's buffers would acknowledge for the link what it has not carried yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from common.faults import TransientFault
from labnet.proxy import FaultPlan, TcpFaultProxy
from labnet.udp_proxy import UdpFaultProxy
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from storage.store import EvidenceStore
from tests.capture_helpers import store_on
from tests.tls_helpers import TestPki
from tests.transport.uplink_rig import record_evidence
from transport.binding import LinkBinding
from transport.connect import BackOffice, BackOfficeConnector
from transport.h3_io import H3Transport
from transport.http import BodySlice, HttpRequest, Transport
from transport.https import HttpsTransport
from transport.ledger import UplinkLedger
from transport.links import HOLD_DOWN_MAX_S, CostClass, LinkConfig
from transport.progress_io import NoProgress
from transport.tus_session import TusSession, UploadOutcome, UploadSpec
from transport.uplink import UplinkService, UplinkSettings
from transport.upload import RetryPolicy, SliceReader, drive, drive_with_retries

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
SERVING = re.compile(r"serving (?P<scheme>https|h3)://[^:]+:(?P<port>\d+)/files/ from .*")
KIB = 1024
MIB = 1024 * KIB
STEP_S = 60.0
"""Bound on any one wait of these tests (each finishes well within it when the code works)."""
LINK_BUFFER_BYTES = 4 * KIB
STALL_S = 3.0
"""The stall timeout of the stall tests: long enough that a loaded machine's pauses are not one."""


@contextlib.asynccontextmanager
async def back_office(
    pki: TestPki, directory: Path, *options: str, h3: bool = False
) -> AsyncIterator[dict[str, int]]:
    """`mvb-admin serve` on loopback with `options`; yields its ports by scheme."""
    argv = [
        str(MVB_ADMIN), "serve", "--dir", str(directory),
        "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.ca_cert), "--port", "0", "--reserve-bytes", "0", *options,
    ]  # fmt: skip
    if h3:
        argv += ["--h3-port", "0"]
    log = (directory.parent / f"{directory.name}.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=log
    )
    try:
        assert process.stdout is not None
        ports = {}
        for _ in range(2 if h3 else 1):
            line = await asyncio.wait_for(process.stdout.readline(), STEP_S)
            match = SERVING.fullmatch(line.decode().strip())
            assert match is not None, line
            ports[match["scheme"]] = int(match["port"])
        yield ports
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), STEP_S)
        log.close()


def office_at(port: int, pki: TestPki) -> BackOfficeConnector:
    """The box's connector to the back office at `port`; short timeouts so a test sees them act
    (stall and read timeouts of 2 s)."""
    office = BackOffice(
        "127.0.0.1",
        port,
        0,
        pki.client_settings(),
        connect_timeout_s=5,
        request_timeout_s=30,
        read_timeout_s=2,
        stall_timeout_s=2,
    )
    return BackOfficeConnector(office)


class SkippingClock:
    """The real monotonic clock, plus what a test skipped: a link's hold-down after a probe that
    timed out on a loaded machine need not be waited out (durations stay real: the uplink
    measures them on time.monotonic)."""

    def __init__(self) -> None:
        self.skipped_s = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped_s

    def skip(self, seconds: float) -> None:
        self.skipped_s += seconds


async def probe_until_up(uplink: UplinkService, clock: SkippingClock, attempts: int = 5) -> None:
    """Probe the box's one link until it is UP. Under load a probe may time out (the connector's
    2 s read timeout) and put the link in hold-down: then skip the hold-down and probe again."""
    link = uplink.links["lte"]
    for _ in range(attempts):
        await uplink.run_once()
        probe = link.probing
        if probe is not None:
            await asyncio.wait_for(probe, STEP_S)
        if uplink.any_link_usable():
            return
        clock.skip(HOLD_DOWN_MAX_S + 1)
    raise AssertionError(f"the link did not come up in {attempts} probes")


def slow_uplink(
    store: EvidenceStore,
    tmp_path: Path,
    connector: BackOfficeConnector,
    *,
    clock_s: Callable[[], float] = time.monotonic,
    **chunking: float,
) -> UplinkService:
    """The box's uplink service on one cellular link, chunks as `chunking` says."""
    lte = LinkConfig("lte", CostClass.CELLULAR, LinkBinding(), udp_allowed=False)
    settings = UplinkSettings(
        links=(lte,),
        retry=RetryPolicy(initial_s=0.2, max_s=1.0, attempts=10),
        device_serial="MVB-TEST-0001",
        tick_s=0.2,
        h3_available=False,
        chunk_bytes=int(chunking["chunk_bytes"]),
        chunk_min_bytes=int(chunking["chunk_min_bytes"]),
        chunk_target_s=chunking["chunk_target_s"],
    )
    ledger = UplinkLedger(tmp_path / "ledger")
    return UplinkService(store, ledger, settings, connector, clock_s=clock_s)


async def wait_for(condition: Callable[[], bool], timeout_s: float = STEP_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.1)


def gone(store: EvidenceStore, file_id: str) -> bool:
    """Attested by the back office and deleted from the card."""
    record = store.catalog.get(file_id)
    return record is None or record.state is FileState.DELETED


def random_file(path: Path, size_bytes: int) -> tuple[Path, UploadSpec]:
    data = os.urandom(size_bytes)
    path.write_bytes(data)
    return path, UploadSpec("f" * 32, size_bytes, hashlib.sha256(data).hexdigest())


async def test_an_upload_at_256_kbit_s_completes_and_sends_no_chunk_twice(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    """256 kbit/s: every chunk takes longer than the read and stall timeouts (2 s), which used
    to run while the body was sent, so nothing ever uploaded. Now it completes, each chunk
    sized to the link, none sent twice."""
    rate_bytes_per_s = 32_000
    floor_bytes = 128 * KIB
    assert floor_bytes / rate_bytes_per_s > 2 * 2, "a chunk must outlast the old timeouts"
    plan = FaultPlan(rate_bytes_per_s=rate_bytes_per_s, delay_s=0.05)
    with store_on(tmp_path, recipient) as store:
        record_evidence(store, 560 * KIB)
        [record] = store.catalog.all()
        async with (
            back_office(pki, tmp_path / "backoffice") as ports,
            TcpFaultProxy(
                "127.0.0.1", ports["https"], plan, receive_buffer_bytes=LINK_BUFFER_BYTES
            ) as proxy,
        ):
            uplink = slow_uplink(
                store,
                tmp_path,
                office_at(proxy.port, pki),
                chunk_bytes=1 * MIB,
                chunk_min_bytes=floor_bytes,
                chunk_target_s=4.0,
            )
            await uplink.start()
            try:
                await wait_for(lambda: gone(store, record.file_id))
            finally:
                await uplink.stop()
                uplink.ledger.close()
            sent_bytes = proxy.bytes_client_to_server
    stored = tmp_path / "backoffice" / "complete" / f"{record.file_id}.mvbe"
    assert stored.stat().st_size == record.size_bytes
    lte = uplink.links["lte"]
    assert lte.health.loss_hint == 0, "no request failed"
    assert lte.chunks.size_bytes() == floor_bytes  # 4 s at this rate is under the floor
    # TLS, HTTP heads and the handshakes are a few kB; a chunk sent twice would be 128 KiB.
    assert record.size_bytes < sent_bytes < record.size_bytes + floor_bytes // 2


async def test_a_413_from_the_back_office_halves_the_chunk_and_the_upload_completes(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    """The box learned the back office's capabilities (64 MiB chunks), then the back office
    restarted with a 150 KiB limit: its 413 halves the box's chunk until it fits."""
    with store_on(tmp_path, recipient) as store:
        async with (
            back_office(pki, tmp_path / "backoffice") as before,
            TcpFaultProxy("127.0.0.1", before["https"], FaultPlan()) as proxy,
        ):
            connector = office_at(proxy.port, pki)
            clock = SkippingClock()
            uplink = slow_uplink(
                store,
                tmp_path,
                connector,
                clock_s=clock,
                chunk_bytes=1 * MIB,
                chunk_min_bytes=64 * KIB,
                chunk_target_s=4.0,
            )
            await probe_until_up(uplink, clock)  # OPTIONS: the capabilities (64 MiB) cached
            await uplink.stop()  # closes the connection; the service keeps what it learned
        options = ("--max-chunk-bytes", str(150 * KIB))
        async with (
            back_office(pki, tmp_path / "backoffice", *options) as after,
            TcpFaultProxy("127.0.0.1", after["https"], FaultPlan()) as proxy,
        ):
            connector.back_office = office_at(proxy.port, pki).back_office
            record_evidence(store, 2 * MIB)
            [record] = store.catalog.all()
            await uplink.start()
            try:
                await wait_for(lambda: gone(store, record.file_id))
            finally:
                await uplink.stop()
                uplink.ledger.close()
    stored = tmp_path / "backoffice" / "complete" / f"{record.file_id}.mvbe"
    assert stored.stat().st_size == record.size_bytes
    # The chunks grow from 64 KiB with the goodput the box measures until one is refused (413);
    # each 413 halves the refused length until a chunk fits under 150 KiB. On a quiet machine
    # the growth reaches the 1 MiB ceiling (refused, halved to 512, 256, then 128 KiB); on a
    # loaded one the goodput, so the first refused chunk, is smaller (seen: 190 KiB, then 95).
    # Either way the limit learned is half a refused length (over 150 KiB) and fits.
    limit_bytes = uplink.links["lte"].chunks.server_limit_bytes
    assert limit_bytes is not None
    assert (150 * KIB + 1) // 2 <= limit_bytes <= 150 * KIB


async def until_the_upload_is_free(
    transport_for: Callable[[], contextlib.AbstractAsyncContextManager[Transport]],
    session: TusSession,
) -> None:
    """Until the back office no longer holds the cut request: it keeps the upload busy until
    it has seen the cut and discarded that request's append (in a worker thread: longer on a
    loaded machine), and a PATCH meanwhile is answered 423 with its body counted as sent. The
    probe is an empty PATCH at the session's offset (the busy check comes first, so 423 means
    busy and any other answer that it is free); it appends nothing."""
    assert session.upload_url is not None
    probe = HttpRequest(
        "PATCH",
        session.upload_url,
        (
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Offset", str(session.offset_bytes)),
            ("Content-Type", "application/offset+octet-stream"),
        ),
        BodySlice(session.offset_bytes, 0),
    )
    async with asyncio.timeout(STEP_S):
        while True:
            with contextlib.suppress(TransientFault):
                async with transport_for() as transport:
                    if (await transport.request(probe, b"")).status != 423:
                        return
            await asyncio.sleep(0.1)


async def upload_through_a_stall(
    transport_for: Callable[[], contextlib.AbstractAsyncContextManager[Transport]],
    spec: UploadSpec,
    path: Path,
    stall: Callable[[], None],
    lift: Callable[[], None],
    stalled_when: Callable[[], bool],
) -> tuple[UploadOutcome, TusSession, list[BaseException]]:
    """Upload `path` in 1 MiB chunks; `stall()` once `stalled_when()`, `lift()` at the first
    retry, and the retry waits until the back office let go of the cut request (see
    `until_the_upload_is_free`). Returns the outcome, the session and the faults retried."""
    session = TusSession(spec, chunk_bytes=1 * MIB)
    reader = SliceReader(path)
    faults: list[BaseException] = []

    async def attempt() -> UploadOutcome:
        async with transport_for() as transport:
            return await drive(session, transport, reader)

    async def staller() -> None:
        await wait_for(stalled_when)
        stall()

    def on_retry(fault: BaseException, _delay_s: float) -> None:
        faults.append(fault)
        lift()

    async def backoff(delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await until_the_upload_is_free(transport_for, session)

    stalling = asyncio.create_task(staller())
    try:
        outcome = await asyncio.wait_for(
            drive_with_retries(
                attempt,
                RetryPolicy(initial_s=0.1, max_s=0.2, attempts=3),
                sleep=backoff,
                on_retry=on_retry,
            ),
            STEP_S,
        )
    finally:
        stalling.cancel()
        reader.close()
    return outcome, session, faults


async def test_a_peer_that_accepts_nothing_is_cut_after_the_stall_timeout_and_the_upload_resumes(
    tmp_path: Path, pki: TestPki
) -> None:
    path, spec = random_file(tmp_path / "evidence.bin", 3 * MIB)
    plan = FaultPlan(rate_bytes_per_s=512 * KIB)
    async with (
        back_office(pki, tmp_path / "backoffice") as ports,
        TcpFaultProxy(
            "127.0.0.1", ports["https"], plan, receive_buffer_bytes=LINK_BUFFER_BYTES
        ) as proxy,
    ):

        @contextlib.asynccontextmanager
        async def https() -> AsyncIterator[Transport]:
            transport = await HttpsTransport.connect(
                "127.0.0.1", proxy.port, pki.client_settings(), stall_timeout_s=STALL_S
            )
            try:
                yield transport
            finally:
                await transport.aclose()

        def stall() -> None:
            plan.stall_after_client_bytes = 0

        def lift() -> None:
            plan.stall_after_client_bytes = None

        outcome, session, faults = await upload_through_a_stall(
            https, spec, path, stall, lift, lambda: proxy.bytes_client_to_server > 3 * MIB // 2
        )
    assert outcome.attested_sha256_hex == spec.sha256_hex
    [fault] = faults
    assert isinstance(fault, NoProgress)
    assert str(fault).startswith("https PATCH: stalled: no body byte moved for 3 s")
    assert proxy.cuts == 0, "the box cut the request, not the link"
    # At most the stalled chunk; less if the kernel delivered the rest after the box gave up
    # (a socket closed gracefully still sends what it holds).
    assert session.body_bytes_sent - spec.size_bytes <= 1 * MIB


async def test_a_blackholed_http3_upload_is_cut_after_the_stall_timeout_and_resumes(
    tmp_path: Path, pki: TestPki
) -> None:
    path, spec = random_file(tmp_path / "evidence.bin", 3 * MIB)
    plan = FaultPlan(rate_bytes_per_s=1 * MIB)
    async with (
        back_office(pki, tmp_path / "backoffice", h3=True) as ports,
        UdpFaultProxy("127.0.0.1", ports["h3"], plan) as proxy,
    ):

        @contextlib.asynccontextmanager
        async def h3() -> AsyncIterator[Transport]:
            transport = await H3Transport.connect(
                "127.0.0.1",
                proxy.port,
                pki.client_settings(),
                stall_timeout_s=STALL_S,
                idle_timeout_s=20,  # longer than the stall: the request's watch decides
            )
            try:
                yield transport
            finally:
                await transport.aclose()

        def stall() -> None:
            plan.blackhole = True

        def lift() -> None:
            plan.blackhole = False

        outcome, session, faults = await upload_through_a_stall(
            h3, spec, path, stall, lift, lambda: proxy.bytes_client_to_server > 3 * MIB // 2
        )
    assert outcome.attested_sha256_hex == spec.sha256_hex
    fault, *after = faults
    assert isinstance(fault, NoProgress)
    assert str(fault).startswith("h3 PATCH: stalled: no body byte moved for 3 s")
    # After the blackhole lifts, QUIC's loss recovery (its probe timeouts grew while nothing
    # came back) may cost the next request too: transient, retried, never a refusal.
    assert all(isinstance(f, TransientFault) for f in after), after
    assert session.body_bytes_sent - spec.size_bytes <= 1 * MIB


async def test_an_http3_chunk_slower_than_the_read_timeout_completes(
    tmp_path: Path, pki: TestPki
) -> None:
    """HTTP/3 used to bound each request in all by `request_timeout_s`; now a 256 KiB chunk at
    512 kbit/s (4 s) outlasts the read timeout (1 s here) and completes, nothing retried."""
    path, spec = random_file(tmp_path / "evidence.bin", 512 * KIB)
    plan = FaultPlan(rate_bytes_per_s=64 * KIB)
    async with (
        back_office(pki, tmp_path / "backoffice", h3=True) as ports,
        UdpFaultProxy("127.0.0.1", ports["h3"], plan) as proxy,
    ):
        transport = await H3Transport.connect(
            "127.0.0.1", proxy.port, pki.client_settings(), read_timeout_s=1, stall_timeout_s=2
        )
        session = TusSession(spec, chunk_bytes=256 * KIB)
        reader = SliceReader(path)
        try:
            outcome = await asyncio.wait_for(drive(session, transport, reader), STEP_S)
        finally:
            reader.close()
            await transport.aclose()
    assert outcome.attested_sha256_hex == spec.sha256_hex
    assert session.body_bytes_sent == spec.size_bytes
