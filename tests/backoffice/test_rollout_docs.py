"""Which documents each rollout step signs (backoffice/rollout_docs.py), played on an in-memory
set of signed documents: a box runs the highest serial of its own and its groups' documents
(docs/fleet-config.md 4.4), so after each step every box must run its old settings with the pin."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence

import pytest

from backoffice.rollout import Event, Phase, Rollout, RolloutRefused, Signed
from backoffice.rollout_docs import (
    Doc,
    Edit,
    box_edits,
    canary_boxes,
    group_edits,
    release_of,
    rollback_edits,
    running_document,
    with_release,
)

GROUP = '# H2O\n[fleet]\nname = "H2O"\n\n[recording]\nprerecord_s = 60.0\n'
OWN = (
    '[recording]\nprerecord_s = 30.0\n\n[[accounts]]\nname = "officer"\nrole = "officer"\n'
    'password_hash = "pbkdf2_sha256$600000$c2FsdA$aGFzaA"\n'
)
MEMBERS = ("MVB-0001", "MVB-0002", "MVB-0003", "MVB-0004")


def fleet() -> dict[str, Doc]:
    """h2o's four members; MVB-0003 runs a document of its own (accounts), MVB-0004 has an old
    one of its own that the group's newer document overrides."""
    return {
        "boxes/MVB-0004.toml": Doc("boxes/MVB-0004.toml", OWN, ("MVB-0004",), (), 1),
        "groups/h2o.toml": Doc("groups/h2o.toml", GROUP, MEMBERS, ("h2o",), 2),
        "boxes/MVB-0003.toml": Doc("boxes/MVB-0003.toml", OWN, ("MVB-0003",), (), 3),
    }


def signed(docs: dict[str, Doc], edits: Sequence[Edit]) -> dict[str, Doc]:
    """The documents after the edits are signed, with the next serials in order."""
    serial = max(doc.config_serial for doc in docs.values())
    after = dict(docs)
    for edit in edits:
        serial += 1
        after[edit.path] = Doc(edit.path, edit.text, edit.boxes, edit.groups, serial)
    return after


def runs(docs: dict[str, Doc]) -> dict[str, tuple[str | None, float]]:
    """Per member: the version its document pins and its pre-record (the rest of its settings)."""
    out = {}
    for box in MEMBERS:
        doc = running_document(box, docs)
        assert doc is not None
        out[box] = (release_of(doc.text), tomllib.loads(doc.text)["recording"]["prerecord_s"])
    return out


def rollout(canary: tuple[str, ...] = ()) -> Rollout:
    return Rollout(
        "1.4.0-h2o", "1.4.0", "1.3.0", "h2o", MEMBERS, canary, 25, Phase.PLANNED, 0
    )  # fmt: skip


def test_the_canary_is_deterministic_stable_and_at_least_one() -> None:
    assert canary_boxes("r1", MEMBERS, 50) == canary_boxes("r1", reversed(MEMBERS), 50)
    small, large = canary_boxes("r1", MEMBERS, 25), canary_boxes("r1", MEMBERS, 75)
    assert (len(small), len(large)) == (1, 3)
    assert large[: len(small)] == small, "a larger share only adds boxes"
    assert len(canary_boxes("r1", MEMBERS, 1)) == 1
    assert set(canary_boxes("r1", MEMBERS, 100)) == set(MEMBERS)
    others = {canary_boxes(f"r{n}", MEMBERS, 25) for n in range(20)}
    assert len(others) > 1, "another rollout id ranks the boxes anew"
    for percent in (0, 101):
        with pytest.raises(RolloutRefused):
            canary_boxes("r1", MEMBERS, percent)


def test_the_pin_is_appended_or_replaced_and_nothing_else_changes() -> None:
    pinned = with_release(GROUP, "1.4.0")
    assert pinned.startswith(GROUP), "the people's text is kept"
    assert tomllib.loads(pinned)["release"] == {"version": "1.4.0"}
    again = with_release(pinned, "1.3.0")
    assert again == pinned.replace('"1.4.0"', '"1.3.0"')
    middle = '[release]\nversion = "1.0"\n\n# the rest\n[fleet]\nname = "x"\n'
    assert with_release(middle, "2.0") == middle.replace('"1.0"', '"2.0"')
    assert with_release("", "2.0") == '[release]\nversion = "2.0"\n'
    assert with_release(pinned, "1.4.0") == pinned
    with pytest.raises(RolloutRefused, match="edit it by hand"):
        with_release('release = { version = "1.0" }\n', "2.0")
    with pytest.raises(RolloutRefused, match="not valid TOML"):
        with_release("[recording\n", "2.0")


def test_a_box_runs_the_highest_serial_of_its_documents() -> None:
    docs = fleet()
    assert running_document("MVB-0003", docs) == docs["boxes/MVB-0003.toml"]
    assert running_document("MVB-0004", docs) == docs["groups/h2o.toml"]
    assert running_document("MVB-0009", docs) is None


def test_canary_documents_keep_each_boxs_settings_and_pin_only_the_canary() -> None:
    docs = fleet()
    edits = box_edits(["MVB-0001", "MVB-0003"], "1.4.0", docs)
    assert [(e.path, e.boxes, e.groups) for e in edits] == [
        ("boxes/MVB-0001.toml", ("MVB-0001",), ()),
        ("boxes/MVB-0003.toml", ("MVB-0003",), ()),
    ]
    after = signed(docs, edits)
    assert runs(after) == {
        "MVB-0001": ("1.4.0", 60.0),  # the group's settings, copied
        "MVB-0002": (None, 60.0),
        "MVB-0003": ("1.4.0", 30.0),  # its own, accounts included
        "MVB-0004": (None, 60.0),
    }
    assert "[[accounts]]" in after["boxes/MVB-0003.toml"].text
    assert box_edits(["MVB-0001", "MVB-0003"], "1.4.0", after) == [], "run again: nothing"


def test_promote_pins_the_group_and_the_members_that_run_their_own() -> None:
    docs = signed(fleet(), box_edits(["MVB-0001", "MVB-0003"], "1.4.0", fleet()))
    edits = group_edits("h2o", "1.4.0", docs)
    assert [e.path for e in edits] == ["groups/h2o.toml", "boxes/MVB-0003.toml"]
    after = signed(docs, edits)
    assert runs(after) == {
        "MVB-0001": ("1.4.0", 60.0),
        "MVB-0002": ("1.4.0", 60.0),
        "MVB-0003": ("1.4.0", 30.0),
        "MVB-0004": ("1.4.0", 60.0),  # its old document stays overridden
    }
    assert running_document("MVB-0001", after) == after["groups/h2o.toml"], "the copy gives way"
    assert group_edits("h2o", "1.4.0", after) == [], "run again after a crash: nothing"


def test_rollback_pins_the_previous_version_where_the_version_is_pinned() -> None:
    first = box_edits(["MVB-0001", "MVB-0003"], "1.4.0", fleet())
    docs = signed(fleet(), first)
    canary = rollout(("MVB-0001", "MVB-0003")).after(
        Event.START_CANARY,
        1,
        tuple(Signed(e.path, 3 + n, e.boxes, e.version) for n, e in enumerate(first, 1)),
    )
    changed = signed(docs, [Edit("boxes/MVB-0001.toml", OWN, ("MVB-0001",), (), "")])
    edits, left = rollback_edits(canary, changed)
    assert ([e.path for e in edits], left) == (["boxes/MVB-0003.toml"], ["MVB-0001"])
    edits, left = rollback_edits(canary, docs)
    assert [e.path for e in edits] == ["boxes/MVB-0001.toml", "boxes/MVB-0003.toml"]
    assert left == []
    after = signed(docs, edits)
    assert runs(after)["MVB-0001"] == ("1.3.0", 60.0)
    assert runs(after)["MVB-0003"] == ("1.3.0", 30.0)

    promoted = signed(docs, group_edits("h2o", "1.4.0", docs))
    edits, left = rollback_edits(canary.after(Event.PROMOTE, 2), promoted)
    assert [e.path for e in edits] == ["groups/h2o.toml", "boxes/MVB-0003.toml"], "group first"
    assert left == []
    assert {v for v, _ in runs(signed(promoted, edits)).values()} == {"1.3.0"}
    assert runs(signed(promoted, edits))["MVB-0003"] == ("1.3.0", 30.0)
