"""A box in memory behind the port (gateway/port.py), for tests of the web layer.

`FakeBox` keeps the recorder's state, the shift, the report book, pairing, alarms and an audit
list in memory; it decides with the box's own pure cores (gateway/officer/) where the web layer's
behaviour depends on a decision (who may end a shift, which report is valid), and with simple
rules elsewhere (a start records unless the test filled the card). Nothing touches a card, a
socket or a thread: a web test that runs on it tests the web layer alone. End-to-end tests of
the same routes on a real box live beside them (feature_rig.py, test_web_server.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from config.local import LocalConfig
from gateway.caller import Identity, RefusalKind, Refused
from gateway.hold_desk import parse_hold_body
from gateway.officer.reports import RECORDING_ID, ReportBook, with_held_flags
from gateway.officer.reports_form import (
    parse_correction,
    parse_report,
    parse_warning,
    report_rules,
)
from gateway.officer.shift import (
    Shift,
    ShiftStart,
    decide_end,
    decide_leave,
    decide_start,
    shift_view,
)
from gateway.port import AuditValue, BoxPort, BundleResult, Paired
from gateway.status_facts import (
    GpsFacts,
    RecordingFacts,
    RecordingFiles,
    StatusInputs,
    StorageFacts,
    UplinkFacts,
    UplinkIdle,
)
from gateway.web.local_channel import start_local_api
from gateway.web.status_source import StatusSource
from storage.envelope import RecipientPrivateKey
from storage.sealed import seal

GOOD_CODE = "GOOD-CODE"  # the one pairing code the fake accepts


def _not_recording() -> Refused:
    return Refused(RefusalKind.CONFLICT, "not_recording", "the box is not recording")


@dataclass
class FakeBox:
    """Implements BoxPort in memory. Tests read and set its fields directly: `config` is the
    effective configuration (set a new one to play a fleet document applied while running)."""

    config: LocalConfig
    state: str = "standby"
    recording_id: str | None = None
    recordings: int = 0
    flagged: bool = False
    card_full: bool = False
    card_unusable: bool = False  # the card is missing, read-only or failing (gateway/degraded.py)
    triggers: list[str] = field(default_factory=list)
    shift: Shift | None = None
    book: ReportBook = field(default_factory=ReportBook)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    paired: bool = False
    bundles: list[bytes] = field(default_factory=list)
    bundle_result: BundleResult = field(
        default_factory=lambda: BundleResult(
            applied=False, reason="refused: BadBundle: not a bundle", reason_code="bad_bundle"
        )
    )
    alarms: dict[str, str] = field(default_factory=dict)
    holds: dict[str, str] = field(default_factory=dict)  # recording id -> the reason given
    audit_entries: list[tuple[str, dict[str, AuditValue]]] = field(default_factory=list)
    uploads: dict[str, str] = field(default_factory=dict)  # file id -> "waiting" | "blocked"
    # The back office's recording key: the audit seals officer ids to it, as the box does.
    recording_key: RecipientPrivateKey = field(default_factory=RecipientPrivateKey.generate)
    # Facts of the status document a test sets to play a box's condition (no uplink: "not
    # paired" unless paired, then "off"; no cameras; no gpsd).
    gps: GpsFacts = field(default_factory=lambda: GpsFacts("no_gpsd"))
    uptime_s: float = 60.0
    uplink: UplinkFacts | UplinkIdle | None = None
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)
    card_free_bytes: int = 32 << 30
    recent_recordings: tuple[RecordingFiles, ...] = ()
    recording_for_s: float = 1.0

    # -- reading ----------------------------------------------------------------------------

    async def status_inputs(self) -> StatusInputs:
        recording = self.recording_id is not None
        return StatusInputs(
            at_ms=time.time_ns() // 1_000_000,
            device_serial=self.config.box.device_serial,
            vehicle_id=self.config.box.vehicle_id,
            uptime_s=self.uptime_s,
            service={
                "state": self.state,
                "recording_for_s": self.recording_for_s if recording else 0.0,
                "cameras": {name: dict(camera) for name, camera in self.cameras.items()},
                "alarms": dict(self.alarms),
            },
            recording=RecordingFacts(
                self.recording_id,
                "officer" if recording else None,
                ("P0" if self.flagged else "P1") if recording else None,
                1800.0,
            ),
            storage=StorageFacts(
                card_total_bytes=64 << 30,
                card_free_bytes=0 if self.card_full else self.card_free_bytes,
                reserve_bytes=1 << 30,
                retention_days=self.config.storage.retention_days,
                held_recordings=frozenset(self.holds),
                recent_recordings=self.recent_recordings,
            ),
            uplink=self._uplink(),
            gps=self.gps,
            paired=self.paired,
            fleet=None,
            shift=self.shift_view(),
            reports=self.book.summary(),
            software_version="0.0.0-fake",
            hold_to_stop_ms=self.config.webui.hold_to_stop_ms,
        )

    def _uplink(self) -> UplinkFacts | UplinkIdle:
        if self.uplink is not None:
            return self.uplink
        if self.paired:
            return UplinkIdle("off", "no uplink is configured")
        return UplinkIdle("not paired", "the box is not paired with a back office")

    def effective_config(self) -> LocalConfig:
        return self.config

    # -- the recorder ---------------------------------------------------------------------------

    async def start_recording(self, caller: Identity) -> str:
        if self.card_unusable:
            message = "the card cannot be written (missing, read-only or failed): replace it"
            raise Refused(RefusalKind.CONFLICT, "card_unusable", message)
        if self.card_full:
            raise Refused(RefusalKind.CONFLICT, "card_full", "the memory card is full")
        self._record("officer")
        return self.state

    def _record(self, source: str) -> None:
        self.triggers.append(source)
        if self.recording_id is None:
            self.recordings += 1
            self.recording_id = f"{self.recordings:032x}"
            self.book.started(self.recording_id, time.time_ns() // 1_000_000, source)
        self.state = "recording"

    async def stop_recording(self, caller: Identity) -> str:
        if self.recording_id is None:
            raise _not_recording()
        self.book.finished(self.recording_id, 1.0)
        self.recording_id = None
        self.flagged = False
        self.state = "standby"
        return self.state

    def recorder_busy(self) -> bool:
        return self.recording_id is not None

    async def flag_incident(self, caller: Identity) -> int:
        if self.recording_id is None:
            raise _not_recording()
        self.flagged = True
        return 1

    async def trigger(self, source: str) -> str:
        self._record(source)
        return self.state

    # -- the shift and the reports ----------------------------------------------------------------

    def shift_view(self) -> dict[str, Any]:
        return shift_view(self.shift, len(self.book.missing()))

    async def start_shift(self, caller: Identity, start: ShiftStart) -> dict[str, Any]:
        change = decide_start(self.shift, start, time.time_ns() // 1_000_000)
        self.shift = change.shift
        await self.audit(
            change.event, officer_id_sealed=self._sealed(start.officer_id), channel=caller.channel
        )
        return self.shift_view()

    def _sealed(self, officer_id: str | None) -> str:
        recipients = (self.recording_key.public(),)
        return seal((officer_id or "").encode(), "officer_id", recipients)

    async def leave_shift(self, caller: Identity, officer_id: str) -> dict[str, Any]:
        change = decide_leave(self.shift, caller, officer_id)
        self.shift = change.shift
        await self.audit(
            change.event, officer_id_sealed=self._sealed(officer_id), channel=caller.channel
        )
        return self.shift_view()

    async def end_shift(self, caller: Identity, acknowledge_missing: bool) -> dict[str, Any]:
        missing = [entry.recording_id for entry in self.book.missing()]
        ended = decide_end(self.shift, caller, acknowledge_missing, missing)
        self.shift = None
        self.book.clear()
        sealed = self._sealed(ended.officer_ids[0] if ended.officer_ids else None)
        await self.audit("shift.ended", officer_id_sealed=sealed, channel=caller.channel)
        return {**self.shift_view(), "ended": True, "reports_missing_acknowledged": len(missing)}

    def reports_view(self) -> dict[str, Any]:
        view = {
            "missing": [e.view() for e in self.book.missing()],
            "filed": [e.view() for e in self.book.reported()],
        }
        required = report_rules(self.config).required()
        return {**with_held_flags(view, frozenset(self.holds)), "required": required}

    async def file_report(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        entry = self.book.get(recording_id) if RECORDING_ID.fullmatch(recording_id) else None
        if entry is None:
            message = "no recording of this shift has that id"
            raise Refused(RefusalKind.NOT_FOUND, "unknown_recording", message)
        report = parse_report(body, report_rules(self.config))
        if entry.reported:
            message = "this recording already has its report"
            raise Refused(RefusalKind.CONFLICT, "already_filed", message)
        filed_at_ms = time.time_ns() // 1_000_000
        self.book.filed(recording_id, filed_at_ms, "f" * 32)
        self.reports[recording_id] = {"what": report.what, "officer_id": caller.officer_id}
        return {"recording_id": recording_id, "filed_at_ms": filed_at_ms, "file_id": "f" * 32}

    async def register_warning(self, caller: Identity, body: Mapping[str, Any]) -> dict[str, Any]:
        warning = parse_warning(body, report_rules(self.config))
        at_ms = time.time_ns() // 1_000_000
        warning_id = f"{len(self.book.warnings()) + 1:032x}"
        self.book.warned(warning_id, at_ms, "d" * 32)
        self.reports[warning_id] = {"what": warning.what, "officer_id": caller.officer_id}
        return {
            "recording_id": warning_id,
            "at_ms": at_ms,
            "file_id": "d" * 32,
            "position_known": False,
        }

    async def correct_report(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        entry = self.book.get(recording_id) if RECORDING_ID.fullmatch(recording_id) else None
        if entry is None:
            message = "no recording of this shift has that id"
            raise Refused(RefusalKind.NOT_FOUND, "unknown_recording", message)
        if not entry.reported:
            message = "this recording has no report to correct"
            raise Refused(RefusalKind.CONFLICT, "not_filed", message)
        parse_correction(body, entry.kind, report_rules(self.config))
        self.book.corrected(recording_id)
        return {
            "recording_id": recording_id,
            "filed_at_ms": time.time_ns() // 1_000_000,
            "file_id": "c" * 32,
            "corrects_file_id": entry.report_file_id,
            "correction_no": entry.corrections + 1,
        }

    # -- holds: the box's rules in short (admins only; any recording of the book) -----------------

    async def holds_view(self, caller: Identity) -> dict[str, Any]:
        _require_admin(caller)
        return {"holds": [_hold_view(rid) for rid in sorted(self.holds)]}

    async def hold_recording(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        _require_admin(caller)
        if self.book.get(recording_id) is None:
            raise Refused(RefusalKind.NOT_FOUND, "unknown_recording", "no such recording")
        reason = parse_hold_body(body)
        if recording_id in self.holds:
            raise Refused(RefusalKind.CONFLICT, "already_held", "already held")
        self.holds[recording_id] = reason
        await self.audit("hold.set", recording_id=recording_id, channel=caller.channel)
        return {**_hold_view(recording_id), "reason_sealed": True, "note_file_id": "e" * 32}

    async def release_hold(self, caller: Identity, recording_id: str) -> dict[str, Any]:
        _require_admin(caller)
        if RECORDING_ID.fullmatch(recording_id) is None:
            raise Refused(RefusalKind.NOT_FOUND, "unknown_recording", "no such recording")
        if self.holds.pop(recording_id, None) is None:
            raise Refused(RefusalKind.CONFLICT, "not_held", "the recording is not held")
        await self.audit("hold.released", recording_id=recording_id, channel=caller.channel)
        return {**_hold_view(recording_id), "held": False, "sources": [], "since_ms": None}

    # -- pairing and configuration ----------------------------------------------------------------

    async def pair(self, code: str, re_pair: bool) -> Paired:
        if self.paired and not re_pair:
            message = "this box is already paired"
            raise Refused(
                RefusalKind.CONFLICT, "already_paired", message, reason="already_paired_here"
            )
        if code != GOOD_CODE:
            message = "the pairing code is not valid"
            raise Refused(
                RefusalKind.INVALID, "pairing_failed", message, reason="refused_code_unknown"
            )
        self.paired = True
        await self.audit("gateway.paired", re_pair=re_pair)
        return Paired(self.config.box.device_serial, "127.0.0.1:8443", "note")

    async def push_bundle(self, bundle: bytes) -> BundleResult:
        if not self.paired:
            message = "the box is not paired with the back office"
            raise Refused(RefusalKind.CONFLICT, "not_paired", message)
        self.bundles.append(bundle)
        return self.bundle_result

    # -- uploads ----------------------------------------------------------------------------------

    async def uploads_view(self, caller: Identity) -> dict[str, Any]:
        _admin_only(caller)
        reasons = {"blocked": "the back office holds other bytes", "waiting": "waiting for WiFi"}
        codes = {"blocked": "blocked", "waiting": "waiting_for_wifi"}
        files = [
            {
                "file_id": file_id,
                "recording_id": "0" * 32,
                "upload_class": "P1",
                "size_bytes": 1000,
                "created_at_ms": 0,
                "state": state,
                "reason": reasons[state],
                "code": codes[state],
                "link": None,
                "retry_in_s": None,
                "offset_bytes": None,
            }
            for file_id, state in sorted(self.uploads.items())
        ]
        return {
            "uplink": "running",
            "credentials_withdrawn": False,
            "waiting_for_back_office": None,
            "files": files,
        }

    async def retry_uploads(
        self, caller: Identity, file_ids: Sequence[str], all_blocked: bool
    ) -> dict[str, Any]:
        _admin_only(caller)
        chosen = [f for f, s in sorted(self.uploads.items()) if s == "blocked"]
        if not all_blocked:
            unknown = sorted(set(file_ids) - set(self.uploads))
            if unknown:
                message = f"no file {unknown[0]!r} is waiting on the card"
                raise Refused(RefusalKind.NOT_FOUND, "unknown_upload", message)
            chosen = sorted(set(file_ids))
        released = []
        for file_id in chosen:
            was_blocked = self.uploads[file_id] == "blocked"
            self.uploads[file_id] = "waiting"
            await self.audit("uplink.upload_released", file_id=file_id, by=caller.channel)
            released.append({"file_id": file_id, "was_blocked": was_blocked})
        return {"released": released}

    # -- the audit log and the alarms -------------------------------------------------------------

    async def audit(self, event: str, **fields: AuditValue) -> None:
        self.audit_entries.append((event, dict(fields)))

    def raise_alarm(self, code: str, message: str) -> None:
        self.alarms[code] = message

    def clear_alarm(self, code: str) -> None:
        self.alarms.pop(code, None)

    # -- for the tests ----------------------------------------------------------------------------

    def audit_text(self) -> str:
        """Every audit entry as the log would hold it (for scans: no name, no password)."""
        return "\n".join(json.dumps({"event": e, "fields": f}) for e, f in self.audit_entries)


def _require_admin(caller: Identity) -> None:
    if caller.role != "admin":
        raise Refused(RefusalKind.FORBIDDEN, "forbidden", "only an admin may hold")


def _hold_view(recording_id: str) -> dict[str, Any]:
    return {
        "recording_id": recording_id,
        "held": True,
        "sources": ["local"],
        "since_ms": 1,
        "ground": None,
        "files_on_card": 1,
    }


def _admin_only(caller: Identity) -> None:
    if caller.role != "admin":
        raise Refused(RefusalKind.FORBIDDEN, "forbidden", "only an admin may do this")


def _implements_the_port(box: FakeBox) -> BoxPort:
    return box  # mypy checks here that FakeBox has every member of the port


@dataclass
class FakeLocal:
    """The loopback channel (`mvb` commands' API) in front of a FakeBox."""

    box: FakeBox
    status: StatusSource
    base: str  # http://127.0.0.1:PORT

    def client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(base_url=self.base)


@contextlib.asynccontextmanager
async def fake_local(config: LocalConfig) -> AsyncIterator[FakeLocal]:
    """Serve the loopback channel of `config.api` in front of a fresh FakeBox."""
    box = FakeBox(config)
    status = StatusSource(box)
    stop = await start_local_api(box, status, config.api.host, config.api.port)
    try:
        yield FakeLocal(box, status, f"http://{config.api.host}:{config.api.port}")
    finally:
        await stop()
