"""STREAM chunk encryption with AES-256-GCM (docs/evidence-format.md section 4.2). Pure.

AES-GCM comes from `cryptography` (OpenSSL) rather than pycryptodome: measured in
`bench/store.py`, OpenSSL's GCM is about 8x faster on 256 KiB chunks, which is the difference
between encryption costing the box a few percent and encryption costing it a core.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.evidence_format import (
    FLAG_LAST,
    RECORD_FRAMING_BYTES,
    RecordFraming,
    chunk_nonce,
    crc32,
    file_tag,
    header_hash,
)


class ChunkSealer:
    """Turns plaintext chunks of one file into complete records (framing, ciphertext, tag)."""

    def __init__(self, file_key: bytes, header_bytes: bytes, nonce_prefix: bytes) -> None:
        self._aead = AESGCM(file_key)
        self._header_hash = header_hash(header_bytes)
        self._tag = file_tag(header_bytes)
        self._prefix = nonce_prefix

    def seal(self, index: int, plaintext: bytes | bytearray, *, last: bool) -> tuple[bytes, bytes]:
        """The record for chunk `index` as (framing, ciphertext || tag), written back to back.

        Two parts rather than one so the writer can hand both to writev without copying.
        The caller guarantees each index is sealed once.
        """
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


__all__ = ["RECORD_FRAMING_BYTES", "ChunkOpener", "ChunkSealer"]
