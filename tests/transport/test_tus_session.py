"""The pure tus session, driven through whole uploads by an in-memory tus server
(tests/transport/fake_tus.py): uploads, resuming, lost connections, and the calling contract.
The server's answers rule by rule: test_tus_answers.py; termination: test_tus_termination.py.
No network, no clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.transport.fake_tus import (
    CREATION_ONLY,
    DATA,
    FakeTusServer,
    Fate,
    answer,
    decode_metadata,
    header,
    kept_upload,
    methods,
    next_method,
    ok_204,
    run_upload,
    sha256_hex,
    spec_for,
    uploading_session,
)
from transport.errors import HostileServer
from transport.http import BodySlice, HttpResponse
from transport.tus_headers import OFFSET_CONTENT_TYPE, TUS_VERSION
from transport.tus_messages import UploadOutcome, UploadSpec
from transport.tus_session import MAX_CHUNK_BYTES, MAX_OFFSET_REGRESSIONS, SessionMisuse, TusSession
from transport.tus_states import SessionState

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
