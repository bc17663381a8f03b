"""The status document of docs/webui.md section 3 and its alerts: the pure core.

`build_status` (plain facts, gateway/status_facts.py -> the document) and `alerts` (document ->
the alert list, one small rule per code). The shell that gathers the facts through the port and
shares one build between readers is gateway/web/status_source.py.

Invariants of the document:
- every age and duration is as of `at_ms` (wall clock, ms); `alerts(document, now_ms)` ages them
  to `now_ms`, so an old document judged later is judged correctly;
- the position (lat/lon rounded to 5 decimals, about 1 m) appears only in `gps.position`:
  never in /metrics, never in a log line;
- members that existing callers read keep their names: `state`, `recording_for_s`, `cameras`,
  `alarms`, `gps.status|mode|speed_mps|clock_offset_ms`, `storage.files_on_card|bytes_on_card|
  interrupted_files`, `uplink.links|uploading|uploaded_files|uploaded_unattested`, `fleet`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.status_facts import (
    NOT_PAIRED,
    GpsFacts,
    LinkBudget,
    RecordingFiles,
    StatusInputs,
    StorageFacts,
    UplinkFacts,
    UplinkIdle,
)
from storage.card_health import card_state
from storage.models import UPLOAD_CLASSES

MS_PER_S = 1000
POSITION_DECIMALS = 5  # about 1 m: what the officer needs, no more
GPS_STALE_ALERT_S = 30.0  # docs/webui.md 3: no fix for 30 s or more
CAMERA_SILENT_S = 5.0  # a camera without a packet this long "delivers nothing"
CAMERA_GRACE_S = 10.0  # after start a camera may take this long to deliver its first packet
MAX_WAITING_REASONS = 8  # the document stays small whatever the backlog
CREDENTIALS_ALARM = "uplink_credentials"  # transport/withdrawal.py ALARM
BLOCKED_PREFIX = "uplink_file_"  # transport/uplink_files.py ALARM_PREFIX
REFUSED_PREFIX = "camera_refused_"  # gateway/capture/ingest_ledger.py ALARM_PREFIX


# -- the pure builder ----------------------------------------------------------------------------


def build_status(facts: StatusInputs) -> dict[str, Any]:
    """The status document (without `alerts`; `with_alerts` adds them)."""
    service = facts.service
    return {
        "at_ms": facts.at_ms,
        "box": {
            "device_serial": facts.device_serial,
            "vehicle_id": facts.vehicle_id,
            "software_version": facts.software_version,
            "uptime_s": round(facts.uptime_s, 1),
        },
        "state": service["state"],
        "recording_for_s": service["recording_for_s"],
        "recording": _recording(facts),
        "cameras": dict(service["cameras"]),
        "alarms": dict(service["alarms"]),
        "storage": {
            **_storage(facts.storage, facts.at_ms, service["alarms"]),
            "recordable_s": recordable_s(facts.storage, service["cameras"]),
        },
        "recordings": _recordings(facts.storage, facts.uplink),
        "uplink": _uplink(facts.uplink, facts.storage),
        "gps": _gps(facts.gps),
        "pairing": {
            "paired": facts.paired,
            "box_id": facts.device_serial if facts.paired else None,
        },
        "fleet": None if facts.fleet is None else dict(facts.fleet),
        "shift": dict(facts.shift),
        "reports": dict(facts.reports),
    }


def with_alerts(document: dict[str, Any]) -> dict[str, Any]:
    """The document with its `alerts` member, judged as of its own `at_ms`."""
    return {**document, "alerts": alerts(document, document["at_ms"])}


def _recording(facts: StatusInputs) -> dict[str, Any]:
    recording = facts.recording
    running = recording.recording_id is not None
    flagged = running and (
        recording.upload_class == "P0" or recording.recording_id in facts.storage.flagged_recordings
    )
    return {
        "state": facts.service["state"],
        "elapsed_s": facts.service["recording_for_s"],
        "trigger_source": recording.trigger_source if running else None,
        "flagged": flagged,
        "max_continuous_s": recording.max_continuous_s,
        "hold_to_stop_ms": facts.hold_to_stop_ms,
    }


def recordable_s(storage: StorageFacts, cameras: Mapping[str, Any]) -> float | None:
    """How long the card still records at the cameras' current bitrate: the free bytes above
    the reserve over the bytes per second every connected camera sends. None when no camera
    delivers (nothing to divide by): the page then says it does not know."""
    bits_per_s = sum(
        float(camera.get("bitrate_bps") or 0)
        for camera in cameras.values()
        if camera.get("connected")
    )
    if bits_per_s <= 0:
        return None
    usable_bytes = max(0, storage.card_free_bytes - storage.reserve_bytes)
    return round(usable_bytes * 8 / bits_per_s, 1)


def _recordings(storage: StorageFacts, uplink: UplinkFacts | UplinkIdle) -> list[dict[str, Any]]:
    """The newest recordings and how far each got towards the back office (docs/webui.md 3)."""
    offsets: dict[str, int] = {}
    waiting: set[str] = set()
    if isinstance(uplink, UplinkFacts):
        status = uplink.status
        offsets = {str(u["file_id"]): int(u["offset_bytes"] or 0) for u in status["uploading"]}
        waiting = {str(w.get("file_id")) for w in status["waiting"]}
    return [_delivery(recording, offsets, waiting) for recording in storage.recent_recordings]


def _delivery(
    recording: RecordingFiles, offsets: Mapping[str, int], waiting: set[str]
) -> dict[str, Any]:
    """`delivery`: recording (still written) | on_card (nothing sent) | uploading (with
    `sent_percent`) | at_back_office (every byte sent, the back office has not confirmed every
    file yet) | verified (the back office confirmed every file's checksum: the box may delete
    its copy). A file the uplink left mid-way and lists as waiting still has bytes to send; its
    sent part counts only while it moves (the box learns the offset again when it resumes)."""
    moving = [offsets[f] for f in recording.uploading_file_ids if f in offsets]
    paused = [f for f in recording.uploading_file_ids if f not in offsets and f in waiting]
    sent_bytes = recording.attested_bytes + sum(moving)
    percent = 0 if recording.size_bytes == 0 else sent_bytes * 100 // recording.size_bytes
    if recording.recording_files:
        delivery = "recording"
    elif recording.attested_files == recording.files:
        delivery = "verified"
    elif moving or paused or recording.sealed_files:
        delivery = "uploading" if sent_bytes > 0 or moving else "on_card"
    else:
        delivery = "at_back_office"  # sent, unconfirmed: no file of it waits or moves
    return {
        "recording_id": recording.recording_id,
        "started_at_ms": recording.started_at_ms,
        "delivery": delivery,
        "sent_percent": min(100, percent),
        "held": recording.held,
        "flagged": recording.flagged,
    }


def _by_class(files: Mapping[str, int], sizes: Mapping[str, int]) -> dict[str, dict[str, int]]:
    return {c: {"files": files.get(c, 0), "bytes": sizes.get(c, 0)} for c in UPLOAD_CLASSES}


def _storage(storage: StorageFacts, at_ms: int, alarms: Iterable[str]) -> dict[str, Any]:
    oldest_ms = storage.oldest_waiting_created_ms
    oldest_age_s = None if oldest_ms is None else max(0.0, (at_ms - oldest_ms) / MS_PER_S)
    return {
        # ok | read_only | missing | failed: the card alarm raised (storage/card_health.py)
        "card": card_state(alarms),
        "files_on_card": storage.files_on_card,
        "bytes_on_card": storage.bytes_on_card,
        "interrupted_files": storage.interrupted_files,
        "card_total_bytes": storage.card_total_bytes,
        "card_free_bytes": storage.card_free_bytes,
        "reserve_bytes": storage.reserve_bytes,
        "waiting_files": sum(storage.waiting_files.values()),
        "waiting_bytes": sum(storage.waiting_bytes.values()),
        "waiting_by_class": _by_class(storage.waiting_files, storage.waiting_bytes),
        "oldest_waiting_age_s": None if oldest_age_s is None else round(oldest_age_s, 1),
        "retention_s": storage.retention_days * 86_400,
        # How many recordings retention must keep (RULES S4); never which, nor why.
        "held_recordings": len(storage.held_recordings),
    }


_LINK_KEYS = (
    "name",
    "cost_class",
    "state",
    "usable",
    "pin_blocked",
    "udp_blocked",
    "rtt_ms",
    "goodput_mbit_s",
    "budget_remaining_bytes",
    "uploads",
)
_UPLOADING_KEYS = ("file_id", "link", "transport", "offset_bytes", "size_bytes")


def _goodput_bytes_per_s(link: Mapping[str, Any]) -> float | None:
    mbit_s = link.get("goodput_mbit_s")
    return None if mbit_s is None else float(mbit_s) * 1e6 / 8


def _uplink(uplink: UplinkFacts | UplinkIdle, storage: StorageFacts) -> dict[str, Any]:
    """The uplink summary; `{"state": "not paired", "reason"}` when the box has no uplink
    because it has no pairing (other idle states alike)."""
    if isinstance(uplink, UplinkIdle):
        return {"state": uplink.state, "reason": uplink.reason}
    status = uplink.status
    links = [_link(link, uplink.budgets.get(str(link["name"]))) for link in status["links"]]
    uploading = [{k: u[k] for k in _UPLOADING_KEYS} for u in status["uploading"]]
    active = [link for link in status["links"] if link["uploads"] > 0]
    rates = [r for r in map(_goodput_bytes_per_s, active) if r is not None and r > 0]
    throughput = sum(rates) if rates else None
    waiting_bytes = sum(storage.waiting_bytes.values())
    return {
        "state": _uplink_state(status),
        "active_link": uploading[0]["link"] if uploading else None,
        "transport": uploading[0]["transport"] if uploading else None,
        "throughput_bytes_per_s": None if throughput is None else round(throughput),
        "queue": _by_class(storage.waiting_files, storage.waiting_bytes),
        "eta_s": None if throughput is None else round(waiting_bytes / throughput, 1),
        "waiting_reasons": _waiting_reasons(status["waiting"]),
        "waiting_codes": _waiting_codes(status["waiting"]),
        "links": links,
        "uploading": uploading,
        "uploaded_files": status["uploaded_files"],
        "uploaded_unattested": {"files": status["uploaded_unattested"]["files"]},
    }


def _uplink_state(status: Mapping[str, Any]) -> str:
    links = status["links"]
    if status["uploading"]:
        return "uploading"
    if any(link["usable"] for link in links):
        return "up"
    if any(link["pin_blocked"] for link in links):
        return "blocked"
    return "down"


def _link(link: Mapping[str, Any], budget: LinkBudget | None) -> dict[str, Any]:
    return {
        **{k: link[k] for k in _LINK_KEYS},
        "monthly_cap_bytes": None if budget is None else budget.cap_bytes,
        "budget_used_bytes": None if budget is None else budget.used_bytes,
    }


def _waiting_reasons(waiting: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Why files wait, most common first, at most MAX_WAITING_REASONS of them."""
    counts = Counter(str(item["reason"])[:200] for item in waiting)
    return dict(counts.most_common(MAX_WAITING_REASONS))


def _waiting_codes(waiting: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The same, as codes the page translates (transport/wait_reasons.py) with the link they
    name: `[{"code", "link", "count"}]`, most common first, at most MAX_WAITING_REASONS."""
    counts = Counter((str(item.get("code", "")), item.get("link")) for item in waiting)
    return [
        {"code": code, "link": link, "count": count}
        for (code, link), count in counts.most_common(MAX_WAITING_REASONS)
    ]


def _gps(gps: GpsFacts) -> dict[str, Any]:
    position = None
    if gps.lat is not None and gps.lon is not None:
        position = {
            "lat": round(gps.lat, POSITION_DECIMALS),
            "lon": round(gps.lon, POSITION_DECIMALS),
        }
    return {
        "status": gps.status,
        "fix": gps.status == "fix",
        "fix_age_s": None if gps.fix_age_s is None else round(gps.fix_age_s, 1),
        "mode": gps.mode,
        "speed_mps": gps.speed_mps,
        "clock_offset_ms": gps.clock_offset_ms,
        "position": position,
    }


# -- alerts: one small rule per code of the table in docs/webui.md 3 ----------------------------


@dataclass(frozen=True, slots=True)
class _Aged:
    """The document and how much older it is at the time of judging (s, >= 0)."""

    document: Mapping[str, Any]
    later_s: float

    def age_s(self, value: float | None) -> float | None:
        return None if value is None else value + self.later_s

    @property
    def uptime_s(self) -> float:
        return float(self.document["box"]["uptime_s"]) + self.later_s


Alert = dict[str, str]
Rule = Callable[[_Aged], list[str]]  # the details of the alerts it raises (none: [])


def _pin_mismatch(aged: _Aged) -> list[str]:
    links = aged.document["uplink"].get("links", [])
    blocked = sorted(link["name"] for link in links if link["pin_blocked"])
    return [f"link {name}: the back office certificate is not the pinned one" for name in blocked]


def _card_full(aged: _Aged) -> list[str]:
    reason = aged.document["alarms"].get("card_full")
    return [] if reason is None else [str(reason)]


def _alarm(code: str) -> Rule:
    """The rule of an alert that is an alarm of the box's own (common/alarms.py) by that code:
    raised while the alarm is, its message as the detail."""

    def rule(aged: _Aged) -> list[str]:
        message = aged.document["alarms"].get(code)
        return [] if message is None else [str(message)]

    return rule


def _camera_down(aged: _Aged) -> list[str]:
    down = []
    for name, camera in sorted(aged.document["cameras"].items()):
        age_s = aged.age_s(camera.get("last_packet_age_s"))
        never = age_s is None and aged.uptime_s >= CAMERA_GRACE_S
        silent = age_s is not None and age_s >= CAMERA_SILENT_S
        if never or silent or (not camera.get("connected") and aged.uptime_s >= CAMERA_GRACE_S):
            down.append(name)
    return down


def _camera_refused(aged: _Aged) -> list[str]:
    """One alert per camera that refused a sender lately: the camera's name as the detail (the
    alarm holds for a while after the last attempt: gateway/capture/ingest_ledger.py)."""
    codes = sorted(code for code in aged.document["alarms"] if code.startswith(REFUSED_PREFIX))
    return [code.removeprefix(REFUSED_PREFIX) for code in codes]


def _gps_stale(aged: _Aged) -> list[str]:
    gps = aged.document["gps"]
    if gps["fix"] and aged.later_s < GPS_STALE_ALERT_S:
        return []
    age_s = aged.age_s(gps["fix_age_s"])
    without_fix_s = aged.uptime_s if age_s is None else age_s
    if without_fix_s < GPS_STALE_ALERT_S:
        return []
    return [f"no GPS fix for {without_fix_s:.0f} s"]


def _report_missing(aged: _Aged) -> list[str]:
    """Recordings that ended without a report; the one running now is not asked for yet (its
    reminder would sit above the recording state while the officer is busy)."""
    reports = aged.document["reports"]
    missing = int(reports["missing"]) - int(reports.get("running", 0))
    return [f"{missing} recording(s) still need a report"] if missing > 0 else []


def _no_shift(aged: _Aged) -> list[str]:
    """RULES R5: with no shift running, new recordings carry no officer (issue 15, item 4)."""
    if aged.document["shift"]["active"]:
        return []
    return ["no shift: recordings now carry no officer"]


def _report_not_sent(aged: _Aged) -> list[str]:
    fleet = aged.document["fleet"]
    if fleet is None or fleet["reported_serial"] >= fleet["applied_serial"]:
        return []
    return [f"configuration serial {fleet['applied_serial']} not yet confirmed"]


def _credentials_withdrawn(aged: _Aged) -> list[str]:
    reason = aged.document["alarms"].get(CREDENTIALS_ALARM)
    return [] if reason is None else [str(reason)]


def _upload_blocked(aged: _Aged) -> list[str]:
    """One alert for every blocked file (their sticky alarms survive restarts: the uplink need
    not be running for the officer to be told)."""
    blocked = sorted(code for code in aged.document["alarms"] if code.startswith(BLOCKED_PREFIX))
    if not blocked:
        return []
    return [f"{len(blocked)} file(s) blocked for integrity: a person must release them"]


def _not_paired(aged: _Aged) -> list[str]:
    if "unpaired" in aged.document["alarms"]:
        return []  # the `unpaired` alert says more: the back office removed this box
    return ["no pairing: recordings stay on the card"] if _is_unpaired(aged.document) else []


def _is_unpaired(document: Mapping[str, Any]) -> bool:
    return bool(document["uplink"]["state"] == NOT_PAIRED)


def _upload_behind(aged: _Aged) -> list[str]:
    storage = aged.document["storage"]
    oldest_s = aged.age_s(storage["oldest_waiting_age_s"])
    half_retention_s = storage["retention_s"] / 2
    if oldest_s is None or oldest_s <= half_retention_s:
        return []
    return [f"the oldest waiting file is {oldest_s / 86_400:.1f} days old"]


def _recording_long(aged: _Aged) -> list[str]:
    recording = aged.document["recording"]
    if recording["state"] == "standby":
        return []
    elapsed_s = float(recording["elapsed_s"]) + aged.later_s
    if elapsed_s < recording["max_continuous_s"]:
        return []
    return [f"recording for {elapsed_s / 60:.0f} min"]


ALERT_RULES: tuple[tuple[str, str, Rule], ...] = (
    ("pin_mismatch", "critical", _pin_mismatch),
    ("credentials_withdrawn", "critical", _credentials_withdrawn),
    # The back office removed the box (RULES L5; gateway/unpairing.py): sticky, until paired.
    ("unpaired", "critical", _alarm("unpaired")),
    ("card_full", "critical", _card_full),
    # The card is dying (storage/card_health.py): a write or fsync failed, it turned read-only,
    # or it is gone. Recording resumes by itself once it works again (gateway/card_watch.py).
    ("card_missing", "critical", _alarm("card_missing")),
    ("card_read_only", "critical", _alarm("card_read_only")),
    ("card_write_failed", "critical", _alarm("card_write_failed")),
    ("camera_down", "critical", _camera_down),
    ("camera_refused", "critical", _camera_refused),  # L6: a sender not the camera, refused
    # Retention (docs/retention.md): unuploaded files the 28-day rule deletes within a day.
    ("retention_imminent", "critical", _alarm("retention_imminent")),
    # A file recovery would not close as a power cut (storage/recovery_alarm.py).
    ("evidence_suspect", "critical", _alarm("evidence_suspect")),
    ("gps_stale", "warning", _gps_stale),
    ("report_missing", "warning", _report_missing),
    ("no_shift", "warning", _no_shift),
    ("report_not_sent", "warning", _report_not_sent),
    ("upload_blocked", "warning", _upload_blocked),
    ("not_paired", "warning", _not_paired),
    ("upload_behind", "warning", _upload_behind),
    ("recording_long", "warning", _recording_long),
    ("retention_near", "warning", _alarm("retention_near")),  # ... within 7 days
    ("retention_time_unknown", "warning", _alarm("retention_time_unknown")),  # kept: no time
    ("time_conflict", "warning", _alarm("time_conflict")),  # GPS and the back office disagree
)
"""(code, severity, rule) in the order of the table: critical ones first."""

ALERT_CODES = tuple(code for code, _, _ in ALERT_RULES)


def alerts(document: Mapping[str, Any], now_ms: int) -> list[Alert]:
    """The alerts of `document` judged at `now_ms` (pure): `{"code", "severity", "detail"}`,
    critical first, in the order of the table; a code may appear once per thing it is about
    (one `camera_down` per camera)."""
    aged = _Aged(document, max(0.0, (now_ms - int(document["at_ms"])) / MS_PER_S))
    return [
        {"code": code, "severity": severity, "detail": detail}
        for code, severity, rule in ALERT_RULES
        for detail in rule(aged)
    ]
