"""The fleet as the admin sees it: one row per box from its latest health report. PURE.

`rows` orders stale boxes first (no report for `stale_after_ms`: the box is off, out of reach,
or broken), then boxes with alarms, then the rest, each by box id. `table` is what
`mvb-admin fleet status` prints, `metrics` the Prometheus text exposition of the same facts
(`mvb-admin fleet metrics`, for node_exporter's textfile collector or a scrape; the dashboard in
docs/grafana-fleet.json reads these names).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backoffice.fleet_health import BoxHealth

DEFAULT_STALE_AFTER_MS = 15 * 60 * 1000
"""Three health intervals (gateway/health_io.py INTERVAL_S) without a report."""


@dataclass(frozen=True, slots=True)
class Row:
    box_id: str
    stale: bool
    seen_age_s: int
    health: dict[str, Any]

    def to_json_object(self) -> dict[str, Any]:
        return {
            "box_id": self.box_id,
            "stale": self.stale,
            "seen_age_s": self.seen_age_s,
            **self.health,
        }


def rows(boxes: Iterable[BoxHealth], now_ms: int, stale_after_ms: int) -> list[Row]:
    made = [
        Row(
            box.box_id,
            now_ms - box.received_at_ms > stale_after_ms,
            max(0, (now_ms - box.received_at_ms) // 1000),
            box.health,
        )
        for box in boxes
    ]
    return sorted(made, key=lambda row: (not row.stale, not row.health["alarms"], row.box_id))


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _card(health: dict[str, Any]) -> str:
    total = health["card_total_bytes"]
    return "-" if total == 0 else f"{100 - 100 * health['card_free_bytes'] // total}%"


def _queue(health: dict[str, Any]) -> str:
    queue = health["queue"].items()
    counts = [f"{name}:{entry['files']}" for name, entry in queue if entry["files"]]
    return " ".join(counts) or "0"


HEADER = (
    "box", "seen", "version", "serial", "card", "queue", "oldest", "blocked", "gps fix",
    "clock", "alarms",
)  # fmt: skip


def table(fleet: Sequence[Row]) -> str:
    lines = [HEADER]
    for row in fleet:
        h = row.health
        offset = h["clock_offset_ms"]
        lines.append(
            (
                row.box_id + (" STALE" if row.stale else ""),
                _age(row.seen_age_s),
                h["software_version"],
                str(h["config_applied_serial"]) + ("*" if h["config_pending_serial"] else ""),
                _card(h),
                _queue(h),
                _age(h["oldest_waiting_age_s"]),
                str(h["blocked_files"]),
                _age(h["gps_fix_age_s"]),
                "-" if offset is None else f"{offset / 1000:+.0f}s",
                ",".join(h["alarms"]) or "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    return "\n".join(line.rstrip() for line in text) + f"\n{len(fleet)} box(es)\n"


SERIES: tuple[tuple[str, str], ...] = (
    ("mvb_fleet_box_info", "1 per box; labels: its software version"),
    ("mvb_fleet_box_seen_age_seconds", "seconds since the box's last report"),
    ("mvb_fleet_box_stale", "1 when the box has not reported for too long"),
    ("mvb_fleet_box_config_serial", "the applied configuration serial"),
    ("mvb_fleet_box_config_pending", "1 when a configuration document waits to be applied"),
    ("mvb_fleet_box_card_total_bytes", "the card's size"),
    ("mvb_fleet_box_card_free_bytes", "free bytes on the card"),
    ("mvb_fleet_box_card_used_ratio", "the card's used share, 0 to 1"),
    ("mvb_fleet_box_queue_files", "files waiting for upload, by class"),
    ("mvb_fleet_box_queue_bytes", "bytes waiting for upload, by class"),
    ("mvb_fleet_box_oldest_waiting_seconds", "age of the oldest waiting file"),
    ("mvb_fleet_box_blocked_files", "files blocked from upload"),
    ("mvb_fleet_box_alarms", "alarms raised on the box"),
    ("mvb_fleet_box_gps_fix_age_seconds", "seconds since the last GPS fix"),
    ("mvb_fleet_box_clock_offset_seconds", "wall clock minus GPS time"),
    ("mvb_fleet_group_version_boxes", "boxes of a group reporting a software version"),
)
"""Every series `metrics` writes, each a gauge (docs/fleet-health.md 2; the Grafana dashboard in
docs/grafana-fleet.json reads these names; tests/backoffice/test_fleet_metrics.py checks both)."""


def metrics(
    fleet: Sequence[Row],
    groups: Mapping[str, Sequence[str]] | None = None,
    group_versions: Mapping[str, Mapping[str, int]] | None = None,
) -> str:
    """Prometheus text exposition (format 0.0.4): one series per box, labelled `box` and `group`
    (its groups joined by ",", empty for none: backoffice/fleet_versions.py); the boxes per group
    and version. Counts, bytes, ages and codes only: no position, no officer, no recording."""
    out = []
    for name, help_text in SERIES:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        if name == "mvb_fleet_group_version_boxes":
            for group, versions in sorted((group_versions or {}).items()):
                for version, count in sorted(versions.items()):
                    labels = f'group="{_escape(group)}",version="{_escape(version)}"'
                    out.append(f"{name}{{{labels}}} {count}")
            continue
        for row in fleet:
            box_groups = ",".join((groups or {}).get(row.box_id, ()))
            box = f'box="{_escape(row.box_id)}",group="{_escape(box_groups)}"'
            out += [f"{name}{{{labels}}} {value}" for labels, value in _values(name, box, row)]
    return "\n".join(out) + "\n"


def _values(name: str, box: str, row: Row) -> list[tuple[str, str]]:
    h = row.health
    if name in ("mvb_fleet_box_queue_files", "mvb_fleet_box_queue_bytes"):
        member = "files" if name.endswith("files") else "bytes"
        return [(f'{box},class="{c}"', str(q[member])) for c, q in sorted(h["queue"].items())]
    if name == "mvb_fleet_box_info":
        return [(f'{box},version="{_escape(str(h["software_version"]))}"', "1")]
    total = h["card_total_bytes"]
    value: Any = {
        "mvb_fleet_box_seen_age_seconds": row.seen_age_s,
        "mvb_fleet_box_stale": int(row.stale),
        "mvb_fleet_box_config_serial": h["config_applied_serial"],
        "mvb_fleet_box_config_pending": int(h["config_pending_serial"] is not None),
        "mvb_fleet_box_card_total_bytes": total,
        "mvb_fleet_box_card_free_bytes": h["card_free_bytes"],
        "mvb_fleet_box_card_used_ratio": None
        if total == 0
        else round((total - h["card_free_bytes"]) / total, 4),
        "mvb_fleet_box_oldest_waiting_seconds": h["oldest_waiting_age_s"],
        "mvb_fleet_box_blocked_files": h["blocked_files"],
        "mvb_fleet_box_alarms": len(h["alarms"]),
        "mvb_fleet_box_gps_fix_age_seconds": h["gps_fix_age_s"],
        "mvb_fleet_box_clock_offset_seconds": None
        if h["clock_offset_ms"] is None
        else h["clock_offset_ms"] / 1000,
    }[name]
    return [] if value is None else [(box, str(value))]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
