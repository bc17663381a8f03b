"""The back office's recording keys: one key pair, or one per key holder (four-eyes).

- `create_recording_keys`: `recording.key` and `recording.pub`, one key that opens every
  recording alone (threshold 1).
- `create_holder_key`: `<holder>.key`, the holder's private key encrypted with the holder's own
  passphrase (PKCS#8, scrypt and AES-256: storage/envelope.py), and `<holder>.pub` for the
  boxes. With `box.recipient_threshold = 2` no single holder can decrypt (docs/four-eyes.md).

Invariants: a key file is never overwritten; a private key is written 0600 and a holder's only
encrypted; a holder's name is the key file's name (what the viewing log records as "who"), so it
is checked here. Passphrases never appear in a message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from common.durable import atomic_create_bytes, make_dirs
from common.faults import MisuseFault
from storage.envelope import RecipientPrivateKey

RECORDING_PRIVATE = "recording.key"
RECORDING_PUBLIC = "recording.pub"
PRIVATE_SUFFIX: Final = ".key"
PUBLIC_SUFFIX: Final = ".pub"
HOLDER_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""A holder's name: a file name, a viewing log field, and short enough for both."""
MIN_PASSPHRASE_CHARS: Final = 12
MAX_PASSPHRASE_CHARS: Final = 1024


class KeyHolderError(ValueError, MisuseFault):
    """A holder's name or passphrase that cannot be used; the message never holds a passphrase."""


def create_recording_keys(directory: Path) -> tuple[Path, Path]:
    """Create `recording.key` (0600) and `recording.pub` in `directory`; never overwrite."""
    key = RecipientPrivateKey.generate()
    return _create_pair(directory, "recording", key, key.pem())


def create_holder_key(directory: Path, holder: str, passphrase: str) -> tuple[Path, Path]:
    """Create `<holder>.key` (encrypted with `passphrase`, 0600) and `<holder>.pub`."""
    check_holder_name(holder)
    check_passphrase(passphrase)
    key = RecipientPrivateKey.generate()
    return _create_pair(directory, holder, key, key.pem(passphrase))


def _create_pair(
    directory: Path, stem: str, key: RecipientPrivateKey, private_pem: str
) -> tuple[Path, Path]:
    make_dirs(directory, mode=0o700)
    private_path = directory / (stem + PRIVATE_SUFFIX)
    public_path = directory / (stem + PUBLIC_SUFFIX)
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; refusing to overwrite a recording key")
    atomic_create_bytes(private_path, (private_pem + "\n").encode(), mode=0o600)
    atomic_create_bytes(public_path, (key.public().pem() + "\n").encode(), mode=0o644)
    return private_path, public_path


def check_holder_name(holder: str) -> None:
    if HOLDER_NAME.fullmatch(holder) is None:
        raise KeyHolderError(f"holder name {holder!r} must be 1-64 of a-z 0-9 . _ - (lowercase)")


def check_passphrase(passphrase: str) -> None:
    if not MIN_PASSPHRASE_CHARS <= len(passphrase) <= MAX_PASSPHRASE_CHARS:
        raise KeyHolderError(
            f"a holder's passphrase needs {MIN_PASSPHRASE_CHARS} to {MAX_PASSPHRASE_CHARS} "
            "characters"
        )


@dataclass(frozen=True, slots=True)
class HolderKey:
    """One unlocked recording private key and whose it is (the key file's name)."""

    holder: str
    key: RecipientPrivateKey

    @property
    def key_id_hex(self) -> str:
        return self.key.public().key_id.hex()


def holder_of(path: Path) -> str:
    """The holder a key file belongs to: its name without `.key` (`recording` for the single
    key of `create_recording_keys`)."""
    return path.name.removesuffix(PRIVATE_SUFFIX)


def load_holder_key(path: Path, passphrase: str | None) -> HolderKey:
    """Unlock a key file (a holder's needs its passphrase; RecipientKeyError if wrong)."""
    return HolderKey(holder_of(path), RecipientPrivateKey.load(path, passphrase))


def key_is_encrypted(path: Path) -> bool:
    """Whether a key file is passphrase-protected (a holder's), read from its PEM label."""
    try:
        return b"ENCRYPTED PRIVATE KEY" in path.read_bytes()[:64]
    except OSError:
        return False  # loading it says what is wrong
