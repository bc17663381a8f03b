"""Byte layouts of the evidence file (docs/evidence-format.md, section 4). Pure: no I/O, no keys.

Everything here encodes or decodes bytes and checks ranges; encryption lives in `chunk_crypto`.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

from storage.errors import MalformedHeader, NotEvidenceFile, UnsupportedVersion

MAGIC = b"\x89MVB\r\n\x1a\n"
FORMAT_VERSION = 1
FIXED_HEADER_BYTES = 68
STANZA_BYTES = 88
MAX_RECIPIENTS = 2
MAX_CHUNK_BYTES = 16 * 1024 * 1024
KEY_ID_BYTES = 8
NONCE_PREFIX_BYTES = 7
WRAPPED_KEY_BYTES = 48
RECORD_FRAMING_BYTES = 16
TAG_BYTES = 16

FLAG_LAST = 0x01
FLAG_INTERRUPTED = 0x80
KNOWN_FLAGS = FLAG_LAST | FLAG_INTERRUPTED

KIND_MEDIA = 0x01
KIND_METADATA = 0x02

INTERRUPTION_BODY_BYTES = 8 + 64

# magic, version, header_len, recording_id, file_id, file_seq, created_at_ms,
# chunk_max_bytes, nonce_prefix, recipient_count
_FIXED = struct.Struct(">8sHH16s16sIQI7sB")
_FRAMING = struct.Struct(">4sIB3sI")
assert _FIXED.size == FIXED_HEADER_BYTES
assert _FRAMING.size == RECORD_FRAMING_BYTES


@dataclass(frozen=True, slots=True)
class RecipientStanza:
    """The data key wrapped to one back-office recording key."""

    key_id: bytes
    ephemeral_public: bytes
    wrapped_key: bytes


@dataclass(frozen=True, slots=True)
class EvidenceHeader:
    """The plaintext header. Invariant: holds ids, times and key ids only; no personal data."""

    recording_id: bytes
    file_id: bytes
    file_seq: int
    created_at_ms: int
    chunk_max_bytes: int
    nonce_prefix: bytes
    recipients: tuple[RecipientStanza, ...]

    def encode(self) -> bytes:
        """The exact header bytes; `decode_header(h.encode()) == h`."""
        _check_header_fields(self)
        fixed = _FIXED.pack(
            MAGIC,
            FORMAT_VERSION,
            header_len(len(self.recipients)),
            self.recording_id,
            self.file_id,
            self.file_seq,
            self.created_at_ms,
            self.chunk_max_bytes,
            self.nonce_prefix,
            len(self.recipients),
        )
        stanzas = b"".join(s.key_id + s.ephemeral_public + s.wrapped_key for s in self.recipients)
        return fixed + stanzas


def header_len(recipient_count: int) -> int:
    return FIXED_HEADER_BYTES + STANZA_BYTES * recipient_count


def header_hash(header_bytes: bytes) -> bytes:
    """H in the spec: SHA-256 over the header; bound into every chunk's associated data."""
    return hashlib.sha256(header_bytes).digest()


def file_tag(header_bytes: bytes) -> bytes:
    return header_hash(header_bytes)[:4]


def _check_header_fields(header: EvidenceHeader) -> None:
    if not 1 <= len(header.recipients) <= MAX_RECIPIENTS:
        raise MalformedHeader(f"recipient count {len(header.recipients)} is not 1 or 2")
    if not 1 <= header.chunk_max_bytes <= MAX_CHUNK_BYTES:
        raise MalformedHeader(f"chunk_max_bytes {header.chunk_max_bytes} out of range")
    if len(header.recording_id) != 16 or len(header.file_id) != 16:
        raise MalformedHeader("recording_id and file_id must be 16 bytes")
    if len(header.nonce_prefix) != NONCE_PREFIX_BYTES:
        raise MalformedHeader("nonce_prefix must be 7 bytes")


def decode_header(data: bytes) -> tuple[EvidenceHeader, int]:
    """Parse the header at the start of `data`; return it and its length in bytes.

    Raises NotEvidenceFile, UnsupportedVersion or MalformedHeader (also for a short header).
    """
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise NotEvidenceFile("not an MVB evidence file (bad magic)")
    if len(data) < FIXED_HEADER_BYTES:
        raise MalformedHeader(f"header is cut short at {len(data)} bytes")
    (_, version, length, rec_id, file_id, seq, created, chunk_max, prefix, count) = _FIXED.unpack(
        data[:FIXED_HEADER_BYTES]
    )
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(f"evidence format version {version} is not supported")
    if not 1 <= count <= MAX_RECIPIENTS or length != header_len(count):
        raise MalformedHeader(f"recipient count {count} / header length {length} inconsistent")
    if len(data) < length:
        raise MalformedHeader(f"header is cut short at {len(data)} of {length} bytes")
    stanzas = tuple(
        _decode_stanza(data, FIXED_HEADER_BYTES + i * STANZA_BYTES) for i in range(count)
    )
    header = EvidenceHeader(rec_id, file_id, seq, created, chunk_max, prefix, stanzas)
    _check_header_fields(header)
    return header, length


def _decode_stanza(data: bytes, offset: int) -> RecipientStanza:
    key_id = data[offset : offset + KEY_ID_BYTES]
    eph = data[offset + KEY_ID_BYTES : offset + KEY_ID_BYTES + 32]
    wrapped = data[offset + KEY_ID_BYTES + 32 : offset + STANZA_BYTES]
    return RecipientStanza(key_id, eph, wrapped)


@dataclass(frozen=True, slots=True)
class RecordFraming:
    """The 16 plaintext bytes in front of every record (spec 4.2)."""

    file_tag: bytes
    index: int
    flags: int
    body_len: int
    crc32: int

    @property
    def is_last(self) -> bool:
        return bool(self.flags & FLAG_LAST)

    @property
    def is_interruption(self) -> bool:
        return bool(self.flags & FLAG_INTERRUPTED)

    def aad_prefix(self) -> bytes:
        """Framing bytes 0..11: the part bound into the AEAD (the crc is computed after it)."""
        return _FRAMING.pack(self.file_tag, self.index, self.flags, _u24(self.body_len), 0)[:12]

    def encode(self) -> bytes:
        return _FRAMING.pack(self.file_tag, self.index, self.flags, _u24(self.body_len), self.crc32)

    def record_len(self) -> int:
        """Whole record size: framing, body, and the GCM tag for chunks."""
        tail = 0 if self.is_interruption else TAG_BYTES
        return RECORD_FRAMING_BYTES + self.body_len + tail


def _u24(value: int) -> bytes:
    if not 0 <= value < 1 << 24:
        raise ValueError(f"body length {value} does not fit 24 bits")
    return value.to_bytes(3, "big")


def decode_framing(data: bytes) -> RecordFraming:
    """Parse 16 framing bytes. Range checks against the header are the caller's."""
    tag, index, flags, length, crc = _FRAMING.unpack(data)
    return RecordFraming(tag, index, flags, int.from_bytes(length, "big"), crc)


def chunk_nonce(nonce_prefix: bytes, index: int, last: bool) -> bytes:
    """STREAM nonce: prefix (7) || uint32 index || last flag (1)."""
    return nonce_prefix + struct.pack(">IB", index, 1 if last else 0)


def crc32(data: bytes | memoryview) -> int:
    """Torn-write detector for recovery; not a security measure (spec 4.2)."""
    return zlib.crc32(data) & 0xFFFFFFFF
