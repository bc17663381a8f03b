"""The box tells of the last release switch: an audit entry, and an alarm after a rollback
(docs/releases.md section 4, "Reported").

The switcher runs as root beside the box and never writes the box's audit log (one writer keeps
its hash chain); it leaves the outcome in `<release root>/switch.json`. The box reads it every
REPORT_EVERY_S while it runs (the outcome is written after the box of the new or the restored
release started, so a check at start alone would miss it).

Invariants:
- each outcome (`serial` of switch.json) is audited once: the serial reported last is kept in the
  state directory, written durably after the audit entry (a cut in between audits it again,
  never loses it);
- a rollback raises the sticky alarm `release_rolled_back` (it stays until a later switch
  succeeds); a successful switch clears it;
- an unreadable switch.json is logged and changes nothing (the box must start whatever it says).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Final

from common.alarms import Alarms, AuditSink
from common.durable import atomic_write_bytes
from gateway.release_switch import Outcome
from gateway.release_switch_io import STATE_FILE, SwitchStateError, state_from_json
from protocol.strict_json import Fields, dump_json, load_object

log = logging.getLogger(__name__)

REPORTED_FILE: Final = "release_reported.json"
ALARM: Final = "release_rolled_back"
REPORT_EVERY_S: Final = 10.0


async def watch_switch_outcome(
    root: Path, state_dir: Path, audit: AuditSink, alarms: Alarms
) -> None:
    """`report_switch_outcome` every REPORT_EVERY_S, forever (a supervised child)."""
    while True:
        await asyncio.to_thread(report_switch_outcome, root, state_dir, audit, alarms)
        await asyncio.sleep(REPORT_EVERY_S)


def release_root_of(program: str) -> Path | None:
    """The release root the box was started from: systemd/mvb.service runs
    `<root>/current/bin/mvb`; None when the box runs from anywhere else (a development venv)."""
    path = Path(program)
    if path.parent.name == "bin" and path.parent.parent.name == "current":
        return path.parent.parent.parent
    return None


def report_switch_outcome(root: Path, state_dir: Path, audit: AuditSink, alarms: Alarms) -> None:
    """Audit (and alarm) the last switch's outcome unless it was reported already. Blocks on
    fsync: call it on a worker thread."""
    try:
        state = state_from_json((root / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return
    except (OSError, SwitchStateError) as exc:
        log.warning("the release switch's state is unreadable: %s", exc)
        return
    if state.last is Outcome.NONE or state.serial <= _reported_serial(state_dir):
        return
    if state.last is Outcome.SWITCHED:
        audit("release.switched", version=state.good)
        alarms.clear(ALARM)
    else:
        reason = state.last_reason
        audit("release.rolled_back", version=state.last_version, running=state.good, reason=reason)
        alarms.raise_(
            ALARM,
            f"release {state.last_version} failed its start ({reason}); {state.good} runs again",
            sticky=True,
        )
    atomic_write_bytes(state_dir / REPORTED_FILE, dump_json({"serial": state.serial}))


def _reported_serial(state_dir: Path) -> int:
    try:
        data = (state_dir / REPORTED_FILE).read_bytes()
    except FileNotFoundError:
        return 0
    try:
        document = load_object(data, 256, REPORTED_FILE, SwitchStateError)
        return Fields(document, frozenset({"serial"}), REPORTED_FILE, SwitchStateError).integer(
            "serial", 0, 2**53
        )
    except SwitchStateError as exc:
        log.warning("%s unreadable, the last outcome is reported again: %s", REPORTED_FILE, exc)
        return 0
