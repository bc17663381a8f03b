"""Applying a verified fleet document to the running box: validate, write a slot, hand out,
health-check, and roll back to the last known good configuration when the check fails.

The document arrives verified (config/fleet_client.py: signatures, serial, this box). Here:
1. validate: the effective configuration is the local file with the document applied
   (config/fleet_schema.py); a document outside the schema is refused and nothing changes;
2. its holds (`[[holds]]`) hold at once (`FleetHolds.named`): holding more never endangers
   evidence, so a hold does not wait for a health check; releases wait for step 6;
3. judge the environment first: every health check runs on the running configuration. A check
   that already fails there says something about the box, not the document:
   - `defer` checks (a camera not delivering): the document cannot be judged now. It is not
     handed out; the outcome is *transient* ("deferred: ...") and the caller retries it when
     the check passes (gateway/fleet_sync.py);
   - `skip` checks (the back office reachable): the document is judged without them. A box whose
     links are all down (one taking a bundle from a USB stick) is not refused for it;
4. write the new slot (`<state>/config/serial-<n>.toml`: tmp, fsync, rename, fsync dir) and hand
   each subsystem its slice (`ConfigTarget.hand_out`);
5. after a settling time, run the checks that passed in 3. If one fails, hand out the previous
   configuration again and run it once more there: passing again, the document is to blame
   ("rolled back: ...", final); failing with the previous one too, the environment changed
   meanwhile (transient, "deferred: ...");
6. on success, point `current` at the new slot (atomically), audit `config.applied` with the
   serial and the document's SHA-256, and make the fleet's holds exactly the document's.
The applier never raises for a bad document or a failed check: the box keeps running on its last
good configuration, and the outcome says why. Audited: `config.applied`, `config.refused`
(final), `config.deferred` (transient; once per serial and reason).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from common.durable import atomic_write_text, make_dirs
from config.fleet_schema import apply_fleet_document, check_accounts_reach, fleet_holds
from config.fleet_targets import FleetDocument
from config.local import ConfigError, LocalConfig
from gateway.fleet_refusals import DEFERRED as DEFERRED_CODE
from gateway.fleet_refusals import INVALID_DOCUMENT, ROLLED_BACK

Judge = Callable[[LocalConfig], Awaitable[str | None]]
"""Returns None when healthy, else a reason the officer and the fleet admin can read."""

SLOT_DIR = "config"
CURRENT = "current"
DEFERRED = "deferred: "


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One health check. `if_failing_before` says what a failure on the running configuration
    (before the document is handed out) means: "defer" the document, or "skip" the check."""

    name: str
    judge: Judge
    if_failing_before: Literal["defer", "skip"] = "defer"


class ConfigTarget(Protocol):
    """What the running box exposes to the applier."""

    def hand_out(self, effective: LocalConfig) -> None:
        """Give every subsystem its slice of `effective` (synchronous, no I/O that can fail)."""
        ...


class FleetHolds(Protocol):
    """The box's holds (gateway/hold_desk.py HoldDesk)."""

    async def fleet_named(self, config_serial: int, grounds: Mapping[str, str]) -> None: ...

    async def fleet_applied(self, config_serial: int, grounds: Mapping[str, str]) -> None: ...


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    """`transient`: not applied because of the box's state, not the document's; try again
    when that is gone. A refusal that is not transient is final for this serial."""

    applied: bool
    config_serial: int
    sha256: str
    reason: str | None = None
    transient: bool = False
    reason_code: str | None = None  # the reason as the page's code (gateway/fleet_refusals.py)


class ConfigSlots:
    """The configuration slots on the box: one file per applied serial and a `current` pointer."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / SLOT_DIR

    def write(self, serial: int, text: str) -> Path:
        return self._atomic(f"serial-{serial}.toml", text)

    def mark_current(self, serial: int) -> None:
        self._atomic(CURRENT, f"{serial}\n")

    def current(self) -> tuple[int, str] | None:
        """The last known good (serial, document), or None before the first fleet document."""
        try:
            serial = int((self.directory / CURRENT).read_text().strip())
            return serial, (self.directory / f"serial-{serial}.toml").read_text()
        except (OSError, ValueError):
            return None

    def _atomic(self, name: str, text: str) -> Path:
        make_dirs(self.directory, mode=0o700)
        final = self.directory / name
        atomic_write_text(final, text, mode=0o600)
        return final


class FleetApplier:
    """Applies documents one at a time; `effective` is what the box runs now."""

    def __init__(
        self,
        local: LocalConfig,
        target: ConfigTarget,
        slots: ConfigSlots,
        health_checks: list[HealthCheck],
        *,
        settle_s: float = 5.0,
        audit: Callable[..., object] = lambda _event, **_fields: None,
        holds: FleetHolds | None = None,
    ) -> None:
        self.local = local
        self.effective = local
        self.target = target
        self.slots = slots
        self.health_checks = health_checks
        self.settle_s = settle_s
        self.holds = holds
        self._audit = audit
        self._lock = asyncio.Lock()
        self._last_deferral: tuple[int, str] | None = None

    async def apply(self, document: FleetDocument) -> ApplyOutcome:
        async with self._lock:
            return await self._apply(document)

    async def deferral_reason(self) -> str | None:
        """Why a document would be deferred now (a `defer` check failing on the running
        configuration), or None: a deferred document may be tried again."""
        for check in self.health_checks:
            if check.if_failing_before == "defer":
                reason = await check.judge(self.effective)
                if reason is not None:
                    return reason
        return None

    async def _apply(self, document: FleetDocument) -> ApplyOutcome:
        serial, sha256 = document.config_serial, document.sha256
        source = f"fleet document {document.target_path} (serial {serial})"
        try:
            text = document.document.decode("utf-8")
            box_id = self.local.box.device_serial
            check_accounts_reach(text, document.boxes, document.groups, box_id, source)
            effective = apply_fleet_document(self.local, text, source)
            grounds = fleet_holds(text, source)
        except (UnicodeDecodeError, ConfigError) as exc:
            return await self._refused(serial, sha256, f"refused: {exc}", INVALID_DOCUMENT)
        if self.holds is not None:
            await self.holds.fleet_named(serial, grounds)
        judged: list[HealthCheck] = []
        for check in self.health_checks:
            before = await check.judge(self.effective)
            if before is None:
                judged.append(check)
            elif check.if_failing_before == "defer":
                return await self._deferred(serial, sha256, before)
        await asyncio.to_thread(self.slots.write, serial, text)
        previous = self.effective
        self.target.hand_out(effective)
        await asyncio.sleep(self.settle_s)
        failed = await _first_failure(judged, effective)
        if failed is not None:
            check, reason = failed
            self.target.hand_out(previous)
            await asyncio.sleep(self.settle_s)
            if await check.judge(previous) is not None:
                return await self._deferred(serial, sha256, f"{reason} (before it too)")
            return await self._refused(serial, sha256, f"rolled back: {reason}", ROLLED_BACK)
        await asyncio.to_thread(self.slots.mark_current, serial)
        self.effective = effective
        self._last_deferral = None
        await asyncio.to_thread(self._audit, "config.applied", config_serial=serial, sha256=sha256)
        if self.holds is not None:
            await self.holds.fleet_applied(serial, grounds)
        return ApplyOutcome(True, serial, sha256)

    async def _refused(self, serial: int, sha256: str, reason: str, code: str) -> ApplyOutcome:
        await asyncio.to_thread(
            self._audit, "config.refused", config_serial=serial, sha256=sha256, reason=reason
        )
        return ApplyOutcome(False, serial, sha256, reason, reason_code=code)

    async def _deferred(self, serial: int, sha256: str, why: str) -> ApplyOutcome:
        reason = f"{DEFERRED}{why}"
        if self._last_deferral != (serial, reason):  # a retry that meets the same: audited once
            self._last_deferral = (serial, reason)
            await asyncio.to_thread(
                self._audit, "config.deferred", config_serial=serial, sha256=sha256, reason=reason
            )
        code = DEFERRED_CODE
        return ApplyOutcome(False, serial, sha256, reason, transient=True, reason_code=code)


async def _first_failure(
    checks: list[HealthCheck], effective: LocalConfig
) -> tuple[HealthCheck, str] | None:
    for check in checks:
        reason = await check.judge(effective)
        if reason is not None:
            return check, reason
    return None
