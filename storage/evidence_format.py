"""Byte layouts of the evidence file (docs/evidence-format.md, section 4). Pure: no I/O.

Everything here encodes or decodes bytes and checks ranges; encryption lives in `chunk_crypto`,
keys in `envelope`. Headers of version 2 are written and read, of version 1 only read (spec 9).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from isal import isal_zlib

from storage.errors import MalformedHeader, NotEvidenceFile, UnsupportedVersion

MAGIC = b"\x89MVB\r\n\x1a\n"
FORMAT_VERSION = 2
"""What a writer writes (spec 4.1). Version 1 is still read (spec 9), never written."""
FORMAT_VERSION_1 = 1
READABLE_VERSIONS = frozenset({FORMAT_VERSION_1, FORMAT_VERSION})
FIXED_HEADER_BYTES = 68
"""The fields both versions share, magic to recipient_count."""
V2_FIXED_HEADER_BYTES = FIXED_HEADER_BYTES + 1  # + threshold
STANZA_BYTES = 88
HEADER_MAC_BYTES = 32
MAX_RECIPIENTS = 8
MAX_RECIPIENTS_V1 = 2
MAX_HEADER_BYTES = V2_FIXED_HEADER_BYTES + STANZA_BYTES * MAX_RECIPIENTS + HEADER_MAC_BYTES
"""The longest header either version allows (805 bytes)."""
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
_CRC = struct.Struct(">I")
CRC_OFFSET = 12
"""Where the crc32 sits in the framing; the bytes before it are the AEAD's record prefix."""
assert _FIXED.size == FIXED_HEADER_BYTES
assert _FRAMING.size == RECORD_FRAMING_BYTES


@dataclass(frozen=True, slots=True)
class RecipientStanza:
    """One recipient's share of the data key, wrapped to its recording key (spec 3.3)."""

    key_id: bytes
    ephemeral_public: bytes
    wrapped_key: bytes


@dataclass(frozen=True, slots=True)
class EvidenceHeader:
    """The plaintext header. Invariant: holds ids, times and key ids only; no personal data.

    `threshold` is k of spec 3.1 (how many recipients must act together); `version` is 1 only
    for a header read from an old file; `header_mac` is the MAC as read (empty until written,
    and for version 1, which has none).
    """

    recording_id: bytes
    file_id: bytes
    file_seq: int
    created_at_ms: int
    chunk_max_bytes: int
    nonce_prefix: bytes
    recipients: tuple[RecipientStanza, ...]
    threshold: int = 1
    version: int = FORMAT_VERSION
    header_mac: bytes = b""

    def authenticated_bytes(self) -> bytes:
        """Every header byte before the MAC: what the header MAC covers (spec 4.1.1).
        For version 1, the whole header."""
        _check_header_fields(self)
        count = len(self.recipients)
        fixed = _FIXED.pack(
            MAGIC,
            self.version,
            header_len(count, self.version),
            self.recording_id,
            self.file_id,
            self.file_seq,
            self.created_at_ms,
            self.chunk_max_bytes,
            self.nonce_prefix,
            count,
        )
        threshold = b"" if self.version == FORMAT_VERSION_1 else bytes([self.threshold])
        stanzas = b"".join(s.key_id + s.ephemeral_public + s.wrapped_key for s in self.recipients)
        return fixed + threshold + stanzas

    def encode(self, mac_key: bytes) -> bytes:
        """The exact version 2 header bytes, sealed with the header MAC keyed by `mac_key`;
        `decode_header(h.encode(k))[0]` equals `h` with that MAC."""
        if self.version != FORMAT_VERSION:
            raise ValueError("only version 2 headers are written (spec 9)")
        body = self.authenticated_bytes()
        return body + header_mac(mac_key, body)


def header_len(recipient_count: int, version: int = FORMAT_VERSION) -> int:
    if version == FORMAT_VERSION_1:
        return FIXED_HEADER_BYTES + STANZA_BYTES * recipient_count
    return V2_FIXED_HEADER_BYTES + STANZA_BYTES * recipient_count + HEADER_MAC_BYTES


def header_mac(mac_key: bytes, authenticated: bytes) -> bytes:
    """HMAC-SHA256 over the header before its MAC (spec 4.1.1)."""
    return hmac.new(mac_key, authenticated, hashlib.sha256).digest()


def header_mac_verifies(header_bytes: bytes, mac_key: bytes) -> bool:
    """Whether a version 2 header's MAC is the one `mac_key` gives (constant-time compare)."""
    body, mac = header_bytes[:-HEADER_MAC_BYTES], header_bytes[-HEADER_MAC_BYTES:]
    return hmac.compare_digest(mac, header_mac(mac_key, body))


def header_hash(header_bytes: bytes) -> bytes:
    """H in the spec: SHA-256 over the header; bound into every chunk's associated data."""
    return hashlib.sha256(header_bytes).digest()


def file_tag(header_bytes: bytes) -> bytes:
    return header_hash(header_bytes)[:4]


def _check_header_fields(header: EvidenceHeader) -> None:
    count = len(header.recipients)
    if header.version not in READABLE_VERSIONS:
        raise UnsupportedVersion(f"evidence format version {header.version} is not supported")
    most = MAX_RECIPIENTS_V1 if header.version == FORMAT_VERSION_1 else MAX_RECIPIENTS
    if not 1 <= count <= most:
        raise MalformedHeader(f"recipient count {count} is not in 1..{most}")
    if not 1 <= header.threshold <= count or (
        header.version == FORMAT_VERSION_1 and header.threshold != 1
    ):
        raise MalformedHeader(f"threshold {header.threshold} is not in 1..{count}")
    if len({s.key_id for s in header.recipients}) != count:
        raise MalformedHeader("two recipient stanzas carry the same key id")
    if not 1 <= header.chunk_max_bytes <= MAX_CHUNK_BYTES:
        raise MalformedHeader(f"chunk_max_bytes {header.chunk_max_bytes} out of range")
    if len(header.recording_id) != 16 or len(header.file_id) != 16:
        raise MalformedHeader("recording_id and file_id must be 16 bytes")
    if len(header.nonce_prefix) != NONCE_PREFIX_BYTES:
        raise MalformedHeader("nonce_prefix must be 7 bytes")


def declared_header_len(data: bytes) -> int:
    """The header length the first 12 bytes declare, after checking magic, version and bound.

    What a streaming reader needs to know how much to read; `decode_header` checks the rest.
    """
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise NotEvidenceFile("not an MVB evidence file (bad magic)")
    if len(data) < 12:
        raise MalformedHeader(f"header is cut short at {len(data)} bytes")
    version, length = struct.unpack_from(">HH", data, len(MAGIC))
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersion(f"evidence format version {version} is not supported")
    if not FIXED_HEADER_BYTES < length <= MAX_HEADER_BYTES:
        raise MalformedHeader(f"header length {length} out of range")
    return int(length)


def decode_header(data: bytes) -> tuple[EvidenceHeader, int]:
    """Parse the header (version 1 or 2) at the start of `data`; return it and its length.

    Raises NotEvidenceFile, UnsupportedVersion or MalformedHeader (also for a short header).
    The MAC is read, not checked: that needs the data key (the reader's job, spec 7).
    """
    length = declared_header_len(data)
    if len(data) < FIXED_HEADER_BYTES:
        raise MalformedHeader(f"header is cut short at {len(data)} bytes")
    (_, version, _, rec_id, file_id, seq, created, chunk_max, prefix, count) = _FIXED.unpack(
        data[:FIXED_HEADER_BYTES]
    )
    if not 1 <= count <= MAX_RECIPIENTS or length != header_len(count, version):
        raise MalformedHeader(f"recipient count {count} / header length {length} inconsistent")
    if len(data) < length:
        raise MalformedHeader(f"header is cut short at {len(data)} of {length} bytes")
    if version == FORMAT_VERSION_1:
        threshold, first_stanza, mac = 1, FIXED_HEADER_BYTES, b""
    else:
        threshold, first_stanza = data[FIXED_HEADER_BYTES], V2_FIXED_HEADER_BYTES
        mac = bytes(data[length - HEADER_MAC_BYTES : length])
    stanzas = tuple(_decode_stanza(data, first_stanza + i * STANZA_BYTES) for i in range(count))
    header = EvidenceHeader(
        rec_id, file_id, seq, created, chunk_max, prefix, stanzas, threshold, version, mac
    )
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


def pack_framing_into(
    buf: bytearray | memoryview, tag: bytes, index: int, flags: int, body_len: int, crc: int
) -> None:
    """Write the 16 framing bytes at the start of `buf` (the writer's record buffer): the same
    bytes as `RecordFraming(tag, index, flags, body_len, crc).encode()`, without a new object."""
    _FRAMING.pack_into(buf, 0, tag, index, flags, _u24(body_len), crc)


def pack_crc_into(buf: bytearray | memoryview, crc: int) -> None:
    """Fill in the crc32 field (framing bytes 12..15) once the ciphertext and tag are known."""
    _CRC.pack_into(buf, CRC_OFFSET, crc)


def decode_framing(data: bytes) -> RecordFraming:
    """Parse 16 framing bytes. Range checks against the header are the caller's."""
    tag, index, flags, length, crc = _FRAMING.unpack(data)
    return RecordFraming(tag, index, flags, int.from_bytes(length, "big"), crc)


def chunk_nonce(nonce_prefix: bytes, index: int, last: bool) -> bytes:
    """STREAM nonce: prefix (7) || uint32 index || last flag (1)."""
    return nonce_prefix + struct.pack(">IB", index, 1 if last else 0)


def crc32(data: bytes | bytearray | memoryview) -> int:
    """Torn-write detector for recovery; not a security measure (spec 4.2).

    zlib's CRC-32 (ISO-HDLC), computed by ISA-L: the same value as `zlib.crc32`, about ten
    times faster here (carry-less multiply on x86; ARMv8's CRC32 or PMULL instructions on ARM),
    where zlib's costs the writer about three times what AES-GCM does (docs/benchmarks.md)."""
    return isal_zlib.crc32(data) & 0xFFFFFFFF
