"""What the uplink must remember across restarts, per file and per link (diskcache on the card).

Per file: the tus upload URL (so a box that lost power resumes from the server's offset rather
than starting over), whether a plain tus server completed it without attesting, and why it is
blocked (integrity failures wait for a person). Per link: the monthly data budget. For the back
office: whether it withdrew the box's credentials, and which credentials it refused (so a
restart with the same ones does not knock again, and new ones resume at once).
Values are JSON strings, never pickles (as in the catalog), so they stay readable.
Nothing here identifies a person: ids, URLs on the back office, byte counts, a certificate's
fingerprint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import diskcache

from common.durable import make_dirs
from common.faults import StorageFault
from storage.card_reopen import let_go
from storage.sqlite_files import create_database

_FILE = "file:"
_BUDGET = "budget:"
_WITHDRAWAL = "withdrawal"
LEDGER_DIR: Final = "uplink"
"""The ledger's folder on the card (gateway/uplink_from_config.py opens it there)."""
LEDGER_FILES: Final = frozenset({"cache.db", "cache.db-wal", "cache.db-shm", "cache.db-journal"})
"""Every file the ledger's folder may hold (diskcache's SQLite file and SQLite's companions):
gateway/startup.py's own-file check."""
_CACHE_DIR_MODE = 0o755  # diskcache's own mode for the directory it would have made


class LedgerCorrupt(ValueError, StorageFault):
    """A stored value is not what this module writes."""


@dataclass(frozen=True, slots=True)
class FileUpload:
    """Upload facts of one evidence file. Invariant: `upload_url` is a path on the back office."""

    upload_url: str | None = None
    completed_unattested: bool = False
    blocked_reason: str | None = None
    block_reported: bool = False  # the back office was told of the block (blocked_report.py)


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """The back office refused the box's credentials: with which HTTP status, when (wall clock,
    ms: for people), and the fingerprint of the credentials it refused (transport/uplink.py
    `Credentials`)."""

    credentials: str
    status: int
    since_ms: int


def _file_from_json(raw: object) -> FileUpload:
    try:
        obj = json.loads(str(raw))
        return FileUpload(
            upload_url=_optional_str(obj["upload_url"]),
            completed_unattested=bool(obj["completed_unattested"]),
            blocked_reason=_optional_str(obj["blocked_reason"]),
            block_reported=bool(obj.get("block_reported", False)),  # absent in older ledgers
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise LedgerCorrupt(f"uplink ledger entry unreadable: {exc}") from exc


def _optional_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string or null, got {type(value).__name__}")


def _open_cache(directory: Path) -> Any:
    """synchronous=FULL, as the catalog: diskcache's default (NORMAL, with its WAL) commits
    without an fsync, and labdisk showed a committed entry gone after the card was pulled."""
    return diskcache.Cache(
        str(directory), eviction_policy="none", cull_limit=0, sqlite_synchronous=2
    )


class UplinkLedger:
    """diskcache-backed; every write is a committed sqlite transaction, durable on return.

    Invariant: a fact written here survives a power cut once the call returned (issue 14: the
    torture on labdisk). Hence the directory made durably in its parent (diskcache's own
    makedirs fsyncs nothing: in strict POSIX mode the whole ledger went with its entry) and
    SQLite's FULL synchronous mode (diskcache's default, NORMAL, fsyncs the WAL only at a
    checkpoint: a cut lost the last offsets and budget bytes)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        make_dirs(directory, mode=_CACHE_DIR_MODE)  # durable in the card root: diskcache's is not
        # Small pages: the budget is written after every chunk (storage/sqlite_files.py).
        create_database(directory)
        self._cache: Any = _open_cache(directory)

    def close(self) -> None:
        self._cache.close()

    def reopen(self) -> None:
        """Open the ledger's files again: the card was pulled and is back, and the handles of
        before are dead (gateway/card_watch.py). Closing the old ones may fail: ignored."""
        # Not closed: every connection of before must be gone first (storage/card_reopen.py).
        let_go(self, "_cache")
        self._cache = _open_cache(self._directory)

    def file(self, file_id: str) -> FileUpload:
        raw = self._cache.get(_FILE + file_id)
        return FileUpload() if raw is None else _file_from_json(raw)

    def put_file(self, file_id: str, upload: FileUpload) -> None:
        self._cache.set(_FILE + file_id, json.dumps(asdict(upload), sort_keys=True))

    def forget_file(self, file_id: str) -> None:
        """Once a file is deleted from the card its upload facts are of no further use."""
        self._cache.delete(_FILE + file_id)

    def files(self) -> Iterator[tuple[str, FileUpload]]:
        """Every file with upload facts, in no particular order (an entry that turns out
        unreadable is skipped: the caller only sweeps with this)."""
        for key in list(self._cache.iterkeys()):
            if not isinstance(key, str) or not key.startswith(_FILE):
                continue
            raw = self._cache.get(key)
            if raw is None:
                continue  # forgotten meanwhile
            try:
                yield key.removeprefix(_FILE), _file_from_json(raw)
            except LedgerCorrupt:
                continue

    def withdrawal(self) -> Withdrawal | None:
        raw = self._cache.get(_WITHDRAWAL)
        if raw is None:
            return None
        try:
            obj = json.loads(str(raw))
            return Withdrawal(str(obj["credentials"]), int(obj["status"]), int(obj["since_ms"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerCorrupt(f"uplink withdrawal entry unreadable: {exc}") from exc

    def put_withdrawal(self, withdrawal: Withdrawal | None) -> None:
        """Record (or, with None, forget) the back office's refusal of the credentials."""
        if withdrawal is None:
            self._cache.delete(_WITHDRAWAL)
        else:
            self._cache.set(_WITHDRAWAL, json.dumps(asdict(withdrawal), sort_keys=True))

    def budget(self, link: str) -> dict[str, Any] | None:
        raw = self._cache.get(_BUDGET + link)
        if raw is None:
            return None
        try:
            value = json.loads(str(raw))
        except ValueError as exc:
            raise LedgerCorrupt(f"uplink budget of {link} unreadable: {exc}") from exc
        if not isinstance(value, dict):
            raise LedgerCorrupt(f"uplink budget of {link} is not an object")
        return value

    def put_budget(self, link: str, state: dict[str, Any]) -> None:
        self._cache.set(_BUDGET + link, json.dumps(state, sort_keys=True))
