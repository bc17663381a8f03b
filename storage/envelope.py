"""Envelope encryption: the per-recording data key, split into shares wrapped to the back
office's X25519 keys, and the keys derived from it.

Spec: docs/evidence-format.md section 3 (and 9 for version 1). The box holds only
`RecipientPublicKey`s and a threshold (`RecipientSet`); the private halves
(`RecipientPrivateKey`) live in the back office, each with one key holder when the threshold is
2 or more (docs/four-eyes.md). Invariants: a `RecordingKey` is the only holder of a data key, it
never serialises it, and `destroy()` overwrites it; a data key is returned by
`recover_data_key` only after it verified the header MAC (version 2).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    from Crypto.PublicKey import ECC

from common.faults import ConfigurationFault
from storage.errors import (
    BadHeaderMac,
    MalformedHeader,
    NoMatchingRecipient,
    TooFewShares,
    WrongKey,
)
from storage.evidence_format import (
    FORMAT_VERSION_1,
    KEY_ID_BYTES,
    MAX_RECIPIENTS,
    EvidenceHeader,
    RecipientStanza,
    header_mac_verifies,
)
from storage.key_shares import DATA_KEY_BYTES, join_shares, split_key

_WRAP_INFO_V1 = b"MVB evidence v1 key wrap"
_WRAP_INFO = b"MVB evidence v2 share wrap"
_FILE_KEY_INFO = b"MVB evidence v1 file key"  # unchanged in version 2 (spec 3.4)
_HEADER_MAC_INFO = b"MVB evidence v2 header MAC"
_ZERO_NONCE = bytes(12)
_MAX_KEY_FILE_BYTES = 16 * 1024
# Holder key files (docs/four-eyes.md): PKCS#8 encrypted with scrypt (memory-hard) and AES-256.
# N = 2^17, r = 8: 128 MiB and 0.3 to 0.7 s per unlock here, once per holder per viewing.
_KEY_FILE_PROTECTION = "scryptAndAES256-CBC"  # the PKCS#8 scheme name, not a secret
_SCRYPT_COST = 2**17
# Libraries (issue 18: one cryptography library on the box): what the box does, wrap a key to
# the recipients and derive file keys, is `cryptography`'s X25519, HKDF-SHA256 and AES-256-GCM
# (OpenSSL), as the chunks are. The back office's private keys stay pycryptodome's, imported only
# when one is used: their holder files are PKCS#8 under scrypt (memory-hard), which pycryptodome
# writes and reads, and a box never holds one. Both implement RFC 7748 and RFC 5869, so the
# bytes are the same (tests/storage/test_format_v1.py derives them with pycryptodome).


class RecipientKeyError(ValueError, ConfigurationFault):
    """A recording key file that cannot be used; the message names the file, never the key."""


def _key_id(raw_public: bytes) -> bytes:
    return hashlib.sha256(raw_public).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True, slots=True)
class RecipientPublicKey:
    """A back-office recording public key, as configured on the box."""

    key: X25519PublicKey

    @property
    def raw(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> bytes:
        return _key_id(self.raw)

    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @classmethod
    def from_raw(cls, raw: bytes) -> RecipientPublicKey:
        """The key from its 32-byte RFC 7748 encoding (ValueError otherwise)."""
        return cls(X25519PublicKey.from_public_bytes(raw))

    @classmethod
    def load(cls, path: Path) -> RecipientPublicKey:
        data = _read_key_file(path)
        if b"PRIVATE KEY" in data:
            raise RecipientKeyError(f"{path}: expected an X25519 public key")
        loaded: object
        try:
            if data.lstrip().startswith(b"-----"):
                loaded = serialization.load_pem_public_key(data)
            else:
                loaded = serialization.load_der_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise RecipientKeyError(f"{path}: not a readable X25519 public key") from exc
        if not isinstance(loaded, X25519PublicKey):
            raise RecipientKeyError(f"{path}: expected an X25519 public key")
        return cls(loaded)


@dataclass(frozen=True, slots=True)
class RecipientSet:
    """The recipients a box wraps every recording to, and how many must act together.

    Invariants: 1 to 8 keys with distinct key ids; 1 <= threshold <= len(keys). Threshold 1:
    any key alone opens a recording (one key, or two during a rotation); 2 or more: that many
    key holders together (four-eyes, docs/four-eyes.md).
    """

    keys: tuple[RecipientPublicKey, ...]
    threshold: int = 1

    def __post_init__(self) -> None:
        if not 1 <= len(self.keys) <= MAX_RECIPIENTS:
            raise ValueError(f"a recording needs 1 to {MAX_RECIPIENTS} recipient keys")
        if len({key.key_id for key in self.keys}) != len(self.keys):
            raise ValueError("the same recipient key is listed twice")
        if not 1 <= self.threshold <= len(self.keys):
            raise ValueError(f"threshold {self.threshold} is not in 1..{len(self.keys)}")


Recipients = RecipientSet | tuple[RecipientPublicKey, ...]
"""What a store is configured with: a set with its threshold, or bare keys (threshold 1)."""


def recipient_set(recipients: Recipients) -> RecipientSet:
    return recipients if isinstance(recipients, RecipientSet) else RecipientSet(recipients)


@dataclass(frozen=True, slots=True)
class RecipientPrivateKey:
    """A back office recording private key (one key holder's, under four-eyes). Never on a box."""

    key: ECC.EccKey  # pycryptodome's: see the libraries above

    @classmethod
    def generate(cls) -> RecipientPrivateKey:
        from Crypto.PublicKey import ECC

        return cls(ECC.generate(curve="X25519"))

    @classmethod
    def load(cls, path: Path, passphrase: str | None = None) -> RecipientPrivateKey:
        """Read a PEM private key; an encrypted one (a key holder's) needs its passphrase."""
        data = _read_key_file(path)
        encrypted = b"ENCRYPTED PRIVATE KEY" in data
        if encrypted and passphrase is None:
            raise RecipientKeyError(f"{path}: the key is encrypted: its holder's passphrase needed")
        from Crypto.PublicKey import ECC

        try:
            key = ECC.import_key(data, passphrase=passphrase if encrypted else None)
        except (ValueError, IndexError, TypeError):
            # `from None`: the library's message may quote the input, which is key material.
            what = "wrong passphrase, or a damaged key file" if encrypted else "not readable"
            raise RecipientKeyError(f"{path}: X25519 private key: {what}") from None
        if key.curve != "Curve25519" or not key.has_private():
            raise RecipientKeyError(f"{path}: expected an X25519 private key")
        return cls(key)

    def public(self) -> RecipientPublicKey:
        return RecipientPublicKey.from_raw(bytes(self.key.public_key().export_key(format="raw")))

    def pem(self, passphrase: str | None = None) -> str:
        """PKCS#8 PEM; with a passphrase, encrypted (scrypt, AES-256-CBC) for one holder."""
        if passphrase is None:
            return str(self.key.export_key(format="PEM"))
        return str(
            self.key.export_key(
                format="PEM",
                passphrase=passphrase,
                protection=_KEY_FILE_PROTECTION,
                prot_params={"iteration_count": _SCRYPT_COST},
            )
        )

    def unwrap_share(self, header: EvidenceHeader) -> tuple[int, bytes] | None:
        """(position from 1, share) of the stanza addressed to this key; None if none is.

        Raises WrongKey when a stanza carries our key id but does not open (a damaged stanza,
        a colliding key id, or a stanza moved to another position or split), MalformedHeader
        for an ephemeral key that is not a point we accept.
        """
        mine = self.public()
        for position, stanza in enumerate(header.recipients, start=1):
            if hmac.compare_digest(stanza.key_id, mine.key_id):
                return position, self._open(stanza, header, position, mine)
        return None

    def _open(
        self,
        stanza: RecipientStanza,
        header: EvidenceHeader,
        position: int,
        mine: RecipientPublicKey,
    ) -> bytes:
        info = _WRAP_INFO_V1 if header.version == FORMAT_VERSION_1 else _WRAP_INFO
        return self._open_stanza(stanza, _wrap_aad(header, position), info, mine)

    def unwrap_key(self, stanzas: Sequence[RecipientStanza], aad: bytes, info: bytes) -> bytes:
        """The key of the stanza addressed to this key, wrapped by `wrap_key` with the same
        `aad` and `info` (a use of its own, e.g. a sealed value: storage/sealed.py).

        Raises NoMatchingRecipient when no stanza carries our key id, WrongKey when it does but
        does not open."""
        mine = self.public()
        for stanza in stanzas:
            if hmac.compare_digest(stanza.key_id, mine.key_id):
                return self._open_stanza(stanza, aad, info, mine)
        ids = ", ".join(s.key_id.hex() for s in stanzas)
        raise NoMatchingRecipient(f"for recording key(s) {ids}, not {mine.key_id.hex()}")

    def _open_stanza(
        self, stanza: RecipientStanza, aad: bytes, info: bytes, mine: RecipientPublicKey
    ) -> bytes:
        from Crypto.Protocol.DH import import_x25519_public_key, key_agreement

        try:
            ephemeral = import_x25519_public_key(stanza.ephemeral_public)
        except ValueError as exc:
            raise MalformedHeader("recipient stanza holds an invalid ephemeral key") from exc
        shared = key_agreement(static_priv=self.key, eph_pub=ephemeral, kdf=_raw)
        kek = _derive_kek(shared, stanza.ephemeral_public, mine.raw, info)
        try:
            return AESGCM(kek).decrypt(_ZERO_NONCE, stanza.wrapped_key, aad)
        except InvalidTag as exc:
            raise WrongKey("the key share does not unwrap with this recording key") from exc


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise RecipientKeyError(f"{path}: cannot read key file ({exc.strerror})") from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise RecipientKeyError(f"{path}: not a key file (larger than {_MAX_KEY_FILE_BYTES} bytes)")
    return data


def _raw(shared: bytes) -> bytes:
    if not any(shared):
        # A low-order point yields an all-zero secret that anyone can compute (spec 3.3).
        raise MalformedHeader("X25519 agreement produced the all-zero secret")
    return shared


def _derive_kek(shared: bytes, ephemeral_raw: bytes, recipient_raw: bytes, info: bytes) -> bytes:
    return hkdf_sha256(shared, ephemeral_raw + recipient_raw, info)


def hkdf_sha256(secret: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of `secret`: a 32-byte key."""
    return HKDF(algorithm=hashes.SHA256(), length=DATA_KEY_BYTES, salt=salt, info=info).derive(
        secret
    )


def _wrap_aad(header: EvidenceHeader, position: int) -> bytes:
    if header.version == FORMAT_VERSION_1:
        return header.recording_id
    return header.recording_id + bytes([header.threshold, len(header.recipients), position])


def wrap_share(
    share: bytes,
    recipient: RecipientPublicKey,
    recording_id: bytes,
    *,
    threshold: int,
    count: int,
    position: int,
) -> RecipientStanza:
    """Wrap share `position` (from 1) of a `threshold`-of-`count` split to `recipient` with a
    fresh ephemeral X25519 key (spec 3.3)."""
    aad = recording_id + bytes([threshold, count, position])
    return wrap_key(share, recipient, aad, _WRAP_INFO)


def wrap_key(key: bytes, recipient: RecipientPublicKey, aad: bytes, info: bytes) -> RecipientStanza:
    """Wrap a 32-byte `key` to `recipient` with a fresh ephemeral X25519 key: the KEK is
    HKDF-SHA256(shared secret, salt = ephemeral || recipient, `info`), the wrap AES-256-GCM under a
    zero nonce (the KEK is used once) with `aad`. `info` separates the uses (evidence shares,
    sealed values); `aad` binds the stanza to what it belongs to."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = ephemeral.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    try:
        shared = _raw(ephemeral.exchange(recipient.key))
    except ValueError as exc:  # OpenSSL refuses the all-zero secret of a low-order point itself
        raise MalformedHeader("X25519 agreement produced the all-zero secret") from exc
    kek = _derive_kek(shared, ephemeral_raw, recipient.raw, info)
    wrapped_and_tag = AESGCM(kek).encrypt(_ZERO_NONCE, key, aad)  # ciphertext || tag
    return RecipientStanza(recipient.key_id, ephemeral_raw, wrapped_and_tag)


def derive_file_key(data_key: bytes | bytearray, file_id: bytes) -> bytes:
    """Per-file chunk key (spec 3.4): a chunk never authenticates in another file."""
    return hkdf_sha256(bytes(data_key), file_id, _FILE_KEY_INFO)


def derive_header_mac_key(data_key: bytes | bytearray, file_id: bytes) -> bytes:
    """The key of a version 2 header's MAC (spec 4.1.1)."""
    return hkdf_sha256(bytes(data_key), file_id, _HEADER_MAC_INFO)


@dataclass(frozen=True, slots=True)
class FileKeys:
    """What writing one file needs of the data key: the chunk key and the header MAC key."""

    chunk_key: bytes
    header_mac_key: bytes

    def __repr__(self) -> str:
        return "FileKeys(<secret>)"


def derive_file_keys(data_key: bytes | bytearray, file_id: bytes) -> FileKeys:
    return FileKeys(derive_file_key(data_key, file_id), derive_header_mac_key(data_key, file_id))


def recover_data_key(
    header: EvidenceHeader, header_bytes: bytes, keys: Sequence[RecipientPrivateKey]
) -> bytes:
    """The data key of a file, from the shares `keys` unwrap, checked against the header MAC.

    Raises NoMatchingRecipient when no key is a recipient, TooFewShares when fewer than the
    threshold are (nothing is decrypted then), WrongKey when a matching stanza does not open,
    BadHeaderMac when the key the shares give does not verify the header (version 2), or the
    two stanzas of a version 1 file hold different data keys (spec 9).
    """
    shares: dict[int, bytes] = {}
    for key in keys:
        found = key.unwrap_share(header)
        if found is not None:
            shares[found[0]] = found[1]
    if not shares:
        ids = ", ".join(s.key_id.hex() for s in header.recipients)
        mine = ", ".join(k.public().key_id.hex() for k in keys)
        raise NoMatchingRecipient(f"file is for recording key(s) {ids}, not {mine}")
    if len(shares) < header.threshold:
        raise TooFewShares(
            f"file needs {header.threshold} of its {len(header.recipients)} key holders "
            f"together; {len(shares)} given"
        )
    if header.version == FORMAT_VERSION_1:
        if len(set(shares.values())) != 1:
            raise BadHeaderMac("the two recipients of this version 1 file hold different keys")
        return next(iter(shares.values()))
    data_key = join_shares(shares)
    if not header_mac_verifies(header_bytes, derive_header_mac_key(data_key, header.file_id)):
        raise BadHeaderMac(
            "header MAC does not verify: the header was changed after sealing, or the key "
            "shares do not agree on one data key"
        )
    return data_key


class RecordingKey:
    """The data key of one recording, in RAM only, with its shares wrapped for file headers.

    Invariant: the key bytes are never returned or serialised; after `destroy()` they are zero
    and deriving file keys raises. `stanzas` and `threshold` go into every file header.
    """

    def __init__(self, recording_id: bytes, recipients: Recipients) -> None:
        chosen = recipient_set(recipients)
        self.recording_id = recording_id
        self.threshold = chosen.threshold
        self._data_key = bytearray(os.urandom(DATA_KEY_BYTES))
        count = len(chosen.keys)
        shares = split_key(self._data_key, chosen.threshold, count)
        self.stanzas = tuple(
            wrap_share(
                share,
                key,
                recording_id,
                threshold=chosen.threshold,
                count=count,
                position=position,
            )
            for position, (share, key) in enumerate(zip(shares, chosen.keys, strict=True), 1)
        )
        self._destroyed = False

    def file_keys(self, file_id: bytes) -> FileKeys:
        if self._destroyed:
            raise RuntimeError("recording key already destroyed")
        return derive_file_keys(self._data_key, file_id)

    def destroy(self) -> None:
        """Overwrite the data key. Python may hold transient copies; this removes ours."""
        for i in range(len(self._data_key)):
            self._data_key[i] = 0
        self._destroyed = True

    @property
    def destroyed(self) -> bool:
        return self._destroyed
