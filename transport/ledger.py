"""What the uplink must remember across restarts, per file and per link (diskcache on the card).

Per file: the tus upload URL (so a box that lost power resumes from the server's offset rather
than starting over), whether a plain tus server completed it without attesting, and why it is
blocked (pin or integrity failures wait for a person). Per link: the monthly data budget.
Values are JSON strings, never pickles (as in the catalog), so they stay readable.
Nothing here identifies a person: ids, URLs on the back office, byte counts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import diskcache

from common.faults import StorageFault

_FILE = "file:"
_BUDGET = "budget:"


class LedgerCorrupt(ValueError, StorageFault):
    """A stored value is not what this module writes."""


@dataclass(frozen=True, slots=True)
class FileUpload:
    """Upload facts of one evidence file. Invariant: `upload_url` is a path on the back office."""

    upload_url: str | None = None
    completed_unattested: bool = False
    blocked_reason: str | None = None


def _file_from_json(raw: object) -> FileUpload:
    try:
        obj = json.loads(str(raw))
        return FileUpload(
            upload_url=_optional_str(obj["upload_url"]),
            completed_unattested=bool(obj["completed_unattested"]),
            blocked_reason=_optional_str(obj["blocked_reason"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise LedgerCorrupt(f"uplink ledger entry unreadable: {exc}") from exc


def _optional_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string or null, got {type(value).__name__}")


class UplinkLedger:
    """diskcache-backed; every write is a committed sqlite transaction (survives power loss)."""

    def __init__(self, directory: Path) -> None:
        self._cache: Any = diskcache.Cache(str(directory), eviction_policy="none")

    def close(self) -> None:
        self._cache.close()

    def file(self, file_id: str) -> FileUpload:
        raw = self._cache.get(_FILE + file_id)
        return FileUpload() if raw is None else _file_from_json(raw)

    def put_file(self, file_id: str, upload: FileUpload) -> None:
        self._cache.set(_FILE + file_id, json.dumps(asdict(upload), sort_keys=True))

    def forget_file(self, file_id: str) -> None:
        """Once a file is deleted from the card its upload facts are of no further use."""
        self._cache.delete(_FILE + file_id)

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
