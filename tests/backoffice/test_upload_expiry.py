"""tus `expiration` in the reference back office (backoffice/upload_expiry.py), through
`TusApp.handle` on a real UploadStore. Idleness is the data file's modification time: the tests
set it back with os.utime instead of waiting, and give the Expiration their own clock."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from backoffice.tus_app import TusApp
from backoffice.upload_expiry import Expiration, http_date, sweep_interval_s
from backoffice.upload_store import UploadStore
from tests.backoffice.tus_requests import (
    DATA,
    MAX_CHUNK_BYTES,
    MAX_UPLOAD_BYTES,
    create,
    head,
    metadata,
    patch_request,
    request,
    upload_dirs,
    upload_id_of,
)

EXPIRY_S = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now_s = time.time()

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UploadStore]:
    with UploadStore.open(tmp_path / "store", reserve_bytes=0) as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(store: UploadStore, clock: Clock) -> TusApp:
    app = TusApp(store, max_upload_bytes=MAX_UPLOAD_BYTES, max_chunk_bytes=MAX_CHUNK_BYTES)
    app.expiration = Expiration(store, EXPIRY_S, clock)
    return app


def idle_for(store: UploadStore, location: str, seconds: float) -> None:
    """The upload last received a byte `seconds` ago."""
    data = store.root / "uploads" / upload_id_of(location) / "data"
    at_s = time.time() - seconds
    os.utime(data, (at_s, at_s))


def expires_header(store: UploadStore, location: str) -> str:
    return http_date(store.last_activity_s(upload_id_of(location)) + EXPIRY_S)


async def test_every_answer_about_an_unfinished_upload_says_when_it_expires(
    app: TusApp, store: UploadStore
) -> None:
    created = await app.handle(
        request("POST", "/files/", {"Upload-Length": str(len(DATA)), "Upload-Metadata": metadata()})
    )
    location = created.headers["Location"]
    assert created.headers["Upload-Expires"] == expires_header(store, location)

    patched = await app.handle(patch_request(location, 0, DATA[:100]))
    assert patched.status == 204
    assert patched.headers["Upload-Expires"] == expires_header(store, location)
    assert (await head(app, location)).headers["Upload-Expires"] == expires_header(store, location)
    expires = parsedate_to_datetime(patched.headers["Upload-Expires"]).timestamp()
    assert abs(expires - (time.time() + EXPIRY_S)) < 60

    finished = await app.handle(patch_request(location, 100, DATA[100:400]))
    finished = await app.handle(patch_request(location, 400, DATA[400:]))
    assert finished.status == 204
    assert "Upload-Expires" not in finished.headers  # finished: evidence, it never expires
    assert "Upload-Expires" not in (await head(app, location)).headers


async def test_an_idle_upload_expires_and_is_gone(app: TusApp, store: UploadStore) -> None:
    location = await create(app)
    await app.handle(patch_request(location, 0, DATA[:10]))
    idle_for(store, location, EXPIRY_S + 1)

    response = await head(app, location)

    assert response.status == 410
    assert upload_dirs(store) == []
    assert (await head(app, location)).status == 404


async def test_an_upload_in_use_does_not_expire(app: TusApp, store: UploadStore) -> None:
    location = await create(app)
    idle_for(store, location, EXPIRY_S - 60)

    assert (await app.handle(patch_request(location, 0, DATA[:10]))).status == 204
    assert app.expiration is not None
    assert app.expiration.expire_uploads() == []  # the PATCH was activity: a new hour
    assert (await head(app, location)).status == 200


async def test_the_sweep_removes_only_idle_unfinished_uploads(
    app: TusApp, store: UploadStore, clock: Clock
) -> None:
    idle = await create(app, meta=metadata(file_id="idle"))
    fresh = await create(app, meta=metadata(file_id="fresh"))
    finished = await create(
        app, 300, meta=metadata(file_id="done", sha256=hashlib.sha256(DATA[:300]).hexdigest())
    )
    assert (await app.handle(patch_request(finished, 0, DATA[:300]))).status == 204
    idle_for(store, idle, EXPIRY_S + 1)
    busy = store.begin_append(upload_id_of(fresh), 0, all_or_nothing=False)
    clock.now_s += 2 * EXPIRY_S  # even the fresh one is past its time, but it is busy
    assert app.expiration is not None

    assert app.expiration.expire_uploads() == [upload_id_of(idle)]
    busy.release()
    assert (await head(app, fresh)).status == 410  # once free, it goes too
    assert (await head(app, finished)).status == 200
    assert (store.root / "complete" / "done.mvbe").read_bytes() == DATA[:300]


async def test_without_expiration_nothing_expires_nor_is_offered(store: UploadStore) -> None:
    app = TusApp(
        store,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_chunk_bytes=MAX_CHUNK_BYTES,
        upload_expiry_s=None,
    )
    location = await create(app)
    idle_for(store, location, 10 * 365 * 86_400)

    options = await app.handle(request("OPTIONS", "/files/", tus=False))
    assert "expiration" not in options.headers["Tus-Extension"].split(",")
    answer = await head(app, location)
    assert answer.status == 200
    assert "Upload-Expires" not in answer.headers


def test_the_sweep_runs_a_tenth_of_the_expiry_at_most_hourly() -> None:
    assert sweep_interval_s(600.0) == 60.0
    assert sweep_interval_s(7 * 86_400.0) == 3600.0
    assert sweep_interval_s(0.5) == 1.0


def test_upload_expires_is_an_http_date() -> None:
    assert http_date(0.0) == "Thu, 01 Jan 1970 00:00:00 GMT"
