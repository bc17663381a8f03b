"""A staged rollout of a group's configuration: which documents each step signs. PURE.

The same state machine as a release's (backoffice/rollout.py); what moves is the group's
document itself: a new text F, to a canary share of the group first, then to the group. Since a
box runs ONE document, the highest serial of its own and its groups' (docs/fleet-config.md 4.4):

- **targets** are the members that run the group's document when the rollout is planned. A
  member that runs a document of its own does not follow the group's (its own may hold
  `[[accounts]]`, which a group document never does: 4.6), so it is not a target, and each step
  that signs the group's document signs its own again after it, unchanged, so that it keeps it.
- **canary**: each canary box gets a box document with F's text;
- **promote** (or no canary): the group's document becomes F;
- **rollback**: the same steps with the group's text from before the rollout.

`[release]` is steered by release rollouts and `[[holds]]` by `config hold|release`: a document
this module writes keeps the release pin of the document it replaces when F names none, and every
hold of it that F lacks (a new policy never releases a recording: RULES S4). Two texts "say the
same" (`follows`) when they parse to the same TOML but for `[release]` and `[[holds]]`.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from backoffice.fleet_holds import holds_of, with_hold
from backoffice.rollout import Event, Rollout, RolloutRefused
from backoffice.rollout_docs import Doc, Edit, release_of, running_document, with_release
from config.fleet_targets import box_target_path, group_target_path


def config_label(text: str) -> str:
    """What a configuration rollout's `version` is: the document's SHA-256, short."""
    return "config-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def follows(text: str, new_text: str) -> bool:
    """Whether `text` says what `new_text` says, but for `[release]`."""
    return _policy(text) == _policy(new_text)


def with_pin_of(new_text: str, running_text: str) -> str:
    """`new_text`, keeping the release pin of the document it replaces when it names none, and
    every hold of it that it lacks (holds come and go by `config hold|release`: a new policy
    never releases a recording, RULES S4)."""
    pin = release_of(running_text)
    text = new_text
    if pin is not None and "release" not in _parse(new_text):
        text = with_release(text, pin)
    try:
        kept = holds_of(running_text)
        for recording_id, ground in kept.items():
            if recording_id not in holds_of(text):
                text = with_hold(text, recording_id, ground)
    except ValueError as exc:  # HoldEditError, or the holds' own rule
        raise RolloutRefused(f"the holds cannot be carried over ({exc}); edit by hand") from exc
    return text


def config_targets(group: str, docs: Mapping[str, Doc]) -> tuple[str, ...]:
    """The members that run the group's document now."""
    group_path = group_target_path(group)
    if group_path not in docs:
        raise RolloutRefused(f"no document is signed at {group_path}: sign one first")
    return tuple(
        member
        for member in docs[group_path].boxes
        if (running := running_document(member, docs)) is not None and running.path == group_path
    )


def config_box_edits(
    boxes: Iterable[str], new_text: str, label: str, docs: Mapping[str, Doc]
) -> list[Edit]:
    """Each box's own document saying `new_text` (nothing for one that already does)."""
    edits = []
    for box in boxes:
        running = running_document(box, docs)
        text = new_text if running is None else with_pin_of(new_text, running.text)
        if running is not None and running.path == box_target_path(box) and running.text == text:
            continue
        edits.append(Edit(box_target_path(box), text, (box,), (), label))
    return edits


def config_group_edits(
    group: str, new_text: str, label: str, docs: Mapping[str, Doc]
) -> list[Edit]:
    """The group's document saying `new_text`, then the members' own documents again,
    unchanged, so that they keep them (nothing when the group's says it already)."""
    group_doc = docs[group_target_path(group)]
    text = with_pin_of(new_text, group_doc.text)
    if text == group_doc.text:
        return []
    edits = [Edit(group_doc.path, text, group_doc.boxes, group_doc.groups, label)]
    for member in group_doc.boxes:
        running = running_document(member, docs)
        if running is None or running.path != box_target_path(member):
            continue
        if follows(running.text, new_text):
            continue  # a canary's copy: the group's document takes over
        edits.append(Edit(running.path, running.text, running.boxes, running.groups, label))
    return edits


def config_rollback_edits(rollout: Rollout, docs: Mapping[str, Doc]) -> list[Edit]:
    """The previous text where the rollout put the new one: the group's document once it was
    promoted (or started whole), else the canary's box documents."""
    new_text, previous_text = rollout.documents
    assert rollout.group is not None
    group_signed = any(s.event in (Event.PROMOTE, Event.START_ALL) for s in rollout.history)
    if group_signed:
        return config_group_edits(rollout.group, previous_text, rollout.previous_version, docs)
    still_new = [
        box
        for box in rollout.canary
        if (running := running_document(box, docs)) is not None and follows(running.text, new_text)
    ]
    return config_box_edits(still_new, previous_text, rollout.previous_version, docs)


def _policy(text: str) -> dict[str, Any]:
    parsed = _parse(text)
    parsed.pop("release", None)
    parsed.pop("holds", None)
    return parsed


def _parse(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RolloutRefused(f"a document is not valid TOML: {exc}") from exc
