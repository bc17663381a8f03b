"""The tus 1.0.0 client session: a pure state machine (no I/O, no clock, no asyncio).

Shaped like h11 and aioquic's QuicConnection: the caller asks `next_request()` for the next
HttpRequest, has a transport send it, and feeds back `receive(response)` or `connection_lost()`.
The session never holds file bytes: a request names a BodySlice and the transport reads it (and
adds Upload-Checksum when the slice asks for one). docs/tus-profile.md is the profile this module
implements; where they disagree, the document is right.

States move only through `TRANSITIONS` (an explicit table, like h11's _state.py, in
transport/tus_states.py); an event with no entry for the current state is a programming error
(SessionMisuse). Beside it: the messages (transport/tus_messages.py: UploadSpec,
ServerCapabilities, UploadOutcome), the header vocabulary and parsers (transport/tus_headers.py)
and what a status means without a specific rule (transport/tus_statuses.py).

Invariants:
- At most one request is in flight. `next_request()` refuses a second one.
- After a lost connection or any error answer, the next request asks the server where it stands
  (HEAD, or POST when no upload URL is known) before another body byte is sent: so at most the
  one in-flight chunk is ever sent twice per lost connection.
- 0 <= offset_bytes <= spec.size_bytes, and offset_bytes only ever comes from the server.
- upload_url is None in CREATE and an absolute path in QUERY_OFFSET, UPLOAD and TERMINATE: the box
  talks only to its pinned back office, never to another origin named by a Location header.
- Every loop a server could drive is bounded: re-creations, checksum resends, offset regressions
  and answered rounds without progress each raise HostileServer past their bound, and keep raising
  (the counters are not reset by the error).
- outcome is set once, when the server confirms offset == size, and never changes after.
- No chunk is longer than the caller's chunk size, the server's advertised maximum
  (`Mvb-Max-Chunk-Size`) or the limit a 413 taught. A 413 to a chunk longer than
  `min_chunk_bytes` halves that limit (never below `min_chunk_bytes`) and the upload goes on;
  halvings are bounded by log2(chunk / min_chunk), so the answered-rounds guard restarts after
  each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from common.faults import MisuseFault
from transport.errors import HostileServer, ServerError, TransportError, UploadRejected
from transport.http import BodySlice, HttpRequest, HttpResponse
from transport.tus_headers import (
    OFFSET_CONTENT_TYPE,
    RESUMABLE,
    attested_sha256,
    encode_upload_metadata,
    is_absolute_path,
    optional_decimal,
    required_decimal,
    upload_path,
)
from transport.tus_messages import ServerCapabilities, UploadOutcome, UploadSpec
from transport.tus_states import ACTIVE_STATES, TRANSITIONS, SessionEvent, SessionState
from transport.tus_statuses import check_termination, refusal_error

__all__ = [
    "MAX_CHECKSUM_RESENDS",
    "MAX_CHUNK_BYTES",
    "MAX_OFFSET_REGRESSIONS",
    "MAX_RECREATIONS",
    "MAX_ROUNDS_WITHOUT_PROGRESS",
    "SessionMisuse",
    "TusSession",
    # Re-exported only for tests/transport/test_slow_link.py (another lane's file at the split):
    # import them from transport/tus_messages.py.
    "UploadOutcome",
    "UploadSpec",
]

MAX_RECREATIONS: Final = 3
"""Uploads the session re-creates after 404/410 before it calls the server hostile."""
MAX_CHECKSUM_RESENDS: Final = 3
"""Times one chunk is resent after 460 (checksum mismatch) before the server is called hostile."""
MAX_OFFSET_REGRESSIONS: Final = 3
"""Times a HEAD may report less than the server had confirmed (it lost data) per session."""
MAX_ROUNDS_WITHOUT_PROGRESS: Final = 8
"""Answered rounds in a row without the offset rising before the server is called hostile."""
MAX_CHUNK_BYTES: Final = 64 * 1024 * 1024
"""The transport holds one chunk in memory; this caps what a caller may ask for."""


class SessionMisuse(RuntimeError, MisuseFault):
    """The caller broke the session's calling contract (a programming error, not a server fault)."""


_S = SessionState
_E = SessionEvent


class TusSession:
    """One file's upload to one tus endpoint, driven by the caller (see the module docstring).

    Every exception from `receive()` leaves the session usable: it has already moved to the
    state whose next request re-asks the server, so the caller may back off and go on.
    """

    def __init__(
        self,
        spec: UploadSpec,
        *,
        chunk_bytes: int,
        capabilities: ServerCapabilities | None = None,
        upload_url: str | None = None,
        min_chunk_bytes: int | None = None,
    ) -> None:
        """`capabilities` (cached from an earlier OPTIONS) skips discovery; `upload_url` (kept
        across a restart) resumes that upload. `min_chunk_bytes` (default: `chunk_bytes`, so no
        halving) is the floor a 413 halves the chunk down to. ValueError on bad arguments; with
        capabilities, HostileServer / UploadRejected as if they had just been received."""
        _check_chunk_bytes("chunk_bytes", chunk_bytes)
        if min_chunk_bytes is not None:
            _check_chunk_bytes("min_chunk_bytes", min_chunk_bytes)
        if upload_url is not None and not is_absolute_path(upload_url):
            raise ValueError("upload_url must be an absolute path on the back office")
        self._spec = spec
        self._chunk_bytes = chunk_bytes
        self._min_chunk_bytes = chunk_bytes if min_chunk_bytes is None else min_chunk_bytes
        self._refused_limit_bytes: int | None = None  # the largest chunk after the last 413
        self._capabilities: ServerCapabilities | None = None
        self._upload_url = upload_url
        self._offset_bytes = 0
        self._outcome: UploadOutcome | None = None
        self._body_bytes_sent = 0
        self._in_flight: HttpRequest | None = None
        self._recreations = 0
        self._checksum_mismatches = 0  # since the offset last rose
        self._offset_regressions = 0
        self._rounds_without_progress = 0
        self._state = SessionState.DISCOVER
        if capabilities is not None:
            self._adopt(capabilities)
            self._apply(self._discovered_event())

    # -- what the caller reads ---------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def offset_bytes(self) -> int:
        """The offset the server last confirmed (or the one it will next be asked for)."""
        return self._offset_bytes

    @property
    def upload_url(self) -> str | None:
        """The upload's path on the back office; keep it to resume after a restart."""
        return self._upload_url

    @property
    def capabilities(self) -> ServerCapabilities | None:
        return self._capabilities

    @property
    def outcome(self) -> UploadOutcome | None:
        return self._outcome

    @property
    def body_bytes_sent(self) -> int:
        """Body bytes of every request handed out so far (resends included)."""
        return self._body_bytes_sent

    @property
    def chunk_bytes(self) -> int:
        """The longest body the next request may carry: the caller's chunk size, bounded by the
        server's advertised maximum and by what a 413 taught."""
        limit = self.chunk_limit_bytes
        return self._chunk_bytes if limit is None else min(self._chunk_bytes, limit)

    @property
    def chunk_limit_bytes(self) -> int | None:
        """The server's chunk limit as far as known (advertised or taught by a 413), or None."""
        limits = [self._refused_limit_bytes]
        if self._capabilities is not None:
            limits.append(self._capabilities.max_chunk_bytes)
        known = [limit for limit in limits if limit is not None]
        return min(known) if known else None

    @property
    def in_flight(self) -> HttpRequest | None:
        """The request handed out and not yet answered or lost."""
        return self._in_flight

    def set_chunk_bytes(self, chunk_bytes: int) -> None:
        """The caller's chunk size from the next request on (its goodput policy may change it
        between requests); the server's limits still apply. ValueError outside [1, 64 MiB]."""
        _check_chunk_bytes("chunk_bytes", chunk_bytes)
        self._chunk_bytes = chunk_bytes

    # -- what the caller does ----------------------------------------------------------------

    def next_request(self) -> HttpRequest | None:
        """The request to send now; None once DONE or TERMINATED."""
        if self._in_flight is not None:
            raise SessionMisuse("a request is already in flight: receive() or connection_lost()")
        request = self._build_request()
        if request is not None:
            self._in_flight = request
            if request.body is not None:
                self._body_bytes_sent += request.body.length_bytes
        return request

    def receive(self, response: HttpResponse) -> None:
        """Feed the answer to the in-flight request. Raises ServerError (retry after backoff),
        HostileServer or UploadRejected; the session stays usable either way."""
        request = self._take_in_flight()
        offset_before = self._offset_bytes
        try:
            event = self._response_handler()(request, response)
        except ServerError:
            # A server that is down is not a server that loops us: the caller's backoff bounds it.
            self._rounds_without_progress = 0
            self._apply(_E.RESYNC)
            raise
        except TransportError:
            self._rounds_without_progress += 1
            self._apply(_E.RESYNC)
            raise
        self._apply(event)
        self._guard_progress(offset_before)

    def connection_lost(self) -> None:
        """The in-flight request's outcome is unknown (cut, reset, timeout)."""
        self._take_in_flight()
        # A flapping link is not the server's fault; repeated cuts are bounded by the caller.
        self._rounds_without_progress = 0
        self._apply(_E.RESYNC)

    def terminate(self) -> None:
        """Give up this upload: DELETE it next if the server offers `termination` (else the
        session ends at once and the server's expiration cleans up). Idempotent."""
        if self._in_flight is not None:
            raise SessionMisuse("terminate() between requests, not while one is in flight")
        if self._state in (_S.TERMINATE, _S.TERMINATED):
            return
        deletable = (
            self._upload_url is not None
            and self._capabilities is not None
            and self._capabilities.offers("termination")
        )
        self._apply(_E.TERMINATE_ASKED if deletable else _E.TERMINATE_SKIPPED)

    # -- the state machine -------------------------------------------------------------------

    def _apply(self, event: SessionEvent) -> None:
        target = TRANSITIONS.get((self._state, event))
        if target is None:
            raise SessionMisuse(f"no transition from {self._state.name} on {event.name}")
        self._state = target

    def _take_in_flight(self) -> HttpRequest:
        request = self._in_flight
        if request is None:
            raise SessionMisuse("no request in flight")
        self._in_flight = None
        return request

    def _guard_progress(self, offset_before: int) -> None:
        if self._offset_bytes > offset_before:
            self._rounds_without_progress = 0
            return
        self._rounds_without_progress += 1
        if (
            self._state in ACTIVE_STATES
            and self._rounds_without_progress >= MAX_ROUNDS_WITHOUT_PROGRESS
        ):
            raise HostileServer(
                f"{self._rounds_without_progress} answered rounds in a row without the upload "
                f"offset rising (stuck at {self._offset_bytes} bytes)"
            )

    def _discovered_event(self) -> SessionEvent:
        return _E.DISCOVERED_NEW if self._upload_url is None else _E.DISCOVERED_RESUME

    def _adopt(self, capabilities: ServerCapabilities) -> None:
        capabilities.require_usable()
        limit = capabilities.max_size_bytes
        if limit is not None and limit < self._spec.size_bytes:
            raise UploadRejected(
                f"Tus-Max-Size {limit} is below the file's {self._spec.size_bytes} bytes",
                status=413,
            )
        self._capabilities = capabilities

    def _offers(self, extension: str) -> bool:
        return self._capabilities is not None and self._capabilities.offers(extension)

    def _url(self) -> str:
        # The transition table keeps a URL in every state that builds a request with it.
        if self._upload_url is None:
            raise SessionMisuse(f"no upload URL in state {self._state.name}")
        return self._upload_url

    def _completed_or(self, event: SessionEvent, attested_sha256_hex: str | None) -> SessionEvent:
        """COMPLETED (and the outcome set) if the server now holds every byte, else `event`."""
        if self._offset_bytes != self._spec.size_bytes:
            return event
        self._outcome = UploadOutcome(
            upload_url=self._url(),
            size_bytes=self._spec.size_bytes,
            attested_sha256_hex=attested_sha256_hex,
        )
        return _E.COMPLETED

    # -- requests ----------------------------------------------------------------------------

    def _build_request(self) -> HttpRequest | None:
        match self._state:
            case _S.DISCOVER:
                return HttpRequest("OPTIONS", self._spec.endpoint, (RESUMABLE,))
            case _S.CREATE:
                return self._creation_request()
            case _S.QUERY_OFFSET:
                return HttpRequest("HEAD", self._url(), (RESUMABLE,))
            case _S.UPLOAD:
                return self._patch_request()
            case _S.TERMINATE:
                return HttpRequest("DELETE", self._url(), (RESUMABLE,))
            case _S.DONE | _S.TERMINATED:
                return None

    def _creation_request(self) -> HttpRequest:
        headers = [
            RESUMABLE,
            ("Upload-Length", str(self._spec.size_bytes)),
            ("Upload-Metadata", encode_upload_metadata(self._spec.metadata_pairs())),
        ]
        first_chunk_bytes = min(self.chunk_bytes, self._spec.size_bytes)
        if not self._offers("creation-with-upload") or first_chunk_bytes == 0:
            return HttpRequest("POST", self._spec.endpoint, tuple(headers))
        headers.append(("Content-Type", OFFSET_CONTENT_TYPE))
        # No checksum on the creation body: a 460 would leave unknown whether the upload exists.
        # TLS guards the transfer and Mvb-Stored-Sha256 attests the whole file at the end.
        body = BodySlice(0, first_chunk_bytes)
        return HttpRequest("POST", self._spec.endpoint, tuple(headers), body)

    def _patch_request(self) -> HttpRequest:
        length_bytes = min(self.chunk_bytes, self._spec.size_bytes - self._offset_bytes)
        algorithm = None
        if self._capabilities is not None:
            algorithm = self._capabilities.preferred_checksum_algorithm()
        headers = (
            RESUMABLE,
            ("Upload-Offset", str(self._offset_bytes)),
            ("Content-Type", OFFSET_CONTENT_TYPE),
        )
        body = BodySlice(self._offset_bytes, length_bytes, algorithm)
        return HttpRequest("PATCH", self._url(), headers, body)

    # -- responses ---------------------------------------------------------------------------

    def _response_handler(self) -> Callable[[HttpRequest, HttpResponse], SessionEvent]:
        match self._state:
            case _S.DISCOVER:
                return self._on_options
            case _S.CREATE:
                return self._on_creation
            case _S.QUERY_OFFSET:
                return self._on_head
            case _S.UPLOAD:
                return self._on_patch
            case _S.TERMINATE:
                return self._on_delete
            case _S.DONE | _S.TERMINATED:
                raise SessionMisuse(f"no request is answered in state {self._state.name}")

    def _on_options(self, request: HttpRequest, response: HttpResponse) -> SessionEvent:
        if response.status not in (200, 204):
            raise refusal_error(request, response)
        self._adopt(ServerCapabilities.from_response(response))
        return self._discovered_event()

    def _on_creation(self, request: HttpRequest, response: HttpResponse) -> SessionEvent:
        if response.status == 413 and self._halve_chunk(request):
            location = response.headers.get("location")
            if location is None:
                return _E.CHUNK_TOO_LARGE
            # The server made the upload before refusing the body: resume it, orphan nothing.
            self._upload_url = upload_path(self._spec.endpoint, location)
            return _E.CHUNK_TOO_LARGE_CREATED
        if response.status != 201:
            raise refusal_error(request, response)
        # Everything is checked before anything is kept: an error must leave no half-update.
        upload_url = upload_path(self._spec.endpoint, response.headers.get("location"))
        attested = attested_sha256(response)
        sent_bytes = 0 if request.body is None else request.body.length_bytes
        offset = optional_decimal(response.headers, "Upload-Offset")
        if offset is None and sent_bytes > 0:
            raise HostileServer("POST with a first chunk answered 201 without Upload-Offset")
        offset = offset or 0
        if offset > sent_bytes:
            raise HostileServer(f"POST answered Upload-Offset {offset} > {sent_bytes} bytes sent")
        self._upload_url = upload_url
        self._offset_bytes = offset
        return self._completed_or(_E.CREATED, attested)

    def _on_head(self, request: HttpRequest, response: HttpResponse) -> SessionEvent:
        if response.status in (404, 410):
            return self._upload_gone(request, response)
        if response.status not in (200, 204):
            raise refusal_error(request, response)
        offset = required_decimal(response, "Upload-Offset", request.method)
        size_bytes = self._spec.size_bytes
        if offset > size_bytes:
            raise HostileServer(f"HEAD answered Upload-Offset {offset} > size {size_bytes}")
        length = optional_decimal(response.headers, "Upload-Length")
        if length is not None and length != size_bytes:
            raise HostileServer(f"HEAD answered Upload-Length {length}, the file has {size_bytes}")
        attested = attested_sha256(response)
        if offset < self._offset_bytes:
            self._count_regression(offset)
        self._offset_bytes = offset
        return self._completed_or(_E.OFFSET_KNOWN, attested)

    def _on_patch(self, request: HttpRequest, response: HttpResponse) -> SessionEvent:
        match response.status:
            case 204:
                return self._chunk_accepted(request, response)
            case 409:
                return _E.OFFSET_CONFLICT
            case 404 | 410:
                return self._upload_gone(request, response)
            case 460:
                return self._chunk_damaged(request)
            case 413 if self._halve_chunk(request):
                return _E.CHUNK_TOO_LARGE
            case _:
                raise refusal_error(request, response)

    def _on_delete(self, request: HttpRequest, response: HttpResponse) -> SessionEvent:
        check_termination(request, response)
        return _E.DELETED

    def _chunk_accepted(self, request: HttpRequest, response: HttpResponse) -> SessionEvent:
        body = _body_of(request)
        offset = required_decimal(response, "Upload-Offset", request.method)
        sent_end = body.offset_bytes + body.length_bytes
        # A server may store fewer bytes than sent, but it must store some: otherwise it is
        # a 204 that changes nothing, and the next PATCH would be the same.
        if not body.offset_bytes < offset <= sent_end:
            raise HostileServer(
                f"PATCH answered Upload-Offset {offset}, outside ({body.offset_bytes}, {sent_end}]"
            )
        attested = attested_sha256(response)
        self._offset_bytes = offset
        self._checksum_mismatches = 0
        return self._completed_or(_E.CHUNK_ACCEPTED, attested)

    def _chunk_damaged(self, request: HttpRequest) -> SessionEvent:
        if _body_of(request).checksum_algorithm is None:
            raise HostileServer("PATCH without Upload-Checksum answered 460 (checksum mismatch)")
        if self._checksum_mismatches >= MAX_CHECKSUM_RESENDS:
            raise HostileServer(
                f"checksum mismatch (460) after {MAX_CHECKSUM_RESENDS} resends of one chunk"
            )
        self._checksum_mismatches += 1
        return _E.CHUNK_DAMAGED

    def _halve_chunk(self, request: HttpRequest) -> bool:
        """After a 413: True (the limit halved, never below the floor) if the refused body was
        longer than the floor; False if there is nothing to halve (the refusal stands)."""
        body = request.body
        if body is None or body.length_bytes <= self._min_chunk_bytes:
            return False
        self._refused_limit_bytes = max(self._min_chunk_bytes, body.length_bytes // 2)
        # Halvings are bounded on their own (log2 of chunk over floor): each starts a new count.
        self._rounds_without_progress = -1  # _guard_progress's count of this answer makes it 0
        return True

    def _upload_gone(self, request: HttpRequest, response: HttpResponse) -> SessionEvent:
        if self._recreations >= MAX_RECREATIONS:
            raise HostileServer(
                f"{request.method} answered {response.status} (upload gone) after "
                f"{MAX_RECREATIONS} re-creations"
            )
        self._recreations += 1
        self._upload_url = None
        self._offset_bytes = 0
        self._checksum_mismatches = 0
        return _E.UPLOAD_GONE

    def _count_regression(self, offset: int) -> None:
        if self._offset_regressions >= MAX_OFFSET_REGRESSIONS:
            raise HostileServer(
                f"HEAD answered Upload-Offset {offset} below the confirmed {self._offset_bytes} "
                f"more than {MAX_OFFSET_REGRESSIONS} times"
            )
        self._offset_regressions += 1


# -- pure helpers ----------------------------------------------------------------------------


def _check_chunk_bytes(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHUNK_BYTES:
        raise ValueError(f"{name} must be in [1, {MAX_CHUNK_BYTES}], got {value!r}")


def _body_of(request: HttpRequest) -> BodySlice:
    if request.body is None:
        raise SessionMisuse(f"{request.method} in flight without a body")
    return request.body
