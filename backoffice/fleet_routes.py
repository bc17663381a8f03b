"""The fleet routes of the HTTPS shell: a box's signed report, its blocked-file report, and the
fleet's TUF repository (documents and sealed releases), each an aiohttp handler for a client
already past the TLS handshake and the gate (backoffice/server.py routes here).

Invariants:
- Nothing under FLEET_PREFIX reaches TusApp; fleet files are read-only (GET/HEAD), exact paths
  (no query, no percent-encoding), at most MAX_FLEET_FILE_BYTES read off the event loop, and a
  document only to a box it is for (403 otherwise); a sealed release is streamed from disk.
- A report body is read whole, to at most its MAX_REPORT_BYTES, before it is judged; a report
  is verified against the device key the box enrolled (none enrolled: 409).
- Every answer here is `no-store` (`fleet_answer`): timestamp.json changes under one name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from aiohttp import web

from backoffice.audit_routes import observe_head
from backoffice.audit_store import AuditStore
from backoffice.blocked_log import BlockedLog
from backoffice.body_pace import read_whole_body
from backoffice.check_now import TIMESTAMP_PATH, CheckNowBook
from backoffice.client_gate import EnrolledKeys, GateUnavailable
from backoffice.fleet_access import FleetFileDenied
from backoffice.fleet_reports import (
    ForeignDeviceKey,
    KeyNotEnrolled,
    ReportLog,
    ReportRefused,
    parse_report,
)
from config.fleet_targets import TARGETS_PREFIX
from config.release_targets import RELEASES_DIR
from protocol.fleet_report import MAX_REPORT_BYTES
from transport.blocked_report import MAX_REPORT_BYTES as MAX_BLOCKED_REPORT_BYTES
from transport.blocked_report import BlockedReportRefused
from transport.blocked_report import parse_report as parse_blocked_report

log = logging.getLogger("backoffice.server")  # the shell's log name, kept when the routes moved

FLEET_PREFIX: Final = "/fleet/"
FLEET_REPORT_PATH: Final = "/fleet/report"
"""Paths under this prefix are the fleet's TUF repository (docs/fleet-config.md 3), never tus."""
RELEASES_PREFIX: Final = f"{TARGETS_PREFIX}{RELEASES_DIR}/"
MAX_FLEET_FILE_BYTES: Final = 4 * 1024 * 1024
"""The largest fleet file served (the box's own bound on targets metadata)."""

FleetFiles = Callable[[str, str], Path | None]
"""`fleet_files(url_path, client_id)`: the file that answers GET `url_path` under FLEET_PREFIX
for the box `client_id`, or None; raises FleetFileDenied for a document not for that box
(`backoffice/fleet_access.py` FleetAccess)."""


def read_fleet_file(path: Path, max_bytes: int) -> bytes | None:
    """The file's bytes, or None when it is gone or larger than `max_bytes` (blocking)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return data if len(data) <= max_bytes else None


async def fleet_report_route(
    request: web.Request,
    client_id: str,
    fleet_reports: ReportLog | None,
    enrolled_keys: EnrolledKeys | None,
    audit_store: AuditStore | None,
) -> web.Response:
    """A box's signed statement of the configuration it applied (backoffice/fleet_reports)."""
    if fleet_reports is None:
        return fleet_answer(404, b"not found\n")
    if (request.content_length or 0) > MAX_REPORT_BYTES:
        return fleet_answer(413, b"report too large\n")
    body = await read_whole_body(request.content, MAX_REPORT_BYTES)
    if body is None:
        return fleet_answer(413, b"report too large\n")
    try:
        enrolled = None if enrolled_keys is None else await enrolled_keys(client_id)
        report = parse_report(client_id, body, enrolled)
    except ForeignDeviceKey as exc:
        log.error("incident=report_foreign_key client_id=%s: %s", client_id, exc)
        return fleet_answer(400, f"{exc}\n".encode())
    except ReportRefused as exc:
        return fleet_answer(400, f"{exc}\n".encode())
    except KeyNotEnrolled as exc:
        return fleet_answer(409, f"{exc}\n".encode())
    except GateUnavailable as exc:
        log.error("enrolled device keys unavailable client_id=%s: %s", client_id, exc)
        return fleet_answer(503, b"the back office cannot check reports now\n")
    await asyncio.to_thread(fleet_reports.append, report)
    if report.audit_head and audit_store is not None:
        await observe_head(audit_store, client_id, report.audit_head, "report")
    log.info(
        "config applied client_id=%s config_serial=%d sha256=%s",
        client_id,
        report.config_serial,
        report.sha256,
    )
    return fleet_answer(204, b"")


async def blocked_report_route(
    request: web.Request, client_id: str, blocked_log: BlockedLog | None
) -> web.Response:
    """A box blocked a file for integrity and says so (transport/blocked_report.py)."""
    if blocked_log is None:
        return fleet_answer(404, b"not found\n")
    if request.method != "POST":
        return fleet_answer(405, b"POST only\n", {"Allow": "POST"})
    if (request.content_length or 0) > MAX_BLOCKED_REPORT_BYTES:
        return fleet_answer(413, b"report too large\n")
    body = await read_whole_body(request.content, MAX_BLOCKED_REPORT_BYTES)
    if body is None:
        return fleet_answer(413, b"report too large\n")
    try:
        report = parse_blocked_report(body)
    except BlockedReportRefused as exc:
        return fleet_answer(400, f"{exc}\n".encode())
    await asyncio.to_thread(blocked_log.append, client_id, report)
    return fleet_answer(204, b"")


async def fleet_file_route(
    request: web.Request,
    client_id: str,
    fleet_files: FleetFiles | None,
    check_now: CheckNowBook | None,
) -> web.StreamResponse:
    """A file of the fleet's TUF repository, read-only: GET/HEAD, exact paths, bounded; a
    document only to a box it is for."""
    if fleet_files is None:
        return fleet_answer(404, b"not found\n")
    if request.method not in ("GET", "HEAD"):
        return fleet_answer(405, b"fleet files are read only\n", {"Allow": "GET, HEAD"})
    # The raw path must be the path itself: no query, no percent-encoding to decode into
    # something served_path did not see.
    if request.raw_path != request.path:
        return fleet_answer(404, b"not found\n")
    try:
        path = await asyncio.to_thread(fleet_files, request.path, client_id)
    except FleetFileDenied:
        return fleet_answer(403, b"this document is not for this box\n")
    if request.path.startswith(RELEASES_PREFIX):
        return release_file(path)
    data = (
        None
        if path is None
        else await asyncio.to_thread(read_fleet_file, path, MAX_FLEET_FILE_BYTES)
    )
    if data is None:
        return fleet_answer(404, b"not found\n")
    if request.path == TIMESTAMP_PATH and check_now is not None:
        await asyncio.to_thread(check_now.done, client_id)
    return fleet_answer(200, data, content_type="application/octet-stream")


def release_file(path: Path | None) -> web.StreamResponse:
    """A sealed release (docs/releases.md 7), streamed from disk: larger than any other
    fleet file, and encrypted (every paired box may have it)."""
    if path is None:
        return fleet_answer(404, b"not found\n")
    return web.FileResponse(
        path, headers={"Cache-Control": "no-store", "Content-Type": "application/octet-stream"}
    )


def fleet_answer(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    content_type: str = "text/plain",
) -> web.Response:
    # no-store: timestamp.json changes under the same name; nothing in between may keep it.
    return web.Response(
        status=status,
        body=body,
        content_type=content_type,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
