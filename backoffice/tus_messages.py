"""What a tus adapter hands TusApp and gets back, and the completion hook's argument.

The adapters (backoffice/server.py for HTTPS, backoffice/h3_server.py for HTTP/3) build an
IncomingRequest from what they received and send back the OutgoingResponse; TusApp
(backoffice/tus_app.py, which re-exports these names) is the only thing between them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backoffice.upload_store import UploadInfo, UploadState


@dataclass(frozen=True)
class IncomingRequest:
    """One request as an adapter received it.

    `headers` has lower-case names (repeated headers joined with ", "); `client_id` is the CN of
    the verified mTLS client certificate. `body` yields the body as it streams, in pieces the
    adapter bounds; it raises TimeoutError when the peer does not keep the pace (answered 408),
    RequestWithdrawn when the box's certificate was withdrawn meanwhile (403) and any other
    Exception when the stream breaks (400). `withdrawn()` says whether the box's certificate was
    withdrawn since the request began: then no success and no attestation is answered.
    """

    method: str
    target: str
    headers: Mapping[str, str]
    client_id: str
    body: AsyncIterator[bytes]
    withdrawn: Callable[[], bool] = field(default=lambda: False)


@dataclass
class OutgoingResponse:
    """What to send back. Header names are as tus spells them; HEAD responses have no body."""

    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class CompletedUpload:
    """An upload this process just finished, for the `on_complete` hook."""

    info: UploadInfo
    stored_file: Path

    @property
    def verified(self) -> bool:
        """Whether the stored bytes match the SHA-256 the box declared."""
        return self.info.state is UploadState.COMPLETE


OnComplete = Callable[[CompletedUpload], Awaitable[None]]
"""A deployment's own step after an upload completes (ingest, notify). It runs before the box
gets its final answer, bounded by ON_COMPLETE_TIMEOUT_S; its failure is logged, never returned
to the box (the bytes are stored either way). At most once per completion: an upload finished
while the store repairs itself at start is logged but not hooked."""
