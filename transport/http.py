"""The HTTP vocabulary shared by the tus session (pure) and the transports (I/O).

The session never holds file bytes: a request names a slice of the upload file, and the transport
reads it (bounded by the session's chunk size) just before sending. That keeps the session pure and
lets one session drive HTTPS (aiohttp) and HTTP/3 (aioquic) alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BodySlice:
    """`length_bytes` bytes of the upload file starting at `offset_bytes`.

    `checksum_algorithm` (tus checksum extension, e.g. "sha256") asks the transport to send
    `Upload-Checksum: <algorithm> <base64 digest of the slice>`.
    """

    offset_bytes: int
    length_bytes: int
    checksum_algorithm: str | None = None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request the session wants sent. `target` is an absolute path ("/files/abc")."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: BodySlice | None = None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What came back. Header names are lower-case; the body is read whole but bounded
    (`MAX_RESPONSE_BODY_BYTES`): tus responses carry their facts in headers."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


MAX_RESPONSE_BODY_BYTES = 64 * 1024
"""A transport stops reading a response body beyond this and raises HostileServer (an endless
body must not exhaust the box's memory)."""


class Transport(Protocol):
    """A connection to one back office over one link, pinned before the first request byte."""

    @property
    def name(self) -> str:
        """ "https" or "h3" (for stats and the status page)."""
        ...

    async def request(self, request: HttpRequest, body: bytes | bytearray | None) -> HttpResponse:
        """Send `request` with `body` (the slice's bytes, already read) and return the response.

        Raises TransientNetworkError when the outcome is unknown (cut, reset, timeout): the
        session then asks the server for its offset. Raises PinMismatch / HostileServer as is.
        """
        ...

    async def aclose(self) -> None: ...
