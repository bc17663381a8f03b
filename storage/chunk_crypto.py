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
    FLAG_LAST,
    RECORD_FRAMING_BYTES,
    RecordFraming,
    chunk_nonce,
    crc32,
    file_tag,
    header_hash,
)

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

    def seal(self, plaintext: bytes | bytearray, *, last: bool) -> tuple[bytes, bytes]:
        """The record for the next chunk as (framing, ciphertext || tag), written back to back.

        Two parts rather than one so the writer can hand both to writev without copying.
        Raises NonceExhausted after the LAST chunk or when the 32-bit index would wrap.
        """
        if self._ended:
            raise NonceExhausted("the LAST chunk is sealed: this file takes no further chunk")
        index = self._next_index
        if index > MAX_CHUNK_INDEX:
            raise NonceExhausted(f"chunk index {index} does not fit the 32-bit nonce counter")
        self._next_index += 1  # spent from here on, even if encryption or the write fails
        self._ended = last
        flags = FLAG_LAST if last else 0
        framing = RecordFraming(self._tag, index, flags, len(plaintext), 0)
        aad = self._header_hash + framing.aad_prefix()
        sealed = self._aead.encrypt(chunk_nonce(self._prefix, index, last), plaintext, aad)
        framing = RecordFraming(self._tag, index, flags, len(plaintext), crc32(sealed))
        return framing.encode(), sealed


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


__all__ = ["RECORD_FRAMING_BYTES", "ChunkOpener", "ChunkSealer", "NonceExhausted"]
