"""`mvb-admin fleet status|metrics` from stored reports (backoffice/fleet_status.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from backoffice.fleet_health import BoxHealth
from backoffice.fleet_status import metrics, rows, table
from tests.protocol.test_health_report import health

NOW_MS = 1_800_000_000_000
MINUTE_MS = 60_000


def box(box_id: str, seen_minutes_ago: int, **changes: object) -> BoxHealth:
    return BoxHealth(
        box_id, NOW_MS - seen_minutes_ago * MINUTE_MS, health(**changes).to_json_object()
    )


def test_stale_boxes_first_then_boxes_with_alarms() -> None:
    fleet = rows(
        [
            box("MVB-A", 1, alarms=()),
            box("MVB-B", 1, alarms=("card_full",)),
            box("MVB-C", 60, alarms=()),
        ],
        NOW_MS,
        stale_after_ms=15 * MINUTE_MS,
    )
    assert [(r.box_id, r.stale) for r in fleet] == [
        ("MVB-C", True),
        ("MVB-B", False),
        ("MVB-A", False),
    ]
    text = table(fleet)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["box", "seen", "version"]
    assert lines[1].startswith("MVB-C STALE")
    assert "card_full" in lines[2]
    assert "1h" in lines[1]
    assert "P0:1 P2:2" in lines[1]
    assert lines[-1] == "3 box(es)"


def test_metrics_are_prometheus_text_without_personal_data() -> None:
    text = metrics(rows([box("MVB-A", 2)], NOW_MS, stale_after_ms=15 * MINUTE_MS))
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert 'mvb_fleet_box_seen_age_seconds{box="MVB-A"} 120' in samples
    assert 'mvb_fleet_box_queue_files{box="MVB-A",class="P0"} 1' in samples
    assert 'mvb_fleet_box_clock_offset_seconds{box="MVB-A"} -0.25' in samples
    assert 'mvb_fleet_box_stale{box="MVB-A"} 0' in samples
    for line in samples:
        name, value = line.rsplit(" ", 1)
        float(value)
        assert name.startswith("mvb_fleet_box_")
    helps = [line for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(helps) == 9


def test_the_grafana_dashboard_reads_only_series_the_back_office_exports() -> None:
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-fleet.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"mvb_fleet_box_\w+", expr)}
    exported = set(re.findall(r"^# TYPE (\w+)", metrics([]), re.MULTILINE))
    assert used
    assert used <= exported
