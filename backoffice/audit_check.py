"""`mvb-admin audit check`: verify what the back office holds of one box's audit log.

Read-only (a running `mvb-admin serve` may be appending: a line it has not finished is not
read), over the files of backoffice/audit_store.py:
- the held log verifies (chain and every signature, storage/audit.py) with the pinned device
  key (or the one the admin passes), and it reaches every head the back office accepted
  (storage/audit_head.py): a copy cut or rewritten on the back office's own disk fails here too;
- every alarm (a refused head or append) is listed, and every claim (a head beyond the held
  log, whose entries have not arrived) with where it came from;
- the last head is printed: what `mvb-admin audit verify LOG --head` checks a copy against.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backoffice.audit_custody import Outcome
from backoffice.audit_store import ALARMS_FILE, HEADS_FILE, KEY_FILE, LOG_FILE, records
from storage.audit import AuditVerifyReport, verify_audit_log
from storage.audit_head import (
    AuditHead,
    HeadFormatError,
    parse_signed_head,
    verify_against_head,
)
from storage.devicekey import DevicePublicKey

ACCEPTED = frozenset({Outcome.HELD, Outcome.EXTENDS, Outcome.STALE})


@dataclass
class CheckResult:
    """What the check found; `ok` when the held log verifies, reaches every accepted head, and
    no alarm was raised."""

    ok: bool
    lines: list[str] = field(default_factory=list)
    last_head: AuditHead | None = None


def check_box(directory: Path, box_id: str, device_key: DevicePublicKey | None) -> CheckResult:
    """Check the box's custody directory (see the module docstring)."""
    key_path = directory / KEY_FILE
    if device_key is None and key_path.exists():
        device_key = DevicePublicKey.load(key_path)
    if device_key is None:
        return CheckResult(False, [f"box {box_id}: nothing held (no shipment ever reached here)"])
    data = _complete_lines(directory / LOG_FILE)
    heads = records(directory / HEADS_FILE)
    report = _verified(data, device_key, heads)
    result = CheckResult(report.ok)
    say = result.lines.append
    state = "OK" if report.ok else f"BROKEN: {report.first_problem}"
    say(f"box {box_id}: held log {state}")
    say(f"  {report.entries} entries verify with device key {device_key.key_id()}")
    if report.ok and report.last_seq is not None and report.head_sha256_hex is not None:
        result.last_head = AuditHead(report.last_seq, report.head_sha256_hex)
    elif report.ok:
        result.last_head = AuditHead.empty()
    if result.last_head is not None:
        say(f"last head: {result.last_head.render()}")
    say(f"heads received: {len(heads)}{_last_received(heads)}")
    held_seq = -1 if report.last_seq is None else report.last_seq
    claims = _open_claims(heads, held_seq)
    for claim in claims:
        say(
            f"  claim: the box signed head {claim['head'].split(':')[0]} via {claim['via']} at "
            f"{_when(claim['at_ms'])}; its entries have not arrived yet"
        )
    alarms = records(directory / ALARMS_FILE)
    say(f"alarms: {len(alarms) or 'none'}")
    for alarm in alarms:
        say(f"  {_when(alarm.get('at_ms'))} {alarm.get('kind')}: {alarm.get('detail')}")
    result.ok = result.ok and not alarms
    return result


def _verified(
    data: bytes, device_key: DevicePublicKey, heads: list[dict[str, Any]]
) -> AuditVerifyReport:
    """The held log verified, and against the highest head the back office accepted."""
    accepted = []
    for record in heads:
        if record.get("outcome") in ACCEPTED:
            try:
                accepted.append(parse_signed_head(str(record.get("head"))).head)
            except HeadFormatError:
                continue
    report = verify_audit_log(data, device_key)
    if not accepted or not report.ok:
        return report
    highest = max(accepted, key=lambda head: head.seq)
    return verify_against_head(data, device_key, highest)


def _open_claims(heads: list[dict[str, Any]], held_seq: int) -> list[dict[str, Any]]:
    """Pending heads beyond the held log, lowest seq first, one per seq."""
    claims: dict[int, dict[str, Any]] = {}
    for record in heads:
        if record.get("outcome") != Outcome.PENDING:
            continue
        try:
            seq = parse_signed_head(str(record.get("head"))).seq
        except HeadFormatError:
            continue
        if seq > held_seq:
            claims.setdefault(seq, record)
    return [claims[seq] for seq in sorted(claims)]


def _last_received(heads: list[dict[str, Any]]) -> str:
    if not heads:
        return ""
    last = heads[-1]
    return f" (the last via {last.get('via')} at {_when(last.get('at_ms'))}: {last.get('outcome')})"


def _complete_lines(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return data[: data.rfind(b"\n") + 1]


def _when(at_ms: object) -> str:
    if not isinstance(at_ms, int):
        return "?"
    moment = datetime.datetime.fromtimestamp(at_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
