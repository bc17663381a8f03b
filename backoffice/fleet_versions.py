"""Which groups each box is in, and which software versions each group runs. PURE but for
`fleet_groups`, which reads the fleet repository.

A box's groups are the groups of the group documents that name it (`config sign --group G --box
B`: a group document names its member boxes, docs/fleet-config.md 3.1); the back office knows no
other membership. The versions are what the boxes' latest health reports say they run, so a
rollout's progress is the count of a group's boxes on each version (docs/fleet-health.md 3).

The rollout's own state (which version a group is being moved to) belongs to `mvb-admin release
rollout` (backoffice/rollout.py). `RolloutTargets` is the one read-only hook the page needs from
it: group -> the version being rolled out (`serve` connects it to the served rollout records,
backoffice/admin_cli.py); without a fleet repository `no_rollout_targets` says "none".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from tuf.api.exceptions import RepositoryError

from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_status import Row
from config.fleet_targets import GROUP_TARGETS_DIR, FleetCustom, MalformedCustom, parse_custom

log = logging.getLogger(__name__)

NO_GROUP = ""
"""The group key of boxes that no group document names (the page says "no group")."""

RolloutTargets = Callable[[], Mapping[str, str]]
"""`targets()`: group -> the release version an active rollout moves it to (read-only)."""


def no_rollout_targets() -> Mapping[str, str]:
    """No rollout is known to the page (a back office without a fleet repository)."""
    return {}


def groups_by_box(documents: Iterable[FleetCustom]) -> dict[str, tuple[str, ...]]:
    """Box id -> the sorted groups whose documents name it (from each group document's custom
    fields: its `groups` and its member `boxes`)."""
    found: dict[str, set[str]] = {}
    for custom in documents:
        for box in custom.boxes:
            found.setdefault(box, set()).update(custom.groups)
    return {box: tuple(sorted(groups)) for box, groups in found.items() if groups}


def versions_by_group(
    fleet: Sequence[Row], groups: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, int]]:
    """Group -> software version -> how many of its boxes report it (a box in two groups counts
    in both; a box in none under NO_GROUP)."""
    counts: dict[str, dict[str, int]] = {}
    for row in fleet:
        version = str(row.health["software_version"])
        for group in groups.get(row.box_id) or (NO_GROUP,):
            per_version = counts.setdefault(group, {})
            per_version[version] = per_version.get(version, 0) + 1
    return {group: dict(sorted(counts[group].items())) for group in sorted(counts)}


def fleet_groups(repository: FleetRepository | None) -> dict[str, tuple[str, ...]]:
    """The groups of every box named by a group document of the newest targets on disk
    (unverified: for display and labels only, never to decide what a box may read). Empty when
    there is no repository or it cannot be read (logged)."""
    if repository is None:
        return {}
    try:
        targets = repository.targets().signed.targets
    except (OSError, ValueError, RepositoryError) as exc:
        log.error("fleet groups unreadable: %s", exc)
        return {}
    documents = []
    for path, target in targets.items():
        if not path.startswith(f"{GROUP_TARGETS_DIR}/"):
            continue
        try:
            documents.append(parse_custom(path, target.custom))
        except MalformedCustom:
            continue
    return groups_by_box(documents)
