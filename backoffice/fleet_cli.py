"""`mvb-admin fleet status|metrics`: the fleet from its boxes' health (docs/fleet-health.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_status import DEFAULT_STALE_AFTER_MS, table
from backoffice.fleet_view import read_fleet


def add_fleet_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fleet = sub.add_parser("fleet", help="the fleet's health, from the boxes' reports")
    actions = fleet.add_subparsers(dest="fleet_command", required=True)
    for name, what in (
        ("status", "one line per box, stale boxes first"),
        ("metrics", "Prometheus text (node_exporter's textfile collector, or a scrape)"),
    ):
        action = actions.add_parser(name, help=what)
        action.add_argument("--dir", type=Path, required=True, help="the back office's store")
        action.add_argument(
            "--stale-after-s",
            type=int,
            default=DEFAULT_STALE_AFTER_MS // 1000,
            help="a box without a report this long is stale (default 900)",
        )
        action.add_argument(
            "--fleet-repo",
            type=Path,
            help="the fleet repository: boxes' groups (metrics label `group`, versions per group)",
        )
    actions.choices["status"].add_argument("--json", action="store_true")


def run_fleet(args: argparse.Namespace) -> int:
    repository = None if args.fleet_repo is None else FleetRepository(args.fleet_repo)
    view = read_fleet(args.dir, repository, args.stale_after_s * 1000)
    if args.fleet_command == "metrics":
        print(view.metrics_text(), end="")
    elif args.json:
        print(json.dumps([row.to_json_object() for row in view.rows], indent=2, sort_keys=True))
    else:
        print(table(view.rows), end="")
    return 0
