"""Applying a verified fleet document to the running box: validate, write a slot, hand out,
health-check, and roll back to the last known good configuration when the check fails.

The document arrives verified (config/fleet_client.py: signatures, serial, this box). Here:
1. validate: the effective configuration is the local file with the document applied
   (config/fleet_schema.py); a document outside the schema is refused and nothing changes;
2. write the new slot (`<state>/config/serial-<n>.toml`: tmp, fsync, rename, fsync dir);
3. hand each subsystem its slice (`ConfigTarget.hand_out`);
4. health-check (cameras delivering, the back office reachable when the uplink is on) after a
   settling time; if a check fails, hand out the previous configuration again and report why;
5. on success, point `current` at the new slot (atomically) and audit `config.applied` with the
   serial and the document's SHA-256.
The applier never raises for a bad document or a failed check: the box keeps running on its last
good configuration, and the outcome says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from common.durable import atomic_write_text, make_dirs
from config.fleet_schema import apply_fleet_document
from config.fleet_targets import FleetDocument
from config.local import ConfigError, LocalConfig

HealthCheck = Callable[[LocalConfig], Awaitable[str | None]]
"""Returns None when healthy, else a reason the officer and the fleet admin can read."""

SLOT_DIR = "config"
CURRENT = "current"


class ConfigTarget(Protocol):
    """What the running box exposes to the applier."""

    def hand_out(self, effective: LocalConfig) -> None:
        """Give every subsystem its slice of `effective` (synchronous, no I/O that can fail)."""
        ...


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    applied: bool
    config_serial: int
    sha256: str
    reason: str | None = None


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
    ) -> None:
        self.local = local
        self.effective = local
        self.target = target
        self.slots = slots
        self.health_checks = health_checks
        self.settle_s = settle_s
        self._audit = audit
        self._lock = asyncio.Lock()

    async def apply(self, document: FleetDocument) -> ApplyOutcome:
        async with self._lock:
            return await self._apply(document)

    async def _apply(self, document: FleetDocument) -> ApplyOutcome:
        serial, sha256 = document.config_serial, document.sha256
        source = f"fleet document {document.target_path} (serial {serial})"
        try:
            text = document.document.decode("utf-8")
            effective = apply_fleet_document(self.local, text, source)
        except (UnicodeDecodeError, ConfigError) as exc:
            return await self._refused(serial, sha256, f"refused: {exc}")
        await asyncio.to_thread(self.slots.write, serial, text)
        previous = self.effective
        self.target.hand_out(effective)
        await asyncio.sleep(self.settle_s)
        reason = await self._health(effective)
        if reason is not None:
            self.target.hand_out(previous)
            return await self._refused(serial, sha256, f"rolled back: {reason}")
        await asyncio.to_thread(self.slots.mark_current, serial)
        self.effective = effective
        await asyncio.to_thread(self._audit, "config.applied", config_serial=serial, sha256=sha256)
        return ApplyOutcome(True, serial, sha256)

    async def _health(self, effective: LocalConfig) -> str | None:
        for check in self.health_checks:
            reason = await check(effective)
            if reason is not None:
                return reason
        return None

    async def _refused(self, serial: int, sha256: str, reason: str) -> ApplyOutcome:
        await asyncio.to_thread(
            self._audit, "config.refused", config_serial=serial, sha256=sha256, reason=reason
        )
        return ApplyOutcome(False, serial, sha256, reason)
