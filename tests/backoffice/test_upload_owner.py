"""Evidence keyed by its uploader, and each box's creations bounded (TusApp on a real store).

A file id belongs to the first box that created an upload naming it: another box's claim is
refused before anything is written, logged at ERROR and recorded as an incident, and no
attestation ever answers it. Creations reserve their length against the disk and the box's
share; the reservation ends with the upload (completion, termination, expiry). A box over its
creation rate is told to slow down. The real server, with real certificates, is in
test_serve_attack.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from backoffice.incidents import IncidentLog
from backoffice.rate_limit import ClientRateLimit
from backoffice.tus_app import STORED_SHA256_HEADER, IncomingRequest, TusApp
from backoffice.upload_expiry import Expiration
from backoffice.upload_store import UploadStore
from tests.backoffice.tus_requests import (
    DATA,
    FreeSpace,
    create,
    head,
    metadata,
    patch_request,
    request,
    upload_dirs,
    upload_id_of,
)

BOX_A = "MVB-THIEF-A"
BOX_B = "MVB-HONEST-B"
A_BYTES = DATA[:300]
B_BYTES = DATA[300:600]


def meta_for(data: bytes, file_id: str = "file-B-0001") -> str:
    return metadata(file_id, hashlib.sha256(data).hexdigest())


def creation(length: int, meta: str, client_id: str) -> IncomingRequest:
    return request(
        "POST",
        "/files/",
        {"Upload-Length": str(length), "Upload-Metadata": meta},
        client_id=client_id,
    )


@pytest.fixture
def incidents(tmp_path: Path) -> IncidentLog:
    return IncidentLog(tmp_path / "incidents.jsonl")


@pytest.fixture
def app(store: UploadStore, incidents: IncidentLog) -> TusApp:
    return TusApp(store, max_upload_bytes=1000, max_chunk_bytes=1000, incidents=incidents)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UploadStore]:
    with UploadStore.open(tmp_path / "store", reserve_bytes=0) as opened:
        yield opened


async def test_a_second_box_claiming_a_file_id_is_refused_alarmed_and_never_attested(
    app: TusApp,
    store: UploadStore,
    incidents: IncidentLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The thief knows box B's next file id and gets there first.
    thief = await create(app, 300, meta=meta_for(A_BYTES), client_id=BOX_A)
    done = await app.handle(patch_request(thief, 0, A_BYTES, client_id=BOX_A))
    assert done.headers[STORED_SHA256_HEADER] == hashlib.sha256(A_BYTES).hexdigest()
    uploads_before = upload_dirs(store)

    refused = await app.handle(creation(300, meta_for(B_BYTES), BOX_B))

    assert refused.status == 409
    assert STORED_SHA256_HEADER not in refused.headers
    assert BOX_A.encode() not in refused.body  # the owner is for the admin, not the asker
    assert upload_dirs(store) == uploads_before  # nothing of B's was written
    assert [r.levelname for r in caplog.records if "file_id_claimed" in r.getMessage()] == ["ERROR"]
    [incident] = incidents.entries()
    assert incident["kind"] == "file_id_claimed"
    assert (incident["client_id"], incident["owner"]) == (BOX_B, BOX_A)
    assert incident["file_id"] == "file-B-0001"
    # B never hears of A's upload, and A keeps only what A sent.
    assert (await head(app, thief, client_id=BOX_B)).status == 404
    assert (store.root / "complete" / "file-B-0001.mvbe").read_bytes() == A_BYTES


async def test_the_owner_claims_at_creation_so_an_unfinished_upload_already_binds(
    app: TusApp, store: UploadStore
) -> None:
    honest = await create(app, 300, meta=meta_for(B_BYTES), client_id=BOX_B)
    await app.handle(patch_request(honest, 0, B_BYTES[:100], client_id=BOX_B))

    refused = await app.handle(creation(300, meta_for(A_BYTES), BOX_A))
    assert refused.status == 409

    # The owner may create under its own file id again (a lost creation answer) and finish.
    again = await create(app, 300, meta=meta_for(B_BYTES), client_id=BOX_B)
    done = await app.handle(patch_request(again, 0, B_BYTES, client_id=BOX_B))
    assert done.headers[STORED_SHA256_HEADER] == hashlib.sha256(B_BYTES).hexdigest()
    assert (store.root / "complete" / "file-B-0001.mvbe").read_bytes() == B_BYTES


async def test_claims_outlive_the_upload_and_the_server(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with UploadStore.open(root, reserve_bytes=0) as store:
        app = TusApp(store, max_upload_bytes=1000, max_chunk_bytes=1000)
        location = await create(app, 300, meta=meta_for(B_BYTES), client_id=BOX_B)
        assert (await app.handle(request("DELETE", location, client_id=BOX_B))).status == 204
    with UploadStore.open(root, reserve_bytes=0) as store:
        app = TusApp(store, max_upload_bytes=1000, max_chunk_bytes=1000)
        refused = await app.handle(creation(300, meta_for(A_BYTES), BOX_A))
        assert refused.status == 409


async def test_a_store_from_before_claims_gives_each_file_id_to_its_earliest_uploader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    with UploadStore.open(root, reserve_bytes=0) as store:
        app = TusApp(store, max_upload_bytes=1000, max_chunk_bytes=1000)
        first = upload_id_of(await create(app, 300, meta=meta_for(B_BYTES), client_id=BOX_B))
        other = upload_id_of(await create(app, 300, meta=meta_for(A_BYTES, "x"), client_id=BOX_A))
    # As an older version left it: no claims, and (the old attack) A's upload under B's id.
    for claim_file in (root / "claims").iterdir():
        claim_file.unlink()
    info_path = root / "uploads" / other / "info.json"
    info = json.loads(info_path.read_text())
    info.update(file_id="file-B-0001", created_at="2999-01-01T00:00:00+00:00")
    info_path.write_text(json.dumps(info))

    with UploadStore.open(root, reserve_bytes=0) as store:
        claim = store.claims.owner("file-B-0001")
        assert claim is not None
        assert (claim.client_id, claim.upload_id) == (BOX_B, first)
        assert any(
            r.levelname == "ERROR" and f"upload_id={other}" in r.getMessage()
            for r in caplog.records
        )


async def test_a_creation_reserves_its_length_until_the_upload_ends(tmp_path: Path) -> None:
    free = FreeSpace(1_000)
    with UploadStore.open(tmp_path / "s", reserve_bytes=100, free_bytes=free) as store:
        app = TusApp(store, max_upload_bytes=1000, max_chunk_bytes=1000)
        first = await create(app, 600, meta=meta_for(DATA[:600], "f1"), client_id=BOX_A)
        # 1000 free - 600 promised - 400 < the 100-byte reserve: the disk cannot hold both.
        refused = await app.handle(creation(400, meta_for(DATA[:400], "f2"), BOX_B))
        assert refused.status == 507
        assert refused.headers["Retry-After"] == "60"
        assert (await app.handle(creation(300, meta_for(DATA[:300], "f3"), BOX_B))).status == 201
        assert store.reservations.outstanding_bytes() == 900
        await app.handle(patch_request(first, 0, DATA[:200], client_id=BOX_A))
        assert store.reservations.outstanding_bytes() == 700  # 200 arrived, 400 still to come
        assert (await app.handle(request("DELETE", first, client_id=BOX_A))).status == 204
        assert store.reservations.outstanding_bytes() == 300  # termination releases


async def test_completion_and_expiry_release_the_reservation(tmp_path: Path) -> None:
    with UploadStore.open(tmp_path / "s", reserve_bytes=0) as store:
        app = TusApp(store, max_upload_bytes=1000, max_chunk_bytes=1000)
        done = await create(app, 300, meta=meta_for(A_BYTES, "f1"), client_id=BOX_A)
        idle = await create(app, 300, meta=meta_for(A_BYTES, "f2"), client_id=BOX_A)
        assert store.reservations.client_bytes(BOX_A) == 600
        await app.handle(patch_request(done, 0, A_BYTES, client_id=BOX_A))
        assert store.reservations.client_bytes(BOX_A) == 300
        expired = Expiration(store, 1.0, clock_s=lambda: 4e9).expire_uploads()
        assert expired == [upload_id_of(idle)]
        assert store.reservations.client_bytes(BOX_A) == 0
        assert store.reservations.outstanding_bytes() == 0


async def test_one_box_cannot_book_more_than_its_share(tmp_path: Path) -> None:
    with UploadStore.open(tmp_path / "s", reserve_bytes=0) as store:
        app = TusApp(
            store, max_upload_bytes=1000, max_chunk_bytes=1000, max_reserved_bytes_per_client=1000
        )
        first = await create(app, 600, meta=meta_for(DATA[:600], "a1"), client_id=BOX_A)
        over = await app.handle(creation(600, meta_for(DATA[:600], "a2"), BOX_A))
        assert over.status == 507
        assert b"share" in over.body
        assert over.headers["Retry-After"] == "60"
        # Another box has a share of its own.
        await create(app, 600, meta=meta_for(DATA[:600], "b1"), client_id=BOX_B)
        await app.handle(patch_request(first, 0, DATA[:600], client_id=BOX_A))
        await create(app, 600, meta=meta_for(DATA[:600], "a2"), client_id=BOX_A)


async def test_reservations_are_rebuilt_when_the_store_opens(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with UploadStore.open(root, reserve_bytes=0) as store:
        app = TusApp(store, max_upload_bytes=1000, max_chunk_bytes=1000)
        location = await create(app, 600, meta=meta_for(DATA[:600], "f1"), client_id=BOX_A)
        await app.handle(patch_request(location, 0, DATA[:100], client_id=BOX_A))
    with UploadStore.open(root, reserve_bytes=0) as store:
        assert store.reservations.outstanding_bytes() == 500
        assert store.reservations.client_bytes(BOX_A) == 600


async def test_a_box_creating_too_fast_is_told_to_slow_down_and_others_are_not(
    store: UploadStore,
) -> None:
    app = TusApp(
        store,
        max_upload_bytes=1000,
        max_chunk_bytes=1000,
        creation_limit=ClientRateLimit(rate_per_s=1 / 60, burst=3),
    )
    answers = [
        await app.handle(creation(0, meta_for(b"", f"e{number}"), BOX_A)) for number in range(5)
    ]
    assert [answer.status for answer in answers] == [201, 201, 201, 429, 429]
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert len(upload_dirs(store)) == 3
    assert (await app.handle(creation(0, meta_for(b"", "b"), BOX_B))).status == 201
