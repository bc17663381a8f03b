"""The HTTPS back office on 127.0.0.1 with real mutual TLS (the session's test PKI).

Real sockets, real TLS, real aiohttp on both ends; raw TLS streams where a client has to
misbehave (stall, trickle, lie). Pure parts of the shell (BodyPace, client_id_of) are tested
directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest

from backoffice.client_gate import client_id_of
from backoffice.pki import issue_client_cert, load_issued
from backoffice.server import BodyPace, RunningServer, start_https_server
from backoffice.tus_app import IncomingRequest, OutgoingResponse, TusApp
from backoffice.upload_store import UploadStore
from tests.tls_helpers import SERVER_NAME, TestPki
from transport.tls import client_ssl_context

DATA = hashlib.sha256(b"seed").digest() * 8192  # 256 KiB
DATA_SHA256 = hashlib.sha256(DATA).hexdigest()
MAX_CHUNK_BYTES = 128 * 1024
IDLE_TIMEOUT_S = 5.0  # long enough never to cut an honest test client on a loaded machine
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
STEP_TIMEOUT_S = 15.0  # a bound on every wait, so a regression fails instead of hanging


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def checksum(algorithm: str, data: bytes) -> str:
    digest = hashlib.new(algorithm, data).digest()
    return f"{algorithm} {base64.b64encode(digest).decode()}"


def metadata(file_id: str = "file-https", sha256: str = DATA_SHA256) -> str:
    return f"file_id {b64(file_id)},sha256 {b64(sha256)}"


class ObservedTusApp(TusApp):
    """TusApp that sets `consumed` once it has stored `threshold_bytes` of a PATCH body, so a
    test can act at that moment (an event, not a poll or a sleep)."""

    def __init__(self, store: UploadStore, threshold_bytes: int) -> None:
        super().__init__(store, max_upload_bytes=len(DATA), max_chunk_bytes=MAX_CHUNK_BYTES)
        self.threshold_bytes = threshold_bytes
        self.consumed = asyncio.Event()

    async def handle(self, request: IncomingRequest) -> OutgoingResponse:
        if request.method == "PATCH":
            request = replace(request, body=self._observed(request.body))
        return await super().handle(request)

    async def _observed(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        seen_bytes = 0
        async for piece in body:
            yield piece
            # Resumed: the app asks for the next piece, so it has written this one.
            seen_bytes += len(piece)
            if seen_bytes >= self.threshold_bytes:
                self.consumed.set()


@dataclass
class Served:
    root: Path
    store: UploadStore
    app: ObservedTusApp
    server: RunningServer

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}/files/"

    def origin(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    async def close(self) -> None:
        await self.server.close()
        self.store.close()


async def serve(
    pki: TestPki,
    root: Path,
    *,
    threshold_bytes: int = 1,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    pace_window_s: float = IDLE_TIMEOUT_S,
    max_concurrent_requests: int = 256,
    shutdown_timeout_s: float = 5.0,
) -> Served:
    store = UploadStore.open(root, reserve_bytes=0)
    try:
        app = ObservedTusApp(store, threshold_bytes)
        server = await start_https_server(
            app,
            host="127.0.0.1",
            port=0,
            cert_file=pki.server_cert,
            key_file=pki.server_key,
            client_ca_file=pki.ca_cert,
            idle_timeout_s=idle_timeout_s,
            pace_window_s=pace_window_s,
            max_concurrent_requests=max_concurrent_requests,
            shutdown_timeout_s=shutdown_timeout_s,
        )
    except BaseException:
        store.close()
        raise
    return Served(root, store, app, server)


@pytest.fixture
async def served(pki: TestPki, tmp_path: Path) -> AsyncIterator[Served]:
    running = await serve(pki, tmp_path / "store")
    try:
        yield running
    finally:
        await running.close()


def box_context(pki: TestPki) -> ssl.SSLContext:
    return client_ssl_context(pki.client_settings())


def context_with(pki: TestPki, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


@contextlib.asynccontextmanager
async def box_session(context: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context),
        timeout=aiohttp.ClientTimeout(total=STEP_TIMEOUT_S),
    ) as session:
        yield session


async def create(session: aiohttp.ClientSession, served: Served, meta: str | None = None) -> str:
    headers = {**TUS, "Upload-Length": str(len(DATA)), "Upload-Metadata": meta or metadata()}
    async with session.post(served.url, headers=headers) as response:
        assert response.status == 201, await response.text()
        return response.headers["Location"]


async def patch(
    session: aiohttp.ClientSession,
    url: str,
    offset: int,
    data: bytes,
    extra: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET_STREAM, **(extra or {})}
    async with session.patch(url, headers=headers, data=data) as response:
        await response.read()
        return response


async def head(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    async with session.head(url, headers=TUS) as response:
        return response


async def upload_everything(session: aiohttp.ClientSession, served: Served, file_id: str) -> str:
    location = await create(session, served, metadata(file_id))
    url = served.origin() + location
    for offset in range(0, len(DATA), MAX_CHUNK_BYTES):
        answer = await patch(session, url, offset, DATA[offset : offset + MAX_CHUNK_BYTES])
        assert answer.status == 204
    return answer.headers["Mvb-Stored-Sha256"]


async def open_tls(
    served: Served, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(STEP_TIMEOUT_S):
        return await asyncio.open_connection(
            "127.0.0.1", served.server.port, ssl=context, server_hostname=SERVER_NAME
        )


def request_head(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {SERVER_NAME}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    received = b""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while piece := await reader.read(65536):
            received += piece
    return received


def uploads_in(served: Served) -> list[Path]:
    return sorted((served.root / "uploads").iterdir())


# -- uploads over mutual TLS -----------------------------------------------------------------


async def test_a_box_uploads_a_file_over_mutual_tls(served: Served, pki: TestPki) -> None:
    async with box_session(box_context(pki)) as session:
        async with session.options(served.url) as options:
            assert options.status == 204
            assert "checksum" in options.headers["Tus-Extension"]
        location = await create(session, served)
        url = served.origin() + location
        first = await patch(
            session,
            url,
            0,
            DATA[:MAX_CHUNK_BYTES],
            {"Upload-Checksum": checksum("sha256", DATA[:MAX_CHUNK_BYTES])},
        )
        assert first.status == 204
        assert first.headers["Upload-Offset"] == str(MAX_CHUNK_BYTES)
        damaged = await patch(
            session,
            url,
            MAX_CHUNK_BYTES,
            DATA[MAX_CHUNK_BYTES:],
            {"Upload-Checksum": checksum("md5", b"x")},
        )
        assert damaged.status == 460
        assert damaged.reason == "Checksum Mismatch"
        last = await patch(session, url, MAX_CHUNK_BYTES, DATA[MAX_CHUNK_BYTES:])
        assert last.status == 204
        assert last.headers["Mvb-Stored-Sha256"] == DATA_SHA256
        answer = await head(session, url)
        assert answer.headers["Upload-Offset"] == str(len(DATA))
        assert answer.headers["Mvb-Stored-Sha256"] == DATA_SHA256
    assert (served.root / "complete" / "file-https.mvbe").read_bytes() == DATA
    upload_id = location.rsplit("/", 1)[1]
    assert served.store.status(upload_id).info.client_id == "MVB-TEST-0001"


async def test_the_client_id_is_the_certificate_cn_and_other_boxes_get_404(
    served: Served, pki: TestPki, tmp_path: Path
) -> None:
    ca = load_issued(pki.ca_cert, pki.ca_key)
    other_cert, other_key = issue_client_cert(ca, "MVB-TEST-0002").write(tmp_path, "box2")
    async with box_session(box_context(pki)) as session:
        location = await create(session, served)
        await patch(session, served.origin() + location, 0, DATA[:1000])
    url = served.origin() + location
    async with box_session(context_with(pki, other_cert, other_key)) as other:
        assert (await head(other, url)).status == 404
        assert (await patch(other, url, 1000, DATA[1000:2000])).status == 404
        async with other.delete(url, headers=TUS) as deleted:
            assert deleted.status == 404
        own = await create(other, served, metadata("file-box2"))
    assert served.store.status(own.rsplit("/", 1)[1]).info.client_id == "MVB-TEST-0002"
    async with box_session(box_context(pki)) as session:
        assert (await head(session, url)).headers["Upload-Offset"] == "1000"


@pytest.mark.parametrize("tls_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("who", ["no certificate", "rogue CA client", "our server certificate"])
async def test_clients_without_a_box_certificate_are_refused_at_the_handshake(
    served: Served, pki: TestPki, who: str, tls_version: ssl.TLSVersion
) -> None:
    cert, key = {
        "no certificate": (None, None),
        "rogue CA client": (pki.rogue_client_cert, pki.rogue_client_key),
        # Signed by our CA, but for serverAuth only: it must not pass as a box.
        "our server certificate": (pki.server_cert, pki.server_key),
    }[who]
    context = context_with(pki, cert, key)
    context.minimum_version = context.maximum_version = tls_version
    request = request_head("OPTIONS", "/files/", TUS)
    answer = b""
    try:
        reader, writer = await open_tls(served, context)
        # With TLS 1.3 the client finishes its half first; the server's refusal arrives next.
        writer.write(request)
        answer = await read_until_closed(reader)
        writer.close()
    except (ssl.SSLError, ConnectionError):
        pass  # refused inside the handshake (TLS 1.2)
    assert not answer.startswith(b"HTTP/")
    async with box_session(box_context(pki)) as session, session.options(served.url) as options:
        assert options.status == 204


async def test_an_aiohttp_client_without_a_certificate_cannot_create_an_upload(
    served: Served, pki: TestPki
) -> None:
    async with box_session(context_with(pki, None, None)) as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await create(session, served)
    assert uploads_in(served) == []


# -- restarts --------------------------------------------------------------------------------


async def test_a_restarted_server_resumes_the_upload_at_its_stored_offset(
    pki: TestPki, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    first = await serve(pki, root)
    try:
        async with box_session(box_context(pki)) as session:
            location = await create(session, first)
            answer = await patch(session, first.origin() + location, 0, DATA[:MAX_CHUNK_BYTES])
            assert answer.status == 204
    finally:
        await first.close()
    second = await serve(pki, root)
    try:
        async with box_session(box_context(pki)) as session:
            url = second.origin() + location
            offset = int((await head(session, url)).headers["Upload-Offset"])
            assert offset == MAX_CHUNK_BYTES
            done = await patch(session, url, offset, DATA[offset:])
            assert done.headers["Mvb-Stored-Sha256"] == DATA_SHA256
    finally:
        await second.close()
    assert (root / "complete" / "file-https.mvbe").read_bytes() == DATA


async def test_a_server_stopped_mid_patch_keeps_what_it_received(
    pki: TestPki, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    sent_bytes = 40_000
    first = await serve(pki, root, threshold_bytes=sent_bytes, shutdown_timeout_s=0.2)
    try:
        async with box_session(box_context(pki)) as session:
            location = await create(session, first)
        _, writer = await open_tls(first, box_context(pki))
        headers = {**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_STREAM}
        headers["Content-Length"] = str(MAX_CHUNK_BYTES)
        writer.write(request_head("PATCH", location, headers) + DATA[:sent_bytes])
        await writer.drain()
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await first.app.consumed.wait()
    finally:
        await first.close()  # the PATCH is still streaming: it is cancelled
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        writer.close()
    second = await serve(pki, root)
    try:
        async with box_session(box_context(pki)) as session:
            url = second.origin() + location
            offset = int((await head(session, url)).headers["Upload-Offset"])
            assert offset == sent_bytes
            await patch(session, url, offset, DATA[offset:MAX_CHUNK_BYTES])
            done = await patch(session, url, MAX_CHUNK_BYTES, DATA[MAX_CHUNK_BYTES:])
            assert done.headers["Mvb-Stored-Sha256"] == DATA_SHA256
    finally:
        await second.close()


# -- slow and hostile clients ----------------------------------------------------------------


async def test_a_slow_loris_is_cut_off_while_other_uploads_proceed(
    pki: TestPki, tmp_path: Path
) -> None:
    served = await serve(pki, tmp_path / "store", idle_timeout_s=1.0, pace_window_s=1.0)
    try:
        async with box_session(box_context(pki)) as session:
            location = await create(session, served, metadata("file-slow"))
        reader, writer = await open_tls(served, box_context(pki))
        headers = {**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_STREAM}
        headers["Content-Length"] = str(MAX_CHUNK_BYTES)
        writer.write(request_head("PATCH", location, headers))
        answer = asyncio.create_task(read_until_closed(reader))
        trickled_bytes = 0

        async def trickle() -> None:
            nonlocal trickled_bytes
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                while not answer.done() and trickled_bytes < MAX_CHUNK_BYTES:
                    writer.write(DATA[trickled_bytes : trickled_bytes + 1])
                    await writer.drain()
                    trickled_bytes += 1
                    await asyncio.sleep(0.05)  # the attack itself: a byte now and then

        async def honest_upload() -> str:
            async with box_session(box_context(pki)) as session:
                return await upload_everything(session, served, "file-honest")

        async with asyncio.timeout(STEP_TIMEOUT_S):
            _, attested = await asyncio.gather(trickle(), honest_upload())
            cut = await answer
        assert attested == DATA_SHA256
        assert cut.startswith(b"HTTP/1.1 408")
        assert trickled_bytes < MAX_CHUNK_BYTES
        writer.close()
        async with box_session(box_context(pki)) as session:
            url = served.origin() + location
            offset = int((await head(session, url)).headers["Upload-Offset"])
            assert offset <= trickled_bytes
            assert (
                DATA[:offset]
                == (served.root / "uploads" / location.rsplit("/", 1)[1] / "data").read_bytes()
            )
            assert (await patch(session, url, offset, DATA[offset:MAX_CHUNK_BYTES])).status == 204
    finally:
        await served.close()


async def test_a_stalled_request_head_and_an_idle_connection_are_closed(
    pki: TestPki, tmp_path: Path
) -> None:
    served = await serve(pki, tmp_path / "store", idle_timeout_s=0.5)
    try:
        stalled_reader, stalled = await open_tls(served, box_context(pki))
        stalled.write(b"PATCH /files/ HTTP/1.1\r\nHost: backoffice.test\r\nTus-Res")
        idle_reader, idle = await open_tls(served, box_context(pki))
        async with asyncio.timeout(STEP_TIMEOUT_S):
            assert await read_until_closed(stalled_reader) == b""
            assert await read_until_closed(idle_reader) == b""
        stalled.close()
        idle.close()
    finally:
        await served.close()


async def test_requests_beyond_the_concurrency_bound_get_503(pki: TestPki, tmp_path: Path) -> None:
    served = await serve(pki, tmp_path / "store", max_concurrent_requests=1, threshold_bytes=10)
    try:
        async with box_session(box_context(pki)) as session:
            location = await create(session, served)
        reader, writer = await open_tls(served, box_context(pki))
        headers = {**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_STREAM}
        headers["Content-Length"] = "100"
        writer.write(request_head("PATCH", location, headers) + DATA[:10])
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await served.app.consumed.wait()
        async with box_session(box_context(pki)) as session:
            async with session.options(served.url) as busy:
                assert busy.status == 503
                assert busy.headers["Retry-After"] == "5"
            writer.write(DATA[10:100])
            answer = await read_response_head(reader)
            assert answer.startswith(b"HTTP/1.1 204")
            async with session.options(served.url) as free:
                assert free.status == 204
        writer.close()
    finally:
        await served.close()


async def read_response_head(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(STEP_TIMEOUT_S):
        return await reader.readuntil(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"OPTIONS /files/ HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", b"400"),
        (
            b"PATCH /files/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            b"400",
        ),
        (b"OPTIONS /files/ HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", b"400"),
        (b"POST /" + b"x" * 20_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
    ],
)
async def test_malformed_http_is_refused_and_the_server_keeps_serving(
    served: Served, pki: TestPki, raw: bytes, status: bytes
) -> None:
    reader, writer = await open_tls(served, box_context(pki))
    writer.write(raw)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        answer = await read_until_closed(reader)
    writer.close()
    assert answer.split(b" ", 2)[1] == status
    assert uploads_in(served) == []
    async with box_session(box_context(pki)) as session:
        assert await upload_everything(session, served, "file-after") == DATA_SHA256


async def test_hostile_tus_headers_over_https(served: Served, pki: TestPki) -> None:
    async with box_session(box_context(pki)) as session:
        location = await create(session, served)
        url = served.origin() + location
        async with session.patch(
            url,
            headers=[
                ("Tus-Resumable", "1.0.0"),
                ("Content-Type", OFFSET_STREAM),
                ("Upload-Offset", "0"),
                ("Upload-Offset", "0"),
            ],
            data=b"abc",
        ) as repeated:
            assert repeated.status == 400
        huge = {**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_STREAM}
        huge["Content-Length"] = str(10**15)
        reader, writer = await open_tls(served, box_context(pki))
        writer.write(request_head("PATCH", location, huge) + b"abc")
        async with asyncio.timeout(STEP_TIMEOUT_S):
            answer = await read_response_head(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400")
        assert (await head(session, url)).headers["Upload-Offset"] == "0"


# -- pure parts ------------------------------------------------------------------------------


def test_body_pace_lets_a_slow_honest_link_through() -> None:
    pace = BodyPace(window_s=30, min_rate_bytes_per_s=1024, started_at_s=100.0)
    assert pace.read_timeout_s(100.0) == pytest.approx(30.0)
    for second in range(1, 600):
        pace.record(5_000, 100.0 + second)  # 5 KB/s: a poor 2G uplink, for ten minutes
        assert pace.read_timeout_s(100.0 + second) > 0
    fade = BodyPace(window_s=30, min_rate_bytes_per_s=1024, started_at_s=0.0)
    fade.record(40_000, 10.0)  # a good start, then 20 s in a tunnel: this window is met...
    assert fade.read_timeout_s(30.0) == pytest.approx(30.0)  # ...the next has all its 30 s
    fade.record(31_000, 59.0)
    assert fade.read_timeout_s(59.0) == pytest.approx(31.0)


def test_body_pace_cuts_a_trickle_and_a_stall() -> None:
    trickle = BodyPace(window_s=30, min_rate_bytes_per_s=1024, started_at_s=0.0)
    for second in range(1, 30):
        trickle.record(1, float(second))  # a byte a second never goes idle...
    assert trickle.read_timeout_s(29.0) == pytest.approx(1.0)
    assert trickle.read_timeout_s(30.0) == 0.0  # ...but its window brought 29 of 30 KiB
    burst = BodyPace(window_s=30, min_rate_bytes_per_s=1024, started_at_s=0.0)
    burst.record(60 * 1024 * 1024, 1.0)  # 60 MiB at once buys no silence later
    assert burst.read_timeout_s(1.0) == pytest.approx(59.0)
    assert burst.read_timeout_s(59.0) == pytest.approx(1.0)
    assert burst.read_timeout_s(60.0) == 0.0


@pytest.mark.parametrize("size_bytes", [4 * 1024 * 1024, 64 * 1024 * 1024])
def test_body_pace_ends_a_body_kept_at_the_minimum_within_its_bound(size_bytes: int) -> None:
    """The slowest body never cut: X·Y bytes at the end of every window. It ends, and within
    Y + N / X of its start."""
    window_s, rate = 30.0, 1024.0
    pace = BodyPace(window_s=window_s, min_rate_bytes_per_s=rate, started_at_s=0.0)
    now_s = 0.0
    while pace.received_bytes < size_bytes:
        now_s += pace.read_timeout_s(now_s) - 0.001  # the last moment before the cut
        assert pace.read_timeout_s(now_s) > 0
        pace.record(int(rate * window_s), now_s)
    assert now_s <= window_s + size_bytes / rate


def test_body_pace_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        BodyPace(window_s=0, min_rate_bytes_per_s=1, started_at_s=0)


@pytest.mark.parametrize(
    ("peercert", "client_id"),
    [
        ({"subject": ((("organizationName", "MVB"),), (("commonName", "MVB-0001"),))}, "MVB-0001"),
        ({"subject": ((("commonName", "MVB-0001"),), (("commonName", "MVB-0002"),))}, None),
        ({"subject": ((("organizationName", "MVB"),),)}, None),
        ({"subject": ((("commonName", "MVB 0001"),),)}, None),
        ({"subject": ((("commonName", "MVB-1\nlevel=ERROR"),),)}, None),
        ({"subject": ((("commonName", "x" * 65),),)}, None),
        ({}, None),
        (None, None),
        ({"subject": "commonName=x"}, None),
    ],
)
def test_client_id_is_exactly_one_safe_common_name(peercert: object, client_id: str | None) -> None:
    assert client_id_of(peercert) == client_id
