"""The viewing log's I/O shell: its directory, its signing key, its appender.

A viewing log directory holds `viewing.jsonl` (the log, backoffice/viewing.py says what it
holds), `viewing_key.pem` (the Ed25519 key that signs it, 0600) and `viewing_key.pub.pem`.
`ViewingLog.init` makes it once; `ViewingLog.open` refuses a directory that was never made, so a
viewing cannot start a fresh, empty log of its own by mistake. Appending is the box's audit
appender (storage/audit_io.py `AuditLog`: one writer at a time by flock, every entry fsynced
before the command goes on), so an entry exists before the plaintext it records is used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from backoffice.viewing import STARTED
from common.closing import Closing
from common.durable import atomic_create_bytes, make_dirs
from common.faults import ConfigurationFault
from storage.audit import AuditEntry, Scalar
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey, DevicePublicKey

LOG_FILE: Final = "viewing.jsonl"
KEY_FILE: Final = "viewing_key.pem"
PUBLIC_KEY_FILE: Final = "viewing_key.pub.pem"


class ViewingLogError(RuntimeError, ConfigurationFault):
    """A viewing log directory that is missing, not made by `viewing init`, or already made."""


class ViewingKey(DeviceKey):
    """The back office's viewing log key: a device key's kind of key (Ed25519, the same file
    checks), in files of its own name."""

    @classmethod
    def create(cls, directory: Path) -> DeviceKey:
        key = cls.generate()
        atomic_create_bytes(directory / KEY_FILE, key._private_pem(), mode=0o600)
        atomic_create_bytes(directory / PUBLIC_KEY_FILE, key.public_pem(), mode=0o644)
        return key

    @classmethod
    def load(cls, directory: Path) -> DeviceKey:
        return cls._load_private(directory / KEY_FILE)


class ViewingLog(Closing):
    """The one appender of a viewing log (per host: `AuditLog` holds an exclusive flock)."""

    def __init__(self, directory: Path, log: AuditLog, key: DeviceKey) -> None:
        """Use `ViewingLog.open`."""
        self.directory = directory
        self._log = log
        self._key = key

    @classmethod
    def init(cls, directory: Path) -> DevicePublicKey:
        """Make the directory, its key and the log's first entry; never over an existing one."""
        if (directory / KEY_FILE).exists() or (directory / LOG_FILE).exists():
            raise ViewingLogError(
                f"{directory} already holds a viewing log; refusing to replace it"
            )
        make_dirs(directory, mode=0o700)
        key = ViewingKey.create(directory)
        with AuditLog.open(directory / LOG_FILE, key) as log:
            log.append(STARTED, key_id=key.key_id())
        return key.public_key()

    @classmethod
    def open(cls, directory: Path) -> ViewingLog:
        if not (directory / KEY_FILE).is_file() or not (directory / LOG_FILE).is_file():
            raise ViewingLogError(
                f"{directory} is not a viewing log (make it once with `mvb-admin viewing init`)"
            )
        key = ViewingKey.load(directory)
        return cls(directory, AuditLog.open(directory / LOG_FILE, key), key)

    @property
    def key_id(self) -> str:
        return self._key.key_id()

    def append(self, event: str, fields: dict[str, Scalar]) -> AuditEntry:
        """Durable when it returns (fsynced)."""
        return self._log.append(event, **fields)

    def head(self) -> tuple[int, str]:
        """(seq, SHA-256 hex) of the last entry."""
        return self._log.last_seq, self._log.head_sha256_hex

    def close(self) -> None:
        self._log.close()


def read_log(directory: Path) -> bytes:
    return (directory / LOG_FILE).read_bytes()


def log_public_key(directory: Path, given: Path | None) -> DevicePublicKey:
    """The key to verify with: a copy kept apart (`given`), else the directory's own file."""
    return DevicePublicKey.load(given if given is not None else directory / PUBLIC_KEY_FILE)


def file_sha256(path: Path) -> str | None:
    """What a refused file was (None if it cannot be read at all)."""
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None
