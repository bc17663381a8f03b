"""The tus server core: discovery, the protocol version and creation (with and without a
first chunk). Fixtures: conftest.py."""

from __future__ import annotations

import hashlib

import pytest

from backoffice.tus_app import STORED_SHA256_HEADER, TusApp
from backoffice.upload_store import UploadStore
from tests.backoffice.tus_requests import (
    DATA,
    DATA_SHA256,
    MAX_CHUNK_BYTES,
    MAX_UPLOAD_BYTES,
    OFFSET_STREAM,
    b64,
    checksum,
    create,
    head,
    metadata,
    offset_of,
    patch_request,
    pieces,
    request,
    upload_dirs,
    upload_id_of,
)

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
