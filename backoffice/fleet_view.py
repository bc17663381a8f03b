"""The fleet as one read: every box's latest report, the groups the fleet repository names, the
versions per group and the rollouts' target versions. The one shell behind `mvb-admin fleet
status|metrics`, the fleet admin page's `GET /api/fleet` and the scrape endpoint `GET /metrics`
(backoffice/admin_web.py), so they cannot disagree. Blocking (files): callers off the event loop
run it in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backoffice.fleet_health import FleetHealthStore
from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_status import Row, metrics, rows
from backoffice.fleet_versions import (
    NO_GROUP,
    RolloutTargets,
    fleet_groups,
    no_rollout_targets,
    versions_by_group,
)


@dataclass(frozen=True, slots=True)
class FleetView:
    rows: list[Row]
    groups: dict[str, tuple[str, ...]]
    versions: dict[str, dict[str, int]]
    rollout_targets: Mapping[str, str]

    def metrics_text(self) -> str:
        return metrics(self.rows, self.groups, self.versions)

    def to_json_object(self) -> dict[str, Any]:
        """What the page draws: boxes (stale first, as `fleet status`) with their groups, and per
        group the boxes on each version and the rollout's target (null: none known)."""
        return {
            "boxes": [
                {**row.to_json_object(), "groups": list(self.groups.get(row.box_id, ()))}
                for row in self.rows
            ],
            "groups": [
                {
                    "group": group,
                    "no_group": group == NO_GROUP,
                    "versions": versions,
                    "target_version": self.rollout_targets.get(group),
                }
                for group, versions in self.versions.items()
            ],
        }


def read_fleet(
    store_dir: Path,
    repository: FleetRepository | None,
    stale_after_ms: int,
    rollout_targets: RolloutTargets = no_rollout_targets,
    now_ms: int | None = None,
) -> FleetView:
    at_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    fleet = rows(FleetHealthStore(store_dir).all(), at_ms, stale_after_ms)
    groups = fleet_groups(repository)
    return FleetView(fleet, groups, versions_by_group(fleet, groups), rollout_targets())
