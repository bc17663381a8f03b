"""`mvb-admin fleet status|metrics` from stored reports (backoffice/fleet_status.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from backoffice.fleet_health import BoxHealth
from backoffice.fleet_status import SERIES, metrics, rows, table
from backoffice.fleet_versions import versions_by_group
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
    fleet = rows([box("MVB-A", 2), box("MVB-B", 3)], NOW_MS, stale_after_ms=15 * MINUTE_MS)
    groups = {"MVB-A": ("borsele", "h2o")}
    text = metrics(fleet, groups, versions_by_group(fleet, groups))
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    a = 'box="MVB-A",group="borsele,h2o"'
    assert f"mvb_fleet_box_seen_age_seconds{{{a}}} 120" in samples
    assert f'mvb_fleet_box_queue_files{{{a},class="P0"}} 1' in samples
    assert f"mvb_fleet_box_clock_offset_seconds{{{a}}} -0.25" in samples
    assert f"mvb_fleet_box_stale{{{a}}} 0" in samples
    assert 'mvb_fleet_box_stale{box="MVB-B",group=""} 0' in samples
    version = fleet[0].health["software_version"]
    assert f'mvb_fleet_group_version_boxes{{group="h2o",version="{version}"}} 1' in samples
    assert f'mvb_fleet_group_version_boxes{{group="",version="{version}"}} 1' in samples
    for line in samples:
        name, value = line.rsplit(" ", 1)
        float(value)
        assert name.startswith("mvb_fleet_")
        assert "lat" not in name
        assert "officer" not in name
    helps = [line for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(helps) == len(SERIES)


def test_the_grafana_dashboard_reads_only_series_the_back_office_exports() -> None:
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-fleet.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"]]
    used = {name for expr in exprs for name in re.findall(r"mvb_fleet_\w+", expr)}
    exported = set(re.findall(r"^# TYPE (\w+)", metrics([]), re.MULTILINE))
    assert used
    assert used <= exported
