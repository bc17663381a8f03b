"""The running box behind the port (gateway/port.py): the adapter the composition root builds.

Each method hands a face's command to the service that owns the decision (the recorder through
the capture service, the officer's desks, pairing, the fleet sync) and translates that
service's refusals into `Refused`. It holds no state of its own but the pairing lock and the
moment it started (the status document's uptime).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from common.faults import IllegalTransition
from config.local import LocalConfig
from gateway.box import Box
from gateway.caller import Identity, RefusalKind, Refused, audit_name
from gateway.capture.service import CaptureService
from gateway.fleet_sync import BundleRejected, FleetSync
from gateway.gps import GpsTracker
from gateway.hold_desk import HoldDesk
from gateway.officer.desks import OfficerDesks
from gateway.officer.reports import with_held_flags
from gateway.officer.reports_form import report_rules
from gateway.officer.shift import ShiftStart
from gateway.pairing import BoxIdInvalid, PairingFailed
from gateway.pairing_client import (
    AlreadyPairedHere,
    is_paired,
    officer_message,
    officer_reason,
    pair,
)
from gateway.port import AuditValue, BundleResult, Paired
from gateway.recorder import OFFICER, State
from gateway.status_facts import StatusInputs, StorageFacts, UplinkFacts, UplinkIdle
from gateway.status_gather import (
    gps_facts,
    read_storage_facts,
    read_uplink_facts,
    recording_facts,
    unknown_storage_facts,
)
from gateway.uplink_from_config import UplinkNotStarted
from storage.card_reopen import CardAway
from transport.uplink import UplinkService
from transport.uplink_files import UnknownUpload
from transport.uplink_view import idle_rows
from transport.withdrawal import UNPAIRED_ALARM

log = logging.getLogger(__name__)

NEXT_START_NOTE = "The uplink starts with the next start of the service."
RUNNING_NOTE = "The uplink takes the new credentials by itself."
NOT_RECORDING = "the box is not recording"
CARD_UNUSABLE = "the card cannot be written (missing, read-only or failed): replace it"
CARD_UNREADABLE = "card unreadable"  # the uplink's state while the card does not answer


def _not_recording() -> Refused:
    return Refused(RefusalKind.CONFLICT, "not_recording", NOT_RECORDING)


def origin_of_caller(caller: Identity) -> dict[str, str | None]:
    """The channel and account a trigger or stop of `caller` is audited with (R3): the page
    names the account's tag, the loopback channel (the `mvb` commands) "local"."""
    channel = "page" if caller.channel == "web" else "cli"
    return {"channel": channel, "account": audit_name(caller)}


def _admin_only(caller: Identity, what: str) -> None:
    if caller.role != "admin":
        raise Refused(RefusalKind.FORBIDDEN, "forbidden", f"only an admin may {what}")


PLACE_MAX_AGE_S = 300.0
"""A warning takes the last GPS fix up to this old (its `at_ms` says how old): in a street of
high buildings the fix is often a few seconds stale, and an old place is better than none."""


def warning_place(gps: GpsTracker, now_mono_ns: int) -> dict[str, Any]:
    """Where the box is as a warning is registered: gpsd's state and the last fix, if recent."""
    fix = gps.fix
    recent = fix is not None and now_mono_ns - fix.received_mono_ns <= PLACE_MAX_AGE_S * 1e9
    return {
        "gps_status": gps.status(now_mono_ns).value,
        "position": fix.sample() if fix is not None and recent else None,
    }


class BoxAdapter:
    """Implements BoxPort over the parts of one running box."""

    def __init__(
        self,
        box: Box,
        service: CaptureService,
        gps: GpsTracker,
        officer: OfficerDesks,
        *,
        uplink: UplinkService | UplinkNotStarted | None,
        fleet: FleetSync | None,
        holds: HoldDesk,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.box = box
        self.service = service
        self.gps = gps
        self.officer = officer
        self.uplink = uplink
        self.fleet = fleet
        self.holds = holds
        self._clock_s = clock_s
        self._started_s = clock_s()
        self._pairing = asyncio.Lock()

    # -- reading ------------------------------------------------------------------------------

    async def status_inputs(self) -> StatusInputs:
        storage, uplink, paired = await asyncio.to_thread(self._read_slow_facts)
        config = self.box.config
        fleet = self.fleet
        return StatusInputs(
            at_ms=time.time_ns() // 1_000_000,
            device_serial=config.box.device_serial,
            vehicle_id=config.box.vehicle_id,
            uptime_s=self._clock_s() - self._started_s,
            service=self.service.status(),
            recording=recording_facts(self.service),
            storage=storage,
            uplink=uplink,
            gps=gps_facts(self.gps, time.monotonic_ns()),
            paired=paired,
            fleet=None if fleet is None else vars(fleet.status),
            shift=self.officer.shift.view(),
            reports=self.officer.reports.book.summary(),
            hold_to_stop_ms=self.effective_config().webui.hold_to_stop_ms,
        )

    def _read_slow_facts(self) -> tuple[StorageFacts, UplinkFacts | UplinkIdle, bool]:
        """Everything that touches the card or the state directory, in one worker-thread trip.
        A card that fails to answer leaves the status standing: its alarm (raised here if the
        writers have not yet) says why, and what cannot be read counts 0."""
        paired = is_paired(self.box.config.state_dir)
        store = self.box.store
        try:
            return read_storage_facts(store), read_uplink_facts(self.uplink, paired), paired
        except CardAway:
            pass  # the card watch is opening the card's files again: a moment, not a fault
        except (OSError, sqlite3.Error) as exc:
            if store.note_card_fault(exc) is None:
                raise
        unknown = unknown_storage_facts(store)
        return unknown, UplinkIdle(CARD_UNREADABLE, "the card cannot be read"), paired

    def effective_config(self) -> LocalConfig:
        fleet = self.fleet
        return self.box.config if fleet is None else fleet.applier.effective

    # -- the recorder -------------------------------------------------------------------------

    async def start_recording(self, caller: Identity) -> str:
        service = self.service
        origin = origin_of_caller(caller)
        if self.officer.shift.shift is None and self._needs_shift():
            await self.audit("gateway.trigger_refused", source=OFFICER, reason="no_shift", **origin)
            message = "the policy asks for a running shift before the officer records"
            raise Refused(RefusalKind.CONFLICT, "shift_required", message)
        await service.trigger(OFFICER, **origin)
        if service.recording is None:
            if self.box.store.card_faulted():
                raise Refused(RefusalKind.CONFLICT, "card_unusable", CARD_UNUSABLE)
            reason = service.alarms.get("card_full") or "the recording could not start"
            raise Refused(RefusalKind.CONFLICT, "card_full", reason)
        return service.recorder.state.value

    def _needs_shift(self) -> bool:
        return self.effective_config().recording.officer_start_needs_shift

    async def stop_recording(self, caller: Identity) -> str:
        try:
            # Decided and audited, not sealed: a card that stalls must not hold up the Stop.
            await self.service.stop_recording(OFFICER, sealed=False, **origin_of_caller(caller))
        except IllegalTransition as exc:
            raise _not_recording() from exc
        return self.service.recorder.state.value

    def recorder_busy(self) -> bool:
        return self.service.recorder.state is not State.STANDBY

    async def flag_incident(self, caller: Identity) -> int:
        recording = self.service.recording
        if recording is None:
            raise _not_recording()
        changed = await asyncio.to_thread(self.box.store.flag_incident, recording.recording_id)
        return len(changed)

    async def trigger(self, source: str) -> str:
        await self.service.trigger(source, channel="button", account=None)  # a device's button
        return self.service.recorder.state.value

    # -- the shift and the reports --------------------------------------------------------------

    def shift_view(self) -> dict[str, Any]:
        return self.officer.shift.view()

    async def start_shift(self, caller: Identity, start: ShiftStart) -> dict[str, Any]:
        return await self.officer.shift.start(caller, start)

    async def leave_shift(self, caller: Identity, officer_id: str) -> dict[str, Any]:
        return await self.officer.shift.leave(caller, officer_id)

    async def end_shift(self, caller: Identity, acknowledge_missing: bool) -> dict[str, Any]:
        return await self.officer.shift.end(caller, acknowledge_missing)

    def reports_view(self) -> dict[str, Any]:
        view = with_held_flags(self.officer.reports.view(), self.holds.held_ids())
        return {**view, "required": report_rules(self.effective_config()).required()}

    async def file_report(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        rules = report_rules(self.effective_config())
        return await self.officer.reports.file(recording_id, body, caller, rules)

    async def register_warning(self, caller: Identity, body: Mapping[str, Any]) -> dict[str, Any]:
        rules = report_rules(self.effective_config())
        place = warning_place(self.gps, time.monotonic_ns())
        return await self.officer.reports.register_warning(body, caller, rules, place)

    async def correct_report(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        rules = report_rules(self.effective_config())
        return await self.officer.reports.correct(recording_id, body, caller, rules)

    # -- holds ------------------------------------------------------------------------------------

    async def holds_view(self, caller: Identity) -> dict[str, Any]:
        return await self.holds.view(caller)

    async def hold_recording(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.holds.hold(caller, recording_id, body)

    async def release_hold(self, caller: Identity, recording_id: str) -> dict[str, Any]:
        return await self.holds.release(caller, recording_id)

    # -- pairing and configuration --------------------------------------------------------------

    async def pair(self, code: str, re_pair: bool) -> Paired:
        """The same pairing as `mvb pair CODE` (gateway/pairing_client.py), in the service's
        process: box id = the configured device serial, credentials into the state directory.
        A running uplink takes them when the back office refuses the old ones (a re-pair
        withdraws them: transport/withdrawal.py); without one, the uplink starts with the next
        start of the service."""
        if self._pairing.locked():
            raise Refused(RefusalKind.CONFLICT, "pairing_busy", "a pairing is already in progress")
        async with self._pairing:
            return await self._pair(code, re_pair)

    async def _pair(self, code: str, re_pair: bool) -> Paired:
        config = self.box.config
        box_id = config.box.device_serial
        try:
            device_key = self.box.device_key.public_key().raw()
            credentials = await pair(code, box_id, config.state_dir, device_key, re_pair=re_pair)
        except AlreadyPairedHere as exc:
            message, reason = officer_message(exc), officer_reason(exc)
            raise Refused(RefusalKind.CONFLICT, "already_paired", message, reason=reason) from exc
        except BoxIdInvalid as exc:
            message = f"box.device_serial: {exc}"
            raise Refused(RefusalKind.INVALID, "box_id_invalid", message) from exc
        except (PairingFailed, ValueError) as exc:  # ValueError: the code is not a code
            message, reason = officer_message(exc), officer_reason(exc)
            raise Refused(RefusalKind.INVALID, "pairing_failed", message, reason=reason) from exc
        except OSError as exc:
            log.error("pairing: cannot write the credentials: %s", exc.strerror)
            message = "the credentials could not be saved"
            raise Refused(RefusalKind.FAILED, "pairing_not_saved", message) from exc
        self.box.alarms.clear(UNPAIRED_ALARM)  # an earlier unpair no longer holds
        await self.audit("gateway.paired", box_id=box_id, re_pair=re_pair)
        running = isinstance(self.uplink, UplinkService)
        return Paired(box_id, credentials.address, RUNNING_NOTE if running else NEXT_START_NOTE)

    async def push_bundle(self, bundle: bytes) -> BundleResult:
        fleet = self.fleet
        if fleet is None:
            message = "the box is not paired with the back office"
            raise Refused(RefusalKind.CONFLICT, "not_paired", message)
        outcome = await fleet.push(bundle)
        if isinstance(outcome, BundleRejected):
            return BundleResult(applied=False, reason=outcome.reason, reason_code=outcome.code)
        return BundleResult(
            outcome.applied,
            outcome.reason,
            outcome.config_serial,
            outcome.sha256,
            deferred=outcome.transient,
            reason_code=outcome.reason_code,
        )

    # -- uploads ----------------------------------------------------------------------------------

    async def uploads_view(self, caller: Identity) -> dict[str, Any]:
        _admin_only(caller, "see the upload queue")
        uplink = self.uplink
        if isinstance(uplink, UplinkService):
            return {"uplink": "running", **await asyncio.to_thread(uplink.uploads)}
        paired = await asyncio.to_thread(is_paired, self.box.config.state_dir)
        idle = read_uplink_facts(uplink, paired)
        assert isinstance(idle, UplinkIdle)  # no UplinkService: the uplink is idle
        records = await asyncio.to_thread(self.box.store.catalog.all)
        return {
            "uplink": idle.state,
            "credentials_withdrawn": False,
            "waiting_for_back_office": None,
            "files": idle_rows(records, f"the uplink is not running: {idle.reason}"),
        }

    async def retry_uploads(
        self, caller: Identity, file_ids: Sequence[str], all_blocked: bool
    ) -> dict[str, Any]:
        _admin_only(caller, "release uploads")
        uplink = self.uplink
        if not isinstance(uplink, UplinkService):
            message = "the uplink is not running: nothing can be released to it"
            raise Refused(RefusalKind.CONFLICT, "uplink_not_running", message)
        try:
            released = await uplink.release(None if all_blocked else file_ids, caller.channel)
        except UnknownUpload as exc:
            raise Refused(RefusalKind.NOT_FOUND, "unknown_upload", str(exc)) from exc
        return {"released": released}

    # -- the audit log and the alarms -------------------------------------------------------------

    async def audit(self, event: str, **fields: AuditValue) -> None:
        await asyncio.to_thread(self.box.audit.append, event, **fields)

    def raise_alarm(self, code: str, message: str) -> None:
        self.box.alarms.raise_(code, message)

    def clear_alarm(self, code: str) -> None:
        self.box.alarms.clear(code)
