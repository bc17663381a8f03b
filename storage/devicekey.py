"""The box's own Ed25519 signing key (pure Ed25519, RFC 8032).

The key signs what the box asserts about itself, first of all its audit log (`storage.audit`).

Files, both in the service's state directory:

- `device_key.pem`: the private key, PKCS#8 PEM, mode 0o600. Created once, never rewritten.
- `device_key.pub.pem`: the public key, SubjectPublicKeyInfo PEM, mode 0o644. Derived from the
  private key; rewritten whenever it is missing or does not match, so it can never name another key.

Invariants:

- Private key material never appears in an exception message, a repr or a log line.
- A key file that cannot be read, is not an Ed25519 key of the expected kind, or (private key)
  is readable by group or others raises `DeviceKeyError` naming the file; we never silently
  replace a key that exists, because every signature made so far depends on it.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.durable import atomic_write_bytes, make_dirs
from common.faults import ConfigurationFault

PRIVATE_KEY_FILE = "device_key.pem"
PUBLIC_KEY_FILE = "device_key.pub.pem"
PRIVATE_KEY_MODE = 0o600
PUBLIC_KEY_MODE = 0o644
STATE_DIR_MODE = 0o700

SIGNATURE_BYTES = 64
KEY_ID_BYTES = 8
# A PEM Ed25519 key is about 120 bytes; anything much larger is not ours, and reading is bounded.
MAX_KEY_FILE_BYTES = 16 * 1024

# `cryptography` (OpenSSL), the library the evidence chunks are encrypted with: one cryptography
# library loaded on the box (issue 18). Its Ed25519 is pure Ed25519 (no context, no pre-hash), so
# signatures are those pycryptodome's "rfc8032" mode made before (RFC 8032 test vectors:
# tests/storage/test_devicekey.py), and PKCS#8 / SubjectPublicKeyInfo PEM files read both ways.
Ed25519Key = Ed25519PrivateKey | Ed25519PublicKey


class DeviceKeyError(ValueError, ConfigurationFault):
    """A key file is unreadable, malformed or unsafe. The message names the file, never the key."""


def _read_key_file(path: Path) -> bytes:
    """Read a key file, bounded in size; translate OS errors into `DeviceKeyError`."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        # strerror only: the OSError itself is fine, but keep the message format uniform.
        raise DeviceKeyError(f"{path}: cannot read key file ({exc.strerror})") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise DeviceKeyError(f"{path}: not a key file (larger than {MAX_KEY_FILE_BYTES} bytes)")
    return data


def _import_ed25519(data: bytes, source: str) -> Ed25519Key:
    """Parse PEM `data` as an Ed25519 key (public or private); `source` names it in errors."""
    loaded: object
    try:
        if b"PRIVATE KEY-----" in data:
            loaded = serialization.load_pem_private_key(data, password=None)
        else:
            loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # `from None`: the library's exception may carry parts of the input, which is key material.
        raise DeviceKeyError(f"{source}: not a PEM Ed25519 key") from None
    if not isinstance(loaded, Ed25519PrivateKey | Ed25519PublicKey):
        raise DeviceKeyError(f"{source}: a {type(loaded).__name__}, expected Ed25519")
    return loaded


class DevicePublicKey:
    """An Ed25519 public key: verifies device signatures and names the device by `key_id`."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: Ed25519Key) -> None:
        if not isinstance(key, Ed25519PublicKey):
            raise DeviceKeyError("DevicePublicKey must be built from a public key")
        self._key: Ed25519PublicKey = key
        self._raw: bytes = key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "public key PEM") -> DevicePublicKey:
        """Parse a public key PEM. A private key PEM is refused, so it is never passed around."""
        key = _import_ed25519(data, source)
        if isinstance(key, Ed25519PrivateKey):
            raise DeviceKeyError(f"{source}: holds a private key, expected a public key")
        return cls(key)

    @classmethod
    def from_raw(cls, raw: bytes, *, source: str = "raw public key") -> DevicePublicKey:
        """The key from its 32-byte RFC 8032 encoding (`raw()`); DeviceKeyError otherwise."""
        try:
            key = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, TypeError):
            raise DeviceKeyError(f"{source}: not a 32-byte Ed25519 public key") from None
        if not ed25519_point_decodes(raw):  # OpenSSL loads any 32 bytes; the check is ours
            raise DeviceKeyError(f"{source}: not a point of Ed25519's curve")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> DevicePublicKey:
        """Read a public key PEM file."""
        return cls.from_pem(_read_key_file(path), source=str(path))

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True iff `signature` is a valid Ed25519 signature of `message`. Never raises."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            self._key.verify(signature, message)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True

    def raw(self) -> bytes:
        """The 32-byte RFC 8032 encoding of the public key."""
        return self._raw

    def key_id(self) -> str:
        """Short stable name: hex of the first 8 bytes of SHA-256 of the raw public key."""
        return hashlib.sha256(self._raw).digest()[:KEY_ID_BYTES].hex()

    def pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM, newline-terminated."""
        return _pem_bytes(
            self._key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DevicePublicKey):
            return NotImplemented
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"DevicePublicKey(key_id={self.key_id()!r})"


class DeviceKey:
    """The box's private Ed25519 key. Its repr shows only the key id."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519Key) -> None:
        if not isinstance(key, Ed25519PrivateKey):
            raise DeviceKeyError("DeviceKey must be built from a private key")
        self._key: Ed25519PrivateKey = key
        self._public = DevicePublicKey(key.public_key())

    @classmethod
    def from_seed(cls, seed: bytes) -> DeviceKey:
        """The key of a 32-byte RFC 8032 private key (seed): test vectors, provisioning."""
        try:
            return cls(Ed25519PrivateKey.from_private_bytes(seed))
        except ValueError:
            raise DeviceKeyError("not a 32-byte Ed25519 private key") from None

    @classmethod
    def generate(cls) -> DeviceKey:
        """A fresh random key, not stored anywhere (tests, provisioning tools)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, state_dir: Path) -> DeviceKey:
        """Load `state_dir/device_key.pem`, creating it (and `state_dir`) on first start.

        Also makes sure `state_dir/device_key.pub.pem` holds the matching public key.
        """
        private_path = state_dir / PRIVATE_KEY_FILE
        if private_path.exists():
            device_key = cls._load_private(private_path)
        else:
            make_dirs(state_dir, mode=STATE_DIR_MODE)
            device_key = cls.generate()
            atomic_write_bytes(private_path, device_key._private_pem(), mode=PRIVATE_KEY_MODE)
        device_key._ensure_public_file(state_dir / PUBLIC_KEY_FILE)
        return device_key

    @classmethod
    def _load_private(cls, path: Path) -> DeviceKey:
        """Read and check an existing private key file."""
        _refuse_loose_permissions(path)
        key = _import_ed25519(_read_key_file(path), str(path))
        if not isinstance(key, Ed25519PrivateKey):
            raise DeviceKeyError(f"{path}: holds only a public key, expected the private key")
        return cls(key)

    def _ensure_public_file(self, path: Path) -> None:
        """(Re)write the public key file if it is missing or names another key.

        Derived data, so overwriting is always safe; a crash between writing the private and
        the public file is healed here on the next start.
        """
        wanted = self._public.pem()
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = b""
        if current != wanted:
            atomic_write_bytes(path, wanted, mode=PUBLIC_KEY_MODE)

    def _private_pem(self) -> bytes:
        return _pem_bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def sign(self, message: bytes) -> bytes:
        """Pure Ed25519 signature (RFC 8032) of `message`: 64 bytes, deterministic."""
        return self._key.sign(message)

    def public_key(self) -> DevicePublicKey:
        return self._public

    def public_pem(self) -> bytes:
        return self._public.pem()

    def key_id(self) -> str:
        return self._public.key_id()

    def __repr__(self) -> str:
        return f"DeviceKey(key_id={self.key_id()!r})"


def _refuse_loose_permissions(path: Path) -> None:
    """Refuse a private key readable or writable by group/others (like ssh does).

    Refusing (rather than quietly chmod-ing) makes an operator look at how it happened.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise DeviceKeyError(f"{path}: cannot read key file ({exc.strerror})") from None
    if mode & 0o077:
        raise DeviceKeyError(
            f"{path}: private key is accessible by group or others (mode {mode:#o}); "
            f"expected {PRIVATE_KEY_MODE:#o}"
        )


def _pem_bytes(pem: bytes) -> bytes:
    """PEM ending in exactly one newline (as pycryptodome's, which omitted it, were written)."""
    return pem.rstrip(b"\n") + b"\n"


_P: Final = 2**255 - 19
_D: Final = (-121665 * pow(121666, -1, _P)) % _P
_SQRT_MINUS_ONE: Final = pow(2, (_P - 1) // 4, _P)


def ed25519_point_decodes(raw: bytes) -> bool:
    """True iff `raw` is the canonical encoding of a point on Ed25519's curve (RFC 8032
    5.1.3): y below p, x recoverable from y, and no sign bit on x = 0. PURE.

    `cryptography` (OpenSSL) accepts any 32 bytes as a public key and fails only at a
    signature's check; a key a box sends at pairing is judged when it arrives, so garbage is
    refused as malformed before a pairing code is spent on it."""
    if len(raw) != 32:
        return False
    encoded = int.from_bytes(raw, "little")
    sign = encoded >> 255
    y = encoded & ((1 << 255) - 1)
    if y >= _P:
        return False
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x_squared = u * pow(v, -1, _P) % _P
    x = pow(x_squared, (_P + 3) // 8, _P)
    if (x * x - x_squared) % _P != 0:
        x = x * _SQRT_MINUS_ONE % _P
        if (x * x - x_squared) % _P != 0:
            return False
    return not (x == 0 and sign == 1)
