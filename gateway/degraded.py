"""Degraded mode: a box whose card is missing or unusable at start keeps its page and API up.

Before issue 14 such a box exited (code 3) and systemd started it again every 2 s: the officer's
page was gone exactly when the officer needed to be told to replace the card. Now `mvb run`
opens what lives on the internal flash (the state directory: device key, audit log, alarms),
raises the card's alarm (card_missing, card_read_only or card_write_failed: the page's alert
says "replace it"), serves the officer's page and the local API with `DegradedBox` behind the
port, and checks the card every CARD_RETRY_S. Once the card is usable it stops these faces and
starts the box in full, in the same process (gateway/run.py `serve_degraded`): no restart.

What the faces get meanwhile: the status document (state standby, no cameras, `storage.card`
naming the condition, uplink state "no card"), the shift and report views (empty: the shift
comes back from the state directory with the full start), and every command refused with the
code `card_unusable` (nothing can be recorded, filed, held, paired or pushed without the card).
The cameras do not run: the pre-record ring needs the recorder, which needs the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from common.alarms import Alarms
from common.durable import make_dirs
from config.local import LocalConfig
from gateway.box import AUDIT_LOG_NAME
from gateway.caller import Identity, RefusalKind, Refused
from gateway.officer.reports import ReportBook
from gateway.officer.shift import ShiftStart, shift_view
from gateway.pairing_client import is_paired
from gateway.port import AuditValue, BundleResult, Paired
from gateway.startup import CardUnusable, check_card
from gateway.status_facts import (
    GpsFacts,
    RecordingFacts,
    StatusInputs,
    StorageFacts,
    UplinkIdle,
)
from storage.audit_io import AuditLog
from storage.card_health import ALARM_OF, CARD_ALARMS, alarm_message
from storage.devicekey import DeviceKey

CARD_RETRY_S: Final = 2.0
"""How often a degraded box checks its card (the old restart interval: the same wear)."""
NO_CARD: Final = "no card"
CARD_UNUSABLE_MESSAGE: Final = "the card cannot be written (missing, read-only or failed)"


def _refuse() -> NoReturn:
    raise Refused(RefusalKind.CONFLICT, "card_unusable", f"{CARD_UNUSABLE_MESSAGE}: replace it")


@dataclass
class StateParts:
    """What a box without its card still has: the state directory on the internal flash."""

    device_key: DeviceKey
    audit: AuditLog
    alarms: Alarms

    def close(self) -> None:
        self.alarms.close()
        self.audit.close()


def open_state(config: LocalConfig) -> StateParts:
    make_dirs(config.state_dir, mode=0o700)
    device_key = DeviceKey.load_or_create(config.state_dir)
    audit = AuditLog.open(config.state_dir / AUDIT_LOG_NAME, device_key)
    return StateParts(device_key, audit, Alarms.load(config.state_dir, audit.append))


class DegradedBox:
    """Implements BoxPort (gateway/port.py) for a box running without a usable card."""

    def __init__(self, config: LocalConfig, parts: StateParts, why: CardUnusable) -> None:
        self.config = config
        self.parts = parts
        self.why = why
        self._started_s = time.monotonic()

    # -- reading ------------------------------------------------------------------------------

    async def status_inputs(self) -> StatusInputs:
        paired = await asyncio.to_thread(is_paired, self.config.state_dir)
        space = self.config.storage
        return StatusInputs(
            at_ms=time.time_ns() // 1_000_000,
            device_serial=self.config.box.device_serial,
            vehicle_id=self.config.box.vehicle_id,
            uptime_s=time.monotonic() - self._started_s,
            service={
                "state": "standby",
                "recording_for_s": 0.0,
                "cameras": {},
                "alarms": self.parts.alarms.snapshot(),
            },
            recording=RecordingFacts(None, None, None, self.config.recording.max_continuous_s),
            storage=StorageFacts(
                card_total_bytes=0,
                card_free_bytes=0,
                reserve_bytes=space.card_reserve_bytes,
                retention_days=space.retention_days,
            ),
            uplink=UplinkIdle(NO_CARD, str(self.why)),
            gps=GpsFacts("no_gpsd"),
            paired=paired,
            fleet=None,
            shift=shift_view(None, 0),
            reports=ReportBook().summary(),
        )

    def effective_config(self) -> LocalConfig:
        return self.config

    # -- commands: none without a card --------------------------------------------------------

    async def start_recording(self, caller: Identity) -> str:
        _refuse()

    async def stop_recording(self, caller: Identity) -> str:
        _refuse()

    async def flag_incident(self, caller: Identity) -> int:
        _refuse()

    async def trigger(self, source: str) -> str:
        _refuse()

    def shift_view(self) -> dict[str, Any]:
        return shift_view(None, 0)

    def recorder_busy(self) -> bool:
        return False  # no camera runs without a card: nothing records

    async def start_shift(self, caller: Identity, start: ShiftStart) -> dict[str, Any]:
        _refuse()

    async def leave_shift(self, caller: Identity, officer_id: str) -> dict[str, Any]:
        _refuse()

    async def end_shift(self, caller: Identity, acknowledge_missing: bool) -> dict[str, Any]:
        _refuse()

    def reports_view(self) -> dict[str, Any]:
        return {"missing": [], "filed": []}

    async def file_report(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        _refuse()

    async def register_warning(self, caller: Identity, body: Mapping[str, Any]) -> dict[str, Any]:
        _refuse()

    async def correct_report(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        _refuse()

    async def holds_view(self, caller: Identity) -> dict[str, Any]:
        _refuse()

    async def hold_recording(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        _refuse()

    async def release_hold(self, caller: Identity, recording_id: str) -> dict[str, Any]:
        _refuse()

    async def pair(self, code: str, re_pair: bool) -> Paired:
        _refuse()

    async def push_bundle(self, bundle: bytes) -> BundleResult:
        _refuse()

    async def uploads_view(self, caller: Identity) -> dict[str, Any]:
        _refuse()

    async def retry_uploads(
        self, caller: Identity, file_ids: Sequence[str], all_blocked: bool
    ) -> dict[str, Any]:
        _refuse()

    # -- the audit log and the alarms -----------------------------------------------------------

    async def audit(self, event: str, **fields: AuditValue) -> None:
        await asyncio.to_thread(self.parts.audit.append, event, **fields)

    def raise_alarm(self, code: str, message: str) -> None:
        self.parts.alarms.raise_(code, message)

    def clear_alarm(self, code: str) -> None:
        self.parts.alarms.clear(code)


def show_card_alarm(alarms: Alarms, why: CardUnusable) -> None:
    """The alarm of the card's condition now, and no other card alarm."""
    code = ALARM_OF[why.condition]
    for other in CARD_ALARMS - {code}:
        alarms.clear(other)
    alarms.raise_(code, alarm_message(why.condition, str(why)))


async def until_usable(config: LocalConfig, box: DegradedBox, stop: asyncio.Event) -> bool:
    """Check the card every CARD_RETRY_S: True once it is usable, False once `stop` is set;
    meanwhile the alarm follows the card's condition (a card put in read-only, say)."""
    require_mount = config.storage.require_mount
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CARD_RETRY_S)
            return False
        try:
            await asyncio.to_thread(check_card, config.card_dir, require_mount=require_mount)
        except CardUnusable as exc:
            if exc.condition is not box.why.condition:
                box.why = exc
                show_card_alarm(box.parts.alarms, exc)
            continue
        return True
    return False
