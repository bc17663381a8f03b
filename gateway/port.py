"""The port: the one narrow interface through which the box's faces (the officer's web page and
the loopback API that the `mvb` commands use, gateway/web/) talk to the running box.

The faces import this module, gateway/caller.py and gateway/status_facts.py, and nothing else of
the box's services; the box implements the port with an adapter (gateway/box_port.py) that the
composition root (gateway/run.py) builds. Tests of a face run against a small in-memory
implementation.

Contract, for every implementation:
- a command the box will not carry out raises `Refused` (gateway/caller.py) with a code the
  face translates; nothing else is raised for a caller's mistake;
- views (`shift_view`, `reports_view`, `holds_view`) are JSON-ready values, copied: a face may
  keep them; a hold shows as a flag, never with its reason;
- `status_inputs` returns facts as of one moment; reading them may take a worker-thread trip,
  never a network one;
- `audit` returns when the entry is durable (the audit log fsyncs it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from config.local import LocalConfig
from gateway.caller import Identity
from gateway.officer.shift import ShiftStart
from gateway.status_facts import StatusInputs

AuditValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class BundleResult:
    """A pushed configuration bundle: applied or not and why. `config_serial` and `sha256` are
    None when the bundle was refused before it could be read as a document (bad signature,
    not this box's, already applied). `deferred`: verified but not judged yet because of the
    box's state (a camera down); the box keeps it and applies it by itself once that is gone."""

    applied: bool
    reason: str | None
    config_serial: int | None = None
    sha256: str | None = None
    deferred: bool = False
    reason_code: str | None = None  # the reason as the page's code (gateway/fleet_refusals.py)


@dataclass(frozen=True, slots=True)
class Paired:
    """The box is paired: its id, the back office's address, and a note for the officer."""

    box_id: str
    address: str
    note: str


class BoxPort(Protocol):
    """What a face may ask of the running box (docs/webui.md 2 lists the routes that use it)."""

    # -- reading ----------------------------------------------------------------------------

    async def status_inputs(self) -> StatusInputs:
        """The facts of the status document, as of now."""
        ...

    def effective_config(self) -> LocalConfig:
        """The configuration the box runs now (a fleet document may have changed it since the
        start): accounts, [webui] and [web] are read from here at each request."""
        ...

    # -- the recorder (RULES R2, R3) ----------------------------------------------------------

    async def start_recording(self, caller: Identity) -> str:
        """Start (or extend) a recording; the recorder's state after it. Refused `card_full`
        when the card takes nothing (nothing is being recorded)."""
        ...

    async def stop_recording(self, caller: Identity) -> str:
        """Stop the recording (post-record follows); refused `not_recording`. Answers once the
        stop is decided and audited, never after the card's syncs (its files seal after)."""
        ...

    async def flag_incident(self, caller: Identity) -> int:
        """Mark the running recording as an incident (it uploads first); how many of its files
        changed class. Refused `not_recording`."""
        ...

    async def trigger(self, source: str) -> str:
        """A trigger from another device of the vehicle, recorded with its `source`."""
        ...

    def recorder_busy(self) -> bool:
        """True while a recording or its post-record runs (the web sessions do not idle out
        meanwhile: docs/webui.md 1.1). Cheap: called at every web request."""
        ...

    # -- the shift and the reports (R4, R5) ---------------------------------------------------

    def shift_view(self) -> dict[str, Any]: ...

    async def start_shift(self, caller: Identity, start: ShiftStart) -> dict[str, Any]:
        """Start a shift, join it as its second officer, or change one's bodycams; the shift
        view after it. Refused `shift_full`, `bodycam_taken`."""
        ...

    async def leave_shift(self, caller: Identity, officer_id: str) -> dict[str, Any]:
        """One officer of a duo leaves the shift, the other works on; the shift view after it.
        Refused `no_shift`, `forbidden`, `last_officer`."""
        ...

    async def end_shift(self, caller: Identity, acknowledge_missing: bool) -> dict[str, Any]:
        """End the shift; refused `no_shift`, `forbidden`, `reports_missing` (with `missing`)."""
        ...

    def reports_view(self) -> dict[str, Any]:
        """The book (`missing`, `filed`: recordings and warnings) and the members the
        municipality requires (`required`, docs/webui.md 4)."""
        ...

    async def file_report(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Seal the report in `body` as encrypted evidence of its recording. Refused
        `unknown_recording`, `invalid` (with `field`), `already_filed`, `card_full`."""
        ...

    async def register_warning(self, caller: Identity, body: Mapping[str, Any]) -> dict[str, Any]:
        """Seal a warning given without a recording (RULES R7) with the box's time and GPS
        position. Refused `invalid` (with `field`), `card_full`."""
        ...

    async def correct_report(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Seal a correction of an entry's report or warning, linked to the first (which
        stays). Refused `unknown_recording`, `not_filed`, `invalid` (with `field`),
        `too_many_corrections`, `card_full`."""
        ...

    # -- holds (RULES S4; docs/webui.md 2) ------------------------------------------------------

    async def holds_view(self, caller: Identity) -> dict[str, Any]:
        """Every hold: who holds it, since when, the fleet's ground; never a reason. Refused
        `forbidden` unless the caller is an admin (the local channel is)."""
        ...

    async def hold_recording(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Hold every file of the recording until released, sealing the reason in `body` as
        encrypted evidence. Refused `forbidden`, `unknown_recording`, `invalid` (with `field`),
        `already_held`, `recording_deleted`."""
        ...

    async def release_hold(self, caller: Identity, recording_id: str) -> dict[str, Any]:
        """Release the box's own hold. Refused `forbidden`, `unknown_recording`, `not_held`,
        `held_by_fleet`."""
        ...

    # -- pairing and signed configuration (docs/pairing.md, docs/fleet-config.md) ---------------

    async def pair(self, code: str, re_pair: bool) -> Paired:
        """Pair with the back office that issued `code`. Refused `pairing_busy`,
        `already_paired`, `box_id_invalid`, `pairing_failed`, `pairing_not_saved`; the code is
        never logged, audited or repeated in a refusal."""
        ...

    async def push_bundle(self, bundle: bytes) -> BundleResult:
        """Verify and apply a signed configuration bundle; refused `not_paired`."""
        ...

    # -- uploads (docs/uplink.md "Blocked files and their release") ------------------------------

    async def uploads_view(self, caller: Identity) -> dict[str, Any]:
        """Every file waiting on the card with its state (uploading, waiting, blocked,
        unattested) and reason, and whether the back office refuses the box (`mvb uploads`).
        Admin only: refused `forbidden`."""
        ...

    async def retry_uploads(
        self, caller: Identity, file_ids: Sequence[str], all_blocked: bool
    ) -> dict[str, Any]:
        """Release blocked files (the named ones, or every blocked one) and try waiting ones
        now; audited with the caller's channel. `{"released": [{"file_id", "was_blocked"}]}`.
        Refused `forbidden` (not an admin), `unknown_upload` (a file not waiting on the card),
        `uplink_not_running` (no uplink to release them to)."""
        ...

    # -- the audit log and the alarms -----------------------------------------------------------

    async def audit(self, event: str, **fields: AuditValue) -> None:
        """Append to the signed audit log; returns when the entry is durable."""
        ...

    def raise_alarm(self, code: str, message: str) -> None:
        """Raise (or keep) the alarm `code`; it shows in the status document until cleared."""
        ...

    def clear_alarm(self, code: str) -> None: ...
