"""An in-memory tus server and the drivers the tests of the pure tus session share (see
tests/transport/test_tus_session.py): whole uploads through scripted link fates, single
answers, sessions parked before a given request. No network, no clock."""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from transport.checksum import checksum_header
from transport.http import BodySlice, HttpRequest, HttpResponse
from transport.tus_headers import OFFSET_CONTENT_TYPE, TUS_VERSION
from transport.tus_messages import ServerCapabilities, UploadSpec
from transport.tus_session import TusSession
from transport.tus_states import SessionState

ENDPOINT = "/files/"
MAX_REQUESTS = 10_000
"""A drive needing more requests than this is a loop, not an upload."""
DATA = bytes(range(10))
CREATION_ONLY = ServerCapabilities(
    versions=(TUS_VERSION,),
    extensions=frozenset({"creation"}),
    max_size_bytes=None,
    checksum_algorithms=(),
)
WITH_TERMINATION = ServerCapabilities(
    (TUS_VERSION,), frozenset({"creation", "termination"}), None, ()
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_for(data: bytes, **metadata: str) -> UploadSpec:
    return UploadSpec(
        file_id="dashcam-000042",
        size_bytes=len(data),
        sha256_hex=sha256_hex(data),
        metadata=metadata,
        endpoint=ENDPOINT,
    )


def header(request: HttpRequest, name: str) -> str | None:
    return next((v for k, v in request.headers if k.lower() == name.lower()), None)


def decode_metadata(value: str) -> dict[str, str]:
    pairs = {}
    for item in value.split(","):
        key, _, encoded = item.partition(" ")
        pairs[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
    return pairs


# -- an in-memory tus server -----------------------------------------------------------------


@dataclass
class FakeUpload:
    length_bytes: int
    metadata: dict[str, str]
    stored: bytearray = field(default_factory=bytearray)


class FakeTusServer:
    """Enough of a tus 1.0.0 server to drive the session: it honours offsets, verifies
    Upload-Checksum, stores partial bodies, and attests what it stored like the back office.

    `handle()` also plays the transport: it reads the named slice of the file and adds the
    Upload-Checksum header, as transport/http.py says a transport does.
    """

    def __init__(
        self,
        *,
        extensions: Sequence[str] = ("creation",),
        checksum_algorithms: Sequence[str] = (),
        attests: bool = True,
        relative_location: bool = False,
        accept_at_most_bytes: int | None = None,
    ) -> None:
        self.extensions = tuple(extensions)
        self.checksum_algorithms = tuple(checksum_algorithms)
        self.attests = attests
        self.relative_location = relative_location
        self.accept_at_most_bytes = accept_at_most_bytes
        self.uploads: dict[str, FakeUpload] = {}
        self.damage_next_bodies = 0  # flip a bit in the next N checksummed bodies
        self._created = 0

    def handle(
        self, request: HttpRequest, data: bytes, *, arriving_bytes: int | None = None
    ) -> HttpResponse:
        """Answer `request`; `arriving_bytes` truncates the body (a link cut mid-body)."""
        headers = {name.lower(): value for name, value in request.headers}
        assert headers.get("tus-resumable") == TUS_VERSION
        body = self._read_body(request.body, data, headers)
        if arriving_bytes is not None:
            body = body[:arriving_bytes]
        match request.method:
            case "OPTIONS":
                return self._options()
            case "POST":
                return self._post(headers, body)
            case "HEAD":
                return self._head(request.target)
            case "PATCH":
                return self._patch(request.target, headers, body)
            case "DELETE":
                return self._delete(request.target)
        raise AssertionError(f"unexpected method {request.method}")

    def _read_body(self, body: BodySlice | None, data: bytes, headers: dict[str, str]) -> bytes:
        if body is None:
            return b""
        chunk = data[body.offset_bytes : body.offset_bytes + body.length_bytes]
        assert len(chunk) == body.length_bytes, "the slice must lie inside the file"
        if body.checksum_algorithm is not None:
            name, value = checksum_header(body.checksum_algorithm, chunk)
            headers[name.lower()] = value
        # Damage in transit, after the transport computed the checksum that should catch it.
        if self.damage_next_bodies > 0 and body.checksum_algorithm is not None:
            self.damage_next_bodies -= 1
            chunk = bytes([chunk[0] ^ 0x01]) + chunk[1:]
        return chunk

    def _options(self) -> HttpResponse:
        headers = {"tus-version": TUS_VERSION, "tus-extension": ",".join(self.extensions)}
        if self.checksum_algorithms:
            headers["tus-checksum-algorithm"] = ",".join(self.checksum_algorithms)
        return HttpResponse(204, headers)

    def _post(self, headers: dict[str, str], body: bytes) -> HttpResponse:
        self._created += 1
        path = f"{ENDPOINT}u{self._created}"
        upload = FakeUpload(
            int(headers["upload-length"]), decode_metadata(headers["upload-metadata"])
        )
        self.uploads[path] = upload
        location = path.removeprefix(ENDPOINT) if self.relative_location else path
        answer = {"location": location, "tus-resumable": TUS_VERSION}
        if "content-type" in headers:
            assert "creation-with-upload" in self.extensions
            assert headers["content-type"] == OFFSET_CONTENT_TYPE
            self._append(upload, body)
            answer["upload-offset"] = str(len(upload.stored))
        return HttpResponse(201, answer | self._attestation(upload))

    def _head(self, target: str) -> HttpResponse:
        upload = self.uploads.get(target)
        if upload is None:
            return HttpResponse(404)
        answer = {
            "upload-offset": str(len(upload.stored)),
            "upload-length": str(upload.length_bytes),
            "cache-control": "no-store",
        }
        return HttpResponse(200, answer | self._attestation(upload))

    def _patch(self, target: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        upload = self.uploads.get(target)
        if upload is None:
            return HttpResponse(404)
        assert headers["content-type"] == OFFSET_CONTENT_TYPE
        if int(headers["upload-offset"]) != len(upload.stored):
            return HttpResponse(409)
        checksum = headers.get("upload-checksum")
        if checksum is not None:
            algorithm = checksum.partition(" ")[0]
            if checksum_header(algorithm, body)[1] != checksum:
                return HttpResponse(460)
        self._append(upload, body)
        return HttpResponse(
            204, {"upload-offset": str(len(upload.stored))} | self._attestation(upload)
        )

    def _delete(self, target: str) -> HttpResponse:
        if target not in self.uploads:
            return HttpResponse(404)
        del self.uploads[target]
        return HttpResponse(204)

    def _append(self, upload: FakeUpload, body: bytes) -> None:
        accepted = body if self.accept_at_most_bytes is None else body[: self.accept_at_most_bytes]
        assert len(upload.stored) + len(accepted) <= upload.length_bytes
        upload.stored += accepted

    def _attestation(self, upload: FakeUpload) -> dict[str, str]:
        if not self.attests or len(upload.stored) != upload.length_bytes:
            return {}
        return {"mvb-stored-sha256": sha256_hex(bytes(upload.stored))}


class Fate(enum.Enum):
    """What the link does to one request."""

    DELIVERED = "delivered"
    CUT_BEFORE = "cut before the server saw it"
    CUT_MIDWAY = "cut after half the body arrived"
    CUT_AFTER = "cut after the server applied it (answer lost)"


@dataclass
class Trace:
    """What one drive sent, and how many of those requests the link cut."""

    requests: list[HttpRequest] = field(default_factory=list)
    cuts: int = 0


def run_upload(
    session: TusSession,
    server: FakeTusServer,
    data: bytes,
    fates: Sequence[Fate] = (),
    *,
    stop_after: int = MAX_REQUESTS,
) -> Trace:
    """Drive `session` until it stops asking (or for `stop_after` requests); fates[i] is what
    the link does to the i-th request, later ones are delivered."""
    trace = Trace()
    pending = iter(fates)
    for _ in range(stop_after):
        request = session.next_request()
        if request is None:
            return trace
        trace.requests.append(request)
        fate = next(pending, Fate.DELIVERED)
        if fate is Fate.DELIVERED:
            session.receive(server.handle(request, data))
            continue
        trace.cuts += 1
        if fate is Fate.CUT_AFTER:
            server.handle(request, data)
        elif fate is Fate.CUT_MIDWAY:
            length_bytes = 0 if request.body is None else request.body.length_bytes
            server.handle(request, data, arriving_bytes=length_bytes // 2)
        session.connection_lost()
    if stop_after == MAX_REQUESTS:
        pytest.fail(f"the session did not finish within {MAX_REQUESTS} requests")
    return trace


def methods(requests: Sequence[HttpRequest]) -> list[str]:
    return [request.method for request in requests]


def answer(session: TusSession, response: HttpResponse) -> HttpRequest:
    """Take the next request and answer it with `response`; return the request."""
    request = session.next_request()
    assert request is not None
    session.receive(response)
    return request


def next_method(session: TusSession) -> str | None:
    """The next request's method, answered as lost so the session stays consistent."""
    request = session.next_request()
    if request is None:
        return None
    session.connection_lost()
    return request.method


def uploading_session(data: bytes = DATA, *, chunk_bytes: int = 4) -> TusSession:
    """A session that created /files/u1 and is about to PATCH at offset 0."""
    session = TusSession(spec_for(data), chunk_bytes=chunk_bytes, capabilities=CREATION_ONLY)
    answer(session, HttpResponse(201, {"location": "/files/u1"}))
    assert session.state is SessionState.UPLOAD
    return session


def session_before(method: str) -> TusSession:
    """A session whose next request is `method`, with no request in flight."""
    match method:
        case "OPTIONS":
            return TusSession(spec_for(DATA), chunk_bytes=4)
        case "POST":
            return TusSession(spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY)
        case "HEAD":
            return TusSession(
                spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY, upload_url="/files/u1"
            )
    return uploading_session()


def ok_204(offset: int, **extra: str) -> HttpResponse:
    return HttpResponse(204, {"upload-offset": str(offset), **extra})


def kept_upload(server: FakeTusServer, stored: bytes) -> str:
    server.uploads["/files/kept"] = FakeUpload(len(DATA), {}, bytearray(stored))
    return "/files/kept"
