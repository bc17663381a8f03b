"""The shift's rules (RULES R5, docs/webui.md 2): the pure core, no box."""

from __future__ import annotations

import pytest

from gateway.caller import LOCAL_IDENTITY, Identity, RefusalKind, Refused
from gateway.officer.shift import (
    Member,
    Shift,
    ShiftStart,
    bodycam_serials,
    camera_officers,
    decide_end,
    decide_leave,
    decide_start,
    shift_view,
)

ALICE = Identity(channel="web", user="alice", role="officer", officer_id="BOA-1234")
CAROL = Identity(channel="web", user="carol", role="officer", officer_id="BOA-7")
ERIN = Identity(channel="web", user="erin", role="officer", officer_id="BOA-99")
ADMIN = Identity(channel="web", user="bob", role="admin", officer_id="")


def test_one_shift_at_a_time_and_who_may_end_it() -> None:
    started = decide_start(None, ShiftStart("BOA-1234", ("BC-1",)), 1000)
    running = started.shift
    assert (started.event, running) == (
        "shift.started",
        Shift((Member("BOA-1234", ("BC-1",)),), 1000),
    )
    changed = decide_start(running, ShiftStart("BOA-1234", ("BC-2",)), 5000)
    assert (changed.event, changed.shift) == (
        "shift.bodycams_changed",
        Shift((Member("BOA-1234", ("BC-2",)),), 1000),
    )
    with pytest.raises(Refused) as stranger:
        decide_end(running, CAROL, acknowledge=True, missing=[])
    assert (stranger.value.kind, stranger.value.code) == (RefusalKind.FORBIDDEN, "forbidden")
    assert decide_end(running, ADMIN, acknowledge=False, missing=[]) == running
    assert decide_end(running, LOCAL_IDENTITY, acknowledge=False, missing=[]) == running
    with pytest.raises(Refused) as unreported:
        decide_end(running, ALICE, acknowledge=False, missing=["a" * 32])
    assert unreported.value.code == "reports_missing"
    assert unreported.value.extra["missing"] == ["a" * 32]
    assert decide_end(running, ALICE, acknowledge=True, missing=["a" * 32]) == running
    with pytest.raises(Refused) as nothing:
        decide_end(None, ALICE, acknowledge=True, missing=[])
    assert nothing.value.code == "no_shift"


def test_a_second_officer_joins_a_third_is_refused_and_either_may_end_it() -> None:
    alone = decide_start(None, ShiftStart("BOA-1234", ("BC-1",)), 1000).shift
    joined = decide_start(alone, ShiftStart("BOA-7", ("BC-2", "BC-3")), 2000)
    assert joined.event == "shift.joined"
    duo = joined.shift
    assert duo == Shift((Member("BOA-1234", ("BC-1",)), Member("BOA-7", ("BC-2", "BC-3"))), 1000)
    with pytest.raises(Refused) as full:
        decide_start(duo, ShiftStart("BOA-99", ()), 3000)
    assert (full.value.kind, full.value.code) == (RefusalKind.CONFLICT, "shift_full")
    with pytest.raises(Refused) as taken:
        decide_start(duo, ShiftStart("BOA-7", ("BC-1",)), 3000)  # the partner's bodycam
    assert (taken.value.code, taken.value.extra["field"]) == ("bodycam_taken", "bodycam_serials")
    with pytest.raises(Refused):
        decide_start(alone, ShiftStart("BOA-7", ("BC-1",)), 3000)  # nor when joining
    moved = decide_start(duo, ShiftStart("BOA-1234", ("BC-1", "BC-9")), 4000)
    assert moved.event == "shift.bodycams_changed"
    assert moved.shift.members[1] == duo.members[1], "the partner keeps their bodycams"
    assert decide_end(duo, CAROL, acknowledge=False, missing=[]) == duo
    assert decide_end(duo, ALICE, acknowledge=False, missing=[]) == duo
    with pytest.raises(Refused) as outsider:
        decide_end(duo, ERIN, acknowledge=True, missing=[])
    assert outsider.value.code == "forbidden"


def test_a_bodycams_footage_names_its_officer_the_dashcams_both() -> None:
    duo = Shift((Member("BOA-1", ("BC-1",)), Member("BOA-2", ("BC-2",))), 1000)
    assert camera_officers(duo, "BC-1") == ["BOA-1"]
    assert camera_officers(duo, "BC-2") == ["BOA-2"]
    assert camera_officers(duo, "DC-1") == ["BOA-1", "BOA-2"]
    assert camera_officers(duo, "") == ["BOA-1", "BOA-2"], "a camera without a serial: the shift"
    assert camera_officers(None, "BC-1") == []
    assert camera_officers(Shift((), 1000), "BC-1") == [], "after a restart: the sealed shift"


@pytest.mark.parametrize(
    "serials",
    ["BC-1", ["x" * 65], ["../x"], ["A", "A"], [f"BC-{i}" for i in range(9)], [7]],
)
def test_bodycam_serials_are_bounded_and_distinct(serials: object) -> None:
    with pytest.raises(ValueError, match=r"serial|bodycam"):
        bodycam_serials(serials)


def test_a_shift_read_back_is_the_shift_written() -> None:
    duo = Shift((Member("BOA-1", ("BC-1", "BC.2")), Member("BOA-2", ())), 1234)
    assert Shift.from_json(duo.to_json()) == duo
    older = {"officer_id": "BOA-1", "bodycam_serials": ["BC-1"], "since_ms": 5}  # before duos
    assert Shift.from_json(older) == Shift((Member("BOA-1", ("BC-1",)),), 5)
    twice = {"officers": [Member("BOA-1", ("BC-1",)).to_json()] * 2, "since_ms": 1}
    shared = {
        "officers": [Member("BOA-1", ("BC-1",)).to_json(), Member("BOA-2", ("BC-1",)).to_json()],
        "since_ms": 1,
    }
    three = {"officers": [Member(f"BOA-{i}", ()).to_json() for i in range(3)], "since_ms": 1}
    for damaged in (
        {},
        {**duo.to_json(), "since_ms": True},
        {**duo.to_json(), "x": 1},
        {"officers": [], "since_ms": 1},
        twice,
        shared,
        three,
    ):
        with pytest.raises(ValueError, match=r"shift|time|twice|officers"):
            Shift.from_json(damaged)


def test_after_a_restart_the_first_officer_to_start_resumes_the_shift() -> None:
    unknown = Shift((), 1000)  # the box restarted: who works it is sealed on disk
    with pytest.raises(Refused) as officer:
        decide_end(unknown, ALICE, acknowledge=True, missing=[])
    assert officer.value.code == "forbidden"
    assert "start the shift again to resume it" in officer.value.message
    assert decide_end(unknown, ADMIN, acknowledge=True, missing=[]) == unknown
    resumed = decide_start(unknown, ShiftStart("BOA-1234", ("BC-3",)), 9000)
    assert resumed.event == "shift.resumed"
    assert resumed.shift == Shift((Member("BOA-1234", ("BC-3",)),), 1000)
    assert resumed.shift.known
    rejoined = decide_start(resumed.shift, ShiftStart("BOA-7", ()), 9500)
    assert rejoined.event == "shift.joined", "the partner joins again"
    view = shift_view(unknown, missing=0, officers_unknown=2)
    assert (view["active"], view["officers"], view["officers_unknown"]) == (True, [], 2)
    assert shift_view(resumed.shift, missing=1, officers_unknown=2)["officers_unknown"] == 0


def test_one_of_a_duo_leaves_and_the_other_works_on() -> None:
    duo = Shift((Member("BOA-1234", ("BC-1",)), Member("BOA-7", ("BC-2",))), 1000)
    left = decide_leave(duo, CAROL, "BOA-7")
    assert (left.event, left.shift) == ("shift.left", Shift((Member("BOA-1234", ("BC-1",)),), 1000))
    assert decide_leave(duo, ADMIN, "BOA-7").shift == left.shift, "an admin may send one off"
    assert decide_leave(duo, LOCAL_IDENTITY, "BOA-1234").shift.officer_ids == ("BOA-7",)
    with pytest.raises(Refused) as other:
        decide_leave(duo, ALICE, "BOA-7")
    assert (other.value.kind, other.value.code) == (RefusalKind.FORBIDDEN, "forbidden")
    with pytest.raises(Refused) as stranger:
        decide_leave(duo, ERIN, "BOA-99")
    assert stranger.value.code == "forbidden"
    with pytest.raises(Refused) as alone:
        decide_leave(left.shift, ALICE, "BOA-1234")
    assert (alone.value.kind, alone.value.code) == (RefusalKind.CONFLICT, "last_officer")
    with pytest.raises(Refused) as unknown:
        decide_leave(Shift((), 1000), ADMIN, "BOA-7")
    assert "resume it first" in unknown.value.message
    with pytest.raises(Refused) as nothing:
        decide_leave(None, ALICE, "BOA-1234")
    assert nothing.value.code == "no_shift"
