"""Which fleet documents a rollout step signs, and with what text. PURE.

A box runs ONE fleet document: of its own (`boxes/<id>.toml`) and its groups' (`groups/<g>.toml`)
the one with the highest `config_serial` (docs/fleet-config.md 4.4; each is a complete
configuration, the newest signed decision wins; there is no merge of box keys over group keys).
So a rollout pins a release by signing, with the next serials, the document each of its boxes
will take:

- **canary, or named boxes**: for each box, its box document = the document it runs now (its own,
  or its group's copied: a group document carries no `[[accounts]]`, docs/fleet-config.md 4.6)
  with `[release] version = V`. Signed after every document it runs now, it wins; nothing else
  of the box's settings changes.
- **promote, or a whole group at once**: the group's document with the pin, then, for each member
  that runs a box document of its own (its serial above the group's), that document with the pin
  too, signed after the group's (else the member would fall back to the group's document and
  lose its own settings). A canary box whose box document is just the group's copy is left to
  the group's document (the same text).
- **rollback**: every document a targeted box runs now that pins the rollout's version, pinned
  to the previous version instead (the group's first). A document the admin changed since (it
  pins something else) is left as it is, and named.

The canary (`canary_boxes`): members ranked by SHA-256 of `"<rollout id>/<box id>"`, the first
ceil(members x percent / 100) of them (at least one). The rank of a box does not depend on the
other members, so the same rollout id and members always give the same canary, and a larger share
only adds boxes; the rollout's record keeps the chosen boxes, so a box once in the canary stays in
it whatever the group becomes.

The text edit (`with_release`): documents are written by people (comments, order), so the
`[release]` table's lines are replaced, or the table is appended; the result is read back and must
be the same document with exactly that pin (anything else, an inline `release = {...}`, is
RolloutRefused: edit the document by hand).
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from backoffice.rollout import Rollout, RolloutRefused
from config.fleet_targets import box_target_path, group_target_path

_RELEASE_HEADER = re.compile(r"^\s*\[\s*release\s*\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")


@dataclass(frozen=True, slots=True)
class Doc:
    """A signed document as the rollout sees it."""

    path: str
    text: str
    boxes: tuple[str, ...]
    groups: tuple[str, ...]
    config_serial: int


@dataclass(frozen=True, slots=True)
class Edit:
    """A document to sign (with the next serial) at `path` for `boxes` and `groups`."""

    path: str
    text: str
    boxes: tuple[str, ...]
    groups: tuple[str, ...]
    version: str


# -------------------------------------------------------------------------- the canary


def canary_rank(rollout_id: str, box_id: str) -> str:
    return hashlib.sha256(f"{rollout_id}/{box_id}".encode()).hexdigest()


def canary_boxes(rollout_id: str, members: Iterable[str], percent: int) -> tuple[str, ...]:
    """The canary share of `members` for this rollout, in rank order (see the module's doc)."""
    if not 1 <= percent <= 100:
        raise RolloutRefused(f"--canary-percent {percent}: 1 to 100")
    ranked = sorted(set(members), key=lambda box: canary_rank(rollout_id, box))
    count = max(1, math.ceil(len(ranked) * percent / 100))
    return tuple(ranked[:count])


# -------------------------------------------------------------------------- the text


def release_of(text: str) -> str | None:
    """The version the document pins, or None."""
    release = _parse(text).get("release")
    if release is None:
        return None
    version = release.get("version") if isinstance(release, dict) else None
    return version if isinstance(version, str) else None


def with_release(text: str, version: str) -> str:
    """`text` pinning `version`: its `[release]` table replaced, or one appended."""
    before = _parse(text)
    lines = text.splitlines(keepends=True)
    table = f'[release]\nversion = "{version}"\n'
    starts = [i for i, line in enumerate(lines) if _RELEASE_HEADER.match(line)]
    if starts:
        start = starts[0]
        end = next(
            (i for i in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines)
        )
        # A blank line or a comment before the next table stays where it was.
        while end > start + 1 and not lines[end - 1].strip().split("#")[0]:
            end -= 1
        edited = "".join(lines[:start]) + table + "".join(lines[end:])
    else:
        edited = text if text.endswith("\n") or not text else text + "\n"
        edited = f"{edited}\n{table}" if edited else table
    expected = {**before, "release": {"version": version}}
    try:
        parsed = tomllib.loads(edited)
    except tomllib.TOMLDecodeError:
        parsed = None
    if parsed != expected:
        raise RolloutRefused(
            "the document's [release] is not a table this tool can edit; edit it by hand"
        )
    return edited


def _parse(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RolloutRefused(f"a signed document is not valid TOML: {exc}") from exc


# -------------------------------------------------------------------------- what a box runs


def running_document(box_id: str, docs: Mapping[str, Doc]) -> Doc | None:
    """The document `box_id` takes of those signed: its own and every group document naming
    it, the highest serial (None: it runs its local file). The back office does not know a
    box's local `fleet_groups`; a group document names its members (docs/fleet-config.md 3.1)."""
    candidates = [
        doc
        for doc in docs.values()
        if box_id in doc.boxes
        and (doc.path == box_target_path(box_id) or doc.path.startswith("groups/"))
    ]
    return max(candidates, key=lambda doc: doc.config_serial, default=None)


def group_members(group: str, docs: Mapping[str, Doc]) -> tuple[str, ...]:
    doc = docs.get(group_target_path(group))
    if doc is None:
        raise RolloutRefused(f"no document is signed at {group_target_path(group)}: sign one first")
    return doc.boxes


def pinned_versions(boxes: Iterable[str], docs: Mapping[str, Doc]) -> set[str | None]:
    """The versions the documents `boxes` run pin now (None: a box's pins none)."""
    versions: set[str | None] = set()
    for box in boxes:
        doc = running_document(box, docs)
        versions.add(None if doc is None else release_of(doc.text))
    return versions


# -------------------------------------------------------------------------- the steps


def box_edits(boxes: Iterable[str], version: str, docs: Mapping[str, Doc]) -> list[Edit]:
    """Each box's own document pinning `version`, made from the document it runs now; none for
    a box whose own document already is that (a step run again after a crash)."""
    edits = []
    for box in boxes:
        path = box_target_path(box)
        running = running_document(box, docs)
        text = with_release("" if running is None else running.text, version)
        if running is not None and running.path == path:
            if running.text == text:
                continue
            edits.append(Edit(path, text, running.boxes, running.groups, version))
        else:
            edits.append(Edit(path, text, (box,), (), version))
    return edits


def group_edits(group: str, version: str, docs: Mapping[str, Doc]) -> list[Edit]:
    """The group's document pinning `version` first, then the members' own documents that would
    otherwise lose to it (see the module's doc); nothing when that is signed already (a step run
    again after a crash: the repository signs a step's documents in one targets version)."""
    group_doc = docs[group_target_path(group)]
    group_text = with_release(group_doc.text, version)
    group_changes = group_text != group_doc.text
    edits = []
    if group_changes:
        edits.append(Edit(group_doc.path, group_text, group_doc.boxes, group_doc.groups, version))
    for member in group_doc.boxes:
        running = running_document(member, docs)
        if running is None or running.path != box_target_path(member):
            continue
        text = with_release(running.text, version)
        if text == group_text:
            continue  # the canary's copy of the group's document: the group's own takes over
        if text != running.text or group_changes:
            edits.append(Edit(running.path, text, running.boxes, running.groups, version))
    return edits


def rollback_edits(rollout: Rollout, docs: Mapping[str, Doc]) -> tuple[list[Edit], list[str]]:
    """The documents to sign again with the previous version, the group's first, and the boxes
    this rollout pinned that are left as they are (their document pins something else now)."""
    boxes = set(rollout.targets)
    if rollout.group is not None and group_target_path(rollout.group) in docs:
        boxes |= set(group_members(rollout.group, docs))
    to_pin: dict[str, Doc] = {}
    left: list[str] = []
    for box in sorted(boxes):
        running = running_document(box, docs)
        if running is not None and release_of(running.text) == rollout.version:
            to_pin[running.path] = running
        elif rollout.serial_for(box) is not None:
            left.append(box)  # the admin signed another document for it since
    groups_first = sorted(
        to_pin.values(), key=lambda doc: (not doc.path.startswith("groups/"), doc.path)
    )
    edits = [
        Edit(
            doc.path,
            with_release(doc.text, rollout.previous_version),
            doc.boxes,
            doc.groups,
            rollout.previous_version,
        )
        for doc in groups_first
    ]
    return edits, left
