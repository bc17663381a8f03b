"""Reading one request body into one append (the body of a PATCH or a creation-with-upload).

TusApp (backoffice/tus_app.py) hands the adapter's body, an AsyncIterator[bytes] of bounded
pieces, to `stream_into`, which writes each piece as it arrives and says how the body ended.
The adapters make a body's failures speak: TimeoutError for a peer that did not keep the pace
(backoffice/body_pace.py), RequestWithdrawn when the box's certificate was withdrawn while the
body streamed (an unpair: backoffice/in_flight.py), anything else for a broken stream.

Invariants: nothing is written past `limit_bytes` (one piece past it tells an overflow); a
checksum, when asked, is over exactly the bytes written; only the body's own failures become
outcomes, a write error raises.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from backoffice.tus_headers import UploadChecksum
from backoffice.upload_store import Appender
from common.faults import RemoteFault

log = logging.getLogger(__name__)


class RequestWithdrawn(RemoteFault):
    """Raised by a body when the certificate of the box sending it was withdrawn (unpaired or
    re-paired) while it streamed: the request is cut, none of its bytes kept."""


class BodyOutcome(enum.Enum):
    """How reading one body ended."""

    ENDED = enum.auto()  # the body ended within the limit
    OVERFLOWED = enum.auto()  # more bytes came than fit (Upload-Length or max_chunk_bytes)
    TIMED_OUT = enum.auto()  # the peer did not keep the pace
    BROKEN = enum.auto()  # the stream failed (reset, cut)
    WITHDRAWN = enum.auto()  # the box's certificate was withdrawn meanwhile


@dataclass(frozen=True, slots=True)
class Streamed:
    outcome: BodyOutcome
    digest: bytes | None = None  # of the whole body, when it ended and a checksum was asked


async def stream_into(
    body: AsyncIterator[bytes],
    appender: Appender,
    limit_bytes: int,
    checksum: UploadChecksum | None,
) -> Streamed:
    """Write body pieces until the body ends or `limit_bytes` are written; see the module
    docstring."""
    hasher = None if checksum is None else hashlib.new(checksum.algorithm, usedforsecurity=False)
    while True:
        try:
            piece = await anext(body)
        except StopAsyncIteration:
            break
        except TimeoutError:
            return Streamed(BodyOutcome.TIMED_OUT)
        except RequestWithdrawn:
            return Streamed(BodyOutcome.WITHDRAWN)
        except Exception as exc:  # whatever the adapter's stream raises: the peer's fault
            log.info("request body broke off error=%s", type(exc).__name__)
            return Streamed(BodyOutcome.BROKEN)
        room_bytes = limit_bytes - appender.written_bytes
        accepted = memoryview(piece)[:room_bytes]
        if accepted:
            appender.write(accepted)
            if hasher is not None:
                hasher.update(accepted)
        if len(piece) > room_bytes:
            return Streamed(BodyOutcome.OVERFLOWED)
    return Streamed(BodyOutcome.ENDED, None if hasher is None else hasher.digest())


def release_quietly(appender: Appender) -> None:
    """Release an append from a done-callback: a failure is logged, never raised there."""
    try:
        appender.release()
    except OSError:
        log.exception("releasing an append failed upload_id=%s", appender.upload_id)
