"""The tus server core: PATCH (completion and attestation, bad patches, body limits,
checksums, broken and cancelled bodies, concurrent patches). Fixtures: conftest.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator

import pytest

from backoffice.tus_app import STORED_SHA256_HEADER, TusApp
from backoffice.upload_store import UploadStore
from tests.backoffice.tus_requests import (
    CLIENT,
    DATA,
    DATA_SHA256,
    MAX_CHUNK_BYTES,
    OFFSET_STREAM,
    breaking_body,
    checksum,
    create,
    head,
    metadata,
    offset_of,
    patch_request,
    pieces,
    request,
    upload_id_of,
)

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
