"""Monthly data budgets: billing cycles (15th, 31-day months, February), the P0 reserve, clock
errors that must never free budget, and strict persistence."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport.binding import LinkBinding
from transport.budget import (
    BudgetState,
    BudgetStateError,
    DataBudget,
    cycle_start_for,
    next_cycle_start,
)
from transport.links import CostClass, LinkConfig
from transport.scheduler import UploadClass

P0, P1, P2 = UploadClass.P0, UploadClass.P1, UploadClass.P2
D = datetime.date
CAP = 10_000
RESERVE = 2_000


def lte(billing_day: int = 15, cap: int | None = CAP, reserve: int = RESERVE) -> LinkConfig:
    return LinkConfig(
        "wwan0",
        CostClass.CELLULAR,
        LinkBinding(interface="wwan0"),
        monthly_cap_bytes=cap,
        billing_day=billing_day,
        p0_reserve_bytes=reserve if cap is not None else 0,
    )


# -- cycles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "billing_day", "cycle_start"),
    [
        (D(2024, 1, 14), 15, D(2023, 12, 15)),  # across the year
        (D(2024, 1, 15), 15, D(2024, 1, 15)),
        (D(2024, 1, 31), 15, D(2024, 1, 15)),  # 31-day month
        (D(2024, 2, 14), 15, D(2024, 1, 15)),
        (D(2024, 2, 29), 15, D(2024, 2, 15)),  # leap day
        (D(2024, 3, 14), 15, D(2024, 2, 15)),
        (D(2023, 2, 28), 28, D(2023, 2, 28)),
        (D(2023, 3, 27), 28, D(2023, 2, 28)),
        (D(2024, 2, 29), 28, D(2024, 2, 28)),
        (D(2024, 3, 1), 28, D(2024, 2, 28)),
        (D(2024, 12, 31), 1, D(2024, 12, 1)),
        (D(2025, 1, 1), 1, D(2025, 1, 1)),
    ],
)
def test_cycle_start_for(day: datetime.date, billing_day: int, cycle_start: datetime.date) -> None:
    assert cycle_start_for(day, billing_day) == cycle_start


@pytest.mark.parametrize("billing_day", [0, 29, 31, -1, True])
def test_cycle_start_rejects_billing_days_not_in_every_month(billing_day: int) -> None:
    with pytest.raises(ValueError, match="billing_day"):
        cycle_start_for(D(2024, 1, 1), billing_day)


@given(st.dates(D(2000, 1, 1), D(2100, 12, 31)), st.integers(1, 28))
def test_the_cycle_contains_the_day(day: datetime.date, billing_day: int) -> None:
    start = cycle_start_for(day, billing_day)
    end = next_cycle_start(start, billing_day)
    assert start.day == end.day == billing_day
    assert start <= day < end
    assert 28 <= (end - start).days <= 31


# -- P0 reserve ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used_bytes", "remaining"),
    [
        (0, {P0: 10_000, P1: 8_000, P2: 8_000}),
        (7_999, {P0: 2_001, P1: 1, P2: 1}),
        (8_000, {P0: 2_000, P1: 0, P2: 0}),
        (9_500, {P0: 500, P1: 0, P2: 0}),  # P0 spent into its reserve
        (10_000, {P0: 0, P1: 0, P2: 0}),
        (12_345, {P0: 0, P1: 0, P2: 0}),  # sent past the cap: recorded, never negative
    ],
)
def test_p0_reserve(used_bytes: int, remaining: dict[UploadClass, int]) -> None:
    today = D(2024, 1, 20)
    budget = DataBudget(lte(), BudgetState(D(2024, 1, 15), used_bytes))
    assert budget.remaining_by_class(today) == remaining
    for upload_class, left in remaining.items():
        assert budget.remaining_bytes(upload_class, today) == left
        assert budget.may_spend(upload_class, left, today)
        assert not budget.may_spend(upload_class, left + 1, today)


def test_spending_p0_reserve_leaves_p1_nothing() -> None:
    today = D(2024, 1, 20)
    budget = DataBudget.fresh(lte(), today)
    assert budget.may_spend(P1, 8_000, today)
    budget.spend(8_000, today)
    assert not budget.may_spend(P1, 1, today)
    assert budget.may_spend(P0, 2_000, today)
    budget.spend(1_500, today)
    assert budget.remaining_by_class(today) == {P0: 500, P1: 0, P2: 0}


def test_no_cap_is_unlimited() -> None:
    today = D(2024, 1, 20)
    budget = DataBudget.fresh(lte(cap=None), today)
    budget.spend(10**15, today)
    assert budget.remaining_by_class(today) == {P0: None, P1: None, P2: None}
    assert budget.may_spend(P2, 10**15, today)


@pytest.mark.parametrize("body_bytes", [-1, True, 1.0])
def test_byte_counts_must_be_ints(body_bytes: Any) -> None:
    budget = DataBudget.fresh(lte(), D(2024, 1, 20))
    with pytest.raises(ValueError, match="body_bytes"):
        budget.spend(body_bytes, D(2024, 1, 20))
    with pytest.raises(ValueError, match="body_bytes"):
        budget.may_spend(P0, body_bytes, D(2024, 1, 20))
    assert budget.state.used_bytes == 0


# -- across cycle boundaries -----------------------------------------------------------------

# (day, bytes spent that day, used_bytes after, cycle_start after)
Day = tuple[datetime.date, int, int, datetime.date]

CYCLE_CASES: dict[str, tuple[int, list[Day]]] = {
    "billing day 15 through a 31-day month": (
        15,
        [
            (D(2024, 1, 14), 9_000, 9_000, D(2023, 12, 15)),
            (D(2024, 1, 15), 100, 100, D(2024, 1, 15)),
            (D(2024, 1, 31), 200, 300, D(2024, 1, 15)),
            (D(2024, 2, 14), 300, 600, D(2024, 1, 15)),
            (D(2024, 2, 15), 50, 50, D(2024, 2, 15)),
        ],
    ),
    "billing day 28 through February": (
        28,
        [
            (D(2023, 2, 27), 5_000, 5_000, D(2023, 1, 28)),
            (D(2023, 2, 28), 10, 10, D(2023, 2, 28)),
            (D(2023, 3, 27), 10, 20, D(2023, 2, 28)),
            (D(2023, 3, 28), 10, 10, D(2023, 3, 28)),
        ],
    ),
    "a leap February with billing day 1": (
        1,
        [
            (D(2024, 2, 1), 10, 10, D(2024, 2, 1)),
            (D(2024, 2, 29), 10, 20, D(2024, 2, 1)),
            (D(2024, 3, 1), 10, 10, D(2024, 3, 1)),
        ],
    ),
    "a quiet month is skipped whole": (
        15,
        [
            (D(2024, 1, 20), 700, 700, D(2024, 1, 15)),
            (D(2024, 4, 2), 5, 5, D(2024, 3, 15)),
        ],
    ),
    "the clock steps back less than a cycle: keep counting": (
        15,
        [
            (D(2024, 3, 15), 4_000, 4_000, D(2024, 3, 15)),
            (D(2024, 3, 14), 100, 4_100, D(2024, 3, 15)),
            (D(2024, 2, 20), 100, 4_200, D(2024, 3, 15)),
            (D(2024, 3, 16), 100, 4_300, D(2024, 3, 15)),
        ],
    ),
    "the clock was far ahead: re-anchor and keep the bytes": (
        15,
        [
            (D(2099, 1, 20), 4_000, 4_000, D(2099, 1, 15)),
            (D(2024, 3, 20), 100, 4_100, D(2024, 3, 15)),
            (D(2024, 4, 14), 100, 4_200, D(2024, 3, 15)),
            (D(2024, 4, 15), 100, 100, D(2024, 4, 15)),
        ],
    ),
}


@pytest.mark.parametrize(("billing_day", "days"), CYCLE_CASES.values(), ids=CYCLE_CASES.keys())
def test_spending_across_cycles(billing_day: int, days: list[Day]) -> None:
    budget = DataBudget.fresh(lte(billing_day, cap=10**9), days[0][0])
    observed = []
    for today, spent, _, _ in days:
        budget.spend(spent, today)
        observed.append((today, spent, budget.state.used_bytes, budget.state.cycle_start))
    assert observed == days


def test_a_new_cycle_frees_the_budget_and_queries_do_not_roll() -> None:
    budget = DataBudget(lte(), BudgetState(D(2023, 12, 15), 9_000))
    before = budget.state
    assert budget.remaining_bytes(P1, D(2024, 1, 14)) == 0
    assert budget.remaining_bytes(P1, D(2024, 1, 15)) == 8_000
    assert budget.may_spend(P1, 8_000, D(2024, 1, 15))
    assert budget.state == before
    budget.roll(D(2024, 1, 15))
    assert budget.state == BudgetState(D(2024, 1, 15), 0)


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 5_000)),
        max_size=40,
    ),
    st.integers(1, 28),
)
def test_used_bytes_are_the_sum_spent_in_the_current_cycle(
    steps: list[tuple[int, int]], billing_day: int
) -> None:
    """With a clock that only moves forward, used = what was spent since the cycle began."""
    today = D(2024, 1, 1)
    budget = DataBudget.fresh(lte(billing_day), today)
    spent_on: list[tuple[datetime.date, int]] = []
    for days_later, body_bytes in steps:
        today += datetime.timedelta(days=days_later)
        budget.spend(body_bytes, today)
        spent_on.append((today, body_bytes))
        start = cycle_start_for(today, billing_day)
        assert budget.state.cycle_start == start
        assert budget.state.used_bytes == sum(n for day, n in spent_on if day >= start)
        used_bytes = budget.state.used_bytes
        assert budget.remaining_by_class(today) == {
            P0: max(0, CAP - used_bytes),
            P1: max(0, CAP - RESERVE - used_bytes),
            P2: max(0, CAP - RESERVE - used_bytes),
        }


# -- persistence -----------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    state = BudgetState(D(2024, 2, 15), 123_456_789)
    text = json.dumps(state.to_dict())
    assert json.loads(text) == {"cycle_start": "2024-02-15", "used_bytes": 123_456_789}
    assert BudgetState.from_dict(json.loads(text)) == state


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"cycle_start": "2024-02-15"},
        {"cycle_start": "2024-02-15", "used_bytes": 1, "extra": 0},
        {"cycle_start": "2024-02-15", "used_bytes": -1},
        {"cycle_start": "2024-02-15", "used_bytes": True},
        {"cycle_start": "2024-02-15", "used_bytes": 1.0},
        {"cycle_start": "2024-02-15", "used_bytes": "1"},
        {"cycle_start": "2024-2-15", "used_bytes": 1},
        {"cycle_start": "20240215", "used_bytes": 1},
        {"cycle_start": "2024-02-15T00:00:00", "used_bytes": 1},
        {"cycle_start": "2024-02-30", "used_bytes": 1},
        {"cycle_start": 20240215, "used_bytes": 1},
        {"cycle_start": None, "used_bytes": 1},
    ],
    ids=repr,
)
def test_state_from_dict_is_strict(data: dict[str, Any]) -> None:
    with pytest.raises(BudgetStateError):
        BudgetState.from_dict(data)


@pytest.mark.parametrize(
    ("cycle_start", "used_bytes"),
    [
        (datetime.datetime(2024, 2, 15), 0),  # a datetime is not a date here
        ("2024-02-15", 0),
        (D(2024, 2, 15), -1),
        (D(2024, 2, 15), False),
    ],
    ids=repr,
)
def test_state_constructor_is_strict(cycle_start: Any, used_bytes: Any) -> None:
    with pytest.raises(BudgetStateError):
        BudgetState(cycle_start, used_bytes)
