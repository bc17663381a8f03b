"""Chunk sizes in the pure tus session: the server's advertised maximum (`Mvb-Max-Chunk-Size`),
413 halving down to the floor, the caller's size per request. No network, no clock."""

from __future__ import annotations

import pytest

from tests.transport.fake_tus import (
    CREATION_ONLY,
    ENDPOINT,
    FakeTusServer,
    answer,
    methods,
    next_method,
    run_upload,
    spec_for,
)
from transport.errors import HostileServer, ServerError
from transport.http import HttpRequest, HttpResponse
from transport.tus_headers import TUS_VERSION
from transport.tus_messages import ServerCapabilities, UploadSpec
from transport.tus_session import MAX_CHUNK_BYTES, MAX_ROUNDS_WITHOUT_PROGRESS, TusSession
from transport.tus_states import SessionState

DATA = bytes(range(64))


class LimitedTusServer(FakeTusServer):
    """A tus server that takes bodies of at most `max_chunk_bytes` (413 above), and says so on
    OPTIONS when `advertises`. `creates_before_refusing`: a POST whose body is too long still
    creates the upload and names it in the 413 (the tus spec allows either)."""

    def __init__(
        self,
        max_chunk_bytes: int,
        *,
        advertises: bool = False,
        creates_before_refusing: bool = False,
        extensions: tuple[str, ...] = ("creation",),
    ) -> None:
        super().__init__(extensions=extensions)
        self.max_chunk_bytes = max_chunk_bytes
        self.advertises = advertises
        self.creates_before_refusing = creates_before_refusing
        self.refusals = 0

    def handle(
        self, request: HttpRequest, data: bytes, *, arriving_bytes: int | None = None
    ) -> HttpResponse:
        if request.method == "OPTIONS":
            response = super().handle(request, data)
            if self.advertises:
                headers = {**response.headers, "mvb-max-chunk-size": str(self.max_chunk_bytes)}
                return HttpResponse(response.status, headers)
            return response
        too_long = request.body is not None and request.body.length_bytes > self.max_chunk_bytes
        if not too_long:
            return super().handle(request, data, arriving_bytes=arriving_bytes)
        self.refusals += 1
        if request.method == "POST" and self.creates_before_refusing:
            empty = HttpRequest(
                "POST", request.target, tuple(h for h in request.headers if h[0] != "Content-Type")
            )
            created = super().handle(empty, data)
            return HttpResponse(413, {"location": created.headers["location"]})
        return HttpResponse(413)


def bodies(requests: list[HttpRequest]) -> list[int]:
    return [request.body.length_bytes for request in requests if request.body is not None]


def test_the_advertised_maximum_bounds_every_chunk() -> None:
    server = LimitedTusServer(10, advertises=True)
    session = TusSession(spec_for(DATA), chunk_bytes=32)

    trace = run_upload(session, server, DATA)

    assert max(bodies(trace.requests)) == 10
    assert server.refusals == 0
    assert session.chunk_limit_bytes == 10
    assert session.chunk_bytes == 10
    assert server.uploads["/files/u1"].stored == DATA


def test_a_413_halves_the_chunk_and_the_upload_goes_on() -> None:
    server = LimitedTusServer(10)
    session = TusSession(spec_for(DATA), chunk_bytes=32, min_chunk_bytes=4)

    trace = run_upload(session, server, DATA)

    assert methods(trace.requests)[:8] == [
        "OPTIONS", "POST", "PATCH", "HEAD", "PATCH", "HEAD", "PATCH", "PATCH",
    ]  # fmt: skip
    assert bodies(trace.requests)[:4] == [32, 16, 8, 8]
    assert server.refusals == 2
    assert session.chunk_limit_bytes == 8
    assert server.uploads["/files/u1"].stored == DATA
    assert session.state is SessionState.DONE


def test_a_413_to_a_creation_body_creates_again_with_half_and_orphans_nothing() -> None:
    server = LimitedTusServer(10, extensions=("creation", "creation-with-upload"))
    session = TusSession(spec_for(DATA), chunk_bytes=32, min_chunk_bytes=4)

    trace = run_upload(session, server, DATA)

    assert methods(trace.requests)[:4] == ["OPTIONS", "POST", "POST", "POST"]
    assert bodies(trace.requests)[:3] == [32, 16, 8]
    assert list(server.uploads) == ["/files/u1"]  # the refused POSTs created nothing
    assert server.uploads["/files/u1"].stored == DATA


def test_a_413_that_names_an_upload_resumes_it_instead_of_orphaning_it() -> None:
    server = LimitedTusServer(
        10, creates_before_refusing=True, extensions=("creation", "creation-with-upload")
    )
    session = TusSession(spec_for(DATA), chunk_bytes=32, min_chunk_bytes=4)

    trace = run_upload(session, server, DATA)

    assert methods(trace.requests)[:4] == ["OPTIONS", "POST", "HEAD", "PATCH"]
    assert list(server.uploads) == ["/files/u1"]
    assert server.uploads["/files/u1"].stored == DATA


def test_a_413_at_the_floor_is_a_transient_server_error() -> None:
    """Nothing smaller may go: the server's limit is below the floor for now (its settings may
    change), so the file waits as after any transient refusal (transport/refusals.py), never
    blocked."""
    session = TusSession(spec_for(DATA), chunk_bytes=8, min_chunk_bytes=8)
    answer(session, HttpResponse(204, {"tus-version": TUS_VERSION, "tus-extension": "creation"}))
    answer(session, HttpResponse(201, {"location": "/files/u1"}))

    with pytest.raises(ServerError) as raised:
        answer(session, HttpResponse(413))

    assert raised.value.status == 413
    assert next_method(session) == "HEAD"


def test_halvings_are_bounded_on_their_own_not_by_the_rounds_guard() -> None:
    """From 64 MiB to 1 byte is 26 halvings, each a 413 and a HEAD: far more than the guard's
    rounds without progress, yet bounded; at the floor the 413 stands (a transient fault)."""
    spec = UploadSpec("big", 1 << 40, "ab" * 32, endpoint=ENDPOINT)
    session = TusSession(spec, chunk_bytes=MAX_CHUNK_BYTES, min_chunk_bytes=1)
    answer(session, HttpResponse(204, {"tus-version": TUS_VERSION, "tus-extension": "creation"}))
    answer(session, HttpResponse(201, {"location": "/files/u1"}))
    sizes = []
    while True:
        request = session.next_request()
        assert request is not None
        assert request.body is not None
        sizes.append(request.body.length_bytes)
        if request.body.length_bytes == 1:
            with pytest.raises(ServerError):
                session.receive(HttpResponse(413))
            break
        session.receive(HttpResponse(413))
        answer(session, HttpResponse(200, {"upload-offset": "0"}))
    assert sizes == [MAX_CHUNK_BYTES >> n for n in range(27)]
    assert len(sizes) * 2 > MAX_ROUNDS_WITHOUT_PROGRESS


def test_the_callers_chunk_size_applies_from_the_next_request() -> None:
    session = TusSession(spec_for(DATA), chunk_bytes=8, capabilities=CREATION_ONLY)
    answer(session, HttpResponse(201, {"location": "/files/u1"}))
    session.set_chunk_bytes(20)
    request = session.next_request()

    assert session.in_flight is request
    assert request is not None
    assert request.body is not None
    assert request.body.length_bytes == 20
    with pytest.raises(ValueError, match="chunk_bytes must be"):
        session.set_chunk_bytes(0)


def test_the_server_limit_wins_over_the_callers_size() -> None:
    capabilities = ServerCapabilities(
        (TUS_VERSION,), frozenset({"creation"}), None, (), max_chunk_bytes=6
    )
    session = TusSession(spec_for(DATA), chunk_bytes=8, capabilities=capabilities)
    answer(session, HttpResponse(201, {"location": "/files/u1"}))
    session.set_chunk_bytes(20)
    request = session.next_request()

    assert request is not None
    assert request.body is not None
    assert request.body.length_bytes == 6


@pytest.mark.parametrize(("value", "message"), [("-1", "not a non-negative"), ("0", "0: no chunk")])
def test_an_impossible_advertised_maximum_is_hostile(value: str, message: str) -> None:
    session = TusSession(spec_for(DATA), chunk_bytes=8)
    options = {"tus-version": TUS_VERSION, "tus-extension": "creation", "mvb-max-chunk-size": value}

    with pytest.raises(HostileServer, match=message):
        answer(session, HttpResponse(204, options))
