"""The box's health report from its status facts (protocol/health_report.py). PURE.

Invariant: nothing of a person or a place leaves here: no position (GPS gives its status and fix
age only), no officer or shift, no recording id, and alarm *codes* without their messages; a
code outside the report's pattern is left out (counted in `blocked_files` if it is a blocked
file's). The back office learns what the fleet admin needs to keep boxes running.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.status_facts import StatusInputs
from protocol.health_report import MAX_ALARMS, UPLOAD_CLASSES, Health, QueueClass

BLOCKED_PREFIX: Final = "uplink_file_"  # transport/uplink_files.py ALARM_PREFIX
_CODE: Final = re.compile(r"[a-z0-9_.:-]{1,80}")


def health_of(inputs: StatusInputs) -> Health:
    """The report as of `inputs.at_ms`."""
    storage, fleet = inputs.storage, inputs.fleet or {}
    alarms = sorted(str(code) for code in inputs.service.get("alarms", {}))
    oldest = storage.oldest_waiting_created_ms
    return Health(
        at_ms=inputs.at_ms,
        software_version=inputs.software_version[:40],
        uptime_s=int(inputs.uptime_s),
        recording=inputs.recording.recording_id is not None,
        config_applied_serial=int(fleet.get("applied_serial", 0)),
        config_pending_serial=fleet.get("pending_serial"),
        config_last_outcome=str(fleet.get("last_outcome") or "")[:300],
        config_reports_waiting=int(fleet.get("reports_waiting", 0)),
        card_total_bytes=storage.card_total_bytes,
        card_free_bytes=storage.card_free_bytes,
        files_on_card=storage.files_on_card,
        interrupted_files=storage.interrupted_files,
        queue={
            name: QueueClass(storage.waiting_files.get(name, 0), storage.waiting_bytes.get(name, 0))
            for name in UPLOAD_CLASSES
        },
        oldest_waiting_age_s=None if oldest is None else max(0, (inputs.at_ms - oldest) // 1000),
        blocked_files=sum(code.startswith(BLOCKED_PREFIX) for code in alarms),
        alarms=tuple(code for code in alarms if _CODE.fullmatch(code))[:MAX_ALARMS],
        gps_status=inputs.gps.status,
        gps_fix_age_s=None if inputs.gps.fix_age_s is None else int(inputs.gps.fix_age_s),
        clock_offset_ms=inputs.gps.clock_offset_ms,
    )
