"""The pure tus session gives an upload up: DELETE when the server offers termination,
an end at once when it cannot, and the DELETE of an abandoned upload without a session
(docs/tus-profile.md 9). No network, no clock."""

from __future__ import annotations

import pytest

from tests.transport.fake_tus import (
    CREATION_ONLY,
    DATA,
    WITH_TERMINATION,
    FakeTusServer,
    answer,
    next_method,
    run_upload,
    spec_for,
)
from transport.errors import CredentialsWithdrawn, ServerError
from transport.http import HttpRequest, HttpResponse
from transport.tus_headers import TUS_VERSION
from transport.tus_messages import ServerCapabilities
from transport.tus_session import TusSession
from transport.tus_states import SessionState
from transport.tus_statuses import check_termination, termination_request

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
