"""The pure tus session against every answer rule of docs/tus-profile.md: discovery
(OPTIONS), creation (POST and its Location), PATCH answers (offsets, conflicts, gone uploads,
checksum mismatches, stalls, refusals by fault, attestation). Scripted answers and the
in-memory server of tests/transport/fake_tus.py; no network, no clock."""

from __future__ import annotations

import pytest

from tests.transport.fake_tus import (
    CREATION_ONLY,
    DATA,
    FakeTusServer,
    Fate,
    answer,
    methods,
    next_method,
    ok_204,
    run_upload,
    session_before,
    spec_for,
    uploading_session,
)
from transport.errors import (
    CredentialsWithdrawn,
    HostileServer,
    ServerError,
    TransportError,
    UploadRejected,
)
from transport.http import BodySlice, HttpResponse
from transport.tus_headers import TUS_VERSION
from transport.tus_messages import ServerCapabilities, UploadOutcome
from transport.tus_session import (
    MAX_CHECKSUM_RESENDS,
    MAX_RECREATIONS,
    MAX_ROUNDS_WITHOUT_PROGRESS,
    TusSession,
)
from transport.tus_states import SessionState

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
