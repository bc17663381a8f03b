"""Link config validation, the health state machine (hysteresis, hold-down) and the rate limit."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport.binding import LinkBinding
from transport.links import (
    HOLD_DOWN_MAX_S,
    HOLD_DOWN_MIN_S,
    MIN_GOODPUT_SAMPLE_BYTES,
    CostClass,
    LinkConfig,
    LinkHealth,
    LinkState,
    rate_limit_bytes_per_s,
)

UP, PROBING, DOWN = LinkState.UP, LinkState.PROBING, LinkState.DOWN
Step = tuple[float, str, LinkState]


def lte_config(**changes: Any) -> LinkConfig:
    fields: dict[str, Any] = {
        "name": "wwan0",
        "cost_class": CostClass.CELLULAR,
        "binding": LinkBinding(interface="wwan0"),
        "monthly_cap_bytes": 10_000,
        "billing_day": 15,
        "p0_reserve_bytes": 2_000,
    }
    fields.update(changes)
    return LinkConfig(**fields)


def apply(health: LinkHealth, now_s: float, event: str) -> None:
    if event == "ok":
        health.observe_success(now_s)
    elif event == "fail":
        health.observe_failure(now_s)
    elif event == "carrier_down":
        health.observe_carrier(now_s, up=False)
    elif event == "carrier_up":
        health.observe_carrier(now_s, up=True)
    else:
        assert event == "check"


def run(steps: list[Step]) -> list[tuple[float, str, LinkState]]:
    """Feed the steps to a new link; return what state it was in after each one."""
    health = LinkHealth()
    observed = []
    for now_s, event, _ in steps:
        apply(health, now_s, event)
        observed.append((now_s, event, health.state(now_s)))
        assert health.usable(now_s) == (health.state(now_s) is UP)
    return observed


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"name": ""},
        {"cost_class": "cellular"},
        {"binding": None},
        {"billing_day": 0},
        {"billing_day": 29},
        {"billing_day": True},
        {"monthly_cap_bytes": 0},
        {"monthly_cap_bytes": -1},
        {"monthly_cap_bytes": 1.5},
        {"rate_cap_bytes_per_s": 0},
        {"headroom_fraction": -0.01},
        {"headroom_fraction": 0.51},
        {"headroom_fraction": math.nan},
        {"headroom_fraction": True},
        {"p0_reserve_bytes": -1},
        {"p0_reserve_bytes": 10_001},
        {"monthly_cap_bytes": None, "p0_reserve_bytes": 1},
        {"udp_allowed": 1},
    ],
    ids=repr,
)
def test_link_config_rejects(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case names its own field
        lte_config(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"billing_day": 1},
        {"billing_day": 28},
        {"headroom_fraction": 0.5},
        {"p0_reserve_bytes": 10_000},
        {"monthly_cap_bytes": None, "p0_reserve_bytes": 0},
        {"rate_cap_bytes_per_s": 1},
    ],
    ids=repr,
)
def test_link_config_accepts_the_bounds(changes: dict[str, Any]) -> None:
    config = lte_config(**changes)
    for field, value in changes.items():
        assert getattr(config, field) == value


# -- the state table -------------------------------------------------------------------------

HYSTERESIS_CASES: dict[str, list[Step]] = {
    "a new link is probed before use": [
        (0, "check", PROBING),
        (0, "ok", UP),
    ],
    "a failed first probe holds the link down": [
        (0, "fail", DOWN),
        (29.9, "check", DOWN),
        (30, "check", PROBING),
        (30, "ok", UP),
    ],
    "two failures in a row stay up, the third goes down": [
        (0, "ok", UP),
        (1, "fail", UP),
        (2, "fail", UP),
        (3, "fail", DOWN),
    ],
    "a success resets the failure count": [
        (0, "ok", UP),
        (1, "fail", UP),
        (2, "fail", UP),
        (3, "ok", UP),
        (4, "fail", UP),
        (5, "fail", UP),
    ],
    "carrier loss is down at once": [
        (0, "ok", UP),
        (5, "carrier_down", DOWN),
    ],
    "carrier back within the hold-down stays down": [
        (0, "ok", UP),
        (5, "carrier_down", DOWN),
        (6, "carrier_up", DOWN),
        (34.9, "check", DOWN),
        (35, "check", PROBING),
        (35, "ok", UP),
    ],
    "hold-down passed but no carrier stays down": [
        (0, "ok", UP),
        (5, "carrier_down", DOWN),
        (100, "check", DOWN),
        (100, "ok", DOWN),
        (101, "carrier_up", PROBING),
        (101, "ok", UP),
    ],
    "a success within the hold-down does not bring the link up": [
        (0, "ok", UP),
        (1, "fail", UP),
        (2, "fail", UP),
        (3, "fail", DOWN),
        (10, "ok", DOWN),
        (32.9, "ok", DOWN),
        (33, "ok", UP),
    ],
    "a failure while down restarts the hold-down": [
        (0, "ok", UP),
        (1, "fail", UP),
        (2, "fail", UP),
        (3, "fail", DOWN),
        (20, "fail", DOWN),
        (33, "check", DOWN),
        (49.9, "check", DOWN),
        (50, "check", PROBING),
    ],
    "a failed probe restarts the hold-down without doubling it": [
        (0, "ok", UP),
        (1, "carrier_down", DOWN),
        (2, "carrier_up", DOWN),
        (31, "check", PROBING),
        (31, "fail", DOWN),
        (60.9, "check", DOWN),
        (61, "check", PROBING),
    ],
    "carrier lost while probing is down": [
        (0, "check", PROBING),
        (1, "carrier_down", DOWN),
        (2, "carrier_up", DOWN),
        (31, "check", PROBING),
    ],
    "repeated carrier-down reports do not extend the hold-down": [
        (0, "ok", UP),
        (1, "carrier_down", DOWN),
        (20, "carrier_down", DOWN),
        (25, "carrier_up", DOWN),
        (31, "check", PROBING),
    ],
    "carrier-up while up changes nothing": [
        (0, "ok", UP),
        (1, "carrier_up", UP),
        (2, "fail", UP),
    ],
}


@pytest.mark.parametrize("steps", HYSTERESIS_CASES.values(), ids=HYSTERESIS_CASES.keys())
def test_state_table(steps: list[Step]) -> None:
    assert run(steps) == steps


def test_alternating_success_and_failure_does_not_flap() -> None:
    health = LinkHealth()
    health.observe_success(0.0)
    states = set()
    for i in range(1, 1001):
        if i % 2:
            health.observe_failure(float(i))
        else:
            health.observe_success(float(i))
        states.add(health.state(float(i)))
    assert states == {UP}
    assert 0.4 < health.loss_hint < 0.6


def test_two_failures_then_success_repeated_never_goes_down() -> None:
    health = LinkHealth()
    health.observe_success(0.0)
    for i in range(300):
        now_s = 3.0 * i
        health.observe_failure(now_s + 1)
        health.observe_failure(now_s + 2)
        health.observe_success(now_s + 3)
        assert health.usable(now_s + 3)


def flap(health: LinkHealth, up_at_s: float, up_for_s: float) -> float:
    """Bring the probing link up at `up_at_s`, lose the carrier `up_for_s` later and get it back.
    Returns the hold-down the link then applied, checked at both edges."""
    assert health.state(up_at_s) is PROBING
    health.observe_success(up_at_s)
    down_at_s = up_at_s + up_for_s
    assert health.usable(down_at_s)
    health.observe_carrier(down_at_s, up=False)
    health.observe_carrier(down_at_s, up=True)
    probe_at_s = health.probe_due_at_s()
    assert probe_at_s is not None
    assert health.state(probe_at_s - 0.001) is DOWN
    assert health.state(probe_at_s) is PROBING
    assert health.hold_down_s == probe_at_s - down_at_s
    return probe_at_s - down_at_s


def test_hold_down_doubles_per_flap_up_to_ten_minutes() -> None:
    health = LinkHealth()
    now_s = 0.0
    hold_downs_s = []
    for _ in range(7):
        hold_down_s = flap(health, now_s, up_for_s=1.0)
        hold_downs_s.append(hold_down_s)
        now_s += 1.0 + hold_down_s
    assert hold_downs_s == [30, 60, 120, 240, 480, 600, 600]
    assert hold_downs_s[0] == HOLD_DOWN_MIN_S
    assert hold_downs_s[-1] == HOLD_DOWN_MAX_S


@pytest.mark.parametrize(
    ("up_for_s", "next_hold_down_s"),
    [(1.0, 240.0), (599.5, 240.0), (600.0, 30.0), (3600.0, 30.0)],
)
def test_hold_down_resets_after_ten_minutes_up(up_for_s: float, next_hold_down_s: float) -> None:
    health = LinkHealth()
    now_s = 0.0
    for _ in range(3):  # 30, 60, 120
        now_s += 1.0 + flap(health, now_s, up_for_s=1.0)
    assert flap(health, now_s, up_for_s) == next_hold_down_s


def test_probe_due_is_none_while_up_or_without_carrier() -> None:
    health = LinkHealth()
    assert health.probe_due_at_s() == -math.inf
    health.observe_success(0.0)
    assert health.probe_due_at_s() is None
    health.observe_carrier(10.0, up=False)
    assert health.probe_due_at_s() is None
    health.observe_carrier(12.0, up=True)
    assert health.probe_due_at_s() == 40.0


def test_link_that_boots_without_carrier_probes_when_it_comes() -> None:
    health = LinkHealth(carrier_up=False)
    assert health.state(0.0) is DOWN
    health.observe_success(0.0)
    assert health.state(0.0) is DOWN
    health.observe_carrier(5.0, up=True)
    assert health.state(5.0) is PROBING


# -- measurements ----------------------------------------------------------------------------


def test_rtt_is_smoothed_from_the_first_sample() -> None:
    health = LinkHealth()
    assert health.rtt_s is None
    health.observe_rtt(0.0, 0.100)
    assert health.rtt_s == pytest.approx(0.100)
    health.observe_success(1.0, rtt_s=0.200)
    assert health.rtt_s == pytest.approx(0.1125)


def test_loss_hint_is_an_ewma_of_failed_requests() -> None:
    health = LinkHealth()
    assert health.loss_hint == 0.0
    health.observe_failure(0.0)
    assert health.loss_hint == pytest.approx(0.1)
    health.observe_success(1.0)
    assert health.loss_hint == pytest.approx(0.09)


@given(st.lists(st.booleans(), max_size=200))
def test_loss_hint_stays_within_zero_and_one(outcomes: list[bool]) -> None:
    health = LinkHealth()
    for i, ok in enumerate(outcomes):
        if ok:
            health.observe_success(float(i))
        else:
            health.observe_failure(float(i))
        assert 0.0 <= health.loss_hint <= 1.0


def test_goodput_is_smoothed_and_ignores_small_bodies() -> None:
    health = LinkHealth()
    health.observe_transfer(0.0, MIN_GOODPUT_SAMPLE_BYTES - 1, 0.001)
    assert health.goodput_bytes_per_s is None
    health.observe_transfer(1.0, 1_000_000, 1.0)
    assert health.goodput_bytes_per_s == pytest.approx(1_000_000)
    health.observe_transfer(2.0, 2_000_000, 1.0)
    assert health.goodput_bytes_per_s == pytest.approx(1_250_000)
    health.observe_transfer(3.0, 1_000_000, 2.0)
    assert health.goodput_bytes_per_s == pytest.approx(1_062_500)


@pytest.mark.parametrize(
    ("sample_bytes_per_s", "paced_bytes_per_s", "goodput_after"),
    [
        (800_000, 800_000, 1_000_000),  # at the pacer's rate: says nothing about less capacity
        (720_000, 800_000, 1_000_000),  # 90 % of the pace still counts as paced
        (1_200_000, 1_300_000, 1_200_000),  # paced but faster than thought: raises
        (400_000, 800_000, 850_000),  # well under the pace: the link is slower, EWMA
        (400_000, None, 850_000),  # unpaced: EWMA
    ],
)
def test_paced_transfers_never_lower_the_goodput(
    sample_bytes_per_s: int, paced_bytes_per_s: int | None, goodput_after: int
) -> None:
    health = LinkHealth()
    health.observe_transfer(0.0, 1_000_000, 1.0)
    health.observe_transfer(1.0, sample_bytes_per_s, 1.0, paced_bytes_per_s)
    assert health.goodput_bytes_per_s == pytest.approx(goodput_after)


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("observe_rtt", (0.0, -0.001)),
        ("observe_rtt", (0.0, math.nan)),
        ("observe_rtt", (math.inf, 0.1)),
        ("observe_success", (math.nan,)),
        ("observe_failure", (math.nan,)),
        ("observe_carrier", (math.nan, True)),
        ("observe_transfer", (0.0, 1_000_000, 0.0)),
        ("observe_transfer", (0.0, 1_000_000, -1.0)),
        ("observe_transfer", (0.0, 1_000_000, math.inf)),
        ("observe_transfer", (0.0, -1, 1.0)),
        ("observe_transfer", (0.0, True, 1.0)),
    ],
    ids=repr,
)
def test_impossible_observations_are_refused(method: str, args: tuple[Any, ...]) -> None:
    health = LinkHealth()
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the argument
        getattr(health, method)(*args)
    assert health.rtt_s is None
    assert health.goodput_bytes_per_s is None


# -- rate limit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate_cap", "headroom", "goodput", "expected"),
    [
        (None, 0.0, None, None),
        (None, 0.2, None, None),  # nothing measured yet: unpaced
        (None, 0.0, 1_000_000, None),  # no headroom: nothing to leave free
        (500_000, 0.0, 1_000_000, 500_000),
        (500_000, 0.2, None, 500_000),
        (None, 0.2, 1_000_000, 800_000),
        (700_000, 0.2, 1_000_000, 700_000),
        (900_000, 0.2, 1_000_000, 800_000),
        (None, 0.5, 1, 1),  # never paced to zero
    ],
)
def test_rate_limit(
    rate_cap: int | None, headroom: float, goodput: int | None, expected: int | None
) -> None:
    config = lte_config(rate_cap_bytes_per_s=rate_cap, headroom_fraction=headroom)
    health = LinkHealth()
    if goodput is not None:
        body_bytes = MIN_GOODPUT_SAMPLE_BYTES
        health.observe_transfer(0.0, body_bytes, body_bytes / goodput)
    assert rate_limit_bytes_per_s(config, health) == expected


def test_rate_limit_does_not_shrink_when_it_measures_itself() -> None:
    config = lte_config(headroom_fraction=0.2)
    health = LinkHealth()
    health.observe_transfer(0.0, 4_000_000, 4.0)
    limits = []
    for i in range(1, 51):
        limit = rate_limit_bytes_per_s(config, health)
        assert limit is not None
        limits.append(limit)
        # the pacer held the transfer to exactly the limit
        health.observe_transfer(float(i), 4 * limit, 4.0, paced_bytes_per_s=limit)
    assert set(limits) == {800_000}
