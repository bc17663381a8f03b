"""The reference back office's tus 1.0.0 server, framework-free.

It speaks core tus plus the creation, creation-with-upload, termination, checksum (sha256,
sha1, md5) and expiration (backoffice/upload_expiry.py) extensions, and says on OPTIONS that it
attests (`Mvb-Attestation: sha256`). Adapters (backoffice/server.py for HTTPS, an HTTP/3 one)
turn what they received into an IncomingRequest and send back the OutgoingResponse;
`TusApp.handle` is the only entry point and it never raises for anything a client can send.

Invariants:
- Every request but OPTIONS carries `Tus-Resumable: 1.0.0` or is refused (412) before any
  upload is looked at. Targets and header blocks are bounded (414, 431).
- An upload is visible only to the client (certificate CN) that created it; anyone else gets the
  same 404 as for an id that never existed.
- A file id belongs to the first client that created an upload naming it
  (backoffice/file_claims.py); another client's creation naming it is refused (409) before
  anything is written, logged at ERROR and recorded as an incident (backoffice/incidents.py).
- Creations are bounded per client: at most `creation_limit` a minute (429 with Retry-After),
  and at most `max_reserved_bytes_per_client` bytes of unfinished uploads, reserved at creation
  against the disk (507 with Retry-After when the box's share or the disk cannot hold it;
  backoffice/reservations.py).
- Body bytes are written as they arrive, one adapter piece at a time (memory is bounded by the
  piece size, never by the body), never past Upload-Length nor past `max_chunk_bytes` per
  request, and acknowledged only after fsync.
- With Upload-Checksum a PATCH is all or nothing: unless the whole body arrived and matches, its
  bytes are discarded (460 on a mismatch). Without one, whatever arrived is kept.
- A request whose box's certificate is withdrawn while it runs (an unpair) is cut: its body's
  bytes are discarded and it is answered 403, never with a success or an attestation.
- `Mvb-Stored-Sha256` is the SHA-256 this server computed over the bytes this upload received,
  never the metadata's value; it is on the response that completed the upload and on every
  later HEAD, to the upload's own client only. A difference from the declared SHA-256 is logged
  as an integrity incident and the bytes are kept under `corrupt/` (the box sees the mismatch and
  keeps its own copy). An upload whose file id already names other bytes in `complete/` is
  never attested: its bytes are kept under `corrupt/`, and the box keeps its copy.
- OPTIONS advertises `max_chunk_bytes` as `Mvb-Max-Chunk-Size`: the box never sends a longer body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

from backoffice.file_claims import FileIdClaimed
from backoffice.incidents import FILE_ID_CLAIMED, IncidentLog
from backoffice.rate_limit import ClientRateLimit
from backoffice.tus_body import BodyOutcome, Streamed, release_quietly, stream_into
from backoffice.tus_body import RequestWithdrawn as RequestWithdrawn

# The header parsers are re-exported (`X as X`): adapters and tests reach them through TusApp's
# module.
from backoffice.tus_headers import CHECKSUM_ALGORITHMS as CHECKSUM_ALGORITHMS
from backoffice.tus_headers import MAX_METADATA_CHARS as MAX_METADATA_CHARS
from backoffice.tus_headers import ChecksumHeaderError as ChecksumHeaderError
from backoffice.tus_headers import DeclaredFile as DeclaredFile
from backoffice.tus_headers import MetadataError as MetadataError
from backoffice.tus_headers import UploadChecksum as UploadChecksum
from backoffice.tus_headers import declared_file as declared_file
from backoffice.tus_headers import parse_decimal as parse_decimal
from backoffice.tus_headers import parse_upload_checksum as parse_upload_checksum
from backoffice.tus_headers import parse_upload_metadata as parse_upload_metadata
from backoffice.tus_messages import CompletedUpload as CompletedUpload
from backoffice.tus_messages import IncomingRequest as IncomingRequest
from backoffice.tus_messages import OnComplete as OnComplete
from backoffice.tus_messages import OutgoingResponse as OutgoingResponse
from backoffice.upload_expiry import DEFAULT_UPLOAD_EXPIRY_S, Expiration
from backoffice.upload_store import (
    UPLOAD_ID_PATTERN,
    Appender,
    ClientShareExceeded,
    Incident,
    InsufficientStorage,
    OffsetMismatch,
    UploadBusy,
    UploadFinished,
    UploadInfo,
    UploadNotFound,
    UploadState,
    UploadStatus,
    UploadStore,
    UploadStoreError,
    is_out_of_space,
)
from common.faults import RemoteFault

log = logging.getLogger(__name__)

TUS_VERSION: Final = "1.0.0"
TUS_EXTENSIONS: Final = ("creation", "creation-with-upload", "termination", "checksum")
EXPIRATION: Final = "expiration"
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
STORED_SHA256_HEADER: Final = "Mvb-Stored-Sha256"
ATTESTATION_OFFER: Final = ("Mvb-Attestation", "sha256")
"""On OPTIONS: every complete upload is attested with Mvb-Stored-Sha256 (docs/tus-profile.md)."""
MAX_CHUNK_HEADER: Final = "Mvb-Max-Chunk-Size"
STATUS_CHECKSUM_MISMATCH: Final = 460
"""tus checksum extension: the body does not match Upload-Checksum."""

MAX_TARGET_CHARS: Final = 1024
MAX_HEADER_BLOCK_CHARS: Final = 16 * 1024
"""Names plus values of all headers; real tus requests need well under 8 KiB."""
ON_COMPLETE_TIMEOUT_S: Final = 60.0
"""A deployment's completion step must not hold the box's final response for longer."""
STORAGE_RETRY_AFTER_S: Final = 60
"""Retry-After on 507: disk space comes back when uploads finish or expire, not at once."""
_WITHDRAWN_MESSAGE: Final = "this box's certificate was withdrawn; the box must be paired"

_COLLECTION_METHODS: Final = ("OPTIONS", "POST")
_UPLOAD_METHODS: Final = ("OPTIONS", "HEAD", "PATCH", "DELETE")


# -- the application ---------------------------------------------------------------------------


class _Refusal(RemoteFault):
    """A request the server answers with an error status (raised inside, returned by handle)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class TusApp:
    """The tus server; see the module docstring for its rules and invariants."""

    def __init__(
        self,
        store: UploadStore,
        *,
        base_path: str = "/files/",
        max_upload_bytes: int,
        max_chunk_bytes: int,
        on_complete: OnComplete | None = None,
        upload_expiry_s: float | None = DEFAULT_UPLOAD_EXPIRY_S,
        creation_limit: ClientRateLimit | None = None,
        max_reserved_bytes_per_client: int | None = None,
        incidents: IncidentLog | None = None,
    ) -> None:
        """`upload_expiry_s`: unfinished uploads idle this long are removed (None: never, and
        `expiration` is not offered). `creation_limit`: creations per client (None: unbounded);
        `max_reserved_bytes_per_client`: the lengths of one client's unfinished uploads (None:
        only the disk bounds them); `incidents`: where refusals a person must see are recorded
        (None: the log line only)."""
        if not (base_path.startswith("/") and base_path.endswith("/")):
            raise ValueError(f"base_path must start and end with '/', got {base_path!r}")
        if max_upload_bytes < 0 or max_chunk_bytes < 1:
            raise ValueError("max_upload_bytes must be >= 0 and max_chunk_bytes >= 1")
        self._store = store
        self._base_path = base_path
        self._max_upload_bytes = max_upload_bytes
        self._max_chunk_bytes = max_chunk_bytes
        self._on_complete = on_complete
        self.expiration = None if upload_expiry_s is None else Expiration(store, upload_expiry_s)
        self._creation_limit = creation_limit
        self._max_reserved_bytes_per_client = max_reserved_bytes_per_client
        self._incidents = incidents

    async def handle(self, request: IncomingRequest) -> OutgoingResponse:
        """Answer one request. Never raises for client input; a storage failure is a 500 (or
        507 when the disk is full) and is logged."""
        try:
            response = await self._dispatch(request)
        except _Refusal as refusal:
            response = _error(refusal.status, refusal.message, refusal.headers)
        except UploadNotFound:
            response = _error(404, "no such upload")
        except UploadBusy:
            response = _error(423, "another request is writing this upload", {"Retry-After": "5"})
        except OffsetMismatch:
            response = _error(409, "Upload-Offset does not match the stored offset")
        except UploadFinished:
            response = _error(409, "the upload already has all its bytes")
        except ClientShareExceeded as exc:
            response = _error(507, str(exc), _STORAGE_RETRY)
        except InsufficientStorage:
            response = _error(507, "the back office is short of disk space", _STORAGE_RETRY)
        except OSError as exc:
            if not is_out_of_space(exc):
                log.exception("storage failure method=%s", request.method)
                response = _error(500, "storage failure")
            else:
                response = _error(507, "the back office is out of disk space", _STORAGE_RETRY)
        except UploadStoreError:
            log.exception("store refused method=%s", request.method)
            response = _error(500, "storage failure")
        if request.method == "HEAD":
            response.body = b""
        return response

    # -- dispatch -------------------------------------------------------------------------------

    async def _dispatch(self, request: IncomingRequest) -> OutgoingResponse:
        if len(request.target) > MAX_TARGET_CHARS:
            raise _Refusal(414, f"request target longer than {MAX_TARGET_CHARS} characters")
        header_chars = sum(len(name) + len(value) for name, value in request.headers.items())
        if header_chars > MAX_HEADER_BLOCK_CHARS:
            raise _Refusal(431, f"headers longer than {MAX_HEADER_BLOCK_CHARS} characters")
        is_collection, upload_id = self._route(request.target)
        if not is_collection and upload_id is None:
            raise _Refusal(404, "no such resource")
        if request.method == "OPTIONS":
            return self._options()
        allowed = _COLLECTION_METHODS if is_collection else _UPLOAD_METHODS
        if request.method not in allowed:
            raise _Refusal(405, "method not allowed here", {"Allow": ", ".join(allowed)})
        if request.headers.get("tus-resumable") != TUS_VERSION:
            raise _Refusal(
                412, f"Tus-Resumable {TUS_VERSION} required", {"Tus-Version": TUS_VERSION}
            )
        if upload_id is None:
            return await self._create(request)
        status = self._owned_status(upload_id, request.client_id)
        if self.expiration is not None and self.expiration.expire_if_due(upload_id):
            raise _Refusal(410, "the upload expired")
        if request.method == "HEAD":
            return self._head(status)
        if request.method == "PATCH":
            return await self._patch(request, status)
        return self._delete(status)

    def _route(self, target: str) -> tuple[bool, str | None]:
        """(is the collection, upload id) of a target; (False, None) if it names nothing."""
        path = target.split("?", 1)[0]
        if path in (self._base_path, self._base_path.rstrip("/")):
            return True, None
        candidate = path.removeprefix(self._base_path)
        if candidate != path and UPLOAD_ID_PATTERN.fullmatch(candidate):
            return False, candidate
        return False, None

    def _owned_status(self, upload_id: str, client_id: str) -> UploadStatus:
        status = self._store.status(upload_id)
        if status.info.client_id != client_id:
            # The same answer as for an unknown id: another box learns nothing.
            raise UploadNotFound(upload_id)
        return status

    # -- methods --------------------------------------------------------------------------------

    def _options(self) -> OutgoingResponse:
        extensions = TUS_EXTENSIONS if self.expiration is None else (*TUS_EXTENSIONS, EXPIRATION)
        return _reply(
            204,
            {
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": ",".join(extensions),
                ATTESTATION_OFFER[0]: ATTESTATION_OFFER[1],
                "Tus-Max-Size": str(self._max_upload_bytes),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
                MAX_CHUNK_HEADER: str(self._max_chunk_bytes),
            },
        )

    def _head(self, status: UploadStatus) -> OutgoingResponse:
        headers = {
            "Upload-Length": str(status.info.length_bytes),
            "Cache-Control": "no-store",
            **_offset_headers(status),
            **self._expires(status),
        }
        if status.info.metadata_header:
            headers["Upload-Metadata"] = status.info.metadata_header
        return _reply(200, headers)

    async def _create(self, request: IncomingRequest) -> OutgoingResponse:
        headers = request.headers
        if self._creation_limit is not None:
            now_s = asyncio.get_running_loop().time()
            retry_after_s = self._creation_limit.take(request.client_id, now_s)
            if retry_after_s is not None:
                raise _Refusal(
                    429,
                    "too many uploads created by this box: slow down",
                    {"Retry-After": str(retry_after_s)},
                )
        if "upload-defer-length" in headers:
            raise _Refusal(400, "Upload-Defer-Length is not supported: send Upload-Length")
        length_bytes = parse_decimal(headers.get("upload-length"))
        if length_bytes is None:
            raise _Refusal(400, "Upload-Length must be decimal digits")
        if length_bytes > self._max_upload_bytes:
            raise _Refusal(
                413,
                f"Upload-Length exceeds Tus-Max-Size {self._max_upload_bytes}",
                {"Tus-Max-Size": str(self._max_upload_bytes)},
            )
        metadata_header = headers.get("upload-metadata")
        if metadata_header is None:
            raise _Refusal(400, "Upload-Metadata with file_id and sha256 is required")
        try:
            declared = declared_file(parse_upload_metadata(metadata_header))
        except MetadataError as exc:
            raise _Refusal(400, str(exc)) from exc
        with_upload = _is_offset_stream(headers)
        declared_body_bytes = _content_length(headers)
        if not with_upload and declared_body_bytes:
            raise _Refusal(415, f"a creation body must be {OFFSET_CONTENT_TYPE}")
        checksum = _checksum_of(headers) if with_upload else None
        self._check_declared_body(declared_body_bytes, length_bytes)
        try:
            status = self._store.create(
                client_id=request.client_id,
                length_bytes=length_bytes,
                metadata_header=metadata_header,
                file_id=declared.file_id,
                declared_sha256=declared.sha256,
                max_client_bytes=self._max_reserved_bytes_per_client,
            )
        except FileIdClaimed as exc:
            await self._claimed(request.client_id, exc)
            raise _Refusal(409, "this file_id belongs to another box") from exc
        info = status.info
        log.info(
            "upload created upload_id=%s file_id=%s client_id=%s length_bytes=%d",
            info.upload_id,
            info.file_id,
            info.client_id,
            length_bytes,
        )
        location = {"Location": self._base_path + info.upload_id}
        if not with_upload and length_bytes > 0:
            return _reply(201, {**location, "Upload-Offset": "0", **self._expires(status)})
        # An empty upload is complete at once; a creation body is a first PATCH. On an error the
        # Location is still given: the upload exists and can be resumed.
        response = await self._append(request, status, checksum, declared_body_bytes, 201)
        response.headers.update(location)
        return response

    async def _patch(self, request: IncomingRequest, status: UploadStatus) -> OutgoingResponse:
        headers = request.headers
        if not _is_offset_stream(headers):
            raise _Refusal(415, f"PATCH bodies must be {OFFSET_CONTENT_TYPE}")
        offset_bytes = parse_decimal(headers.get("upload-offset"))
        if offset_bytes is None:
            raise _Refusal(400, "Upload-Offset must be decimal digits")
        checksum = _checksum_of(headers)
        declared_body_bytes = _content_length(headers)
        if offset_bytes != status.offset_bytes:
            raise _Refusal(409, "Upload-Offset does not match the stored offset")
        if status.finished:
            # A retried final PATCH whose answer was lost: answer it again, attestation included.
            if declared_body_bytes:
                raise _Refusal(400, "the upload already has all its bytes", _offset_headers(status))
            return _reply(204, _offset_headers(status))
        self._check_declared_body(declared_body_bytes, status.remaining_bytes)
        return await self._append(request, status, checksum, declared_body_bytes, 204)

    async def _claimed(self, client_id: str, refused: FileIdClaimed) -> None:
        """A box named another box's file id: an incident (the owner is named in the record,
        never in the answer)."""
        log.error(
            "incident=%s file_id=%s client_id=%s owner=%s: creation refused",
            FILE_ID_CLAIMED,
            refused.file_id,
            client_id,
            refused.owner,
        )
        if self._incidents is not None:
            await asyncio.to_thread(
                self._incidents.append,
                FILE_ID_CLAIMED,
                client_id,
                file_id=refused.file_id,
                owner=refused.owner,
            )

    def _delete(self, status: UploadStatus) -> OutgoingResponse:
        if status.finished:
            raise _Refusal(403, "finished uploads are evidence and are not deleted through tus")
        self._store.delete(status.info.upload_id)
        log.info(
            "upload terminated upload_id=%s file_id=%s client_id=%s offset_bytes=%d",
            status.info.upload_id,
            status.info.file_id,
            status.info.client_id,
            status.offset_bytes,
        )
        return _reply(204, {})

    def _expires(self, status: UploadStatus) -> dict[str, str]:
        """Upload-Expires while the upload is unfinished (tus expiration)."""
        if self.expiration is None:
            return {}
        return self.expiration.headers(status.info.upload_id, status.finished)

    # -- receiving bytes ------------------------------------------------------------------------

    def _check_declared_body(self, declared_body_bytes: int | None, remaining_bytes: int) -> None:
        """Refuse before writing anything when Content-Length already says too much."""
        if declared_body_bytes is None:
            return
        if declared_body_bytes > remaining_bytes:
            raise _Refusal(400, "Content-Length runs past Upload-Length")
        if declared_body_bytes > self._max_chunk_bytes:
            raise _Refusal(413, f"Content-Length exceeds the {self._max_chunk_bytes}-byte maximum")

    async def _append(
        self,
        request: IncomingRequest,
        status: UploadStatus,
        checksum: UploadChecksum | None,
        declared_body_bytes: int | None,
        success_status: int,
    ) -> OutgoingResponse:
        """Stream the request's body into the upload at its offset; answer `success_status`
        or the error."""
        remaining_bytes = status.remaining_bytes
        limit_bytes = min(remaining_bytes, self._max_chunk_bytes)
        expected_bytes = limit_bytes if declared_body_bytes is None else declared_body_bytes
        self._store.ensure_space(min(expected_bytes, limit_bytes))
        appender = self._store.begin_append(
            status.info.upload_id, status.offset_bytes, all_or_nothing=checksum is not None
        )
        handed_off = False
        try:
            streamed = await stream_into(request.body, appender, limit_bytes, checksum)
            if request.withdrawn():  # withdrawn after the last byte came: still cut
                streamed = Streamed(BodyOutcome.WITHDRAWN)
            refusal = self._refusal_for(streamed, checksum, remaining_bytes)
            keep = streamed.outcome is not BodyOutcome.WITHDRAWN and (
                checksum is None or refusal is None
            )
            handed_off = True
            settled = await self._settle(appender, status.info, keep=keep)
        finally:
            if not handed_off:
                appender.release()  # cancelled mid-body: keep (or discard) what arrived
        if settled.finished:
            await self._completed(settled)
        if request.withdrawn():
            # Withdrawn while the bytes were settled: whatever was stored, no success is said.
            return _error(403, _WITHDRAWN_MESSAGE)
        headers = {**_offset_headers(settled), **self._expires(settled)}
        if refusal is not None:
            return _error(refusal.status, refusal.message, headers)
        return _reply(success_status, headers)

    def _refusal_for(
        self, streamed: Streamed, checksum: UploadChecksum | None, remaining_bytes: int
    ) -> _Refusal | None:
        match streamed.outcome:
            case BodyOutcome.TIMED_OUT:
                return _Refusal(408, "the request body stalled")
            case BodyOutcome.BROKEN:
                return _Refusal(400, "the request body broke off")
            case BodyOutcome.WITHDRAWN:
                return _Refusal(403, _WITHDRAWN_MESSAGE)
            case BodyOutcome.OVERFLOWED if remaining_bytes <= self._max_chunk_bytes:
                return _Refusal(400, "the body runs past Upload-Length; nothing beyond was stored")
            case BodyOutcome.OVERFLOWED:
                return _Refusal(413, f"the body exceeds the {self._max_chunk_bytes}-byte maximum")
            case BodyOutcome.ENDED if checksum is not None and streamed.digest != checksum.digest:
                return _Refusal(
                    STATUS_CHECKSUM_MISMATCH, "Upload-Checksum does not match; bytes discarded"
                )
        return None

    async def _settle(self, appender: Appender, info: UploadInfo, *, keep: bool) -> UploadStatus:
        """Keep (fsync) or discard the append and, if the upload is full, finish it: in a worker
        thread, so fsync and hashing never stall other uploads. The upload stays busy until the
        thread is done, even if this request is cancelled meanwhile."""

        def settle_blocking() -> UploadStatus:
            if keep:
                appender.keep()
            else:
                appender.discard()
            if appender.end_offset_bytes == info.length_bytes:
                return self._store.complete(info.upload_id)
            return UploadStatus(info, appender.end_offset_bytes)

        future = asyncio.get_running_loop().run_in_executor(None, settle_blocking)
        future.add_done_callback(lambda _done: release_quietly(appender))
        return await asyncio.shield(future)

    async def _completed(self, status: UploadStatus) -> None:
        info = status.info
        stored_file = self._store.path_of(info)
        log.info(
            "upload complete upload_id=%s file_id=%s client_id=%s size_bytes=%d sha256=%s "
            "verified=%s stored_path=%s",
            info.upload_id,
            info.file_id,
            info.client_id,
            info.length_bytes,
            info.stored_sha256,
            info.state is UploadState.COMPLETE,
            info.stored_path,
        )
        if info.state is UploadState.CORRUPT:
            log.error(
                "integrity incident=%s upload_id=%s file_id=%s client_id=%s size_bytes=%d "
                "declared_sha256=%s stored_sha256=%s stored_path=%s",
                info.incident,
                info.upload_id,
                info.file_id,
                info.client_id,
                info.length_bytes,
                info.declared_sha256,
                info.stored_sha256,
                info.stored_path,
            )
            if self._incidents is not None and info.incident is not None:
                await asyncio.to_thread(
                    self._incidents.append,
                    info.incident.value,
                    info.client_id,
                    upload_id=info.upload_id,
                    file_id=info.file_id,
                    size_bytes=info.length_bytes,
                    declared_sha256=info.declared_sha256,
                    stored_sha256=info.stored_sha256,
                    stored_path=info.stored_path,
                )
        if self._on_complete is None or stored_file is None:
            return
        try:
            async with asyncio.timeout(ON_COMPLETE_TIMEOUT_S):
                await self._on_complete(CompletedUpload(info, stored_file))
        except Exception as exc:  # a deployment's step must not fail the stored upload
            log.error(
                "on_complete hook failed upload_id=%s error=%s", info.upload_id, type(exc).__name__
            )


# -- helpers -----------------------------------------------------------------------------------


def _is_offset_stream(headers: Mapping[str, str]) -> bool:
    content_type = headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == OFFSET_CONTENT_TYPE


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    parsed = parse_decimal(value)
    if parsed is None:
        raise _Refusal(400, "Content-Length must be decimal digits")
    return parsed


def _checksum_of(headers: Mapping[str, str]) -> UploadChecksum | None:
    value = headers.get("upload-checksum")
    if value is None:
        return None
    try:
        return parse_upload_checksum(value)
    except ChecksumHeaderError as exc:
        raise _Refusal(400, str(exc)) from exc


def _offset_headers(status: UploadStatus) -> dict[str, str]:
    """Upload-Offset, and the attestation of a finished upload: not for one whose file id names
    other bytes in `complete/` (its own bytes are not the file the box would delete)."""
    headers = {"Upload-Offset": str(status.offset_bytes)}
    info = status.info
    if (
        status.finished
        and info.stored_sha256 is not None
        and info.incident is not Incident.FILE_ID_CONFLICT
    ):
        headers[STORED_SHA256_HEADER] = info.stored_sha256
    return headers


_STORAGE_RETRY: Final = {"Retry-After": str(STORAGE_RETRY_AFTER_S)}


def _reply(status: int, headers: Mapping[str, str]) -> OutgoingResponse:
    return OutgoingResponse(status, {"Tus-Resumable": TUS_VERSION, **headers})


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> OutgoingResponse:
    return OutgoingResponse(
        status,
        {
            "Tus-Resumable": TUS_VERSION,
            "Content-Type": "text/plain; charset=utf-8",
            **(headers or {}),
        },
        (message + "\n").encode("utf-8"),
    )
