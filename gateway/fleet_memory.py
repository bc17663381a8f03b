"""What the box's fleet sync must not forget across a restart or weeks without a link. PURE:
values and their JSON; gateway/fleet_sync.py writes them (common/durable.py) into the state
directory.

- `Outbox`: the signed reports (protocol/fleet_report.py) not yet accepted by the back office,
  oldest first, and the highest applied serial it confirmed. A report is made (and signed) when
  its outcome happens and is kept until a back office answers 204; at most MAX_WAITING_REPORTS
  wait (beyond, the oldest that is not an applied report goes first: what the box runs matters
  most; then the oldest).
- A deferred document (`document_to_json`): a verified document the box could not judge yet
  (gateway/fleet_apply.py), kept with its bytes so that it is tried again when the reason is
  gone, after a restart too. The bytes may hold password hashes: the file is 0600, like the
  configuration slots.

Invariants: `from_json(to_json(x)) == x`; a file this module cannot read is a StorageFault,
never a reason to apply or report something that was not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Final

from common.faults import StorageFault
from config.fleet_targets import FleetDocument
from protocol.fleet_report import AUDIT_HEAD, REPORT_FIELDS

MAX_WAITING_REPORTS: Final = 32
_FORMAT = 1


class FleetMemoryError(ValueError, StorageFault):
    """A state file of the fleet sync that this module did not write."""


@dataclass(frozen=True, slots=True)
class Outbox:
    reported_serial: int = 0
    waiting: tuple[dict[str, Any], ...] = ()

    def with_report(self, report: dict[str, Any]) -> Outbox:
        waiting = [*self.waiting, dict(report)]
        while len(waiting) > MAX_WAITING_REPORTS:
            others = [r for r in waiting if r["outcome"] != "applied"]
            waiting.remove(others[0] if others else waiting[0])
        return replace(self, waiting=tuple(waiting))

    def delivered(self, report: dict[str, Any]) -> Outbox:
        """The back office accepted `report`: it leaves; an applied one is confirmed."""
        serial = self.reported_serial
        if report["outcome"] == "applied":
            serial = max(serial, int(report["config_serial"]))
        return Outbox(serial, tuple(r for r in self.waiting if r != report))

    def dropped(self, report: dict[str, Any]) -> Outbox:
        """The back office refused `report` for good (400): it leaves, unconfirmed."""
        return replace(self, waiting=tuple(r for r in self.waiting if r != report))

    def to_json(self) -> str:
        document = {
            "format": _FORMAT,
            "reported_serial": self.reported_serial,
            "waiting": list(self.waiting),
        }
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Outbox:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict) or set(raw) != {"format", "reported_serial", "waiting"}:
                raise ValueError("members")
            serial, waiting = raw["reported_serial"], raw["waiting"]
            if raw["format"] != _FORMAT or not _is_count(serial) or not isinstance(waiting, list):
                raise ValueError("values")
            # Reports made before they carried the audit head are kept as they are.
            if any(
                not isinstance(r, dict) or set(r) - {AUDIT_HEAD} != REPORT_FIELDS for r in waiting
            ):
                raise ValueError("a waiting report")
        except ValueError as exc:
            raise FleetMemoryError(f"not a fleet report outbox: {exc}") from exc
        return cls(serial, tuple(waiting[-MAX_WAITING_REPORTS:]))


def document_to_json(document: FleetDocument) -> str:
    return json.dumps(
        {
            "format": _FORMAT,
            "target_path": document.target_path,
            "config_serial": document.config_serial,
            "sha256": document.sha256,
            "boxes": list(document.boxes),
            "groups": list(document.groups),
            "document": base64.b64encode(document.document).decode(),
            "targets_keys": list(document.targets_keys),
        },
        sort_keys=True,
    )


def document_from_json(text: str) -> FleetDocument:
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.pop("format", None) != _FORMAT:
            raise ValueError("format")
        data = base64.b64decode(raw.pop("document"), validate=True)
        document = FleetDocument(**raw, document=data)
        if not (
            isinstance(document.target_path, str)
            and _is_count(document.config_serial)
            and isinstance(document.sha256, str)
            and all(isinstance(n, str) for n in [*document.boxes, *document.groups])
        ):
            raise ValueError("values")
        if hashlib.sha256(data).hexdigest() != document.sha256:
            raise ValueError("the bytes are not the document that was verified")
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise FleetMemoryError(f"not a deferred fleet document: {exc}") from exc
    keys = tuple(document.targets_keys)
    if not all(isinstance(key, str) for key in keys):
        raise FleetMemoryError("not a deferred fleet document: targets_keys")
    return replace(
        document, boxes=tuple(document.boxes), groups=tuple(document.groups), targets_keys=keys
    )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
