"""The evidence file writer: encrypt, chunk, fsync (docs/evidence-format.md section 5).

Synchronous and single-owner: one thread at a time drives a writer (the async shell in
`gateway/capture/service.py` gives each camera its own worker thread). The durability contract:
when `sync()` or `seal()` returns, everything appended before it survives a power cut.

No plaintext media ever reaches the disk: media is buffered in RAM until it is sealed into a chunk.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from common.durable import durable_rename, durable_unlink, fsync_dir, make_dirs
from common.faults import MisuseFault
from storage.card import CardLayout, Sidecar, write_sidecar
from storage.chunk_crypto import RECORD_OVERHEAD_BYTES, ChunkSealer
from storage.envelope import FileKeys
from storage.errors import WriterClosed, WriterPoisoned
from storage.evidence_format import KIND_MEDIA, KIND_METADATA, EvidenceHeader
from storage.record_ring import HashedRecordRing

DEFAULT_CHUNK_MAX_BYTES = 256 * 1024

SpaceCheck = Callable[[int], None]
"""Called with the bytes about to be written; raises (e.g. CardFullError) to refuse them."""


@dataclass(frozen=True, slots=True)
class DurablePoint:
    """What has survived a power cut once `sync()` returned."""

    chunks: int
    media_bytes: int
    file_bytes: int


@dataclass(frozen=True, slots=True)
class SealedFile:
    path: Path
    sidecar: Sidecar


class MetadataTooLarge(ValueError, MisuseFault):
    """A metadata object does not fit one chunk (nothing was written; the writer stays usable)."""

    def __init__(self, plaintext_bytes: int, chunk_max_bytes: int) -> None:
        super().__init__(f"metadata of {plaintext_bytes} bytes: a chunk holds {chunk_max_bytes}")
        self.plaintext_bytes = plaintext_bytes


class EvidenceFileWriter:
    """Writes one evidence file from `create` to `seal`.

    Invariants: records are written whole or the file is cut back to the last whole record;
    chunk indexes are consecutive from 0; exactly one LAST chunk, written by `seal`; no nonce is
    ever used twice (the sealer spends each index once). A write or fsync that fails poisons the
    writer: the file descriptor is closed, the file key dropped, and every later call raises
    WriterPoisoned. A space refusal (`space_check`) comes before the chunk is sealed, spends no
    nonce and leaves the writer usable, so a full card can still seal from its reserve.
    """

    def __init__(
        self,
        layout: CardLayout,
        header: EvidenceHeader,
        keys: FileKeys,
        *,
        space_check: SpaceCheck | None = None,
        clock_ms: Callable[[], int],
    ) -> None:
        self._layout = layout
        self._header = header
        self._recording_id = header.recording_id.hex()
        self._file_id = header.file_id.hex()
        self._part_path = layout.part_path(self._recording_id, self._file_id)
        self._space_check = space_check
        self._clock_ms = clock_ms
        header_bytes = header.encode(keys.header_mac_key)  # version 2: sealed with its MAC
        self._sealer: ChunkSealer | None = ChunkSealer(
            keys.chunk_key, header_bytes, header.nonce_prefix
        )
        self._poisoned: str | None = None  # why the writer refuses, once a write failed
        self._media_limit = header.chunk_max_bytes - 1
        # The next media chunk's plaintext: the kind byte, then `_pending_media_bytes` of media.
        self._plaintext = bytearray(header.chunk_max_bytes)
        self._plaintext[0] = KIND_MEDIA
        self._pending_media_bytes = 0
        self._media_bytes = 0
        self._chunks_written = 0
        # Record buffers reused chunk after chunk, and the file's SHA-256 fed from them.
        self._ring = HashedRecordRing(header.chunk_max_bytes + RECORD_OVERHEAD_BYTES)
        # A new recording's folder must be durable in evidence/ (and evidence/ on the card)
        # before its file is: the header fsync below promises the file survives a power cut.
        try:
            make_dirs(self._part_path.parent)
            self._fd = os.open(self._part_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except BaseException:
            self._ring.close()  # no file: only the hash thread to stop
            raise
        self._offset = 0
        try:
            self._check_space(len(header_bytes))
            self._write(header_bytes)
            self._ring.hash_bytes(header_bytes)
            self._fsync()
            fsync_dir(self._part_path.parent)
        except BaseException:
            # Nothing was reported durable: close and remove the file rather than leak the fd.
            self.abandon()
            durable_unlink(self._part_path)
            raise

    @property
    def path(self) -> Path:
        return self._part_path

    @property
    def file_bytes(self) -> int:
        """Bytes written so far plus media still pending in RAM (what the file will hold)."""
        return self._offset + self._pending_media_bytes

    @property
    def media_bytes(self) -> int:
        return self._media_bytes + self._pending_media_bytes

    @property
    def closed(self) -> bool:
        return self._sealer is None

    @property
    def poisoned(self) -> str | None:
        """Why this writer refuses every call (the first failed write or fsync), or None."""
        return self._poisoned

    def append_media(self, data: bytes | memoryview) -> None:
        """Buffer media; full chunks are encrypted and written (not yet fsynced)."""
        self._require_open()
        view = memoryview(data)
        while view:
            start = 1 + self._pending_media_bytes
            take = min(self._media_limit - self._pending_media_bytes, len(view))
            self._plaintext[start : start + take] = view[:take]
            self._pending_media_bytes += take
            view = view[take:]
            if self._pending_media_bytes == self._media_limit:
                self._flush_pending_media()

    def append_metadata(self, obj: dict[str, Any]) -> None:
        """Write one metadata object as its own chunk, after any pending media.

        An object whose chunk would exceed the header's chunk_max_bytes raises MetadataTooLarge
        before anything is written: a reader refuses a record longer than the header allows,
        so writing it would make the rest of the file unreadable."""
        self._require_open()
        plaintext = bytes([KIND_METADATA]) + _json_bytes(obj)
        if len(plaintext) > self._media_limit + 1:
            raise MetadataTooLarge(len(plaintext), self._media_limit + 1)
        self._flush_pending_media()
        self._write_chunk(plaintext, last=False)

    def sync(self) -> DurablePoint:
        """Write pending media as a short chunk and fsync: a segment boundary (spec 5.3)."""
        self._require_open()
        self._flush_pending_media()
        self._fsync()
        return DurablePoint(self._chunks_written, self._media_bytes, self._offset)

    def seal(
        self,
        end: dict[str, Any] | None = None,
        *,
        before_publish: Callable[[Sidecar], None] | None = None,
    ) -> SealedFile:
        """Write the LAST chunk, fsync, rename to `.mvbe`, fsync dir, write the sidecar.

        `before_publish(sidecar)` runs once the file is whole and durable and before its name
        changes (the store audits the seal there): a power cut before it leaves a `.part` that
        recovery completes and audits; one after it, a seal already audited. So no sealed file
        is ever on the card that the audit log does not name. If it raises, the file stays a
        `.part` (recovery completes it) and the error propagates.

        Space is not checked here: the card reserve exists so that sealing always fits.
        """
        self._require_open()
        try:
            self._flush_pending_media(check_space=False)
            sealed_at_ms = self._clock_ms()
            end_obj: dict[str, Any] = {
                **(end or {}),
                "type": "end",
                "media_bytes": self._media_bytes,
                "sealed_at_ms": sealed_at_ms,
            }
            last = bytes([KIND_METADATA]) + _json_bytes(end_obj)
            self._write_chunk(last, last=True, check_space=False)
            self._fsync()
        except BaseException:
            self.abandon()  # e.g. a bug; a failed write already poisoned and closed the file
            raise
        sha256_hex = self._close()  # the file is whole on the card: nothing more is written
        sealed_path = self._layout.sealed_path(self._recording_id, self._file_id)
        sidecar = Sidecar(
            recording_id=self._recording_id,
            file_id=self._file_id,
            file_seq=self._header.file_seq,
            created_at_ms=self._header.created_at_ms,
            size_bytes=self._offset,
            sha256_hex=sha256_hex,
            sealed_at_ms=sealed_at_ms,
            interrupted_at_chunk=None,
        )
        if before_publish is not None:
            before_publish(sidecar)
        durable_rename(self._part_path, sealed_path)
        write_sidecar(self._layout, sidecar)
        return SealedFile(sealed_path, sidecar)

    def abandon(self) -> None:
        """Stop without sealing (process shutdown after a fault); recovery finishes the file."""
        if self._sealer is not None:
            self._close()

    def _close(self) -> str:
        """Drop the file key and pending media, close the descriptor; the SHA-256 written."""
        self._sealer = None  # drops the file key with the AEAD context
        self._plaintext[:] = bytes(len(self._plaintext))  # do not leave footage lying in RAM
        self._pending_media_bytes = 0
        try:
            os.close(self._fd)
        finally:
            digest = self._ring.hexdigest()
        return digest

    def _require_open(self) -> None:
        if self._poisoned is not None:
            raise WriterPoisoned(
                f"evidence file {self._file_id} refuses further writes: an earlier write "
                f"failed ({self._poisoned}); recovery closes it at the next start"
            )
        if self._sealer is None:
            raise WriterClosed(f"evidence file {self._file_id} is already closed")

    def _flush_pending_media(self, *, check_space: bool = True) -> None:
        if self._pending_media_bytes == 0:
            return
        media_bytes = self._pending_media_bytes
        plaintext = memoryview(self._plaintext)[: 1 + media_bytes]
        self._write_chunk(plaintext, last=False, check_space=check_space)
        self._media_bytes += media_bytes
        self._pending_media_bytes = 0

    def _write_chunk(
        self, plaintext: bytes | memoryview, *, last: bool, check_space: bool = True
    ) -> None:
        """Seal `plaintext` as the next chunk into a ring buffer, write it, hash it."""
        assert self._sealer is not None
        record_bytes = len(plaintext) + RECORD_OVERHEAD_BYTES
        if check_space:
            # Before sealing: a refusal spends no nonce and leaves the writer usable.
            self._check_space(record_bytes)
        # A metadata object longer than a chunk gets a buffer of its own (the ring's are sized
        # for chunk_max_bytes).
        ring_buffer = self._ring.take() if record_bytes <= self._ring.buffer_bytes else None
        buffer = ring_buffer if ring_buffer is not None else bytearray(record_bytes)
        try:
            record = self._sealer.seal_into(plaintext, memoryview(buffer), last=last)
        except BaseException:
            if ring_buffer is not None:
                self._ring.give_back(ring_buffer)
            raise
        self._write(record)
        self._ring.hash_record(record, ring_buffer)
        self._chunks_written += 1

    def _check_space(self, record_bytes: int) -> None:
        if self._space_check is not None:
            self._space_check(record_bytes)

    def _write(self, record: bytes | memoryview) -> None:
        """Write a whole record or poison the writer (the file cut back to its old end)."""
        try:
            rest = memoryview(record)
            while rest:  # one write() unless the kernel takes less (rare)
                rest = rest[os.write(self._fd, rest) :]
        except OSError as exc:
            # Best effort: whole records only for recovery (which also cuts a torn tail itself).
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._offset)
            self._poison("write", exc)
        self._offset += len(record)

    def _fsync(self) -> None:
        """fsync, or poison: after a failed fsync nobody knows what the card kept (Linux may
        have dropped the dirty pages), so nothing more may be promised durable."""
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._poison("fsync", exc)

    def _poison(self, operation: str, exc: OSError) -> NoReturn:
        self._poisoned = f"{operation}: {exc.strerror or exc}"
        self._close()
        raise WriterPoisoned(
            f"{operation} of evidence file {self._file_id} failed: {exc.strerror or exc}"
        ) from exc


def _json_bytes(obj: dict[str, Any]) -> bytes:
    if "type" not in obj:
        raise ValueError("a metadata object needs a 'type' member")
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
