"""A request whose box is unpaired while it runs is cut: 403, none of its bytes kept, no success.

TusApp on a real store; the adapters make the body raise RequestWithdrawn and answer
`withdrawn()` (backoffice/in_flight.py). The real server is in test_serve_attack.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backoffice.tus_app import STORED_SHA256_HEADER, IncomingRequest, RequestWithdrawn, TusApp
from backoffice.upload_store import UploadStore
from tests.backoffice.tus_requests import (
    CLIENT,
    DATA,
    OFFSET_STREAM,
    create,
    metadata,
    offset_of,
    patch_request,
)

SMALL = DATA[:300]
SMALL_SHA256 = hashlib.sha256(SMALL).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UploadStore]:
    with UploadStore.open(tmp_path / "store", reserve_bytes=0) as opened:
        yield opened


@pytest.fixture
def app(store: UploadStore) -> TusApp:
    return TusApp(store, max_upload_bytes=1000, max_chunk_bytes=1000)


def patch_with(location: str, body: AsyncIterator[bytes], withdrawn: list[bool]) -> IncomingRequest:
    return IncomingRequest(
        "PATCH",
        location,
        {"tus-resumable": "1.0.0", "content-type": OFFSET_STREAM, "upload-offset": "0"},
        CLIENT,
        body,
        withdrawn=lambda: withdrawn[0],
    )


async def test_a_body_cut_by_an_unpair_is_refused_and_discarded(app: TusApp) -> None:
    location = await create(app, 300, meta=metadata(sha256=SMALL_SHA256))
    withdrawn = [False]

    async def body() -> AsyncIterator[bytes]:
        yield SMALL[:100]
        withdrawn[0] = True  # what the adapter does when the ledger denies the serial
        raise RequestWithdrawn("unpaired")

    answer = await app.handle(patch_with(location, body(), withdrawn))

    assert answer.status == 403
    assert STORED_SHA256_HEADER not in answer.headers
    assert "Upload-Offset" not in answer.headers
    assert await offset_of(app, location) == 0  # no checksum, and still nothing kept


async def test_an_unpair_after_the_last_byte_still_gets_no_success(
    app: TusApp, store: UploadStore
) -> None:
    location = await create(app, 300, meta=metadata(sha256=SMALL_SHA256))
    withdrawn = [False]

    async def body() -> AsyncIterator[bytes]:
        yield SMALL
        withdrawn[0] = True  # every byte came; the unpair lands before the answer

    answer = await app.handle(patch_with(location, body(), withdrawn))

    assert answer.status == 403
    assert STORED_SHA256_HEADER not in answer.headers
    assert await offset_of(app, location) == 0
    assert not (store.root / "complete" / "file-0001.mvbe").exists()


async def test_an_unpair_while_the_upload_is_settled_gets_no_attestation(
    app: TusApp, store: UploadStore
) -> None:
    location = await create(app, 300, meta=metadata(sha256=SMALL_SHA256))
    request = patch_request(location, 0, SMALL)
    checks = 0

    def withdrawn() -> bool:
        """Not yet when the body ended (first check), withdrawn once the bytes were settled."""
        nonlocal checks
        checks += 1
        return checks > 1

    cut = IncomingRequest(
        request.method, request.target, request.headers, CLIENT, request.body, withdrawn
    )
    answer = await app.handle(cut)

    assert answer.status == 403
    assert STORED_SHA256_HEADER not in answer.headers
    # The bytes had arrived whole while the box was paired: they are stored, but not attested.
    assert (store.root / "complete" / "file-0001.mvbe").read_bytes() == SMALL


async def test_a_request_that_is_not_withdrawn_is_answered_as_always(app: TusApp) -> None:
    location = await create(app, 300, meta=metadata(sha256=SMALL_SHA256))
    never = [False]

    async def body() -> AsyncIterator[bytes]:
        yield SMALL[:150]
        await asyncio.sleep(0)
        yield SMALL[150:]

    answer = await app.handle(patch_with(location, body(), never))
    assert answer.status == 204
    assert answer.headers[STORED_SHA256_HEADER] == SMALL_SHA256
