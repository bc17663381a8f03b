"""The tus server core: ownership, termination, routing and bounds; the completion hook; the
store (disk space, duplicates, restart, repair) and hostile requests. Fixtures: conftest.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from backoffice.tus_app import STORED_SHA256_HEADER, CompletedUpload, TusApp
from backoffice.upload_store import StoreLocked, UploadState, UploadStore
from tests.backoffice.tus_requests import (
    DATA,
    DATA_SHA256,
    MAX_CHUNK_BYTES,
    MAX_UPLOAD_BYTES,
    OFFSET_STREAM,
    OTHER_CLIENT,
    FreeSpace,
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
