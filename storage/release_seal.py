"""A sealed release bundle: a release bundle encrypted to the fleet's release key, so that a copy
on a USB stick or a mirror reveals nothing but its size (docs/releases.md 6, "MVB release sealed
v1", written down before this code).

Built from the pieces of the evidence format, not a format of its own: the data key is wrapped
to the fleet's X25519 release key the way a recording's share is (storage/envelope.py
`wrap_key`, docs/evidence-format.md 3.3, with a domain of its own), the chunk key derived from
it with HKDF-SHA256 (3.4), and the body is the evidence format's chunk records (4.2: STREAM
AES-256-GCM, the header's SHA-256 in every chunk's associated data, the LAST flag in the nonce):
storage/chunk_crypto.py seals and opens them.

    header (123 bytes): magic "MVBRSEAL" 8 || version 1 (1 byte) || chunk_bytes (uint32 BE, 4)
        || seal_id 16 || nonce_prefix 7 || stanza 88 (key_id 8 || ephemeral 32 || wrapped 48)
        - 1 byte reserved (0)
    records: framing 16 || AES-256-GCM(chunk) || tag 16, index 0, 1, ...; every chunk but the
        last exactly chunk_bytes, the last 1..chunk_bytes with FLAG_LAST; nothing after it.

Invariants: `open_release` writes plaintext only of chunks that authenticated, in order, and
raises ReleaseSealError (the sealed file is at fault: truncated, reordered, altered, extended)
or storage.errors' NoMatchingRecipient / WrongKey (the box's release key is not the one it was
sealed to) before returning; the caller discards the output when it raises. Every seal is
fresh (new data key, seal id, nonce prefix, ephemeral key): sealing the same bundle twice gives
unrelated bytes.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO, Final

from common.faults import RemoteFault
from storage.chunk_crypto import RECORD_OVERHEAD_BYTES, ChunkOpener, ChunkSealer
from storage.envelope import RecipientPrivateKey, RecipientPublicKey, hkdf_sha256, wrap_key
from storage.evidence_format import (
    KEY_ID_BYTES,
    RECORD_FRAMING_BYTES,
    TAG_BYTES,
    WRAPPED_KEY_BYTES,
    RecipientStanza,
    decode_framing,
    file_tag,
)
from storage.key_shares import DATA_KEY_BYTES

MAGIC: Final = b"MVBRSEAL"
VERSION: Final = 1
SEAL_ID_BYTES: Final = 16
NONCE_PREFIX_BYTES: Final = 7
EPHEMERAL_BYTES: Final = 32
STANZA_BYTES: Final = KEY_ID_BYTES + EPHEMERAL_BYTES + WRAPPED_KEY_BYTES
_FIXED: Final = struct.Struct(">8sBI16s7s")
HEADER_BYTES: Final = _FIXED.size + STANZA_BYTES + 1
CHUNK_BYTES: Final = 1024 * 1024
"""Plaintext per chunk: 32 bytes of framing and tag per MiB (0.003 %)."""
MAX_CHUNK_BYTES: Final = 4 * 1024 * 1024  # below the framing's 24-bit body length
_WRAP_DOMAIN: Final = b"MVB release sealed v1\n"
_WRAP_INFO: Final = b"MVB release sealed v1 key wrap"
_FILE_KEY_INFO: Final = b"MVB release sealed v1 chunk key"


class ReleaseSealError(ValueError, RemoteFault):
    """The sealed file is not an intact sealed release (truncated, altered, reordered, extended,
    or not this format)."""


def seal_release(source: BinaryIO, out: BinaryIO, recipient: RecipientPublicKey) -> int:
    """Seal all of `source` to `recipient` into `out`; returns the bytes written."""
    seal_id = os.urandom(SEAL_ID_BYTES)
    nonce_prefix = os.urandom(NONCE_PREFIX_BYTES)
    data_key = bytearray(os.urandom(DATA_KEY_BYTES))
    try:
        stanza = wrap_key(bytes(data_key), recipient, _WRAP_DOMAIN + seal_id, _WRAP_INFO)
        chunk_key = _chunk_key(bytes(data_key), seal_id)
    finally:
        data_key[:] = bytes(DATA_KEY_BYTES)
    header = _header(CHUNK_BYTES, seal_id, nonce_prefix, stanza)
    sealer = ChunkSealer(chunk_key, header, nonce_prefix)
    out.write(header)
    written = len(header)
    record = memoryview(bytearray(CHUNK_BYTES + RECORD_OVERHEAD_BYTES))  # reused per chunk
    chunk = source.read(CHUNK_BYTES)
    if not chunk:
        raise ValueError("an empty release bundle is not sealed")
    while chunk:
        following = source.read(CHUNK_BYTES)
        sealed = sealer.seal_into(chunk, record, last=not following)
        out.write(sealed)
        written += len(sealed)
        chunk = following
    return written


def open_release(source: BinaryIO, out: BinaryIO, key: RecipientPrivateKey) -> int:
    """Write the plaintext of the sealed release in `source` to `out`; returns its bytes.

    Raises ReleaseSealError, or NoMatchingRecipient / WrongKey (module invariants)."""
    header = source.read(HEADER_BYTES)
    if len(header) != HEADER_BYTES:
        raise ReleaseSealError("shorter than a sealed release's header")
    magic, version, chunk_bytes, seal_id, nonce_prefix = _FIXED.unpack_from(header)
    if magic != MAGIC or version != VERSION:
        raise ReleaseSealError("not a sealed release (magic or version)")
    if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES or header[-1] != 0:
        raise ReleaseSealError("the header's chunk size or reserved byte is out of range")
    at = _FIXED.size
    stanza = RecipientStanza(
        header[at : at + KEY_ID_BYTES],
        header[at + KEY_ID_BYTES : at + KEY_ID_BYTES + EPHEMERAL_BYTES],
        header[at + KEY_ID_BYTES + EPHEMERAL_BYTES : at + STANZA_BYTES],
    )
    data_key = key.unwrap_key([stanza], _WRAP_DOMAIN + seal_id, _WRAP_INFO)
    opener = ChunkOpener(_chunk_key(data_key, seal_id), header, nonce_prefix)
    return _open_records(source, out, opener, file_tag(header), chunk_bytes)


def _open_records(
    source: BinaryIO, out: BinaryIO, opener: ChunkOpener, tag: bytes, chunk_bytes: int
) -> int:
    index = 0
    plain_bytes = 0
    while True:
        raw = source.read(RECORD_FRAMING_BYTES)
        if len(raw) != RECORD_FRAMING_BYTES:
            raise ReleaseSealError(f"truncated: no LAST chunk after {index} chunks")
        framing = decode_framing(raw)
        if framing.file_tag != tag or framing.index != index or framing.is_interruption:
            raise ReleaseSealError(f"chunk {index}: framing of another file or place")
        full = framing.body_len == chunk_bytes
        if not (full or (framing.is_last and 1 <= framing.body_len < chunk_bytes)):
            raise ReleaseSealError(f"chunk {index}: a length the format does not allow")
        sealed = source.read(framing.body_len + TAG_BYTES)
        plaintext = opener.open(framing, sealed, index)
        if plaintext is None:
            raise ReleaseSealError(f"chunk {index} does not authenticate (altered or moved)")
        out.write(plaintext)
        plain_bytes += len(plaintext)
        index += 1
        if framing.is_last:
            break
    if source.read(1):
        raise ReleaseSealError("bytes after the LAST chunk")
    return plain_bytes


def _header(
    chunk_bytes: int, seal_id: bytes, nonce_prefix: bytes, stanza: RecipientStanza
) -> bytes:
    fixed = _FIXED.pack(MAGIC, VERSION, chunk_bytes, seal_id, nonce_prefix)
    return fixed + stanza.key_id + stanza.ephemeral_public + stanza.wrapped_key + b"\x00"


def _chunk_key(data_key: bytes, seal_id: bytes) -> bytes:
    return hkdf_sha256(data_key, seal_id, _FILE_KEY_INFO)
