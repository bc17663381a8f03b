"""The officer's shift (RULES R5, R4; docs/webui.md section 2): who records with this box.

Pure core: `parse_start` / `decide_start` / `parse_end` / `decide_end` (a request and the
current shift -> the new shift, or the refusal) and `shift_view`. Shell: `ShiftDesk` keeps the
shift in `state_dir/shift.json` (tmp, fsync, rename, fsync dir: a power cut leaves the old or
the new shift, never a mix), audits `shift.started` / `shift.ended`, and gives every recording
that starts during the shift its facts: `officer_id` and `bodycam_serials` (inside the
encryption, next to device serial and vehicle id).

Invariants:
- at most one shift runs; another officer cannot start one over it (409 `shift_active`); the
  same officer starting again changes the bodycams and keeps the start time;
- on the web channel the officer id is the account's (an account without one cannot start a
  shift: 409 `no_officer_id`); the local channel names it in the body;
- a shift ends only when every recording has its report, or the officer (or an admin)
  acknowledges the missing ones, which is audited with their number;
- the audit log and evidence carry the officer id (a service number), never the login name.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from common.durable import atomic_write_bytes
from config.local import OFFICER_ID  # a service number, the same pattern as [[accounts]]
from gateway.web.identity import Identity, identity_of
from gateway.web.jsonbody import (
    ApiError,
    error_response,
    invalid,
    read_json_object,
    reject_unknown,
)
from gateway.web.reports import ReportDesk
from storage.audit import AuditLog

log = logging.getLogger(__name__)

SHIFT_FILE = "shift.json"
BODYCAM_SERIAL = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_BODYCAMS = 8


@dataclass(frozen=True, slots=True)
class Shift:
    officer_id: str
    bodycam_serials: tuple[str, ...]
    since_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "officer_id": self.officer_id,
            "bodycam_serials": list(self.bodycam_serials),
            "since_ms": self.since_ms,
        }

    @classmethod
    def from_json(cls, data: Any) -> Shift:
        """ValueError unless `data` is what `to_json` wrote (checked as strictly as a request)."""
        if not isinstance(data, dict) or set(data) != {"officer_id", "bodycam_serials", "since_ms"}:
            raise ValueError("not a shift")
        officer_id, serials, since_ms = (
            data["officer_id"],
            data["bodycam_serials"],
            data["since_ms"],
        )
        if not isinstance(officer_id, str) or not OFFICER_ID.fullmatch(officer_id):
            raise ValueError("bad officer id")
        if not isinstance(since_ms, int) or isinstance(since_ms, bool):
            raise ValueError("bad start time")
        return cls(officer_id, _serials(serials), since_ms)


@dataclass(frozen=True, slots=True)
class ShiftStart:
    officer_id: str
    bodycam_serials: tuple[str, ...]


def _serials(value: object) -> tuple[str, ...]:
    """The bodycam serials: a list of at most MAX_BODYCAMS distinct serials (ValueError)."""
    if not isinstance(value, list):
        raise ValueError("bodycam_serials must be a list of serial numbers")
    if len(value) > MAX_BODYCAMS:
        raise ValueError(f"at most {MAX_BODYCAMS} bodycams")
    for serial in value:
        if not isinstance(serial, str) or not BODYCAM_SERIAL.fullmatch(serial):
            raise ValueError(f"a bodycam serial must match {BODYCAM_SERIAL.pattern}")
    if len(set(value)) != len(value):
        raise ValueError("a bodycam serial appears twice")
    return tuple(value)


def parse_start(body: Mapping[str, Any], identity: Identity) -> ShiftStart:
    """Who starts a shift with which bodycams, or ApiError (409 `no_officer_id`, 422)."""
    reject_unknown(dict(body), frozenset({"bodycam_serials", "officer_id"}))
    try:
        serials = _serials(body.get("bodycam_serials", []))
    except ValueError as exc:
        raise invalid("bodycam_serials", str(exc)) from exc
    if identity.channel == "web":
        if "officer_id" in body:
            raise invalid("officer_id", "on the web the officer id comes from your account")
        if not identity.officer_id:
            raise ApiError(409, "no_officer_id", "this account has no officer id: ask the admin")
        return ShiftStart(identity.officer_id, serials)
    officer_id = body.get("officer_id")
    if not isinstance(officer_id, str) or not OFFICER_ID.fullmatch(officer_id):
        raise invalid("officer_id", f"officer_id must match {OFFICER_ID.pattern}")
    return ShiftStart(officer_id, serials)


def decide_start(current: Shift | None, start: ShiftStart, now_ms: int) -> Shift:
    if current is None:
        return Shift(start.officer_id, start.bodycam_serials, now_ms)
    if current.officer_id != start.officer_id:
        raise ApiError(409, "shift_active", "another officer's shift is running on this box")
    return Shift(current.officer_id, start.bodycam_serials, current.since_ms)


def parse_end(body: Mapping[str, Any]) -> bool:
    """Whether the caller acknowledges missing reports (absent: false)."""
    reject_unknown(dict(body), frozenset({"acknowledge_missing_reports"}))
    acknowledge = body.get("acknowledge_missing_reports", False)
    if not isinstance(acknowledge, bool):
        raise invalid("acknowledge_missing_reports", "must be true or false")
    return acknowledge


def decide_end(
    current: Shift | None, identity: Identity, acknowledge: bool, missing: list[str]
) -> Shift:
    """The shift that may end now, or ApiError: 409 `no_shift`, 403 `forbidden` (neither the
    shift's officer nor an admin), 409 `reports_missing` with the list."""
    if current is None:
        raise ApiError(409, "no_shift", "no shift is running")
    if identity.role != "admin" and identity.officer_id != current.officer_id:
        raise ApiError(403, "forbidden", "only the shift's officer or an admin can end it")
    if missing and not acknowledge:
        raise ApiError(
            409,
            "reports_missing",
            f"{len(missing)} recording(s) still need a report",
            missing=missing,
        )
    return current


def shift_view(shift: Shift | None, missing: int) -> dict[str, Any]:
    """GET /api/shift and the status document's `shift` member."""
    return {
        "active": shift is not None,
        "officer_id": None if shift is None else shift.officer_id,
        "bodycam_serials": [] if shift is None else list(shift.bodycam_serials),
        "since_ms": None if shift is None else shift.since_ms,
        "reports_missing": missing,
    }


# -- the shell -----------------------------------------------------------------------------------


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ShiftDesk:
    """The running shift, on disk and in memory; the capture service asks it for facts."""

    def __init__(
        self, state_dir: Path, audit: AuditLog, reports: ReportDesk, shift: Shift | None
    ) -> None:
        self.path = state_dir / SHIFT_FILE
        self.audit = audit
        self.reports = reports
        self.shift = shift
        self._lock = asyncio.Lock()

    @classmethod
    def load(cls, state_dir: Path, audit: AuditLog, reports: ReportDesk) -> ShiftDesk:
        """Read the shift (a small file, at start). An unreadable file means no shift: the
        officer starts it again; recordings meanwhile carry no officer id."""
        path = state_dir / SHIFT_FILE
        try:
            document = json.loads(path.read_bytes())
            shift = None if document["shift"] is None else Shift.from_json(document["shift"])
        except FileNotFoundError:
            shift = None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s unreadable, no shift: %s", path, type(exc).__name__)
            shift = None
        return cls(state_dir, audit, reports, shift)

    def officer_id(self) -> str | None:
        return None if self.shift is None else self.shift.officer_id

    def recording_facts(self) -> dict[str, Any]:
        """R5: the facts every recording started now carries."""
        shift = self.shift
        return {
            "officer_id": None if shift is None else shift.officer_id,
            "bodycam_serials": [] if shift is None else list(shift.bodycam_serials),
        }

    def view(self) -> dict[str, Any]:
        return shift_view(self.shift, len(self.reports.missing_ids()))

    async def _save(self, shift: Shift | None) -> None:
        document = {"version": 1, "shift": None if shift is None else shift.to_json()}
        data = json.dumps(document, sort_keys=True).encode()
        await asyncio.to_thread(atomic_write_bytes, self.path, data)

    async def start(self, identity: Identity, body: Mapping[str, Any]) -> dict[str, Any]:
        request = parse_start(body, identity)
        async with self._lock:
            before = self.shift
            shift = decide_start(before, request, _wall_ms())
            await self._save(shift)
            self.shift = shift
            event = "shift.started" if before is None else "shift.bodycams_changed"
            await asyncio.to_thread(
                self.audit.append,
                event,
                officer_id=shift.officer_id,
                bodycams=len(shift.bodycam_serials),
                channel=identity.channel,
            )
        return self.view()

    async def end(self, identity: Identity, body: Mapping[str, Any]) -> dict[str, Any]:
        acknowledge = parse_end(body)
        async with self._lock:
            missing = self.reports.missing_ids()
            shift = decide_end(self.shift, identity, acknowledge, missing)
            await self._save(None)
            self.shift = None
            await self.reports.clear()
            await asyncio.to_thread(
                self.audit.append,
                "shift.ended",
                officer_id=shift.officer_id,
                reports_missing=len(missing),
                acknowledged_missing=bool(missing),
                by_admin=identity.officer_id != shift.officer_id,
                channel=identity.channel,
            )
        return {**self.view(), "ended": True, "reports_missing_acknowledged": len(missing)}


def routes(desk: ShiftDesk) -> list[web.RouteDef]:
    async def get_shift(_request: web.Request) -> web.Response:
        return web.json_response(desk.view())

    async def start_shift(request: web.Request) -> web.Response:
        try:
            body = await read_json_object(request)
            return web.json_response(await desk.start(identity_of(request), body))
        except ApiError as error:
            return error_response(error)

    async def end_shift(request: web.Request) -> web.Response:
        try:
            body = await read_json_object(request)
            return web.json_response(await desk.end(identity_of(request), body))
        except ApiError as error:
            return error_response(error)

    return [
        web.get("/api/shift", get_shift),
        web.post("/api/shift/start", start_shift),
        web.post("/api/shift/end", end_shift),
    ]
