"""The pure tus session, driven through whole uploads by an in-memory tus server and through
every failure rule of docs/tus-profile.md by scripted answers. No network, no clock."""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport.checksum import checksum_header
from transport.errors import (
    CredentialsWithdrawn,
    HostileServer,
    ServerError,
    TransportError,
    UploadRejected,
)
from transport.http import BodySlice, HttpRequest, HttpResponse
from transport.tus_headers import OFFSET_CONTENT_TYPE, TUS_VERSION
from transport.tus_messages import ServerCapabilities, UploadOutcome, UploadSpec
from transport.tus_session import (
    MAX_CHECKSUM_RESENDS,
    MAX_CHUNK_BYTES,
    MAX_OFFSET_REGRESSIONS,
    MAX_RECREATIONS,
    MAX_ROUNDS_WITHOUT_PROGRESS,
    SessionMisuse,
    TusSession,
)
from transport.tus_states import SessionState
from transport.tus_statuses import check_termination, termination_request

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


# -- whole uploads ---------------------------------------------------------------------------


def test_plain_upload_discovers_creates_and_patches_chunk_by_chunk() -> None:
    server = FakeTusServer()
    session = TusSession(spec_for(DATA), chunk_bytes=4)

    trace = run_upload(session, server, DATA)

    assert methods(trace.requests) == ["OPTIONS", "POST", "PATCH", "PATCH", "PATCH"]
    assert [r.body for r in trace.requests if r.method == "PATCH"] == [
        BodySlice(0, 4),
        BodySlice(4, 4),
        BodySlice(8, 2),
    ]
    assert [header(r, "Upload-Offset") for r in trace.requests[2:]] == ["0", "4", "8"]
    assert server.uploads["/files/u1"].stored == DATA
    assert session.state is SessionState.DONE
    assert session.outcome == UploadOutcome("/files/u1", len(DATA), sha256_hex(DATA))
    assert session.body_bytes_sent == len(DATA)
    assert session.capabilities == CREATION_ONLY
    assert session.next_request() is None


def test_creation_with_upload_carries_the_first_chunk() -> None:
    server = FakeTusServer(extensions=("creation", "creation-with-upload"))
    session = TusSession(spec_for(DATA), chunk_bytes=4)

    trace = run_upload(session, server, DATA)

    post = trace.requests[1]
    assert post.method == "POST"
    assert post.body == BodySlice(0, 4)
    assert header(post, "Content-Type") == OFFSET_CONTENT_TYPE
    assert methods(trace.requests) == ["OPTIONS", "POST", "PATCH", "PATCH"]
    assert server.uploads["/files/u1"].stored == DATA
    assert session.body_bytes_sent == len(DATA)


def test_a_file_within_one_chunk_completes_on_the_creation_answer() -> None:
    server = FakeTusServer(extensions=("creation", "creation-with-upload"))
    session = TusSession(spec_for(DATA), chunk_bytes=64)

    trace = run_upload(session, server, DATA)

    assert methods(trace.requests) == ["OPTIONS", "POST"]
    assert session.outcome == UploadOutcome("/files/u1", len(DATA), sha256_hex(DATA))


@pytest.mark.parametrize(
    ("extensions", "offered", "expected"),
    [
        (("creation", "checksum"), ("md5", "sha1"), "sha1"),
        (("creation", "checksum"), ("md5", "sha256", "sha1"), "sha256"),
        (("creation", "checksum"), ("md5",), "md5"),
        (("creation", "checksum"), ("crc32",), None),
        (("creation",), ("sha256",), None),  # algorithms listed, extension not offered
    ],
)
def test_checksum_algorithm_follows_the_box_preference(
    extensions: tuple[str, ...], offered: tuple[str, ...], expected: str | None
) -> None:
    server = FakeTusServer(extensions=extensions, checksum_algorithms=offered)
    session = TusSession(spec_for(DATA), chunk_bytes=4)

    trace = run_upload(session, server, DATA)

    patches = [r for r in trace.requests if r.method == "PATCH"]
    assert [r.body.checksum_algorithm for r in patches if r.body] == [expected] * 3
    assert server.uploads["/files/u1"].stored == DATA


def test_every_request_carries_tus_resumable_and_metadata_names_the_file() -> None:
    server = FakeTusServer(extensions=("creation", "termination"))
    spec = spec_for(DATA, camera="dashcam", note="fiets op stoep, €5", empty="")
    session = TusSession(spec, chunk_bytes=4)

    cut_second_patch = [Fate.DELIVERED] * 3 + [Fate.CUT_BEFORE]
    trace = run_upload(session, server, DATA, cut_second_patch, stop_after=5)
    session.terminate()
    trace.requests += run_upload(session, server, DATA).requests

    assert methods(trace.requests) == ["OPTIONS", "POST", "PATCH", "PATCH", "HEAD", "DELETE"]
    assert all(header(r, "Tus-Resumable") == TUS_VERSION for r in trace.requests)
    post = trace.requests[1]
    assert header(post, "Upload-Length") == str(len(DATA))
    assert decode_metadata(header(post, "Upload-Metadata") or "") == {
        "file_id": "dashcam-000042",
        "sha256": sha256_hex(DATA),
        "camera": "dashcam",
        "note": "fiets op stoep, €5",
        "empty": "",
    }


def test_relative_location_resolves_against_the_endpoint() -> None:
    server = FakeTusServer(relative_location=True)
    session = TusSession(spec_for(DATA), chunk_bytes=4)

    trace = run_upload(session, server, DATA)

    assert session.upload_url == "/files/u1"
    assert {r.target for r in trace.requests if r.method == "PATCH"} == {"/files/u1"}


def test_zero_length_file_completes_with_the_creation() -> None:
    server = FakeTusServer(extensions=("creation", "creation-with-upload"))
    session = TusSession(spec_for(b""), chunk_bytes=4)

    trace = run_upload(session, server, b"")

    assert methods(trace.requests) == ["OPTIONS", "POST"]
    assert header(trace.requests[1], "Upload-Length") == "0"
    assert trace.requests[1].body is None
    assert session.outcome == UploadOutcome("/files/u1", 0, sha256_hex(b""))


def test_plain_tus_server_cannot_attest() -> None:
    server = FakeTusServer(attests=False)
    session = TusSession(spec_for(DATA), chunk_bytes=4)

    run_upload(session, server, DATA)

    assert session.outcome == UploadOutcome("/files/u1", len(DATA), None)


def test_server_may_store_fewer_bytes_than_sent() -> None:
    server = FakeTusServer(accept_at_most_bytes=3)
    session = TusSession(spec_for(DATA), chunk_bytes=4)

    trace = run_upload(session, server, DATA)

    offsets = [r.body.offset_bytes for r in trace.requests if r.method == "PATCH" and r.body]
    assert offsets == [0, 3, 6, 9]
    assert server.uploads["/files/u1"].stored == DATA


# -- resuming --------------------------------------------------------------------------------


def kept_upload(server: FakeTusServer, stored: bytes) -> str:
    server.uploads["/files/kept"] = FakeUpload(len(DATA), {}, bytearray(stored))
    return "/files/kept"


def test_resume_heads_the_kept_upload_url_first() -> None:
    server = FakeTusServer()
    url = kept_upload(server, DATA[:6])
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY, upload_url=url)

    trace = run_upload(session, server, DATA)

    assert methods(trace.requests) == ["HEAD", "PATCH"]
    assert trace.requests[1].body == BodySlice(6, 4)
    assert session.body_bytes_sent == 4
    assert server.uploads[url].stored == DATA


def test_resume_without_capabilities_discovers_then_heads() -> None:
    server = FakeTusServer()
    url = kept_upload(server, DATA[:2])
    session = TusSession(spec_for(DATA), chunk_bytes=4, upload_url=url)

    trace = run_upload(session, server, DATA)

    assert methods(trace.requests) == ["OPTIONS", "HEAD", "PATCH", "PATCH"]
    assert server.uploads[url].stored == DATA


def test_resume_of_a_complete_upload_is_done_after_the_head() -> None:
    server = FakeTusServer()
    url = kept_upload(server, DATA)
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY, upload_url=url)

    trace = run_upload(session, server, DATA)

    assert methods(trace.requests) == ["HEAD"]
    assert session.outcome == UploadOutcome(url, len(DATA), sha256_hex(DATA))
    assert session.body_bytes_sent == 0


def test_resume_of_a_gone_upload_creates_it_again() -> None:
    server = FakeTusServer()
    session = TusSession(
        spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY, upload_url="/files/expired"
    )

    trace = run_upload(session, server, DATA)

    assert methods(trace.requests) == ["HEAD", "POST", "PATCH", "PATCH", "PATCH"]
    assert session.upload_url == "/files/u1"
    assert server.uploads["/files/u1"].stored == DATA


def test_head_below_the_confirmed_offset_resumes_from_there() -> None:
    session = uploading_session()
    answer(session, ok_204(4))
    answer(session, HttpResponse(409))

    answer(session, HttpResponse(200, {"upload-offset": "2"}))  # the server lost data

    assert session.offset_bytes == 2
    request = session.next_request()
    assert request is not None
    assert request.body == BodySlice(2, 4)


def test_offset_regressions_are_bounded() -> None:
    session = uploading_session()
    for _ in range(MAX_OFFSET_REGRESSIONS):
        answer(session, ok_204(4))
        answer(session, HttpResponse(409))
        answer(session, HttpResponse(200, {"upload-offset": "0"}))
    answer(session, ok_204(4))
    answer(session, HttpResponse(409))

    with pytest.raises(HostileServer, match="below the confirmed 4"):
        answer(session, HttpResponse(200, {"upload-offset": "0"}))


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"upload-length": "10"}, "without Upload-Offset"),
        ({"upload-offset": "11"}, "Upload-Offset 11 > size 10"),
        ({"upload-offset": "4", "upload-length": "12"}, "Upload-Length 12"),
        ({"upload-offset": "4 bytes"}, "not a non-negative decimal"),
    ],
)
def test_impossible_head_answer_is_hostile(headers: dict[str, str], message: str) -> None:
    session = TusSession(
        spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY, upload_url="/files/kept"
    )

    with pytest.raises(HostileServer, match=message):
        answer(session, HttpResponse(200, headers))

    assert session.offset_bytes == 0
    assert next_method(session) == "HEAD"


# -- discovery -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"tus-extension": "creation"}, "Tus-Version '' does not list 1.0.0"),
        ({"tus-version": "0.2.2", "tus-extension": "creation"}, "does not list 1.0.0"),
        ({"tus-version": "1.0.0"}, "does not list 'creation'"),
        ({"tus-version": "1.0.0", "tus-extension": "termination"}, "'creation'"),
        (
            {"tus-version": "1.0.0", "tus-extension": "creation", "tus-max-size": "ten"},
            "Tus-Max-Size 'ten'",
        ),
    ],
)
def test_unusable_options_answer_is_hostile(headers: dict[str, str], message: str) -> None:
    session = TusSession(spec_for(DATA), chunk_bytes=4)

    with pytest.raises(HostileServer, match=message):
        answer(session, HttpResponse(204, headers))

    assert session.capabilities is None
    assert next_method(session) == "OPTIONS"


def test_options_answer_lists_are_parsed_leniently() -> None:
    response = HttpResponse(
        200,
        {
            "tus-version": "1.0.0, 0.2.2",
            "tus-extension": "Creation , checksum,,termination",
            "tus-max-size": " 1073741824 ",
            "tus-checksum-algorithm": "SHA1,md5",
        },
    )

    capabilities = ServerCapabilities.from_response(response)

    assert capabilities == ServerCapabilities(
        versions=("1.0.0", "0.2.2"),
        extensions=frozenset({"creation", "checksum", "termination"}),
        max_size_bytes=1024**3,
        checksum_algorithms=("sha1", "md5"),
    )
    assert capabilities.preferred_checksum_algorithm() == "sha1"
    assert not capabilities.attests  # no Mvb-Attestation: a plain tus server


@pytest.mark.parametrize(
    ("offer", "attests"), [("sha256", True), ("SHA256, x", True), ("", False), ("md5", False)]
)
def test_a_back_office_that_attests_says_so_on_options(offer: str, attests: bool) -> None:
    headers = {"tus-version": "1.0.0", "tus-extension": "creation", "mvb-attestation": offer}

    assert ServerCapabilities.from_response(HttpResponse(204, headers)).attests is attests


def test_a_creation_body_over_the_chunk_limit_is_transient() -> None:
    """413 to a POST that carried a first chunk: a smaller chunk can go (unlike 413 to a bare
    POST, where the length itself is refused)."""
    with_upload = ServerCapabilities(
        (TUS_VERSION,), frozenset({"creation-with-upload", "creation"}), None, ()
    )
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=with_upload)

    with pytest.raises(ServerError) as raised:
        answer(session, HttpResponse(413, {"retry-after": "7"}))

    assert (raised.value.status, raised.value.retry_after_s) == (413, 7.0)
    assert next_method(session) == "POST"


def test_file_above_tus_max_size_is_rejected_as_413() -> None:
    session = TusSession(spec_for(DATA), chunk_bytes=4)
    headers = {"tus-version": "1.0.0", "tus-extension": "creation", "tus-max-size": "9"}

    with pytest.raises(UploadRejected, match="Tus-Max-Size 9") as raised:
        answer(session, HttpResponse(204, headers))

    assert raised.value.status == 413


def test_given_capabilities_are_checked_like_received_ones() -> None:
    no_creation = ServerCapabilities((TUS_VERSION,), frozenset({"checksum"}), None, ())
    too_small = ServerCapabilities((TUS_VERSION,), frozenset({"creation"}), 9, ())

    with pytest.raises(HostileServer, match="'creation'"):
        TusSession(spec_for(DATA), chunk_bytes=4, capabilities=no_creation)
    with pytest.raises(UploadRejected) as raised:
        TusSession(spec_for(DATA), chunk_bytes=4, capabilities=too_small)
    assert raised.value.status == 413


# -- creation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "message"),
    [
        (None, "without Location"),
        ("ftp://evil.example/files/u1", "neither a path nor an http"),
        ("javascript:alert(1)", "neither a path nor an http"),
        ("http:/files/u1", "neither a path nor an http"),
        ("", "not a usable upload path"),
        ("/files/", "not a usable upload path"),
        ("/files/a b", "not a usable upload path"),
        ("/files/\u00e9", "not a usable upload path"),
        ("/files/" + "a" * 2000, "not a usable upload path"),
    ],
)
def test_foreign_or_unusable_location_is_hostile(location: str | None, message: str) -> None:
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY)
    headers = {} if location is None else {"location": location}

    with pytest.raises(HostileServer, match=message):
        answer(session, HttpResponse(201, headers))

    assert session.upload_url is None
    assert next_method(session) == "POST"


@pytest.mark.parametrize(
    ("location", "upload_url"),
    [
        ("/files/abc", "/files/abc"),
        ("abc", "/files/abc"),
        ("/files/abc?signature=1#part", "/files/abc"),
        ("../uploads/abc", "/uploads/abc"),
        # absolute URLs (tusd, @tus/server) give only their path; the host is never contacted
        ("http://backoffice.test:8443/files/abc", "/files/abc"),
        ("https://evil.example/files/abc", "/files/abc"),
        ("//evil.example/files/abc", "/files/abc"),
    ],
)
def test_location_resolves_to_a_path_on_the_back_office(location: str, upload_url: str) -> None:
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY)

    answer(session, HttpResponse(201, {"location": location}))

    assert session.upload_url == upload_url
    request = session.next_request()
    assert request is not None
    assert request.target == upload_url


@pytest.mark.parametrize(
    ("headers", "offset"),
    [
        ({"upload-offset": "0"}, 0),
        ({"upload-offset": "3"}, 3),
        ({"upload-offset": "4"}, 4),
        ({}, None),
        ({"upload-offset": "5"}, None),
    ],
)
def test_creation_with_upload_answer_must_state_a_possible_offset(
    headers: dict[str, str], offset: int | None
) -> None:
    with_upload = ServerCapabilities(
        (TUS_VERSION,), frozenset({"creation-with-upload", "creation"}), None, ()
    )
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=with_upload)
    response = HttpResponse(201, {"location": "/files/u1", **headers})

    if offset is None:
        with pytest.raises(HostileServer, match="Upload-Offset"):
            answer(session, response)
        assert next_method(session) == "POST"
        return
    answer(session, response)
    request = session.next_request()
    assert request is not None
    assert request.body == BodySlice(offset, 4)


def test_creation_without_a_body_must_not_claim_bytes() -> None:
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY)

    with pytest.raises(HostileServer, match="Upload-Offset 2 > 0 bytes sent"):
        answer(session, HttpResponse(201, {"location": "/files/u1", "upload-offset": "2"}))


# -- PATCH answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"upload-offset": "0"},  # a 204 that stores nothing would loop
        {"upload-offset": "5"},  # beyond what was sent
        {"upload-offset": "-1"},
        {"upload-offset": "4a"},
        {"upload-offset": "\uff14"},  # a fullwidth digit, which int() would take
        {"upload-offset": "9" * 40},
    ],
)
def test_patch_answer_with_an_impossible_offset_is_hostile(headers: dict[str, str]) -> None:
    session = uploading_session()

    with pytest.raises(HostileServer, match="Upload-Offset"):
        answer(session, HttpResponse(204, headers))

    assert session.offset_bytes == 0
    assert next_method(session) == "HEAD"


def test_conflict_asks_for_the_offset() -> None:
    session = uploading_session()

    answer(session, HttpResponse(409))

    assert session.state is SessionState.QUERY_OFFSET
    assert next_method(session) == "HEAD"


def test_gone_upload_is_created_again_at_most_three_times() -> None:
    session = uploading_session()
    for gone_status in [(404, 410)[i % 2] for i in range(MAX_RECREATIONS)]:
        answer(session, ok_204(4))
        answer(session, HttpResponse(gone_status))
        assert (session.state, session.upload_url, session.offset_bytes) == (
            SessionState.CREATE,
            None,
            0,
        )
        answer(session, HttpResponse(201, {"location": "/files/again"}))

    with pytest.raises(HostileServer, match=f"after {MAX_RECREATIONS} re-creations"):
        answer(session, HttpResponse(404))


def test_checksum_mismatch_resends_the_same_chunk() -> None:
    server = FakeTusServer(extensions=("creation", "checksum"), checksum_algorithms=("sha256",))
    session = TusSession(spec_for(DATA), chunk_bytes=4)
    server.damage_next_bodies = MAX_CHECKSUM_RESENDS

    trace = run_upload(session, server, DATA)

    patches = [r for r in trace.requests if r.method == "PATCH"]
    assert len({r.body for r in patches[: MAX_CHECKSUM_RESENDS + 1]}) == 1
    assert server.uploads["/files/u1"].stored == DATA
    assert session.body_bytes_sent == len(DATA) + MAX_CHECKSUM_RESENDS * 4


def test_checksum_mismatch_is_bounded() -> None:
    server = FakeTusServer(extensions=("creation", "checksum"), checksum_algorithms=("md5",))
    session = TusSession(spec_for(DATA), chunk_bytes=4)
    server.damage_next_bodies = 100

    with pytest.raises(HostileServer, match="checksum mismatch"):
        run_upload(session, server, DATA)

    assert session.body_bytes_sent == (1 + MAX_CHECKSUM_RESENDS) * 4
    assert next_method(session) == "HEAD"


def test_checksum_resend_budget_is_per_chunk() -> None:
    with_checksum = ServerCapabilities(
        (TUS_VERSION,), frozenset({"creation", "checksum"}), None, ("sha256",)
    )
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=with_checksum)
    answer(session, HttpResponse(201, {"location": "/files/u1"}))
    damaged = [HttpResponse(460)] * MAX_CHECKSUM_RESENDS

    for response in [*damaged, ok_204(4), *damaged, ok_204(8), ok_204(10)]:
        answer(session, response)

    assert session.state is SessionState.DONE


def test_checksum_mismatch_without_a_checksum_is_hostile() -> None:
    session = uploading_session()

    with pytest.raises(HostileServer, match="without Upload-Checksum answered 460"):
        answer(session, HttpResponse(460))


def test_no_progress_guard_stops_a_server_that_never_moves() -> None:
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY)
    answer(session, HttpResponse(201, {"location": "/files/u1"}))  # round 1: offset stays 0
    stuck = {"PATCH": HttpResponse(409), "HEAD": HttpResponse(200, {"upload-offset": "0"})}
    for _ in range(MAX_ROUNDS_WITHOUT_PROGRESS - 2):  # rounds 2 to 7 pass
        request = session.next_request()
        assert request is not None
        session.receive(stuck[request.method])
    request = session.next_request()
    assert request is not None

    with pytest.raises(HostileServer, match="8 answered rounds in a row without the upload"):
        session.receive(stuck[request.method])


def test_lost_connections_do_not_count_as_a_stalling_server() -> None:
    server = FakeTusServer()
    session = TusSession(spec_for(DATA), chunk_bytes=4)
    cut_patches = [Fate.DELIVERED, Fate.DELIVERED] + [Fate.CUT_BEFORE, Fate.DELIVERED] * 20

    trace = run_upload(session, server, DATA, cut_patches)

    assert trace.cuts == 20
    assert server.uploads["/files/u1"].stored == DATA


def test_server_errors_do_not_count_as_a_stalling_server() -> None:
    session = uploading_session()
    for _ in range(2 * MAX_ROUNDS_WITHOUT_PROGRESS):  # storage down: HEAD works, PATCH fails
        with pytest.raises(ServerError):
            answer(session, HttpResponse(503))
        answer(session, HttpResponse(200, {"upload-offset": "0"}))

    for offset in (4, 8, 10):
        answer(session, ok_204(offset))

    assert session.state is SessionState.DONE


@pytest.mark.parametrize("status", [500, 503, 429, 423])
@pytest.mark.parametrize(
    ("retry_after", "retry_after_s"),
    [(None, None), ("7", 7.0), ("Wed, 21 Oct 2037 07:28:00 GMT", None), ("-3", None)],
)
def test_server_error_raises_then_resumes_via_head(
    status: int, retry_after: str | None, retry_after_s: float | None
) -> None:
    server = FakeTusServer()
    session = TusSession(spec_for(DATA), chunk_bytes=4)
    run_upload(session, server, DATA, stop_after=2)  # OPTIONS, POST
    headers = {} if retry_after is None else {"retry-after": retry_after}

    with pytest.raises(ServerError) as raised:
        answer(session, HttpResponse(status, headers))  # to the first PATCH

    assert (raised.value.status, raised.value.retry_after_s) == (status, retry_after_s)
    trace = run_upload(session, server, DATA)
    assert methods(trace.requests) == ["HEAD", "PATCH", "PATCH", "PATCH"]
    assert server.uploads["/files/u1"].stored == DATA


def test_server_error_before_the_upload_exists_retries_the_creation() -> None:
    session = session_before("POST")

    with pytest.raises(ServerError):
        answer(session, HttpResponse(502))

    assert next_method(session) == "POST"


@pytest.mark.parametrize(
    ("method", "status", "error", "then"),
    [
        ("OPTIONS", 404, UploadRejected, "OPTIONS"),
        ("OPTIONS", 403, CredentialsWithdrawn, "OPTIONS"),
        ("OPTIONS", 302, HostileServer, "OPTIONS"),
        ("POST", 413, UploadRejected, "POST"),  # no body: the length itself is refused
        ("POST", 403, CredentialsWithdrawn, "POST"),
        ("POST", 408, ServerError, "POST"),
        ("POST", 429, ServerError, "POST"),
        ("POST", 200, HostileServer, "POST"),
        ("HEAD", 401, CredentialsWithdrawn, "HEAD"),
        ("HEAD", 409, UploadRejected, "HEAD"),
        ("PATCH", 400, UploadRejected, "HEAD"),
        ("PATCH", 403, CredentialsWithdrawn, "HEAD"),
        ("PATCH", 408, ServerError, "HEAD"),  # the back office's idle timeout: not now
        ("PATCH", 413, ServerError, "HEAD"),  # the chunk is over its limit: a smaller one
        ("PATCH", 429, ServerError, "HEAD"),
        ("PATCH", 200, HostileServer, "HEAD"),  # tus acknowledges a PATCH with 204 only
        ("PATCH", 307, HostileServer, "HEAD"),
    ],
)
def test_refusals_raise_by_fault_and_leave_the_session_usable(
    method: str, status: int, error: type[TransportError], then: str
) -> None:
    session = session_before(method)
    request = session.next_request()
    assert request is not None
    assert request.method == method

    with pytest.raises(error) as raised:
        session.receive(HttpResponse(status))

    if isinstance(raised.value, UploadRejected | CredentialsWithdrawn | ServerError):
        assert raised.value.status == status
    assert next_method(session) == then


@pytest.mark.parametrize(
    ("value", "attested"),
    [("AB" * 32, "ab" * 32), (" " + "0f" * 32 + " ", "0f" * 32), ("abc", None), ("g" * 64, None)],
)
def test_attestation_must_be_a_sha256(value: str, attested: str | None) -> None:
    session = uploading_session(DATA[:4])
    response = ok_204(4, **{"mvb-stored-sha256": value})

    if attested is None:
        with pytest.raises(HostileServer, match="Mvb-Stored-Sha256"):
            answer(session, response)
        assert session.outcome is None
        return
    answer(session, response)
    assert session.outcome == UploadOutcome("/files/u1", 4, attested)


# -- lost connections ------------------------------------------------------------------------


@pytest.mark.parametrize("with_upload", [False, True])
@pytest.mark.parametrize("fate", [Fate.CUT_BEFORE, Fate.CUT_MIDWAY, Fate.CUT_AFTER])
def test_connection_lost_at_every_step_still_uploads_the_file(
    with_upload: bool, fate: Fate
) -> None:
    extensions = ("creation", "creation-with-upload") if with_upload else ("creation",)
    clean = run_upload(
        TusSession(spec_for(DATA), chunk_bytes=4), FakeTusServer(extensions=extensions), DATA
    )
    resync = {"OPTIONS": "OPTIONS", "POST": "POST", "PATCH": "HEAD"}

    for step, cut_request in enumerate(clean.requests):
        server = FakeTusServer(extensions=extensions)
        session = TusSession(spec_for(DATA), chunk_bytes=4)

        trace = run_upload(session, server, DATA, [Fate.DELIVERED] * step + [fate])

        assert trace.requests[step + 1].method == resync[cut_request.method]
        assert session.upload_url is not None
        assert server.uploads[session.upload_url].stored == DATA
        assert session.outcome == UploadOutcome(session.upload_url, len(DATA), sha256_hex(DATA))
        assert session.body_bytes_sent <= len(DATA) + 4


def test_connection_lost_on_head_asks_again() -> None:
    server = FakeTusServer()
    url = kept_upload(server, DATA[:4])
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=CREATION_ONLY, upload_url=url)

    trace = run_upload(session, server, DATA, [Fate.CUT_BEFORE, Fate.CUT_AFTER])

    assert methods(trace.requests) == ["HEAD", "HEAD", "HEAD", "PATCH", "PATCH"]
    assert server.uploads[url].stored == DATA


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=300),
    chunk_bytes=st.integers(min_value=1, max_value=64),
    extensions=st.sampled_from(
        [("creation",), ("creation", "creation-with-upload"), ("creation", "checksum")]
    ),
    fates=st.lists(st.sampled_from(list(Fate)), max_size=80),
)
def test_cuts_never_cost_more_than_one_chunk_each(
    data: bytes, chunk_bytes: int, extensions: tuple[str, ...], fates: list[Fate]
) -> None:
    server = FakeTusServer(extensions=extensions, checksum_algorithms=("sha256",))
    session = TusSession(spec_for(data), chunk_bytes=chunk_bytes)

    trace = run_upload(session, server, data, fates)

    assert session.upload_url is not None
    assert server.uploads[session.upload_url].stored == data
    assert session.outcome == UploadOutcome(session.upload_url, len(data), sha256_hex(data))
    assert session.body_bytes_sent <= len(data) + trace.cuts * chunk_bytes


# -- termination -----------------------------------------------------------------------------


def test_terminate_deletes_the_upload_when_the_server_can() -> None:
    server = FakeTusServer(extensions=("creation", "termination"))
    session = TusSession(spec_for(DATA), chunk_bytes=4)
    run_upload(session, server, DATA, stop_after=3)  # OPTIONS, POST, PATCH

    session.terminate()
    trace = run_upload(session, server, DATA)

    assert [(r.method, r.target) for r in trace.requests] == [("DELETE", "/files/u1")]
    assert session.state is SessionState.TERMINATED
    assert server.uploads == {}
    assert session.outcome is None


def test_terminate_without_the_termination_extension_ends_at_once() -> None:
    server = FakeTusServer()
    session = TusSession(spec_for(DATA), chunk_bytes=4)
    run_upload(session, server, DATA, stop_after=3)  # OPTIONS, POST, PATCH

    session.terminate()

    assert session.state is SessionState.TERMINATED
    assert session.next_request() is None
    assert "/files/u1" in server.uploads


def test_terminate_before_the_upload_exists_ends_at_once() -> None:
    session = TusSession(spec_for(DATA), chunk_bytes=4, capabilities=WITH_TERMINATION)

    session.terminate()
    session.terminate()  # idempotent

    assert session.state is SessionState.TERMINATED
    assert session.next_request() is None


@pytest.mark.parametrize("status", [204, 404, 410])
def test_delete_answers_that_end_the_session(status: int) -> None:
    session = TusSession(
        spec_for(DATA), chunk_bytes=4, capabilities=WITH_TERMINATION, upload_url="/files/u1"
    )
    session.terminate()

    assert answer(session, HttpResponse(status)).method == "DELETE"

    assert session.state is SessionState.TERMINATED


def test_delete_is_retried_after_a_server_error() -> None:
    session = TusSession(
        spec_for(DATA), chunk_bytes=4, capabilities=WITH_TERMINATION, upload_url="/files/u1"
    )
    session.terminate()

    with pytest.raises(ServerError):
        answer(session, HttpResponse(503))

    assert next_method(session) == "DELETE"


def test_an_abandoned_upload_is_deleted_without_a_session() -> None:
    request = termination_request("/files/u1", WITH_TERMINATION)

    assert request == HttpRequest("DELETE", "/files/u1", (("Tus-Resumable", TUS_VERSION),))
    for status in (204, 404, 410):
        check_termination(request, HttpResponse(status))
    with pytest.raises(ServerError):
        check_termination(request, HttpResponse(503))
    with pytest.raises(CredentialsWithdrawn):
        check_termination(request, HttpResponse(403))  # e.g. a finished upload: evidence


@pytest.mark.parametrize(
    ("url", "capabilities"),
    [("/files/u1", CREATION_ONLY), ("/files/u1", None), ("https://elsewhere/u1", WITH_TERMINATION)],
)
def test_no_delete_where_the_server_cannot_or_the_url_is_not_a_path(
    url: str, capabilities: ServerCapabilities | None
) -> None:
    assert termination_request(url, capabilities) is None


# -- the calling contract --------------------------------------------------------------------


def test_calling_out_of_turn_is_misuse() -> None:
    session = TusSession(spec_for(DATA), chunk_bytes=4)
    with pytest.raises(SessionMisuse):
        session.receive(HttpResponse(204))
    with pytest.raises(SessionMisuse):
        session.connection_lost()

    assert session.next_request() is not None
    with pytest.raises(SessionMisuse, match="already in flight"):
        session.next_request()
    with pytest.raises(SessionMisuse, match="in flight"):
        session.terminate()


@pytest.mark.parametrize(
    "make",
    [
        lambda: TusSession(spec_for(DATA), chunk_bytes=0),
        lambda: TusSession(spec_for(DATA), chunk_bytes=MAX_CHUNK_BYTES + 1),
        lambda: TusSession(spec_for(DATA), chunk_bytes=4, upload_url="https://x.test/files/a"),
        lambda: TusSession(spec_for(DATA), chunk_bytes=4, upload_url="files/a"),
        lambda: UploadSpec("f", -1, "a" * 64),
        lambda: UploadSpec("", 1, "a" * 64),
        lambda: UploadSpec("f", 1, "a" * 63),
        lambda: UploadSpec("f", 1, "a" * 64, endpoint="files/"),
        lambda: UploadSpec("f", 1, "a" * 64, endpoint="https://x.test/files/"),
        lambda: UploadSpec("f", 1, "a" * 64, metadata={"sha256": "x"}),
        lambda: UploadSpec("f", 1, "a" * 64, metadata={"file_id": "x"}),
        lambda: UploadSpec("f", 1, "a" * 64, metadata={"a b": "x"}),
        lambda: UploadSpec("f", 1, "a" * 64, metadata={"a,b": "x"}),
        lambda: UploadSpec("f", 1, "a" * 64, metadata={"": "x"}),
        lambda: UploadSpec("f", 1, "a" * 64, metadata={"note": "x" * 4000}),
    ],
)
def test_invalid_arguments_are_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"must|reserved|exceed"):
        make()


def test_spec_keeps_its_own_copy_of_the_metadata() -> None:
    metadata = {"camera": "dashcam"}
    spec = UploadSpec("f", 1, "a" * 64, metadata=metadata)

    metadata["camera"] = "bodycam"

    assert spec.metadata == {"camera": "dashcam"}
