"""The tus 1.0.0 client session: a pure state machine (no I/O, no clock, no asyncio).

Shaped like h11 and aioquic's QuicConnection: the caller asks `next_request()` for the next
HttpRequest, has a transport send it, and feeds back `receive(response)` or `connection_lost()`.
The session never holds file bytes: a request names a BodySlice and the transport reads it (and
adds Upload-Checksum when the slice asks for one). docs/tus-profile.md is the profile this module
implements; where they disagree, the document is right.

States move only through `_TRANSITIONS` (an explicit table, like h11's _state.py); an event
with no entry for the current state is a programming error (SessionMisuse).

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

import base64
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final
from urllib.parse import urljoin, urlsplit

from common.faults import MisuseFault
from transport.checksum import SUPPORTED_ALGORITHMS
from transport.errors import (
    CredentialsWithdrawn,
    HostileServer,
    ServerError,
    TransportError,
    UploadRejected,
)
from transport.http import BodySlice, HttpRequest, HttpResponse
from transport.unpairing import says_unpaired

TUS_VERSION: Final = "1.0.0"
ATTESTATION_HEADER: Final = "Mvb-Stored-Sha256"
"""The reference back office's SHA-256 (hex) over the bytes it stored, on the completing response
and on every later HEAD. Not part of tus; a plain tus server omits it."""
ATTESTATION_OFFER_HEADER: Final = "Mvb-Attestation"
"""On the OPTIONS answer of a back office that attests (value `sha256`): what it promises for
every complete upload. A plain tus server omits it (docs/tus-profile.md 8)."""
MAX_CHUNK_HEADER: Final = "Mvb-Max-Chunk-Size"
"""The reference back office's largest request body (bytes, decimal) on OPTIONS: the box never
sends a longer chunk. Not part of tus; a plain tus server omits it (a 413 then teaches it)."""
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
TRANSIENT_STATUSES: Final = frozenset({408, 413, 423, 429})
"""4xx answers that mean "not now" (idle timeout, chunk over the limit, upload busy, rate
limit): ServerError, like 5xx. docs/tus-profile.md 7."""
CREDENTIAL_STATUSES: Final = frozenset({401, 403})
"""The back office refuses this box's certificate: CredentialsWithdrawn."""
TERMINATED_STATUSES: Final = frozenset({204, 404, 410})
"""Answers to DELETE after which the upload is gone from the server."""

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
MAX_METADATA_HEADER_CHARS: Final = 4096
"""Well under common server header limits (8 KiB), so creation never fails on header size."""
MAX_UPLOAD_PATH_CHARS: Final = 1024

_RESUMABLE: Final = ("Tus-Resumable", TUS_VERSION)
_RESERVED_METADATA_KEYS: Final = frozenset({"file_id", "sha256"})
# At most 18 digits: every real size fits, and a hostile header cannot make us build a huge int.
# (int() alone would also accept "+5", " 5" and non-ASCII digits.)
_DECIMAL: Final = re.compile(r"[0-9]{1,18}")
_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
# tus metadata keys: non-empty, no spaces, no commas; we also keep them printable ASCII.
_METADATA_KEY: Final = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
# An absolute path of printable ASCII: nothing that could split a request line or a header.
_ABSOLUTE_PATH: Final = re.compile(r"/[\x21-\x7e]*")
_QUOTED_CHARS: Final = 64


class SessionMisuse(RuntimeError, MisuseFault):
    """The caller broke the session's calling contract (a programming error, not a server fault)."""


@dataclass(frozen=True)
class ServerCapabilities:
    """What a tus server offers, from its OPTIONS answer. Extension and algorithm names are
    lower-case; `versions` keeps the server's order (its preferred version first)."""

    versions: tuple[str, ...]
    extensions: frozenset[str]
    max_size_bytes: int | None
    checksum_algorithms: tuple[str, ...]
    attests: bool = False  # Mvb-Attestation lists sha256: complete uploads carry Mvb-Stored-Sha256
    max_chunk_bytes: int | None = None

    @classmethod
    def from_response(cls, response: HttpResponse) -> ServerCapabilities:
        """Parse an OPTIONS answer; HostileServer if malformed or unusable by this profile."""
        if response.status not in (200, 204):
            raise HostileServer(f"OPTIONS answered {response.status}, expected 200 or 204")
        headers = response.headers
        capabilities = cls(
            versions=_split_list(headers.get("tus-version", "")),
            extensions=frozenset(_split_list(headers.get("tus-extension", ""), lower=True)),
            max_size_bytes=_optional_decimal(headers, "Tus-Max-Size"),
            checksum_algorithms=_split_list(headers.get("tus-checksum-algorithm", ""), lower=True),
            attests="sha256" in _split_list(headers.get("mvb-attestation", ""), lower=True),
            max_chunk_bytes=_optional_decimal(headers, MAX_CHUNK_HEADER),
        )
        capabilities.require_usable()
        return capabilities

    def require_usable(self) -> None:
        """HostileServer unless the server speaks tus 1.0.0 and can create uploads."""
        if TUS_VERSION not in self.versions:
            offered = _quote(",".join(self.versions))
            raise HostileServer(f"Tus-Version {offered} does not list {TUS_VERSION}")
        if "creation" not in self.extensions:
            raise HostileServer("Tus-Extension does not list 'creation': cannot create uploads")
        if self.max_chunk_bytes == 0:
            raise HostileServer(f"{MAX_CHUNK_HEADER} 0: no chunk could ever be sent")

    def offers(self, extension: str) -> bool:
        """Whether Tus-Extension listed `extension`."""
        return extension in self.extensions

    def preferred_checksum_algorithm(self) -> str | None:
        """The box's most preferred algorithm the server also offers, if `checksum` is offered."""
        if not self.offers("checksum"):
            return None
        return next((a for a in SUPPORTED_ALGORITHMS if a in self.checksum_algorithms), None)


@dataclass(frozen=True)
class UploadSpec:
    """One file to upload. `endpoint` is the creation path ("/files/"); `metadata` goes into
    Upload-Metadata next to the reserved keys `file_id` and `sha256`. Validated on construction
    (ValueError): the session never sends a header it could not have built from a valid spec."""

    file_id: str
    size_bytes: int
    sha256_hex: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    endpoint: str = "/files/"

    def __post_init__(self) -> None:
        if not self.file_id:
            raise ValueError("file_id must not be empty")
        if self.size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {self.size_bytes}")
        if not _SHA256_HEX.fullmatch(self.sha256_hex):
            raise ValueError("sha256_hex must be 64 hex characters")
        if not _is_absolute_path(self.endpoint):
            raise ValueError(f"endpoint must be an absolute path, got {self.endpoint!r}")
        for key in self.metadata:
            if key in _RESERVED_METADATA_KEYS or not _METADATA_KEY.fullmatch(key):
                raise ValueError(f"metadata key {key!r} is reserved or not a tus metadata key")
        # A private copy: the caller's dict may change, the spec must not.
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        if len(encode_upload_metadata(self.metadata_pairs())) > MAX_METADATA_HEADER_CHARS:
            raise ValueError(f"Upload-Metadata would exceed {MAX_METADATA_HEADER_CHARS} chars")

    def metadata_pairs(self) -> tuple[tuple[str, str], ...]:
        """Every Upload-Metadata pair, reserved keys first."""
        reserved = (("file_id", self.file_id), ("sha256", self.sha256_hex.lower()))
        return reserved + tuple(self.metadata.items())


class SessionState(enum.Enum):
    """Where the session is; each state but DONE and TERMINATED names its next request."""

    DISCOVER = "discover"  # OPTIONS the endpoint
    CREATE = "create"  # POST the endpoint (with the first chunk if creation-with-upload)
    QUERY_OFFSET = "query_offset"  # HEAD the upload
    UPLOAD = "upload"  # PATCH the next chunk
    DONE = "done"  # the server confirmed every byte
    TERMINATE = "terminate"  # DELETE the upload
    TERMINATED = "terminated"  # given up, server copy deleted if the server could


@dataclass(frozen=True)
class UploadOutcome:
    """A completed upload. `attested_sha256_hex` is the back office's lower-case SHA-256 over what
    it stored, or None from a plain tus server (which cannot attest; the caller must not treat the
    upload as verified). Comparing it with the spec's SHA-256 is the caller's job."""

    upload_url: str
    size_bytes: int
    attested_sha256_hex: str | None


class _Event(enum.Enum):
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
_E = _Event
_ACTIVE: Final = (_S.DISCOVER, _S.CREATE, _S.QUERY_OFFSET, _S.UPLOAD)
_TRANSITIONS: Final[Mapping[tuple[SessionState, _Event], SessionState]] = MappingProxyType(
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
        **{(s, _E.TERMINATE_ASKED): _S.TERMINATE for s in (*_ACTIVE, _S.DONE)},
        **{(s, _E.TERMINATE_SKIPPED): _S.TERMINATED for s in (*_ACTIVE, _S.DONE)},
    }
)


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
        if upload_url is not None and not _is_absolute_path(upload_url):
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

    def _apply(self, event: _Event) -> None:
        target = _TRANSITIONS.get((self._state, event))
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
        if self._state in _ACTIVE and self._rounds_without_progress >= MAX_ROUNDS_WITHOUT_PROGRESS:
            raise HostileServer(
                f"{self._rounds_without_progress} answered rounds in a row without the upload "
                f"offset rising (stuck at {self._offset_bytes} bytes)"
            )

    def _discovered_event(self) -> _Event:
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

    def _completed_or(self, event: _Event, attested_sha256_hex: str | None) -> _Event:
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
                return HttpRequest("OPTIONS", self._spec.endpoint, (_RESUMABLE,))
            case _S.CREATE:
                return self._creation_request()
            case _S.QUERY_OFFSET:
                return HttpRequest("HEAD", self._url(), (_RESUMABLE,))
            case _S.UPLOAD:
                return self._patch_request()
            case _S.TERMINATE:
                return HttpRequest("DELETE", self._url(), (_RESUMABLE,))
            case _S.DONE | _S.TERMINATED:
                return None

    def _creation_request(self) -> HttpRequest:
        headers = [
            _RESUMABLE,
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
            _RESUMABLE,
            ("Upload-Offset", str(self._offset_bytes)),
            ("Content-Type", OFFSET_CONTENT_TYPE),
        )
        body = BodySlice(self._offset_bytes, length_bytes, algorithm)
        return HttpRequest("PATCH", self._url(), headers, body)

    # -- responses ---------------------------------------------------------------------------

    def _response_handler(self) -> Callable[[HttpRequest, HttpResponse], _Event]:
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

    def _on_options(self, request: HttpRequest, response: HttpResponse) -> _Event:
        if response.status not in (200, 204):
            raise refusal_error(request, response)
        self._adopt(ServerCapabilities.from_response(response))
        return self._discovered_event()

    def _on_creation(self, request: HttpRequest, response: HttpResponse) -> _Event:
        if response.status == 413 and self._halve_chunk(request):
            location = response.headers.get("location")
            if location is None:
                return _E.CHUNK_TOO_LARGE
            # The server made the upload before refusing the body: resume it, orphan nothing.
            self._upload_url = _upload_path(self._spec.endpoint, location)
            return _E.CHUNK_TOO_LARGE_CREATED
        if response.status != 201:
            raise refusal_error(request, response)
        # Everything is checked before anything is kept: an error must leave no half-update.
        upload_url = _upload_path(self._spec.endpoint, response.headers.get("location"))
        attested = _attested_sha256(response)
        sent_bytes = 0 if request.body is None else request.body.length_bytes
        offset = _optional_decimal(response.headers, "Upload-Offset")
        if offset is None and sent_bytes > 0:
            raise HostileServer("POST with a first chunk answered 201 without Upload-Offset")
        offset = offset or 0
        if offset > sent_bytes:
            raise HostileServer(f"POST answered Upload-Offset {offset} > {sent_bytes} bytes sent")
        self._upload_url = upload_url
        self._offset_bytes = offset
        return self._completed_or(_E.CREATED, attested)

    def _on_head(self, request: HttpRequest, response: HttpResponse) -> _Event:
        if response.status in (404, 410):
            return self._upload_gone(request, response)
        if response.status not in (200, 204):
            raise refusal_error(request, response)
        offset = _required_decimal(response, "Upload-Offset", request.method)
        size_bytes = self._spec.size_bytes
        if offset > size_bytes:
            raise HostileServer(f"HEAD answered Upload-Offset {offset} > size {size_bytes}")
        length = _optional_decimal(response.headers, "Upload-Length")
        if length is not None and length != size_bytes:
            raise HostileServer(f"HEAD answered Upload-Length {length}, the file has {size_bytes}")
        attested = _attested_sha256(response)
        if offset < self._offset_bytes:
            self._count_regression(offset)
        self._offset_bytes = offset
        return self._completed_or(_E.OFFSET_KNOWN, attested)

    def _on_patch(self, request: HttpRequest, response: HttpResponse) -> _Event:
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

    def _on_delete(self, request: HttpRequest, response: HttpResponse) -> _Event:
        check_termination(request, response)
        return _E.DELETED

    def _chunk_accepted(self, request: HttpRequest, response: HttpResponse) -> _Event:
        body = _body_of(request)
        offset = _required_decimal(response, "Upload-Offset", request.method)
        sent_end = body.offset_bytes + body.length_bytes
        # A server may store fewer bytes than sent, but it must store some: otherwise it is
        # a 204 that changes nothing, and the next PATCH would be the same.
        if not body.offset_bytes < offset <= sent_end:
            raise HostileServer(
                f"PATCH answered Upload-Offset {offset}, outside ({body.offset_bytes}, {sent_end}]"
            )
        attested = _attested_sha256(response)
        self._offset_bytes = offset
        self._checksum_mismatches = 0
        return self._completed_or(_E.CHUNK_ACCEPTED, attested)

    def _chunk_damaged(self, request: HttpRequest) -> _Event:
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

    def _upload_gone(self, request: HttpRequest, response: HttpResponse) -> _Event:
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


def encode_upload_metadata(pairs: tuple[tuple[str, str], ...]) -> str:
    """tus Upload-Metadata: comma-separated `key base64(utf-8 value)`; an empty value is the
    bare key."""
    encoded = []
    for key, value in pairs:
        if not value:
            encoded.append(key)
            continue
        encoded.append(f"{key} {base64.b64encode(value.encode('utf-8')).decode('ascii')}")
    return ",".join(encoded)


def termination_request(
    upload_url: str, capabilities: ServerCapabilities | None
) -> HttpRequest | None:
    """DELETE of an upload the box abandons without a session (a file deleted by retention, an
    upload URL it will not resume: docs/tus-profile.md 9); None when the server does not offer
    `termination` (its expiration cleans up) or the URL is not a path this profile would send.
    Answer it with `check_termination`."""
    if capabilities is None or not capabilities.offers("termination"):
        return None
    if not _is_absolute_path(upload_url):
        return None
    return HttpRequest("DELETE", upload_url, (_RESUMABLE,))


def check_termination(request: HttpRequest, response: HttpResponse) -> None:
    """Return if the answer to a DELETE says the upload is gone (204, 404, 410); else raise
    the error of section 7 (a finished upload refused with 403 is CredentialsWithdrawn by status
    alone: a caller that terminates best-effort does not act on it)."""
    if response.status not in TERMINATED_STATUSES:
        raise refusal_error(request, response)


def refusal_error(request: HttpRequest, response: HttpResponse) -> TransportError:
    """The error for a status the request's handler has no specific rule for (section 7)."""
    status = response.status
    what = f"{request.method} answered {status}"
    if status == 413 and request.body is None:
        # No body to make smaller: the server refuses the Upload-Length itself (Tus-Max-Size).
        return UploadRejected(f"{what}: the file is larger than the server takes", status=status)
    if status in TRANSIENT_STATUSES or 500 <= status <= 599:
        return ServerError(what, status=status, retry_after_s=_retry_after_s(response))
    if status in CREDENTIAL_STATUSES:
        unpaired = says_unpaired(status, response.headers)
        return CredentialsWithdrawn(what, status=status, unpaired=unpaired)
    if 400 <= status <= 499:
        return UploadRejected(what, status=status)
    return HostileServer(f"{what}, a status tus 1.0.0 does not give here")


def _retry_after_s(response: HttpResponse) -> float | None:
    # Only delta-seconds: the HTTP-date form would need a clock, and the hint is optional.
    value = response.headers.get("retry-after", "").strip()
    return float(value) if _DECIMAL.fullmatch(value) else None


def _required_decimal(response: HttpResponse, header: str, method: str) -> int:
    value = _optional_decimal(response.headers, header)
    if value is None:
        raise HostileServer(f"{method} answered {response.status} without {header}")
    return value


def _optional_decimal(headers: Mapping[str, str], header: str) -> int | None:
    value = headers.get(header.lower())
    if value is None:
        return None
    stripped = value.strip()
    if not _DECIMAL.fullmatch(stripped):
        raise HostileServer(f"{header} {_quote(value)} is not a non-negative decimal integer")
    return int(stripped)


def _attested_sha256(response: HttpResponse) -> str | None:
    value = response.headers.get(ATTESTATION_HEADER.lower())
    if value is None:
        return None
    stripped = value.strip()
    if not _SHA256_HEX.fullmatch(stripped):
        raise HostileServer(f"{ATTESTATION_HEADER} {_quote(value)} is not 64 hex characters")
    return stripped.lower()


_WEB_SCHEMES = frozenset({"http", "https", ""})  # "": a network-path reference, //host/path


def _upload_path(endpoint: str, location: str | None) -> str:
    """The upload's path from a creation answer's Location, resolved against the endpoint.

    Only the path is kept: the box talks to its pinned back office alone and never follows a
    server to another origin. Real tus servers (tusd, @tus/server) answer with absolute URLs
    built from the Host header, often with the wrong scheme behind a TLS terminator, so an
    http(s) URL with a host is accepted and its path used on the pinned connection; any other
    scheme, or a scheme without a host, is hostile."""
    if location is None:
        raise HostileServer("POST answered 201 without Location")
    try:
        parts = urlsplit(location.strip())
    except ValueError as error:
        raise HostileServer(f"Location {_quote(location)} is not a URL") from error
    if (parts.scheme or parts.netloc) and not (parts.scheme in _WEB_SCHEMES and parts.netloc):
        raise HostileServer(f"Location {_quote(location)} is neither a path nor an http(s) URL")
    path = urlsplit(urljoin(endpoint, parts.path)).path
    if not parts.path or path == endpoint or not _is_absolute_path(path):
        raise HostileServer(f"Location {_quote(location)} is not a usable upload path")
    return path


def _is_absolute_path(path: str) -> bool:
    return len(path) <= MAX_UPLOAD_PATH_CHARS and _ABSOLUTE_PATH.fullmatch(path) is not None


def _split_list(value: str, *, lower: bool = False) -> tuple[str, ...]:
    items = (item.strip() for item in value.split(","))
    return tuple(item.lower() if lower else item for item in items if item)


def _body_of(request: HttpRequest) -> BodySlice:
    if request.body is None:
        raise SessionMisuse(f"{request.method} in flight without a body")
    return request.body


def _quote(value: str) -> str:
    """A server-sent value made fit for an error message: bounded, control characters escaped."""
    shown = repr(value[:_QUOTED_CHARS])
    return shown + "..." if len(value) > _QUOTED_CHARS else shown
