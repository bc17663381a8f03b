"""STREAM chunk encryption with AES-256-GCM (docs/evidence-format.md section 4.2). Pure.

AES-GCM comes from `cryptography` (OpenSSL) rather than pycryptodome: measured in
`bench/store.py`, OpenSSL's GCM is about 8x faster on 256 KiB chunks, which is the difference
between encryption costing the box a few percent and encryption costing it a core.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.faults import MisuseFault
from storage.evidence_format import (
    CRC_OFFSET,
    FLAG_LAST,
    RECORD_FRAMING_BYTES,
    TAG_BYTES,
    RecordFraming,
    chunk_nonce,
    crc32,
    file_tag,
    header_hash,
    pack_crc_into,
    pack_framing_into,
)

RECORD_OVERHEAD_BYTES = RECORD_FRAMING_BYTES + TAG_BYTES
"""What a record adds to its chunk's plaintext: framing in front, GCM tag behind."""
MAX_CHUNK_INDEX = 0xFFFFFFFF
"""The nonce counter is 32 bits (spec 4.2): a file never holds more chunks than this."""


class NonceExhausted(MisuseFault):
    """A sealer was asked for a chunk after its LAST one, or past the 32-bit counter: sealing
    would reuse a nonce, so it refuses (a bug in the caller, never a card fault)."""


class ChunkSealer:
    """Turns plaintext chunks of one file into complete records (framing, ciphertext, tag).

    Invariant: no (key, nonce) pair is ever used twice. The sealer assigns each chunk's index
    itself, counting from 0, and counts it as spent the moment it is sealed, whatever becomes of
    the record afterwards: a record that never reached the card still used its nonce. After the
    LAST chunk it seals nothing more. One sealer per file key (the writer makes exactly one).
    """

    def __init__(self, file_key: bytes, header_bytes: bytes, nonce_prefix: bytes) -> None:
        self._aead = AESGCM(file_key)
        self._header_hash = header_hash(header_bytes)
        self._tag = file_tag(header_bytes)
        self._prefix = nonce_prefix
        self._next_index = 0
        self._ended = False

    @property
    def chunks_sealed(self) -> int:
        """How many indexes (nonces) are spent: the next chunk gets this index."""
        return self._next_index

    def seal_into(
        self, plaintext: bytes | bytearray | memoryview, record: memoryview, *, last: bool
    ) -> memoryview:
        """Seal the next chunk into `record` and return the view of the whole record.

        The record is framing (16) || ciphertext || tag (16), back to back at the start of
        `record` (at least `len(plaintext) + RECORD_OVERHEAD_BYTES` long): the caller writes
        it with one syscall and hashes the same bytes, and reuses the buffer, so a chunk costs
        no allocation and no copy beyond the encryption itself. Raises NonceExhausted after
        the LAST chunk or when the 32-bit index would wrap.
        """
        if self._ended:
            raise NonceExhausted("the LAST chunk is sealed: this file takes no further chunk")
        index = self._next_index
        if index > MAX_CHUNK_INDEX:
            raise NonceExhausted(f"chunk index {index} does not fit the 32-bit nonce counter")
        body_len = len(plaintext)
        out = record[: body_len + RECORD_OVERHEAD_BYTES]
        if len(out) < body_len + RECORD_OVERHEAD_BYTES:
            raise ValueError(f"a record buffer of {len(record)} bytes cannot hold {body_len}")
        self._next_index += 1  # spent from here on, even if encryption or the write fails
        self._ended = last
        pack_framing_into(out, self._tag, index, FLAG_LAST if last else 0, body_len, 0)
        aad = self._header_hash + out[:CRC_OFFSET].tobytes()
        nonce = chunk_nonce(self._prefix, index, last)
        self._aead.encrypt_into(nonce, plaintext, aad, out[RECORD_FRAMING_BYTES:])
        pack_crc_into(out, crc32(out[RECORD_FRAMING_BYTES:]))
        return out


class ChunkOpener:
    """Authenticates and decrypts records of one file."""

    def __init__(self, file_key: bytes, header_bytes: bytes, nonce_prefix: bytes) -> None:
        self._aead = AESGCM(file_key)
        self._header_hash = header_hash(header_bytes)
        self._prefix = nonce_prefix

    def open(self, framing: RecordFraming, sealed: bytes, index: int) -> bytes | None:
        """Plaintext if the record authenticates as chunk `index`, else None.

        `index` is where the reader expects the chunk; passing the record's own index instead
        tells a moved chunk from a damaged one.
        """
        aad = self._header_hash + framing.aad_prefix()
        nonce = chunk_nonce(self._prefix, index, framing.is_last)
        try:
            return self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            return None


__all__ = [
    "RECORD_FRAMING_BYTES",
    "RECORD_OVERHEAD_BYTES",
    "ChunkOpener",
    "ChunkSealer",
    "NonceExhausted",
]
