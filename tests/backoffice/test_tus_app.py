"""The tus server core through `TusApp.handle`, on a real UploadStore in a temporary directory.

Every rule of backoffice/tus_app.py is driven by requests (no HTTP: the adapter is tested in
test_server_https.py); every bad input must get its status and leave the server working.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backoffice.tus_app import (
    STORED_SHA256_HEADER,
    ChecksumHeaderError,
    CompletedUpload,
    IncomingRequest,
    MetadataError,
    OutgoingResponse,
    TusApp,
    parse_upload_checksum,
    parse_upload_metadata,
)
from backoffice.upload_store import StoreLocked, UploadState, UploadStore

CLIENT = "MVB-TEST-0001"
OTHER_CLIENT = "MVB-TEST-0002"
MAX_UPLOAD_BYTES = 1000
MAX_CHUNK_BYTES = 400
DATA = bytes(range(256)) * 3  # 768 bytes
DATA_SHA256 = hashlib.sha256(DATA).hexdigest()
OFFSET_STREAM = "application/offset+octet-stream"


# -- helpers ---------------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def metadata(file_id: str = "file-0001", sha256: str = DATA_SHA256, **extra: str) -> str:
    pairs = [f"file_id {b64(file_id)}", f"sha256 {b64(sha256)}"]
    pairs += [f"{key} {b64(value)}" for key, value in extra.items()]
    return ",".join(pairs)


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def breaking_body(first: bytes, error: Exception) -> AsyncIterator[bytes]:
    yield first
    raise error


def request(
    method: str,
    target: str,
    headers: Mapping[str, str] | None = None,
    *,
    body: AsyncIterator[bytes] | None = None,
    client_id: str = CLIENT,
    tus: bool = True,
) -> IncomingRequest:
    all_headers = {"tus-resumable": "1.0.0"} if tus else {}
    all_headers.update({name.lower(): value for name, value in (headers or {}).items()})
    return IncomingRequest(method, target, all_headers, client_id, body or pieces())


def patch_request(
    location: str,
    offset: int,
    *chunks: bytes,
    headers: Mapping[str, str] | None = None,
    client_id: str = CLIENT,
) -> IncomingRequest:
    all_headers = {
        "Content-Type": OFFSET_STREAM,
        "Upload-Offset": str(offset),
        "Content-Length": str(sum(len(chunk) for chunk in chunks)),
    }
    all_headers.update(headers or {})
    return request("PATCH", location, all_headers, body=pieces(*chunks), client_id=client_id)


async def create(
    app: TusApp, length: int = len(DATA), *, meta: str | None = None, client_id: str = CLIENT
) -> str:
    response = await app.handle(
        request(
            "POST",
            "/files/",
            {"Upload-Length": str(length), "Upload-Metadata": meta or metadata()},
            client_id=client_id,
        )
    )
    assert response.status == 201, response.body
    return response.headers["Location"]


async def head(app: TusApp, location: str, client_id: str = CLIENT) -> OutgoingResponse:
    return await app.handle(request("HEAD", location, client_id=client_id))


async def offset_of(app: TusApp, location: str) -> int:
    response = await head(app, location)
    assert response.status == 200
    return int(response.headers["Upload-Offset"])


def checksum(algorithm: str, data: bytes) -> str:
    digest = hashlib.new(algorithm, data).digest()
    return f"{algorithm} {base64.b64encode(digest).decode()}"


def upload_dirs(store: UploadStore) -> list[Path]:
    return sorted((store.root / "uploads").iterdir())


def upload_id_of(location: str) -> str:
    return location.rsplit("/", 1)[1]


class FreeSpace:
    """A controllable `free_bytes` for the store (the real one reads the file system)."""

    def __init__(self, free_bytes: int) -> None:
        self.free_bytes = free_bytes

    def __call__(self, _path: Path) -> int:
        return self.free_bytes


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UploadStore]:
    with UploadStore.open(tmp_path / "store", reserve_bytes=0) as opened:
        yield opened


@pytest.fixture
def app(store: UploadStore) -> TusApp:
    return TusApp(store, max_upload_bytes=MAX_UPLOAD_BYTES, max_chunk_bytes=MAX_CHUNK_BYTES)


# -- discovery and protocol version ----------------------------------------------------------


async def test_options_advertises_version_extensions_limits_and_algorithms(app: TusApp) -> None:
    response = await app.handle(request("OPTIONS", "/files/", tus=False))
    assert response.status == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Extension"].split(",") == [
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    ]
    assert response.headers["Mvb-Attestation"] == "sha256"
    assert response.headers["Tus-Max-Size"] == str(MAX_UPLOAD_BYTES)
    assert response.headers["Tus-Checksum-Algorithm"] == "sha256,sha1,md5"
    # Not tus: the largest body it takes, so the box never sends a chunk it would refuse.
    assert response.headers["Mvb-Max-Chunk-Size"] == str(MAX_CHUNK_BYTES)


@pytest.mark.parametrize("version", [None, "0.2.2", "1.0", " 1.0.0"])
@pytest.mark.parametrize("method", ["POST", "HEAD", "PATCH", "DELETE"])
async def test_requests_without_tus_resumable_1_0_0_get_412(
    app: TusApp, store: UploadStore, method: str, version: str | None
) -> None:
    location = await create(app)
    target = "/files/" if method == "POST" else location
    headers = {"Upload-Length": "5", "Upload-Metadata": metadata()}
    if version is not None:
        headers["Tus-Resumable"] = version
    response = await app.handle(request(method, target, headers, tus=False))
    assert response.status == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    assert len(upload_dirs(store)) == 1
    assert await offset_of(app, location) == 0


# -- creation --------------------------------------------------------------------------------


async def test_creation_then_head_reports_offset_length_and_metadata(app: TusApp) -> None:
    meta = metadata(camera="bodycam")
    response = await app.handle(
        request("POST", "/files/", {"Upload-Length": str(len(DATA)), "Upload-Metadata": meta})
    )
    assert response.status == 201
    location = response.headers["Location"]
    assert location.startswith("/files/")
    assert len(upload_id_of(location)) == 22
    answer = await head(app, location)
    assert answer.status == 200
    assert answer.headers["Upload-Offset"] == "0"
    assert answer.headers["Upload-Length"] == str(len(DATA))
    assert answer.headers["Upload-Metadata"] == meta
    assert answer.headers["Cache-Control"] == "no-store"
    assert STORED_SHA256_HEADER not in answer.headers
    assert answer.body == b""


async def test_upload_ids_are_unique_per_creation(app: TusApp) -> None:
    locations = {await create(app) for _ in range(20)}
    assert len(locations) == 20


BAD_CREATIONS = [
    ({"Upload-Metadata": metadata()}, 400),  # no Upload-Length
    ({"Upload-Length": "12a", "Upload-Metadata": metadata()}, 400),
    ({"Upload-Length": "-1", "Upload-Metadata": metadata()}, 400),
    ({"Upload-Length": "+5", "Upload-Metadata": metadata()}, 400),
    ({"Upload-Length": " 5", "Upload-Metadata": metadata()}, 400),
    ({"Upload-Length": "1e3", "Upload-Metadata": metadata()}, 400),
    ({"Upload-Length": "\u0665", "Upload-Metadata": metadata()}, 400),  # Arabic-Indic 5
    ({"Upload-Length": "9" * 19, "Upload-Metadata": metadata()}, 400),
    ({"Upload-Length": str(MAX_UPLOAD_BYTES + 1), "Upload-Metadata": metadata()}, 413),
    ({"Upload-Defer-Length": "1", "Upload-Metadata": metadata()}, 400),
    ({"Upload-Length": "5"}, 400),  # no metadata
    ({"Upload-Length": "5", "Upload-Metadata": ""}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": f"file_id {b64('f')}"}, 400),  # no sha256
    ({"Upload-Length": "5", "Upload-Metadata": f"sha256 {b64(DATA_SHA256)}"}, 400),  # no id
    ({"Upload-Length": "5", "Upload-Metadata": metadata(sha256="ab" * 31)}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": metadata(sha256="zz" * 32)}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": metadata(file_id="../../etc/passwd")}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": metadata(file_id="x" * 65)}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": metadata(file_id="")}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": metadata() + ",file_id " + b64("b")}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": "file_id not*base64,sha256 x"}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": metadata() + ",note \u00e9\u00e9\u00e9\u00e9"}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": metadata() + ",a b c"}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": metadata() + ",,"}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": metadata(note="n" * 4000)}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": metadata(), "Content-Length": "5"}, 415),
    ({"Upload-Length": "5", "Upload-Metadata": metadata(), "Content-Length": "x"}, 400),
]


@pytest.mark.parametrize(("headers", "status"), BAD_CREATIONS)
async def test_bad_creations_are_refused_and_create_nothing(
    app: TusApp, store: UploadStore, headers: dict[str, str], status: int
) -> None:
    response = await app.handle(request("POST", "/files/", headers, body=pieces(b"12345")))
    assert response.status == status, response.body
    assert response.body  # says what is wrong
    assert upload_dirs(store) == []
    if status == 413:
        assert response.headers["Tus-Max-Size"] == str(MAX_UPLOAD_BYTES)
    await create(app)  # and the server keeps working


async def test_creation_with_upload_of_the_whole_file_completes_and_attests(
    app: TusApp, store: UploadStore
) -> None:
    headers = {
        "Upload-Length": str(len(DATA[:300])),
        "Upload-Metadata": metadata(sha256=hashlib.sha256(DATA[:300]).hexdigest()),
        "Content-Type": OFFSET_STREAM,
        "Content-Length": "300",
    }
    response = await app.handle(request("POST", "/files/", headers, body=pieces(DATA[:300])))
    assert response.status == 201
    assert response.headers["Upload-Offset"] == "300"
    assert response.headers[STORED_SHA256_HEADER] == hashlib.sha256(DATA[:300]).hexdigest()
    assert (store.root / "complete" / "file-0001.mvbe").read_bytes() == DATA[:300]


async def test_creation_with_upload_of_a_first_chunk_then_patch(app: TusApp) -> None:
    headers = {
        "Upload-Length": str(len(DATA)),
        "Upload-Metadata": metadata(),
        "Content-Type": OFFSET_STREAM,
    }
    response = await app.handle(request("POST", "/files/", headers, body=pieces(DATA[:100])))
    assert response.status == 201
    assert response.headers["Upload-Offset"] == "100"
    assert STORED_SHA256_HEADER not in response.headers
    location = response.headers["Location"]
    done = await app.handle(patch_request(location, 100, DATA[100:500]))
    assert done.status == 204
    done = await app.handle(patch_request(location, 500, DATA[500:]))
    assert done.headers[STORED_SHA256_HEADER] == DATA_SHA256


async def test_creation_with_upload_whose_checksum_fails_still_names_the_upload(
    app: TusApp,
) -> None:
    headers = {
        "Upload-Length": str(len(DATA)),
        "Upload-Metadata": metadata(),
        "Content-Type": OFFSET_STREAM,
        "Upload-Checksum": checksum("sha256", b"something else"),
    }
    response = await app.handle(request("POST", "/files/", headers, body=pieces(DATA[:100])))
    assert response.status == 460
    assert response.headers["Upload-Offset"] == "0"
    assert await offset_of(app, response.headers["Location"]) == 0


async def test_an_empty_file_is_complete_at_creation(app: TusApp, store: UploadStore) -> None:
    empty_sha256 = hashlib.sha256(b"").hexdigest()
    response = await app.handle(
        request(
            "POST",
            "/files/",
            {"Upload-Length": "0", "Upload-Metadata": metadata(sha256=empty_sha256)},
        )
    )
    assert response.status == 201
    assert response.headers[STORED_SHA256_HEADER] == empty_sha256
    assert (store.root / "complete" / "file-0001.mvbe").read_bytes() == b""


# -- PATCH -----------------------------------------------------------------------------------


async def test_patches_complete_the_upload_and_attest_the_stored_sha256(
    app: TusApp, store: UploadStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="backoffice.tus_app")
    location = await create(app)
    first = await app.handle(patch_request(location, 0, DATA[:100], DATA[100:400]))
    assert first.status == 204
    assert first.headers["Upload-Offset"] == "400"
    assert STORED_SHA256_HEADER not in first.headers
    assert await offset_of(app, location) == 400
    last = await app.handle(patch_request(location, 400, DATA[400:]))
    assert last.status == 204
    assert last.headers["Upload-Offset"] == str(len(DATA))
    assert last.headers[STORED_SHA256_HEADER] == DATA_SHA256
    later = await head(app, location)
    assert later.headers[STORED_SHA256_HEADER] == DATA_SHA256
    assert later.headers["Upload-Offset"] == str(len(DATA))
    assert (store.root / "complete" / "file-0001.mvbe").read_bytes() == DATA
    assert not (store.root / "uploads" / upload_id_of(location) / "data").exists()
    completion = [r.getMessage() for r in caplog.records if "upload complete" in r.getMessage()]
    assert len(completion) == 1
    for fact in (
        f"upload_id={upload_id_of(location)}",
        "file_id=file-0001",
        f"client_id={CLIENT}",
        f"size_bytes={len(DATA)}",
        f"sha256={DATA_SHA256}",
        "verified=True",
    ):
        assert fact in completion[0]


async def test_the_attestation_is_computed_not_echoed_and_a_mismatch_goes_to_corrupt(
    app: TusApp, store: UploadStore, caplog: pytest.LogCaptureFixture
) -> None:
    declared = hashlib.sha256(b"what the box thinks it sent").hexdigest()
    location = await create(app, meta=metadata(sha256=declared))
    response = await app.handle(patch_request(location, 0, DATA[:400]))
    response = await app.handle(patch_request(location, 400, DATA[400:]))
    assert response.status == 204
    assert response.headers[STORED_SHA256_HEADER] == DATA_SHA256 != declared
    corrupt = store.root / "corrupt" / f"{upload_id_of(location)}.mvbe"
    assert corrupt.read_bytes() == DATA
    assert not (store.root / "complete" / "file-0001.mvbe").exists()
    incidents = [r for r in caplog.records if "integrity incident" in r.getMessage()]
    assert len(incidents) == 1
    assert incidents[0].levelno == logging.ERROR
    assert f"declared_sha256={declared}" in incidents[0].getMessage()
    assert f"stored_sha256={DATA_SHA256}" in incidents[0].getMessage()


async def test_a_retried_final_patch_is_answered_again_with_the_attestation(app: TusApp) -> None:
    location = await create(app, 300, meta=metadata(sha256=hashlib.sha256(DATA[:300]).hexdigest()))
    await app.handle(patch_request(location, 0, DATA[:300]))
    again = await app.handle(patch_request(location, 300))
    assert again.status == 204
    assert again.headers[STORED_SHA256_HEADER] == hashlib.sha256(DATA[:300]).hexdigest()
    more = await app.handle(patch_request(location, 300, b"x"))
    assert more.status == 400
    stale = await app.handle(patch_request(location, 0, DATA[:300]))
    assert stale.status == 409


BAD_PATCHES = [
    ({"Content-Type": "application/octet-stream"}, 415),
    ({"Content-Type": "text/plain"}, 415),
    ({"Upload-Offset": "0x0"}, 400),
    ({"Upload-Offset": "-0"}, 400),
    ({"Upload-Offset": "5"}, 409),
    ({"Upload-Offset": "0, 0"}, 400),  # a repeated header, joined by the adapter
    ({"Content-Length": str(len(DATA) + 1)}, 400),  # past Upload-Length
    ({"Content-Length": str(MAX_CHUNK_BYTES + 1)}, 413),
    ({"Content-Length": "ten"}, 400),
    ({"Upload-Checksum": "crc32 AAAAAA=="}, 400),
    ({"Upload-Checksum": "sha256"}, 400),
    ({"Upload-Checksum": "sha256 not-base64!"}, 400),
    ({"Upload-Checksum": "sha256 \u00e9\u00e9\u00e9\u00e9"}, 400),
    ({"Upload-Checksum": "sha256 " + base64.b64encode(b"short").decode()}, 400),
    ({"Upload-Checksum": "SHA256 " + checksum("sha256", DATA[:10]).split()[1]}, 400),
]


@pytest.mark.parametrize(("headers", "status"), BAD_PATCHES)
async def test_bad_patches_are_refused_before_anything_is_written(
    app: TusApp, store: UploadStore, headers: dict[str, str], status: int
) -> None:
    location = await create(app)
    response = await app.handle(patch_request(location, 0, DATA[:10], headers=headers))
    assert response.status == status, response.body
    assert await offset_of(app, location) == 0
    assert (store.root / "uploads" / upload_id_of(location) / "data").stat().st_size == 0
    good = await app.handle(patch_request(location, 0, DATA[:10]))
    assert good.status == 204


async def test_a_body_running_past_upload_length_keeps_bytes_up_to_it_and_is_400(
    app: TusApp, store: UploadStore
) -> None:
    sha = hashlib.sha256(DATA[:300]).hexdigest()
    location = await create(app, 300, meta=metadata(sha256=sha))
    # No Content-Length: the stream itself turns out too long.
    overlong = request(
        "PATCH",
        location,
        {"Content-Type": OFFSET_STREAM, "Upload-Offset": "0"},
        body=pieces(DATA[:200], DATA[200:350]),
    )
    response = await app.handle(overlong)
    assert response.status == 400
    assert response.headers["Upload-Offset"] == "300"
    assert response.headers[STORED_SHA256_HEADER] == sha
    assert (store.root / "complete" / "file-0001.mvbe").read_bytes() == DATA[:300]


async def test_a_body_longer_than_max_chunk_is_413_and_keeps_the_first_chunk(
    app: TusApp,
) -> None:
    location = await create(app)
    overlong = request(
        "PATCH",
        location,
        {"Content-Type": OFFSET_STREAM, "Upload-Offset": "0"},
        body=pieces(DATA[:300], DATA[300:500]),
    )
    response = await app.handle(overlong)
    assert response.status == 413
    assert response.headers["Upload-Offset"] == str(MAX_CHUNK_BYTES)
    assert await offset_of(app, location) == MAX_CHUNK_BYTES


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5"])
async def test_upload_checksum_is_verified_for_each_offered_algorithm(
    app: TusApp, algorithm: str
) -> None:
    location = await create(app)
    header = {"Upload-Checksum": checksum(algorithm, DATA[:400])}
    response = await app.handle(
        patch_request(location, 0, DATA[:200], DATA[200:400], headers=header)
    )
    assert response.status == 204
    assert response.headers["Upload-Offset"] == "400"


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5"])
async def test_a_checksum_mismatch_discards_that_patch_and_is_460(
    app: TusApp, store: UploadStore, algorithm: str
) -> None:
    location = await create(app)
    await app.handle(patch_request(location, 0, DATA[:100]))
    damaged = DATA[100:150] + b"\x00" + DATA[151:300]
    header = {"Upload-Checksum": checksum(algorithm, DATA[100:300])}
    response = await app.handle(patch_request(location, 100, damaged, headers=header))
    assert response.status == 460
    assert response.headers["Upload-Offset"] == "100"
    assert await offset_of(app, location) == 100
    data_file = store.root / "uploads" / upload_id_of(location) / "data"
    assert data_file.read_bytes() == DATA[:100]
    retry = await app.handle(patch_request(location, 100, DATA[100:300], headers=header))
    assert retry.status == 204
    assert retry.headers["Upload-Offset"] == "300"


@pytest.mark.parametrize(
    ("error", "status"),
    [(ConnectionResetError("reset"), 400), (TimeoutError(), 408), (ValueError("junk"), 400)],
)
async def test_a_broken_body_keeps_what_arrived_unless_checksummed(
    app: TusApp, error: Exception, status: int
) -> None:
    location = await create(app)
    plain = request(
        "PATCH",
        location,
        {"Content-Type": OFFSET_STREAM, "Upload-Offset": "0", "Content-Length": "300"},
        body=breaking_body(DATA[:120], error),
    )
    response = await app.handle(plain)
    assert response.status == status
    assert response.headers["Upload-Offset"] == "120"
    checked = request(
        "PATCH",
        location,
        {
            "Content-Type": OFFSET_STREAM,
            "Upload-Offset": "120",
            "Upload-Checksum": checksum("sha256", DATA[120:300]),
        },
        body=breaking_body(DATA[120:200], error),
    )
    response = await app.handle(checked)
    assert response.status == status
    assert response.headers["Upload-Offset"] == "120"
    assert await offset_of(app, location) == 120


async def test_a_cancelled_patch_keeps_what_arrived_and_frees_the_upload(app: TusApp) -> None:
    location = await create(app)
    arrived = asyncio.Event()

    async def stalled_body() -> AsyncIterator[bytes]:
        yield DATA[:50]
        arrived.set()
        await asyncio.Event().wait()  # the peer vanished: only cancellation ends this
        yield b""

    task = asyncio.create_task(
        app.handle(
            request(
                "PATCH",
                location,
                {"Content-Type": OFFSET_STREAM, "Upload-Offset": "0"},
                body=stalled_body(),
            )
        )
    )
    await arrived.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await offset_of(app, location) == 50
    assert (await app.handle(patch_request(location, 50, DATA[50:100]))).status == 204


async def test_a_second_patch_while_one_streams_is_423_and_head_reports_durable_bytes(
    app: TusApp,
) -> None:
    location = await create(app)
    first_piece_written = asyncio.Event()
    finish = asyncio.Event()

    async def held_body() -> AsyncIterator[bytes]:
        yield DATA[:10]
        first_piece_written.set()
        await finish.wait()
        yield DATA[10:20]

    streaming = asyncio.create_task(
        app.handle(
            request(
                "PATCH",
                location,
                {"Content-Type": OFFSET_STREAM, "Upload-Offset": "0"},
                body=held_body(),
            )
        )
    )
    await first_piece_written.wait()
    assert await offset_of(app, location) == 0  # 10 bytes written, none acknowledged yet
    busy = await app.handle(patch_request(location, 0, DATA[:5]))
    assert busy.status == 423
    refused_delete = await app.handle(request("DELETE", location))
    assert refused_delete.status == 423
    finish.set()
    done = await streaming
    assert done.status == 204
    assert done.headers["Upload-Offset"] == "20"


# -- ownership, termination, routing, bounds -------------------------------------------------


async def test_another_client_cannot_see_or_touch_an_upload(app: TusApp) -> None:
    location = await create(app)
    await app.handle(patch_request(location, 0, DATA[:10]))
    never_existed = "/files/" + "A" * 22
    for target in (location, never_existed):
        answers = [
            await head(app, target, client_id=OTHER_CLIENT),
            await app.handle(patch_request(target, 10, DATA[10:20], client_id=OTHER_CLIENT)),
            await app.handle(request("DELETE", target, client_id=OTHER_CLIENT)),
        ]
        assert [answer.status for answer in answers] == [404, 404, 404]
        assert answers[1].body == b"no such upload\n"
    assert await offset_of(app, location) == 10


async def test_delete_terminates_an_unfinished_upload(app: TusApp, store: UploadStore) -> None:
    location = await create(app)
    await app.handle(patch_request(location, 0, DATA[:10]))
    response = await app.handle(request("DELETE", location))
    assert response.status == 204
    assert (await head(app, location)).status == 404
    assert upload_dirs(store) == []


async def test_delete_of_a_finished_upload_is_refused(app: TusApp, store: UploadStore) -> None:
    location = await create(app, 300, meta=metadata(sha256=hashlib.sha256(DATA[:300]).hexdigest()))
    await app.handle(patch_request(location, 0, DATA[:300]))
    response = await app.handle(request("DELETE", location))
    assert response.status == 403
    assert (store.root / "complete" / "file-0001.mvbe").read_bytes() == DATA[:300]
    assert (await head(app, location)).status == 200


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/file",
        "/files/x",
        "/files/../store.lock",
        "/files/" + "A" * 21,
        "/files/" + "A" * 23,
        "/files/" + "A" * 21 + "%",
        "/other/" + "A" * 22,
        "/files/" + "A" * 22 + "/more",
    ],
)
async def test_unknown_paths_are_404(app: TusApp, target: str) -> None:
    for method in ("OPTIONS", "HEAD", "PATCH", "DELETE", "POST"):
        response = await app.handle(request(method, target))
        assert response.status == 404, (method, target)


@pytest.mark.parametrize(
    ("method", "on_upload", "allow"),
    [
        ("GET", False, "OPTIONS, POST"),
        ("PUT", False, "OPTIONS, POST"),
        ("PATCH", False, "OPTIONS, POST"),
        ("GET", True, "OPTIONS, HEAD, PATCH, DELETE"),
        ("POST", True, "OPTIONS, HEAD, PATCH, DELETE"),
        ("BREW", True, "OPTIONS, HEAD, PATCH, DELETE"),
    ],
)
async def test_wrong_methods_are_405_with_allow(
    app: TusApp, method: str, on_upload: bool, allow: str
) -> None:
    target = await create(app) if on_upload else "/files/"
    response = await app.handle(request(method, target))
    assert response.status == 405
    assert response.headers["Allow"] == allow


async def test_the_collection_answers_with_and_without_slash_and_query(app: TusApp) -> None:
    for target in ("/files", "/files/?x=1"):
        response = await app.handle(
            request("POST", target, {"Upload-Length": "5", "Upload-Metadata": metadata()})
        )
        assert response.status == 201


async def test_oversized_targets_and_header_blocks_are_refused(app: TusApp) -> None:
    long_target = "/files/" + "A" * 2000
    assert (await app.handle(request("HEAD", long_target))).status == 414
    huge = {f"x-filler-{index}": "v" * 1000 for index in range(20)}
    assert (await app.handle(request("OPTIONS", "/files/", huge))).status == 431
    await create(app)


# -- completion hook -------------------------------------------------------------------------


async def test_on_complete_hook_gets_the_stored_file(store: UploadStore) -> None:
    seen: list[CompletedUpload] = []

    async def hook(completed: CompletedUpload) -> None:
        seen.append(completed)

    app = TusApp(store, max_upload_bytes=MAX_UPLOAD_BYTES, max_chunk_bytes=1000, on_complete=hook)
    location = await create(app)
    await app.handle(patch_request(location, 0, DATA))
    assert len(seen) == 1
    assert seen[0].verified
    assert seen[0].info.upload_id == upload_id_of(location)
    assert seen[0].stored_file.read_bytes() == DATA


async def test_a_failing_hook_is_logged_and_the_upload_still_succeeds(
    store: UploadStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def hook(_completed: CompletedUpload) -> None:
        raise RuntimeError("ingest queue down")

    app = TusApp(store, max_upload_bytes=MAX_UPLOAD_BYTES, max_chunk_bytes=1000, on_complete=hook)
    location = await create(app)
    response = await app.handle(patch_request(location, 0, DATA))
    assert response.status == 204
    assert response.headers[STORED_SHA256_HEADER] == DATA_SHA256
    assert any("on_complete hook failed" in r.getMessage() for r in caplog.records)


# -- store: disk space, duplicates, restart, repair ------------------------------------------


async def test_disk_reserve_refuses_creation_and_patch_with_507(tmp_path: Path) -> None:
    free = FreeSpace(10_000)
    with UploadStore.open(tmp_path / "s", reserve_bytes=9_500, free_bytes=free) as store:
        app = TusApp(store, max_upload_bytes=MAX_UPLOAD_BYTES, max_chunk_bytes=MAX_CHUNK_BYTES)
        too_big = await app.handle(
            request("POST", "/files/", {"Upload-Length": "600", "Upload-Metadata": metadata()})
        )
        assert too_big.status == 507
        assert upload_dirs(store) == []
        location = await create(app, 400)
        free.free_bytes = 9_800
        refused = await app.handle(patch_request(location, 0, DATA[:301]))
        assert refused.status == 507
        assert await offset_of(app, location) == 0
        accepted = await app.handle(patch_request(location, 0, DATA[:300]))
        assert accepted.status == 204


async def test_the_same_file_twice_keeps_one_copy_and_other_bytes_go_to_corrupt_unattested(
    app: TusApp, store: UploadStore
) -> None:
    small = DATA[:300]
    meta = metadata(sha256=hashlib.sha256(small).hexdigest())
    first = await create(app, 300, meta=meta)
    await app.handle(patch_request(first, 0, small))
    again = await create(app, 300, meta=meta)
    answer = await app.handle(patch_request(again, 0, small))
    assert answer.headers[STORED_SHA256_HEADER] == hashlib.sha256(small).hexdigest()
    assert (store.root / "complete" / "file-0001.mvbe").read_bytes() == small
    other = DATA[300:600]
    impostor = await create(app, 300, meta=metadata(sha256=hashlib.sha256(other).hexdigest()))
    answer = await app.handle(patch_request(impostor, 0, other))
    # Its own bytes, but not the file complete/ holds under its id: the box must keep its copy.
    assert answer.status == 204
    assert STORED_SHA256_HEADER not in answer.headers
    assert STORED_SHA256_HEADER not in (await head(app, impostor)).headers
    assert (store.root / "complete" / "file-0001.mvbe").read_bytes() == small
    kept = store.root / "corrupt" / f"{upload_id_of(impostor)}.mvbe"
    assert kept.read_bytes() == other
    assert store.status(upload_id_of(impostor)).info.incident == "file_id_conflict"


async def test_a_new_store_on_the_same_directory_continues_at_the_stored_offset(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    with UploadStore.open(root, reserve_bytes=0) as store:
        app = TusApp(store, max_upload_bytes=MAX_UPLOAD_BYTES, max_chunk_bytes=MAX_CHUNK_BYTES)
        location = await create(app)
        await app.handle(patch_request(location, 0, DATA[:333]))
    with UploadStore.open(root, reserve_bytes=0) as store:
        app = TusApp(store, max_upload_bytes=MAX_UPLOAD_BYTES, max_chunk_bytes=MAX_CHUNK_BYTES)
        assert await offset_of(app, location) == 333
        await app.handle(patch_request(location, 333, DATA[333:700]))
        done = await app.handle(patch_request(location, 700, DATA[700:]))
        assert done.headers[STORED_SHA256_HEADER] == DATA_SHA256


def test_a_second_store_on_the_same_directory_is_refused(store: UploadStore) -> None:
    with pytest.raises(StoreLocked):
        UploadStore.open(store.root)


async def test_opening_repairs_what_a_crash_interrupted(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with UploadStore.open(root, reserve_bytes=0) as store:
        app = TusApp(store, max_upload_bytes=MAX_UPLOAD_BYTES, max_chunk_bytes=1000)
        receiving = upload_id_of(await create(app))
        full = upload_id_of(
            await create(app, 300, meta=metadata("f-full", hashlib.sha256(DATA[:300]).hexdigest()))
        )
        moved = upload_id_of(
            await create(app, 300, meta=metadata("f-moved", hashlib.sha256(DATA[:300]).hexdigest()))
        )
        await app.handle(patch_request(f"/files/{moved}", 0, DATA[:300]))
    uploads = root / "uploads"
    # Crash during creation: the directory exists, info.json was never renamed into place.
    (uploads / ("B" * 22)).mkdir()
    (uploads / ("B" * 22) / "info.json.tmp").write_text("{")
    # Crash after more bytes reached the disk than were acknowledged, past the length even.
    (uploads / receiving / "data").write_bytes(DATA + b"extra")
    # Crash after the last fsync, before the upload was hashed and moved.
    (uploads / full / "data").write_bytes(DATA[:300])
    # Crash after info.json said complete, before the data name was removed.
    os.link(root / "complete" / "f-moved.mvbe", uploads / moved / "data")

    with UploadStore.open(root, reserve_bytes=0) as store:
        assert not (uploads / ("B" * 22)).exists()
        assert store.status(receiving).finished
        assert store.status(receiving).info.stored_sha256 == DATA_SHA256
        assert store.status(full).info.state is UploadState.COMPLETE
        assert (root / "complete" / "f-full.mvbe").read_bytes() == DATA[:300]
        assert not (uploads / moved / "data").exists()
        assert (root / "complete" / "f-moved.mvbe").read_bytes() == DATA[:300]
        info = json.loads((uploads / full / "info.json").read_text())
        assert info["stored_sha256"] == hashlib.sha256(DATA[:300]).hexdigest()


async def test_hostile_requests_leave_the_server_working(app: TusApp, store: UploadStore) -> None:
    location = await create(app)
    hostile = [
        request(
            "PATCH",
            location,
            {"Content-Type": OFFSET_STREAM, "Upload-Offset": "0"},
            body=pieces(b"\x00" * 5000),
        ),
        request("POST", "/files/", {"Upload-Length": "99999999999999999999"}),
        request("HEAD", "/files/%00%00"),
        request("DELETE", "/files/" + "/" * 500),
        request("POST", "/files/", {"Upload-Length": "1", "Upload-Metadata": "\x00,\n,\r"}),
        request("PATCH", location, {"Content-Type": OFFSET_STREAM, "Upload-Offset": "9" * 18}),
    ]
    statuses = [(await app.handle(each)).status for each in hostile]
    assert statuses == [413, 400, 404, 404, 400, 409]
    assert await offset_of(app, location) == MAX_CHUNK_BYTES
    await app.handle(patch_request(location, MAX_CHUNK_BYTES, DATA[MAX_CHUNK_BYTES:]))
    assert store.status(upload_id_of(location)).finished


# -- metadata parser -------------------------------------------------------------------------

_KEYS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=","),
    min_size=1,
    max_size=20,
)


@given(st.dictionaries(_KEYS, st.binary(max_size=64), min_size=1, max_size=8))
def test_metadata_round_trips(pairs: dict[str, bytes]) -> None:
    header = ",".join(
        key if not value else f"{key} {base64.b64encode(value).decode()}"
        for key, value in pairs.items()
    )
    assert parse_upload_metadata(header) == pairs


@given(st.text(max_size=300))
def test_metadata_parser_only_ever_raises_metadata_error(header: str) -> None:
    with contextlib.suppress(MetadataError):
        parse_upload_metadata(header)


@given(st.text(max_size=100))
def test_checksum_parser_only_ever_raises_checksum_header_error(header: str) -> None:
    with contextlib.suppress(ChecksumHeaderError):
        parse_upload_checksum(header)
