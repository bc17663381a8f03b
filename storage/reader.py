"""Reading evidence files with a back-office recording key (docs/evidence-format.md section 7).

Every way a file can differ from what the box wrote ends in one distinct `EvidenceError`; a file
that the box recovered after a power cut is not an error and is reported as interrupted.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from storage.chunk_crypto import ChunkOpener
from storage.envelope import RecipientPrivateKey, derive_file_key, recover_data_key
from storage.errors import (
    BadInterruptionRecord,
    CorruptChunk,
    ReorderedChunk,
    SplicedChunk,
    TrailingData,
    TruncatedFile,
)
from storage.evidence_format import (
    FORMAT_VERSION_1,
    INTERRUPTION_BODY_BYTES,
    KIND_MEDIA,
    KIND_METADATA,
    KNOWN_FLAGS,
    RECORD_FRAMING_BYTES,
    TAG_BYTES,
    EvidenceHeader,
    RecordFraming,
    crc32,
    declared_header_len,
    decode_framing,
    decode_header,
    file_tag,
    header_hash,
)

INTERRUPTION_DOMAIN = b"MVB interrupted v1"


class SignatureVerifier(Protocol):
    """The box's device public key (storage.devicekey.DevicePublicKey fits)."""

    def verify(self, message: bytes, signature: bytes) -> bool: ...


def interruption_message(
    header_bytes: bytes, chunk_count: int, recovered_at_ms: int, prior_sha256: bytes
) -> bytes:
    """What the device key signs in an interruption record (spec section 6)."""
    packed = struct.pack(">IQ", chunk_count, recovered_at_ms)
    return INTERRUPTION_DOMAIN + header_hash(header_bytes) + packed + prior_sha256


@dataclass(slots=True)
class ReadReport:
    """What a file held. `interrupted_at_chunk` is None for a normally sealed file.

    `key_committed` is True for a version 2 file, whose header MAC verified; a version 1 file
    has none (spec 9). `key_ids` are the recipients whose shares opened it (hex).
    """

    header: EvidenceHeader
    chunks: int = 0
    media_bytes: int = 0
    metadata: list[dict[str, Any]] = field(default_factory=list)
    interrupted_at_chunk: int | None = None
    recovered_at_ms: int | None = None
    interruption_signature_checked: bool = False
    file_sha256_hex: str = ""
    key_committed: bool = False
    key_ids: tuple[str, ...] = ()

    @property
    def format_version(self) -> int:
        return self.header.version


class _HashingStream:
    """Reads exactly what is asked and hashes everything read (for the interruption check)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()

    def read(self, size: int) -> bytes:
        data = self._stream.read(size)
        self.sha256.update(data)
        return data


def read_evidence(
    stream: BinaryIO,
    keys: RecipientPrivateKey | Sequence[RecipientPrivateKey],
    *,
    media_out: BinaryIO | None = None,
    device_key: SignatureVerifier | None = None,
) -> ReadReport:
    """Authenticate and decrypt a whole file; media bytes go to `media_out` in order.

    `keys`: one recipient key, or the keys of the holders present (a four-eyes file needs as
    many as its threshold: TooFewShares otherwise, before anything is decrypted). The header
    MAC is verified before the first chunk is opened (BadHeaderMac).

    Media is written to `media_out` only after its chunk authenticated, but a file that fails
    later leaves earlier media there: callers write to a temporary place and discard on error.
    """
    source = _HashingStream(stream)
    header_bytes = _read_header_bytes(source)
    header, _ = decode_header(header_bytes)
    given = (keys,) if isinstance(keys, RecipientPrivateKey) else tuple(keys)
    data_key = recover_data_key(header, header_bytes, given)
    opener = ChunkOpener(
        derive_file_key(data_key, header.file_id), header_bytes, header.nonce_prefix
    )
    report = ReadReport(
        header=header,
        key_committed=header.version != FORMAT_VERSION_1,
        key_ids=_opening_key_ids(header, given),
    )
    our_tag = file_tag(header_bytes)
    while True:
        prior_sha256 = source.sha256.copy().digest()
        framing = _read_framing(source, report.chunks)
        if framing is None:
            raise TruncatedFile(
                f"file ends after {report.chunks} chunks without a final chunk (truncated)",
                report.chunks,
            )
        if framing.is_interruption:
            _check_interruption(source, framing, header_bytes, prior_sha256, device_key, report)
            break
        plaintext = _open_chunk(source, framing, opener, header, our_tag, report.chunks)
        _consume_plaintext(plaintext, report, media_out)
        report.chunks += 1
        if framing.is_last:
            break
    if source.read(1):
        raise TrailingData(
            f"data follows the end of the file at chunk {report.chunks}", report.chunks
        )
    report.file_sha256_hex = source.sha256.hexdigest()
    return report


def _opening_key_ids(
    header: EvidenceHeader, keys: tuple[RecipientPrivateKey, ...]
) -> tuple[str, ...]:
    """The key ids (hex) of `keys` that are recipients of the file, in stanza order."""
    given = {key.public().key_id for key in keys}
    return tuple(s.key_id.hex() for s in header.recipients if s.key_id in given)


def _read_header_bytes(source: _HashingStream) -> bytes:
    start = source.read(12)
    length = declared_header_len(start)  # raises the precise error (magic, version, length)
    return start + source.read(length - len(start))


def _read_framing(source: _HashingStream, index: int) -> RecordFraming | None:
    raw = source.read(RECORD_FRAMING_BYTES)
    if not raw:
        return None
    if len(raw) < RECORD_FRAMING_BYTES:
        raise TruncatedFile(f"file is cut inside the framing of chunk {index}", index)
    return decode_framing(raw)


def _open_chunk(
    source: _HashingStream,
    framing: RecordFraming,
    opener: ChunkOpener,
    header: EvidenceHeader,
    our_tag: bytes,
    index: int,
) -> bytes:
    if framing.flags & ~KNOWN_FLAGS:
        raise CorruptChunk(f"chunk {index}: unknown flags {framing.flags:#04x}", index)
    if framing.file_tag != our_tag:
        raise SplicedChunk(
            f"chunk {index} belongs to another file (tag {framing.file_tag.hex()})", index
        )
    if not 1 <= framing.body_len <= header.chunk_max_bytes:
        raise CorruptChunk(f"chunk {index}: length {framing.body_len} out of range", index)
    sealed = source.read(framing.body_len + TAG_BYTES)
    if len(sealed) < framing.body_len + TAG_BYTES:
        raise TruncatedFile(f"file is cut inside chunk {index}", index)
    if framing.index != index:
        if opener.open(framing, sealed, framing.index) is not None:
            raise ReorderedChunk(
                f"position {index} holds chunk {framing.index} (chunks moved or removed)", index
            )
        raise CorruptChunk(f"chunk {index}: index field damaged", index)
    crc_matches = crc32(sealed) == framing.crc32
    plaintext = opener.open(framing, sealed, index)
    if plaintext is None:
        damage = "authentication failed" if crc_matches else "bits damaged"
        raise CorruptChunk(f"chunk {index} does not authenticate ({damage})", index)
    if not crc_matches:
        # The crc is outside the AEAD, so an authentic chunk with a wrong crc means the framing
        # itself was damaged on the card; the spec counts any flipped bit as corruption.
        raise CorruptChunk(f"chunk {index}: crc32 field damaged", index)
    return plaintext


def _consume_plaintext(plaintext: bytes, report: ReadReport, media_out: BinaryIO | None) -> None:
    kind, body = plaintext[0], plaintext[1:]
    if kind == KIND_MEDIA:
        report.media_bytes += len(body)
        if media_out is not None:
            media_out.write(body)
    elif kind == KIND_METADATA:
        report.metadata.append(json.loads(body))
    else:
        raise CorruptChunk(f"chunk {report.chunks}: unknown kind {kind}", report.chunks)


def _check_interruption(
    source: _HashingStream,
    framing: RecordFraming,
    header_bytes: bytes,
    prior_sha256: bytes,
    device_key: SignatureVerifier | None,
    report: ReadReport,
) -> None:
    index = report.chunks
    body = source.read(INTERRUPTION_BODY_BYTES)
    if (
        framing.body_len != INTERRUPTION_BODY_BYTES
        or len(body) != INTERRUPTION_BODY_BYTES
        or crc32(body) != framing.crc32
        or framing.file_tag != file_tag(header_bytes)
    ):
        raise BadInterruptionRecord(f"interruption record after chunk {index} is damaged", index)
    if framing.index != index:
        raise BadInterruptionRecord(
            f"interruption record claims {framing.index} chunks, file holds {index}", index
        )
    (recovered_at_ms,) = struct.unpack(">Q", body[:8])
    if device_key is not None:
        message = interruption_message(header_bytes, index, recovered_at_ms, prior_sha256)
        if not device_key.verify(message, body[8:]):
            raise BadInterruptionRecord(
                f"interruption record after chunk {index} is not signed by this box", index
            )
        report.interruption_signature_checked = True
    report.interrupted_at_chunk = index
    report.recovered_at_ms = recovered_at_ms
