"""What the uplink shows people: the rows of `mvb uploads` and the status document's uplink part.

Pure: the service (transport/uplink.py) hands in what it read (catalog records, ledger facts,
the candidates it built, its link views) and `now_s`; nothing here reads a file or a clock.

Invariants:
- every file waiting on the card (SEALED or UPLOADING, sealed with a SHA-256) has exactly one
  row, in one of ROW_STATES, with a reason in plain English;
- a row's `retry_in_s` is None unless the file waits for a time (a backoff, a server-wide
  pause); it is never negative;
- a reason names no person: ids, states, HTTP statuses and the session's bounded messages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from storage.models import FileRecord, FileState
from transport.ledger import FileUpload
from transport.refusals import Wait
from transport.scheduler import (
    LinkView,
    SchedulerPolicy,
    UploadCandidate,
    explain_waiting,
    waiting_code,
)
from transport.wait_reasons import WaitCode, WaitReason

QUEUED_STATES: Final = frozenset({FileState.SEALED, FileState.UPLOADING})
ROW_STATES: Final = ("uploading", "waiting", "blocked", "unattested")
UNATTESTED_NOTE: Final = (
    "the server cannot attest; kept on the card until retention, asked again later"
)


@dataclass(slots=True)
class Uploading:
    """A running upload: link, transport and how far the server confirmed (the service updates
    `offset_bytes` as the server confirms; views copy it)."""

    link: str
    transport: str
    offset_bytes: int
    size_bytes: int


def waiting_records(records: Iterable[FileRecord]) -> list[FileRecord]:
    """The files the uplink owes the back office, oldest first."""
    queued = [r for r in records if r.state in QUEUED_STATES and r.sha256_hex is not None]
    return sorted(queued, key=lambda r: (r.created_at_ms, r.file_id))


def upload_rows(
    records: Iterable[FileRecord],
    uploads: Mapping[str, FileUpload],
    candidates: Mapping[str, UploadCandidate],
    running: Mapping[str, Uploading],
    views: list[LinkView],
    policy: SchedulerPolicy,
    now_s: float,
    *,
    everything_waits: Wait | None = None,
) -> list[dict[str, Any]]:
    """One row per waiting file (see the module invariants). `everything_waits`: the back
    office is paused or refuses the credentials, so every file not running waits for it."""
    rows = []
    for record in waiting_records(records):
        upload = uploads.get(record.file_id, FileUpload())
        candidate = candidates.get(record.file_id)
        state = _state_and_reason(
            upload, candidate, running.get(record.file_id), views, policy, now_s, everything_waits
        )
        rows.append({**_facts(record), **state})
    return rows


def idle_rows(records: Iterable[FileRecord], reason: str) -> list[dict[str, Any]]:
    """The rows when no uplink runs (not paired, off): every file waits, for `reason`."""
    code = WaitReason(WaitCode.UPLINK_NOT_RUNNING)
    return [
        {**_facts(r), **_row("waiting", reason, None, code=code)} for r in waiting_records(records)
    ]


def _facts(record: FileRecord) -> dict[str, Any]:
    return {
        "file_id": record.file_id,
        "recording_id": record.recording_id,
        "upload_class": record.upload_class,
        "size_bytes": record.size_bytes,
        "created_at_ms": record.created_at_ms,
    }


def _state_and_reason(
    upload: FileUpload,
    candidate: UploadCandidate | None,
    running: Uploading | None,
    views: list[LinkView],
    policy: SchedulerPolicy,
    now_s: float,
    everything_waits: Wait | None,
) -> dict[str, Any]:
    if running is not None:
        reason = f"uploading on {running.link} ({running.transport})"
        code = WaitReason(WaitCode.UPLOADING, running.link)
        return _row("uploading", reason, None, running.offset_bytes, code=code)
    if upload.blocked_reason is not None:
        return _row("blocked", upload.blocked_reason, None, code=WaitReason(WaitCode.BLOCKED))
    state = "unattested" if upload.completed_unattested else "waiting"
    if everything_waits is not None and everything_waits.active(now_s):
        code = WaitReason(WaitCode.BACK_OFFICE_WAITS)
        return _row(state, everything_waits.reason, everything_waits.until_s - now_s, code=code)
    if candidate is None:
        return _row(state, "not yet queued", None, code=WaitReason(WaitCode.NOT_YET_QUEUED))
    retry_in_s = candidate.not_before_s - now_s if candidate.not_before_s > now_s else None
    reason = explain_waiting(candidate, views, policy, now_s)
    code = waiting_code(candidate, views, policy, now_s)
    if upload.completed_unattested and retry_in_s is None:
        reason = f"{UNATTESTED_NOTE}; {reason}"
        code = WaitReason(WaitCode.UNATTESTED)
    return _row(state, reason, retry_in_s, code=code)


def _row(
    state: str,
    reason: str,
    retry_in_s: float | None,
    offset_bytes: int | None = None,
    *,
    code: WaitReason,
) -> dict[str, Any]:
    """`reason` in English (`mvb uploads`); `code` and `link`: the same, for the page."""
    return {
        "state": state,
        "reason": reason,
        "code": code.code.value,
        "link": code.link,
        "retry_in_s": None if retry_in_s is None else float(math.ceil(max(0.0, retry_in_s))),
        "offset_bytes": offset_bytes,
    }


def status_waiting(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The status document's `waiting` list: every row not uploading, with its reason."""
    return [
        {
            "file_id": row["file_id"],
            "class": row["upload_class"],
            "reason": row["reason"],
            "code": row["code"],
            "link": row["link"],
        }
        for row in rows
        if row["state"] != "uploading"
    ]


def uplink_status(
    links: list[dict[str, Any]],
    running: Mapping[str, Uploading],
    rows: list[dict[str, Any]],
    uploaded_files: int,
    *,
    credentials_withdrawn: bool,
) -> dict[str, Any]:
    """UplinkService.status(): links, running uploads, why the rest waits, what a server
    took without attesting, and whether the back office refuses the box's credentials."""
    unattested = sum(1 for row in rows if row["state"] == "unattested")
    return {
        "links": links,
        "uploading": [{"file_id": f, **asdict(u)} for f, u in sorted(running.items())],
        "waiting": status_waiting(rows),
        "blocked_files": sum(1 for row in rows if row["state"] == "blocked"),
        "credentials_withdrawn": credentials_withdrawn,
        "uploaded_unattested": {"files": unattested, "note": UNATTESTED_NOTE},
        "uploaded_files": uploaded_files,
    }
