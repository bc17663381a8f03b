"""Staged rollouts: the shell around backoffice/rollout.py (the state machine),
backoffice/rollout_docs.py (what each step signs) and backoffice/rollout_progress.py.

The record of each rollout is one small JSON file, `<rollout id>.json` (0600, common/durable.py:
tmp, fsync, rename, fsync dir), kept twice: in the admin's trust (`<trust>/rollouts/`, what
counts) and beside the repository it signs in (`<repo>/rollouts/`, for the back office to show;
never served to boxes: the back office serves only `metadata/` and `targets/`). A step:

1. reads the record and the signed documents (verified against the admin's trust, one
   verification: FleetRepository.signed_documents);
2. asks the table whether the step is allowed (RolloutRefused: nothing signed, nothing written);
3. signs the step's documents in ONE targets version (FleetRepository.add_configs, the next
   serials, each document kept but for its `[release]` pin), so a crash leaves all of them or
   none;
4. writes the record with the new phase and what was signed.

A crash between 3 and 4 leaves the documents signed and the record one phase behind: running the
step again signs nothing more (the documents already pin the version) and writes the record.
Publishing stays the back office's step (`mvb-admin config publish`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path

from securesystemslib.signer import Signer

from backoffice.fleet_health import BoxHealth
from backoffice.fleet_repo import ConfigDocument, FleetRepository
from backoffice.rollout import (
    Event,
    Phase,
    Rollout,
    RolloutRefused,
    Signed,
    check_rollout_id,
    check_version,
    parse_rollout,
)
from backoffice.rollout_config import (
    config_box_edits,
    config_group_edits,
    config_label,
    config_rollback_edits,
    config_targets,
    follows,
)
from backoffice.rollout_docs import (
    Doc,
    Edit,
    box_edits,
    canary_boxes,
    group_edits,
    group_members,
    pinned_versions,
    rollback_edits,
)
from common.durable import atomic_write_bytes, make_dirs
from config.fleet_targets import group_target_path

ROLLOUTS_DIR = "rollouts"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RolloutBook:
    """The rollout records: the admin's own copy in the trust directory (`<trust>/rollouts/`,
    on the admin's machine, docs/fleet-config.md 7.1) and the served repository's
    (`<repo>/rollouts/`, for the back office and its page to show).

    With a trust, only the admin's copy is read for a step, because a step signs what the
    record says (a server that forged `previous_version` would otherwise have the admin's key
    pin an old release); a served copy that differs or is missing (a crash between the two
    writes, or a forgery) is written again from it and named in `repaired`. Records on the
    server that this trust never wrote (another admin's) are read only to refuse a rollout that
    would overlap them (`others`): a forged one can make a step refuse, never sign. Without a
    trust (`release status` on the back office) the served copies are read, nothing is written."""

    def __init__(self, repo_dir: Path, trust_dir: Path | None = None) -> None:
        self.served = repo_dir / ROLLOUTS_DIR
        self.own = None if trust_dir is None else trust_dir / ROLLOUTS_DIR
        self.directory = self.served if self.own is None else self.own
        self.repaired: list[str] = []

    @property
    def writable(self) -> bool:
        return self.own is not None

    def save(self, rollout: Rollout) -> None:
        if self.own is None:
            raise RolloutRefused("a rollout record is written only with the admin's --trust")
        data = rollout.to_json()
        for directory in (self.own, self.served):  # the admin's copy first: it counts
            make_dirs(directory, mode=0o700)
            atomic_write_bytes(directory / f"{rollout.rollout_id}.json", data, mode=0o600)

    def load(self, rollout_id: str) -> Rollout:
        path = self.directory / f"{check_rollout_id(rollout_id)}.json"
        if not path.exists():
            raise RolloutRefused(f"no rollout {rollout_id} in {self.directory}")
        return self._read(path)

    def all(self) -> list[Rollout]:
        """This trust's rollouts (without a trust: the served ones), oldest first."""
        return self._records(self.directory, lambda path: True)

    def others(self) -> list[Rollout]:
        """Rollouts on the server that this trust did not write (none without a trust)."""
        if self.own is None:
            return []
        own = self.own
        return self._records(self.served, lambda path: not (own / path.name).exists())

    def _records(self, directory: Path, wanted: Callable[[Path], bool]) -> list[Rollout]:
        if not directory.is_dir():
            return []
        paths = [p for p in sorted(directory.glob("*.json")) if wanted(p)]
        return sorted((self._read(p) for p in paths), key=lambda r: (r.started_at_ms, r.rollout_id))

    def choose(self, rollout_id: str | None) -> Rollout:
        """The rollout named, else the only active one, else (none active) the newest one;
        RolloutRefused when several are active (the admin names one with --rollout) or there is
        none at all."""
        if rollout_id is not None:
            return self.load(rollout_id)
        rollouts = self.all()
        active = [r for r in rollouts if r.active]
        if len(active) > 1:
            names = ", ".join(r.rollout_id for r in active)
            raise RolloutRefused(f"name the rollout with --rollout (active: {names})")
        if not rollouts:
            raise RolloutRefused(f"no rollout in {self.directory}")
        return active[0] if active else rollouts[-1]

    def new_id(self, version: str, group: str | None) -> str:
        base = f"{version}-{group or 'boxes'}"
        taken = {r.rollout_id for r in (*self.all(), *self.others())}
        number = 1
        while (candidate := base if number == 1 else f"{base}-{number}") in taken:
            number += 1
        return check_rollout_id(candidate)

    def _read(self, path: Path) -> Rollout:
        data = path.read_bytes()
        rollout = parse_rollout(data, str(path))
        if self.own is not None and path.parent == self.own:
            served = self.served / path.name
            if not served.exists() or served.read_bytes() != data:
                make_dirs(self.served, mode=0o700)
                atomic_write_bytes(served, data, mode=0o600)
                self.repaired.append(path.name)
        return rollout


def signed_docs(repo: FleetRepository) -> dict[str, Doc]:
    return {
        path: Doc(path, data.decode("utf-8"), custom.boxes, custom.groups, custom.config_serial)
        for path, (data, custom) in repo.signed_documents().items()
    }


def sign(
    repo: FleetRepository, edits: Sequence[Edit], signer: Signer, now: datetime
) -> tuple[Signed, ...]:
    """The edits in one targets version, with the next serials in their order."""
    if not edits:
        return ()
    first = repo.next_config_serial()
    documents = [
        ConfigDocument(e.path, e.text.encode(), e.boxes, e.groups, first + i)
        for i, e in enumerate(edits)
    ]
    repo.add_configs(documents, targets_signer=signer, now=now)
    return tuple(
        Signed(d.target_path, d.config_serial, d.boxes, e.version)
        for d, e in zip(documents, edits, strict=True)
    )


def plan(
    book: RolloutBook,
    docs: dict[str, Doc],
    *,
    version: str,
    group: str | None,
    boxes: Sequence[str],
    canary_percent: int | None,
    previous_version: str | None,
    reports: Iterable[BoxHealth],
    at_ms: int,
) -> Rollout:
    """A planned rollout (nothing signed): its targets, its canary, the version a rollback
    pins. Refused when another active rollout holds one of its boxes."""
    check_version(version)
    if (group is None) == (not boxes):
        raise RolloutRefused("name either --group or --box")
    if canary_percent is not None and group is None:
        raise RolloutRefused("--canary-percent is a share of a --group")
    targets = tuple(sorted(set(boxes))) if group is None else group_members(group, docs)
    for other in book.all():
        if (other.phase, other.version, other.group) == (Phase.PLANNED, version, group) and (
            group is not None or other.targets == targets
        ):
            return other  # a start cut short: the same id, canary and clock
        overlap = set(other.targets) & set(targets)
        if other.active and (overlap or (group is not None and other.group == group)):
            raise RolloutRefused(
                f"rollout {other.rollout_id} ({other.phase.value}) still holds "
                f"{', '.join(sorted(overlap)) or group}: promote, finish or roll it back first"
            )
    for other in book.others():
        same_group = group is not None and other.group == group
        if other.active and (set(other.targets) & set(targets) or same_group):
            raise RolloutRefused(
                f"rollout {other.rollout_id} on the server (not of this trust) is "
                f"{other.phase.value} for some of these boxes: settle it with its admin first"
            )
    if pinned_versions(targets, docs) == {version}:
        raise RolloutRefused(f"every targeted box's document pins {version} already")
    previous = _previous_version(version, targets, docs, reports, previous_version)
    rollout_id = book.new_id(version, group)
    canary = () if canary_percent is None else canary_boxes(rollout_id, targets, canary_percent)
    return Rollout(
        rollout_id=rollout_id,
        version=version,
        previous_version=previous,
        group=group,
        targets=targets,
        canary=canary,
        canary_percent=canary_percent or 0,
        phase=Phase.PLANNED,
        started_at_ms=at_ms,
    )


def plan_config(
    book: RolloutBook,
    docs: dict[str, Doc],
    *,
    group: str,
    new_text: str,
    canary_percent: int | None,
    at_ms: int,
) -> Rollout:
    """A planned rollout of the group's document `new_text` (nothing signed); its targets are
    the members that run the group's document now (backoffice/rollout_config.py)."""
    targets = config_targets(group, docs)
    before = docs[group_target_path(group)].text
    if follows(before, new_text):
        raise RolloutRefused(f"{group_target_path(group)} says that already")
    if not targets:
        raise RolloutRefused(f"no member of {group} runs the group's document")
    label = config_label(new_text)
    for other in book.all():
        if (other.phase, other.version, other.group) == (Phase.PLANNED, label, group):
            return other  # a start cut short: the same id, canary and clock
    for other in (*book.all(), *book.others()):
        if other.active and (other.group == group or set(other.targets) & set(targets)):
            raise RolloutRefused(
                f"rollout {other.rollout_id} ({other.phase.value}) still holds boxes of "
                f"{group}: promote, finish or roll it back first"
            )
    rollout_id = book.new_id(label, group)
    canary = () if canary_percent is None else canary_boxes(rollout_id, targets, canary_percent)
    return Rollout(
        rollout_id=rollout_id,
        version=label,
        previous_version=config_label(before),
        group=group,
        targets=targets,
        canary=canary,
        canary_percent=canary_percent or 0,
        phase=Phase.PLANNED,
        started_at_ms=at_ms,
        kind="config",
        documents=(new_text, before),
    )


def _previous_version(
    version: str,
    targets: Sequence[str],
    docs: dict[str, Doc],
    reports: Iterable[BoxHealth],
    given: str | None,
) -> str:
    """What a rollback pins: given, else the one version every target's document pins, else
    the one version every target reports running."""
    if given is not None:
        return check_version(given, "--previous-version")
    pinned = pinned_versions(targets, docs)
    reports_of = {r.box_id: r for r in reports if r.box_id in targets}
    running: set[str | None] = {
        str(reports_of[box].health["software_version"]) if box in reports_of else None
        for box in targets
    }
    for found in (pinned, running):
        if len(found) == 1:
            (previous,) = found
            if previous is not None and previous != version:
                return check_version(previous, "the previous version")
    raise RolloutRefused(
        f"cannot tell which version to roll back to (pinned: {_named(pinned)}, running: "
        f"{_named(running)}): say --previous-version"
    )


def _named(versions: set[str | None]) -> str:
    return ", ".join(sorted(v or "none" for v in versions))


def start(
    repo: FleetRepository, book: RolloutBook, rollout: Rollout, signer: Signer, now: datetime
) -> Rollout:
    """Record the planned rollout, sign its first step (the canary's box documents, the boxes
    named, or the whole group), record the step."""
    book.save(rollout)
    docs = signed_docs(repo)
    event = Event.START_CANARY if rollout.canary else Event.START_ALL
    if rollout.kind == "config":
        new_text = rollout.documents[0]
        edits = (
            config_box_edits(rollout.canary, new_text, rollout.version, docs)
            if rollout.canary
            else config_group_edits(_group(rollout), new_text, rollout.version, docs)
        )
    elif rollout.canary:
        edits = box_edits(rollout.canary, rollout.version, docs)
    elif rollout.group is None:
        edits = box_edits(rollout.targets, rollout.version, docs)
    else:
        edits = group_edits(rollout.group, rollout.version, docs)
    return _step(repo, book, rollout, event, edits, signer, now)


def _group(rollout: Rollout) -> str:
    if rollout.group is None:
        raise RolloutRefused(f"rollout {rollout.rollout_id} names boxes, not a group")
    return rollout.group


def promote(
    repo: FleetRepository, book: RolloutBook, rollout: Rollout, signer: Signer, now: datetime
) -> Rollout:
    """The canary -> the whole group: the group's document (and members' own) pin the version.
    The caller has checked the health gate (or was told --force)."""
    rollout.after(Event.PROMOTE, 0)  # refused before anything is read or signed
    group, docs = _group(rollout), signed_docs(repo)
    if rollout.kind == "config":
        edits = config_group_edits(group, rollout.documents[0], rollout.version, docs)
    else:
        edits = group_edits(group, rollout.version, docs)
    return _step(repo, book, rollout, Event.PROMOTE, edits, signer, now)


def rollback(
    repo: FleetRepository, book: RolloutBook, rollout: Rollout, signer: Signer, now: datetime
) -> tuple[Rollout, list[str]]:
    """A release: every document a targeted box runs that pins the version, pinned to the
    previous one, and the boxes left as they are (their document pins something else now). A
    configuration: the group's text from before where the rollout put the new one."""
    rollout.after(Event.ROLLBACK, 0)
    docs = signed_docs(repo)
    if rollout.kind == "config":
        edits, left = config_rollback_edits(rollout, docs), list[str]()
    else:
        edits, left = rollback_edits(rollout, docs)
    return _step(repo, book, rollout, Event.ROLLBACK, edits, signer, now), left


def mark(book: RolloutBook, rollout: Rollout, event: Event) -> Rollout:
    """A step that signs nothing (pause, resume, complete)."""
    after = rollout.after(event, now_ms())
    book.save(after)
    return after


def _step(
    repo: FleetRepository,
    book: RolloutBook,
    rollout: Rollout,
    event: Event,
    edits: list[Edit],
    signer: Signer,
    now: datetime,
) -> Rollout:
    rollout.after(event, 0)  # checked again: nothing is signed for a step the table refuses
    signed = sign(repo, edits, signer, now)
    after = rollout.after(event, now_ms(), signed)
    book.save(after)
    return after
