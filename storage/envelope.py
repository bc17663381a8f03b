"""Envelope encryption: the per-recording data key, wrapped to the back office's X25519 keys.

Spec: docs/evidence-format.md section 3. The box holds only `RecipientPublicKey`s; the private
half (`RecipientPrivateKey`) lives in the back office. Invariant: a `RecordingKey` is the only
holder of a data key, it never serialises it, and `destroy()` overwrites it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.DH import import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC

from common.faults import ConfigurationFault
from storage.errors import MalformedHeader, NoMatchingRecipient, WrongKey
from storage.evidence_format import KEY_ID_BYTES, RecipientStanza

DATA_KEY_BYTES = 32
_WRAP_INFO = b"MVB evidence v1 key wrap"
_FILE_KEY_INFO = b"MVB evidence v1 file key"
_ZERO_NONCE = bytes(12)


class RecipientKeyError(ValueError, ConfigurationFault):
    """A recording key file that cannot be used; the message names the file, never the key."""


def _key_id(raw_public: bytes) -> bytes:
    return hashlib.sha256(raw_public).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True, slots=True)
class RecipientPublicKey:
    """A back-office recording public key, as configured on the box."""

    key: ECC.EccKey

    @property
    def raw(self) -> bytes:
        return bytes(self.key.export_key(format="raw"))

    @property
    def key_id(self) -> bytes:
        return _key_id(self.raw)

    def pem(self) -> str:
        return str(self.key.export_key(format="PEM"))

    @classmethod
    def load(cls, path: Path) -> RecipientPublicKey:
        try:
            key = ECC.import_key(path.read_bytes())
        except (OSError, ValueError, IndexError) as exc:
            raise RecipientKeyError(f"{path}: not a readable X25519 public key") from exc
        if key.curve != "Curve25519" or key.has_private():
            raise RecipientKeyError(f"{path}: expected an X25519 public key")
        return cls(key)


@dataclass(frozen=True, slots=True)
class RecipientPrivateKey:
    """The back office's recording private key. Never present on a box."""

    key: ECC.EccKey

    @classmethod
    def generate(cls) -> RecipientPrivateKey:
        return cls(ECC.generate(curve="X25519"))

    @classmethod
    def load(cls, path: Path) -> RecipientPrivateKey:
        try:
            key = ECC.import_key(path.read_bytes())
        except (OSError, ValueError, IndexError) as exc:
            raise RecipientKeyError(f"{path}: not a readable X25519 private key") from exc
        if key.curve != "Curve25519" or not key.has_private():
            raise RecipientKeyError(f"{path}: expected an X25519 private key")
        return cls(key)

    def public(self) -> RecipientPublicKey:
        return RecipientPublicKey(self.key.public_key())

    def pem(self) -> str:
        return str(self.key.export_key(format="PEM"))

    def unwrap(self, stanzas: tuple[RecipientStanza, ...], recording_id: bytes) -> bytes:
        """Return the data key from the stanza addressed to this key.

        Raises NoMatchingRecipient when no stanza carries our key id, WrongKey when it does but
        does not open (a damaged stanza or a colliding key id).
        """
        mine = self.public()
        stanza = next((s for s in stanzas if hmac.compare_digest(s.key_id, mine.key_id)), None)
        if stanza is None:
            ids = ", ".join(s.key_id.hex() for s in stanzas)
            raise NoMatchingRecipient(
                f"file is for recording key(s) {ids}, not {mine.key_id.hex()}"
            )
        try:
            ephemeral = import_x25519_public_key(stanza.ephemeral_public)
        except ValueError as exc:
            raise MalformedHeader("recipient stanza holds an invalid ephemeral key") from exc
        shared = key_agreement(static_priv=self.key, eph_pub=ephemeral, kdf=_raw)
        kek = _derive_kek(shared, stanza.ephemeral_public, mine.raw)
        cipher = AES.new(kek, AES.MODE_GCM, nonce=_ZERO_NONCE)
        cipher.update(recording_id)
        try:
            return bytes(
                cipher.decrypt_and_verify(stanza.wrapped_key[:32], stanza.wrapped_key[32:])
            )
        except ValueError as exc:
            raise WrongKey("the data key does not unwrap with this recording key") from exc


def _raw(shared: bytes) -> bytes:
    if not any(shared):
        # A low-order point yields an all-zero secret that anyone can compute (spec 3.3).
        raise MalformedHeader("X25519 agreement produced the all-zero secret")
    return shared


def _derive_kek(shared: bytes, ephemeral_raw: bytes, recipient_raw: bytes) -> bytes:
    return bytes(
        HKDF(shared, DATA_KEY_BYTES, ephemeral_raw + recipient_raw, SHA256, context=_WRAP_INFO)
    )


def wrap_data_key(
    data_key: bytes, recipient: RecipientPublicKey, recording_id: bytes
) -> RecipientStanza:
    """Wrap `data_key` to `recipient` with a fresh ephemeral X25519 key (spec 3.3)."""
    ephemeral = ECC.generate(curve="X25519")
    ephemeral_raw = bytes(ephemeral.public_key().export_key(format="raw"))
    shared = key_agreement(static_pub=recipient.key, eph_priv=ephemeral, kdf=_raw)
    kek = _derive_kek(shared, ephemeral_raw, recipient.raw)
    cipher = AES.new(kek, AES.MODE_GCM, nonce=_ZERO_NONCE)
    cipher.update(recording_id)
    wrapped, tag = cipher.encrypt_and_digest(data_key)
    return RecipientStanza(recipient.key_id, ephemeral_raw, bytes(wrapped) + bytes(tag))


def derive_file_key(data_key: bytes | bytearray, file_id: bytes) -> bytes:
    """Per-file key (spec 3.4): a chunk never authenticates in another file."""
    return bytes(HKDF(bytes(data_key), DATA_KEY_BYTES, file_id, SHA256, context=_FILE_KEY_INFO))


class RecordingKey:
    """The data key of one recording, in RAM only, with its wrapped forms for file headers.

    Invariant: the key bytes are never returned or serialised; after `destroy()` they are zero
    and deriving a file key raises.
    """

    def __init__(self, recording_id: bytes, recipients: tuple[RecipientPublicKey, ...]) -> None:
        if not 1 <= len(recipients) <= 2:
            raise ValueError("a recording needs one or two recipient keys")
        self.recording_id = recording_id
        self._data_key = bytearray(os.urandom(DATA_KEY_BYTES))
        self.stanzas = tuple(
            wrap_data_key(bytes(self._data_key), r, recording_id) for r in recipients
        )
        self._destroyed = False

    def file_key(self, file_id: bytes) -> bytes:
        if self._destroyed:
            raise RuntimeError("recording key already destroyed")
        return derive_file_key(self._data_key, file_id)

    def destroy(self) -> None:
        """Overwrite the data key. Python may hold transient copies; this removes ours."""
        for i in range(len(self._data_key)):
            self._data_key[i] = 0
        self._destroyed = True

    @property
    def destroyed(self) -> bool:
        return self._destroyed
