"""The shift's rules (RULES R5, docs/webui.md 2): the pure core, no box."""

from __future__ import annotations

import pytest

from gateway.caller import LOCAL_IDENTITY, Identity, RefusalKind, Refused
from gateway.officer.shift import Shift, ShiftStart, bodycam_serials, decide_end, decide_start

ALICE = Identity(channel="web", user="alice", role="officer", officer_id="BOA-1234")
CAROL = Identity(channel="web", user="carol", role="officer", officer_id="BOA-7")
ADMIN = Identity(channel="web", user="bob", role="admin", officer_id="")


def test_one_shift_at_a_time_and_who_may_end_it() -> None:
    running = decide_start(None, ShiftStart("BOA-1234", ("BC-1",)), 1000)
    assert running == Shift("BOA-1234", ("BC-1",), 1000)
    assert decide_start(running, ShiftStart("BOA-1234", ("BC-2",)), 5000) == Shift(
        "BOA-1234", ("BC-2",), 1000
    )
    with pytest.raises(Refused) as taken:
        decide_start(running, ShiftStart("BOA-7", ()), 5000)
    assert (taken.value.kind, taken.value.code) == (RefusalKind.CONFLICT, "shift_active")
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


@pytest.mark.parametrize(
    "serials",
    ["BC-1", ["x" * 65], ["../x"], ["A", "A"], [f"BC-{i}" for i in range(9)], [7]],
)
def test_bodycam_serials_are_bounded_and_distinct(serials: object) -> None:
    with pytest.raises(ValueError, match=r"serial|bodycam"):
        bodycam_serials(serials)


def test_a_shift_read_back_is_the_shift_written() -> None:
    shift = Shift("BOA-1", ("BC-1", "BC.2"), 1234)
    assert Shift.from_json(shift.to_json()) == shift
    for damaged in ({}, {**shift.to_json(), "since_ms": True}, {**shift.to_json(), "x": 1}):
        with pytest.raises(ValueError, match=r"shift|time"):
            Shift.from_json(damaged)


def test_after_a_restart_the_first_officer_to_start_resumes_the_shift() -> None:
    unknown = Shift(None, (), 1000)  # the box restarted: who works it is sealed on disk
    with pytest.raises(Refused) as officer:
        decide_end(unknown, ALICE, acknowledge=True, missing=[])
    assert officer.value.code == "forbidden"
    assert "start the shift again to resume it" in officer.value.message
    assert decide_end(unknown, ADMIN, acknowledge=True, missing=[]) == unknown
    resumed = decide_start(unknown, ShiftStart("BOA-1234", ("BC-3",)), 9000)
    assert resumed == Shift("BOA-1234", ("BC-3",), 1000)
    assert resumed.known
    with pytest.raises(Refused) as taken:
        decide_start(resumed, ShiftStart("BOA-7", ()), 9500)
    assert taken.value.code == "shift_active"
