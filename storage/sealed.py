"""Sealed values: a short piece of personal data (an officer id, a shift's bodycam serials) that
only the back office can read, in text that fits an audit field or a state file.

The box keeps no key that opens them: a value is encrypted under a fresh data key wrapped to the
back office's recording keys the way a recording's share is (storage/envelope.py `wrap_key`,
docs/evidence-format.md 3.3, with a wrap of its own: `info` "MVB sealed v1 key wrap"), and
opened with one recording private key (`RecipientPrivateKey.unwrap_key`). Each recipient key
opens a sealed value alone: it is personal data in an audit field, not footage, so four-eyes
(docs/four-eyes.md) does not split it. Every seal is fresh (new data key, new ephemeral keys),
so two seals of the same id look unrelated: a box and its card reveal neither who nor whether
twice.

Format, "MVB sealed v1" (docs/audit-custody.md 6)
================================================

Text: ``mvb-sealed-v1:<label>:<body>``, the body in base64url without padding; the label
(``[a-z][a-z0-9_]{0,31}``) names what is sealed and is bound into the encryption, so a value
cannot be moved to a field of another kind.

Body::

    seal_id (16 random bytes) || n (1 byte, 1..8) || n recipient stanzas (88 bytes each:
    key_id 8 || ephemeral X25519 32 || wrapped data key 48) || AES-256-GCM ciphertext || tag 16

- stanza: ``wrap_key(data_key, recipient, aad, info)`` with ``aad = b"MVB sealed v1\\n" ||
  seal_id`` and ``info = b"MVB sealed v1 key wrap"``, so a stanza of a recording never opens a
  sealed value, nor the reverse;
- value key: HKDF-SHA256(data_key, 32 bytes, salt = seal_id, info = b"MVB sealed v1 value
  key\\n" || label);
- ciphertext: AES-256-GCM(value key, nonce = 12 zero bytes: the key is used once), associated
  data = the label, LF, and the body up to the ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.faults import RemoteFault
from storage.envelope import RecipientPrivateKey, RecipientPublicKey, hkdf_sha256, wrap_key
from storage.evidence_format import KEY_ID_BYTES, WRAPPED_KEY_BYTES, RecipientStanza
from storage.key_shares import DATA_KEY_BYTES

PREFIX: Final = "mvb-sealed-v1"
LABEL: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
SEAL_ID_BYTES: Final = 16
EPHEMERAL_BYTES: Final = 32
STANZA_BYTES: Final = KEY_ID_BYTES + EPHEMERAL_BYTES + WRAPPED_KEY_BYTES
TAG_BYTES: Final = 16
MAX_RECIPIENTS: Final = 8  # as many as a recording may have (storage/envelope.py RecipientSet)
MAX_PLAINTEXT_BYTES: Final = 4096
_WRAP_DOMAIN: Final = b"MVB sealed v1\n"
_WRAP_INFO: Final = b"MVB sealed v1 key wrap"
_VALUE_INFO: Final = b"MVB sealed v1 value key\n"
_ZERO_NONCE: Final = bytes(12)


class SealedFormatError(ValueError, RemoteFault):
    """The text is not a sealed value of this format (or of the label asked for)."""


@dataclass(frozen=True, slots=True)
class _Parsed:
    label: str
    seal_id: bytes
    stanzas: tuple[RecipientStanza, ...]
    header: bytes
    ciphertext: bytes


def seal(plaintext: bytes, label: str, recipients: tuple[RecipientPublicKey, ...]) -> str:
    """`plaintext` sealed to `recipients` under `label` (ValueError for a bad label, no or too
    many recipients, or too long a value)."""
    if LABEL.fullmatch(label) is None:
        raise ValueError(f"label {label!r} does not match {LABEL.pattern}")
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise ValueError(f"a sealed value needs 1 to {MAX_RECIPIENTS} recipients")
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise ValueError(f"a sealed value is at most {MAX_PLAINTEXT_BYTES} bytes")
    seal_id = os.urandom(SEAL_ID_BYTES)
    data_key = bytearray(os.urandom(DATA_KEY_BYTES))
    try:
        aad = _WRAP_DOMAIN + seal_id
        stanzas = [wrap_key(bytes(data_key), r, aad, _WRAP_INFO) for r in recipients]
        header = seal_id + bytes([len(stanzas)])
        header += b"".join(s.key_id + s.ephemeral_public + s.wrapped_key for s in stanzas)
        cipher = AESGCM(_value_key(bytes(data_key), seal_id, label))
    finally:
        data_key[:] = bytes(DATA_KEY_BYTES)  # ours is gone; the library may hold copies
    sealed = cipher.encrypt(_ZERO_NONCE, plaintext, label.encode() + b"\n" + header)  # ... || tag
    body = base64.urlsafe_b64encode(header + sealed).rstrip(b"=").decode("ascii")
    return f"{PREFIX}:{label}:{body}"


def label_of(text: str) -> str:
    """The label of a sealed value (SealedFormatError if it is none)."""
    return _parse(text).label


def open_sealed(text: str, key: RecipientPrivateKey, label: str | None = None) -> bytes:
    """The plaintext of a sealed value; SealedFormatError when it is malformed or not of
    `label`, storage.errors (NoMatchingRecipient, WrongKey) when `key` cannot open it."""
    parsed = _parse(text)
    if label is not None and parsed.label != label:
        raise SealedFormatError(f"a sealed {parsed.label!r}, not a sealed {label!r}")
    data_key = key.unwrap_key(parsed.stanzas, _WRAP_DOMAIN + parsed.seal_id, _WRAP_INFO)
    cipher = AESGCM(_value_key(data_key, parsed.seal_id, parsed.label))
    aad = parsed.label.encode() + b"\n" + parsed.header
    try:  # the ciphertext ends with its tag (TAG_BYTES), as AESGCM takes it
        return cipher.decrypt(_ZERO_NONCE, parsed.ciphertext, aad)
    except InvalidTag:
        raise SealedFormatError("the sealed value was altered") from None


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX + ":")


def _value_key(data_key: bytes, seal_id: bytes, label: str) -> bytes:
    return hkdf_sha256(data_key, seal_id, _VALUE_INFO + label.encode())


def _parse(text: str) -> _Parsed:
    parts = text.split(":")
    if len(parts) != 3 or parts[0] != PREFIX or LABEL.fullmatch(parts[1]) is None:
        raise SealedFormatError(f"not a sealed value ({PREFIX}:<label>:<body>)")
    try:
        raw = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except (binascii.Error, ValueError):
        raise SealedFormatError("a sealed value's body is not base64url") from None
    if len(raw) < SEAL_ID_BYTES + 1:
        raise SealedFormatError("a sealed value is too short")
    seal_id, count = raw[:SEAL_ID_BYTES], raw[SEAL_ID_BYTES]
    header_end = SEAL_ID_BYTES + 1 + count * STANZA_BYTES
    if not 1 <= count <= MAX_RECIPIENTS or len(raw) < header_end + TAG_BYTES:
        raise SealedFormatError("a sealed value's stanzas are malformed")
    stanzas = []
    for index in range(count):
        at = SEAL_ID_BYTES + 1 + index * STANZA_BYTES
        chunk = raw[at : at + STANZA_BYTES]
        stanzas.append(
            RecipientStanza(
                chunk[:KEY_ID_BYTES],
                chunk[KEY_ID_BYTES : KEY_ID_BYTES + EPHEMERAL_BYTES],
                chunk[KEY_ID_BYTES + EPHEMERAL_BYTES :],
            )
        )
    return _Parsed(parts[1], seal_id, tuple(stanzas), raw[:header_end], raw[header_end:])
