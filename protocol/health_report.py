"""A box's health report for the fleet admin (issue 17 item 5; docs/fleet-health.md). PURE.

`POST /fleet/health` on the mutual-TLS listener carries `{"health": {...}, "signature": b64}`.
The device key (Ed25519, the key that signs the audit log) signs `signed_message(box_id, body)`:
the label, the box id (the client certificate's CN, never a member) and the canonical JSON of
`health` (protocol/strict_json.py `dump_json`), so a report cannot be moved to another box and
the back office checks it against the key the box enrolled at pairing.

What a report says, and what it never says: software version, configuration serial and the last
outcome with its reason, card fill and the card's alarms, the upload queue by class and the age
of the oldest waiting file, blocked files, alarm *codes*, GPS fix age and clock offset. No
position, no officer, no recording id, no alarm message (a message may carry details): the
fleet admin steers boxes, not people (RULES L6; the Heerde works council's condition).

Invariants: `parse_health(wire(h, s))` gives back `h` and `s`; every member is bounded; a report
with another member, a missing one or a value out of its range is HealthRefused, naming the
member and never repeating the value.
"""

from __future__ import annotations

import base64
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from common.faults import RemoteFault
from protocol.strict_json import Fields, dump_json, load_object

HEALTH_PATH: Final = "/fleet/health"
CHECK_NOW_HEADER: Final = "Mvb-Fleet-Check"
"""On the 204 that takes a report: CHECK_NOW_VALUE asks the box to check its fleet configuration
now (the admin's `mvb-admin config check-now`; docs/fleet-health.md 2.1). The only value."""
CHECK_NOW_VALUE: Final = "now"
LABEL: Final = "mvb-health-v1"
MAX_HEALTH_BYTES: Final = 16 * 1024
UPLOAD_CLASSES: Final = ("P0", "P1", "P2")
MAX_ALARMS: Final = 64
MAX_COUNT: Final = 2**53 - 1
_CODE: Final = re.compile(r"[a-z0-9_.:-]{1,80}")
_VERSION: Final = re.compile(r"[A-Za-z0-9.+_-]{1,40}")
_GPS: Final = re.compile(r"[a-z_]{1,20}")
_SIGNATURE_BYTES: Final = 64


class HealthRefused(ValueError, RemoteFault):
    """A health report that is malformed or oversized (400)."""


@dataclass(frozen=True, slots=True)
class QueueClass:
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Health:
    """One report. Times: `at_ms` is the box's wall clock (it may be wrong: the back office
    keeps its own receive time beside it); ages and offsets are the box's own measures."""

    at_ms: int
    software_version: str
    uptime_s: int
    recording: bool
    config_applied_serial: int
    config_pending_serial: int | None
    config_last_outcome: str
    config_reports_waiting: int
    card_total_bytes: int
    card_free_bytes: int
    files_on_card: int
    interrupted_files: int
    queue: dict[str, QueueClass] = field(default_factory=dict)
    oldest_waiting_age_s: int | None = None
    blocked_files: int = 0
    alarms: tuple[str, ...] = ()
    gps_status: str = "unknown"
    gps_fix_age_s: int | None = None
    clock_offset_ms: int | None = None

    def to_json_object(self) -> dict[str, Any]:
        document = asdict(self)
        document["alarms"] = list(self.alarms)
        return document

    def body(self) -> bytes:
        """The canonical bytes the device key signs (with the label and box id)."""
        return dump_json(self.to_json_object())

    def changed_from(self, other: Health | None) -> bool:
        """Whether something the fleet admin acts on differs (`salient`): a change is reported
        at once, the rest (times, ages, free bytes, queued bytes) at the interval."""
        return other is None or self.salient() != other.salient()

    def salient(self) -> tuple[object, ...]:
        fill_step = 0 if self.card_total_bytes == 0 else self._used_fraction_in_5_percent()
        return (
            self.software_version,
            self.recording,
            self.config_applied_serial,
            self.config_pending_serial,
            self.config_last_outcome,
            self.config_reports_waiting,
            fill_step,
            self.interrupted_files,
            tuple(sorted((name, q.files) for name, q in self.queue.items())),
            self.blocked_files,
            self.alarms,
            self.gps_status,
        )

    def _used_fraction_in_5_percent(self) -> int:
        used = self.card_total_bytes - self.card_free_bytes
        return 20 * used // self.card_total_bytes


def signed_message(box_id: str, body: bytes) -> bytes:
    return f"{LABEL}\n{box_id}\n".encode() + body


def wire(health: Health, signature: bytes) -> bytes:
    return dump_json(
        {"health": health.to_json_object(), "signature": base64.b64encode(signature).decode()}
    )


def parse_health(data: bytes) -> tuple[Health, bytes]:
    """The report and its signature; HealthRefused for anything else."""
    document = load_object(data, MAX_HEALTH_BYTES, "the health report", HealthRefused)
    outer = Fields(document, frozenset({"health", "signature"}), "the report", HealthRefused)
    signature = outer.base64_bytes("signature", _SIGNATURE_BYTES)
    health = _health(outer.raw("health"))
    return health, signature


_MEMBERS: Final = frozenset(f for f in Health.__dataclass_fields__)


def _health(value: object) -> Health:
    fields = Fields(value, _MEMBERS, "health", HealthRefused)

    def count(name: str) -> int:
        return fields.integer(name, 0, MAX_COUNT)

    def optional(name: str, low: int, high: int) -> int | None:
        return None if fields.raw(name) is None else fields.integer(name, low, high)

    recording = fields.raw("recording")
    if not isinstance(recording, bool):
        fields.fail("recording", "true or false")
    return Health(
        at_ms=count("at_ms"),
        software_version=fields.text("software_version", 40, _VERSION),
        uptime_s=count("uptime_s"),
        recording=recording,
        config_applied_serial=count("config_applied_serial"),
        config_pending_serial=optional("config_pending_serial", 0, MAX_COUNT),
        config_last_outcome=fields.text("config_last_outcome", 300),
        config_reports_waiting=count("config_reports_waiting"),
        card_total_bytes=count("card_total_bytes"),
        card_free_bytes=count("card_free_bytes"),
        files_on_card=count("files_on_card"),
        interrupted_files=count("interrupted_files"),
        queue=_queue(fields.raw("queue")),
        oldest_waiting_age_s=optional("oldest_waiting_age_s", 0, MAX_COUNT),
        blocked_files=count("blocked_files"),
        alarms=_alarms(fields.raw("alarms")),
        gps_status=fields.text("gps_status", 20, _GPS),
        gps_fix_age_s=optional("gps_fix_age_s", 0, MAX_COUNT),
        clock_offset_ms=optional("clock_offset_ms", -MAX_COUNT, MAX_COUNT),
    )


def _queue(value: object) -> dict[str, QueueClass]:
    if not isinstance(value, dict) or not set(value) <= set(UPLOAD_CLASSES):
        raise HealthRefused(f"health: member 'queue' must be an object of {UPLOAD_CLASSES}")
    queue = {}
    for name, entry in value.items():
        fields = Fields(entry, frozenset({"files", "bytes"}), f"queue.{name}", HealthRefused)
        queue[name] = QueueClass(
            files=fields.integer("files", 0, MAX_COUNT), bytes=fields.integer("bytes", 0, MAX_COUNT)
        )
    return queue


def _alarms(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_ALARMS:
        raise HealthRefused(f"health: member 'alarms' must be a list of at most {MAX_ALARMS}")
    if not all(isinstance(code, str) and _CODE.fullmatch(code) for code in value):
        raise HealthRefused("health: member 'alarms' must hold alarm codes only")
    return tuple(value)
