"""Requests for the tus server core (`TusApp.handle`, backoffice/tus_app.py) and the helpers its
tests share (tests/backoffice/tus_app/ and the tests of withdrawal, expiry and ownership): no HTTP,
the adapter is tested in test_server_https.py."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from backoffice.tus_app import IncomingRequest, OutgoingResponse, TusApp
from backoffice.upload_store import UploadStore

CLIENT = "MVB-TEST-0001"
OTHER_CLIENT = "MVB-TEST-0002"
MAX_UPLOAD_BYTES = 1000
MAX_CHUNK_BYTES = 400
DATA = bytes(range(256)) * 3  # 768 bytes
DATA_SHA256 = hashlib.sha256(DATA).hexdigest()
OFFSET_STREAM = "application/offset+octet-stream"


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
