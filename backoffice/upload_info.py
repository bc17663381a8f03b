"""What the upload store keeps about each upload: its record (info.json) and its status (pure).

backoffice/upload_store.py reads and writes these records and re-exports every name here.

Invariants: `UploadInfo.from_json` reads only what `to_json` writes (the format number, typed
fields) and raises ValueError naming the field otherwise; `stored_sha256` and `stored_path` are
set exactly when the upload is finished (COMPLETE or CORRUPT), and `incident` exactly when it is
CORRUPT.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

INFO_FORMAT: Final = 1


class UploadState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    CORRUPT = "corrupt"


class Incident(StrEnum):
    """Why a finished upload was kept under `corrupt/` instead of `complete/`."""

    SHA256_MISMATCH = "sha256_mismatch"  # stored bytes differ from the declared SHA-256
    FILE_ID_CONFLICT = "file_id_conflict"  # complete/<file_id> already holds other bytes


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """What info.json holds. `created_at` is ISO 8601 UTC; `stored_path` is relative to the
    store root and set (with `stored_sha256`) once the upload is finished."""

    upload_id: str
    client_id: str
    length_bytes: int
    metadata_header: str
    file_id: str
    declared_sha256: str
    created_at: str
    state: UploadState = UploadState.RECEIVING
    stored_sha256: str | None = None
    stored_path: str | None = None
    incident: Incident | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "format": INFO_FORMAT,
            "upload_id": self.upload_id,
            "client_id": self.client_id,
            "length_bytes": self.length_bytes,
            "metadata_header": self.metadata_header,
            "file_id": self.file_id,
            "declared_sha256": self.declared_sha256,
            "created_at": self.created_at,
            "state": self.state.value,
            "stored_sha256": self.stored_sha256,
            "stored_path": self.stored_path,
            "incident": None if self.incident is None else self.incident.value,
        }

    @classmethod
    def from_json(cls, value: object) -> UploadInfo:
        """Parse info.json; ValueError says which field is wrong."""
        if not isinstance(value, dict) or value.get("format") != INFO_FORMAT:
            raise ValueError("not an upload info object of a known format")
        length = value.get("length_bytes")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise ValueError("length_bytes must be a non-negative integer")
        incident = value.get("incident")
        return cls(
            upload_id=_text(value, "upload_id"),
            client_id=_text(value, "client_id"),
            length_bytes=length,
            metadata_header=_text(value, "metadata_header"),
            file_id=_text(value, "file_id"),
            declared_sha256=_text(value, "declared_sha256"),
            created_at=_text(value, "created_at"),
            state=UploadState(_text(value, "state")),
            stored_sha256=_optional_text(value, "stored_sha256"),
            stored_path=_optional_text(value, "stored_path"),
            incident=None if incident is None else Incident(_text(value, "incident")),
        )


def _text(value: dict[str, object], key: str) -> str:
    item = value.get(key)
    if not isinstance(item, str):
        raise ValueError(f"{key} must be a string")
    return item


def _optional_text(value: dict[str, object], key: str) -> str | None:
    return None if value.get(key) is None else _text(value, key)


@dataclass(frozen=True, slots=True)
class UploadStatus:
    """An upload and its durable offset (equal to the length once finished)."""

    info: UploadInfo
    offset_bytes: int

    @property
    def finished(self) -> bool:
        return self.info.state is not UploadState.RECEIVING

    @property
    def remaining_bytes(self) -> int:
        return self.info.length_bytes - self.offset_bytes
