"""The tus session's state table (the h11 `_state.py` idea): where a session can be, the events
its decisions produce, and the one table that says where each event leads. Pure data.

Invariants:
- A session's state moves only through TRANSITIONS; an event with no entry for the current
  state is a programming error (transport/tus_session.py raises SessionMisuse).
- DONE and TERMINATED name no request; DONE is left only towards TERMINATE or TERMINATED, and
  TERMINATED is never left.
- Every state of ACTIVE_STATES and DONE can be given up (TERMINATE_ASKED, TERMINATE_SKIPPED).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final


class SessionState(enum.Enum):
    """Where the session is; each state but DONE and TERMINATED names its next request."""

    DISCOVER = "discover"  # OPTIONS the endpoint
    CREATE = "create"  # POST the endpoint (with the first chunk if creation-with-upload)
    QUERY_OFFSET = "query_offset"  # HEAD the upload
    UPLOAD = "upload"  # PATCH the next chunk
    DONE = "done"  # the server confirmed every byte
    TERMINATE = "terminate"  # DELETE the upload
    TERMINATED = "terminated"  # given up, server copy deleted if the server could


class SessionEvent(enum.Enum):
    """What an answer (or the caller) means for the session: the input of TRANSITIONS."""

    DISCOVERED_NEW = enum.auto()  # capabilities known, no upload URL yet
    DISCOVERED_RESUME = enum.auto()  # capabilities known, an upload URL to resume
    CREATED = enum.auto()  # 201 with a Location, bytes remain
    OFFSET_KNOWN = enum.auto()  # HEAD told the offset, bytes remain
    CHUNK_ACCEPTED = enum.auto()  # 204 to PATCH, bytes remain
    CHUNK_DAMAGED = enum.auto()  # 460: resend the same chunk
    CHUNK_TOO_LARGE = enum.auto()  # 413 to a chunk that can be halved
    CHUNK_TOO_LARGE_CREATED = enum.auto()  # the same to a POST that named its upload anyway
    OFFSET_CONFLICT = enum.auto()  # 409: ask for the offset
    UPLOAD_GONE = enum.auto()  # 404/410 on the upload: create it again
    COMPLETED = enum.auto()  # the server holds every byte
    RESYNC = enum.auto()  # the last request failed or its outcome is unknown
    TERMINATE_ASKED = enum.auto()
    TERMINATE_SKIPPED = enum.auto()  # nothing to delete, or the server cannot delete
    DELETED = enum.auto()


_S = SessionState
_E = SessionEvent
ACTIVE_STATES: Final = (_S.DISCOVER, _S.CREATE, _S.QUERY_OFFSET, _S.UPLOAD)
"""The states of an upload under way: the ones the answered-rounds guard watches."""
TRANSITIONS: Final[Mapping[tuple[SessionState, SessionEvent], SessionState]] = MappingProxyType(
    {
        (_S.DISCOVER, _E.DISCOVERED_NEW): _S.CREATE,
        (_S.DISCOVER, _E.DISCOVERED_RESUME): _S.QUERY_OFFSET,
        (_S.DISCOVER, _E.RESYNC): _S.DISCOVER,
        (_S.CREATE, _E.CREATED): _S.UPLOAD,
        (_S.CREATE, _E.COMPLETED): _S.DONE,
        # A 413 to a POST created nothing (the reference back office refuses before creating):
        # create again with half the body. If the answer named an upload, resume that one.
        (_S.CREATE, _E.CHUNK_TOO_LARGE): _S.CREATE,
        (_S.CREATE, _E.CHUNK_TOO_LARGE_CREATED): _S.QUERY_OFFSET,
        # A lost POST created an upload we cannot name: create another (the orphan expires).
        (_S.CREATE, _E.RESYNC): _S.CREATE,
        (_S.QUERY_OFFSET, _E.OFFSET_KNOWN): _S.UPLOAD,
        (_S.QUERY_OFFSET, _E.COMPLETED): _S.DONE,
        (_S.QUERY_OFFSET, _E.UPLOAD_GONE): _S.CREATE,
        (_S.QUERY_OFFSET, _E.RESYNC): _S.QUERY_OFFSET,
        (_S.UPLOAD, _E.CHUNK_ACCEPTED): _S.UPLOAD,
        (_S.UPLOAD, _E.CHUNK_DAMAGED): _S.UPLOAD,
        (_S.UPLOAD, _E.COMPLETED): _S.DONE,
        (_S.UPLOAD, _E.OFFSET_CONFLICT): _S.QUERY_OFFSET,
        # A server may have kept part of a body it called too large: ask before the next byte.
        (_S.UPLOAD, _E.CHUNK_TOO_LARGE): _S.QUERY_OFFSET,
        (_S.UPLOAD, _E.UPLOAD_GONE): _S.CREATE,
        # Whether the server applied any of a failed PATCH is unknown: ask before resending.
        (_S.UPLOAD, _E.RESYNC): _S.QUERY_OFFSET,
        (_S.TERMINATE, _E.DELETED): _S.TERMINATED,
        (_S.TERMINATE, _E.RESYNC): _S.TERMINATE,  # DELETE is idempotent
        **{(s, _E.TERMINATE_ASKED): _S.TERMINATE for s in (*ACTIVE_STATES, _S.DONE)},
        **{(s, _E.TERMINATE_SKIPPED): _S.TERMINATED for s in (*ACTIVE_STATES, _S.DONE)},
    }
)
