"""The upload plan: class rules, order, slots, budgets, transports and the officer's reasons."""

from __future__ import annotations

import datetime
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport.binding import LinkBinding
from transport.budget import DataBudget
from transport.links import CostClass, LinkConfig
from transport.scheduler import (
    MIB,
    Assignment,
    LinkView,
    SchedulerPolicy,
    UploadCandidate,
    UploadClass,
    choose_transport,
    explain_waiting,
    plan,
    waiting_code,
)
from transport.wait_reasons import WaitCode, WaitReason

P0, P1, P2 = UploadClass.P0, UploadClass.P1, UploadClass.P2
NOW_S = 1_000.0
POLICY = SchedulerPolicy()
UNLIMITED: Mapping[UploadClass, int | None] = {P0: None, P1: None, P2: None}
WIFI = LinkConfig("wlan0", CostClass.WIFI, LinkBinding(interface="wlan0"))
LTE = LinkConfig(
    "wwan0",
    CostClass.CELLULAR,
    LinkBinding(interface="wwan0"),
    monthly_cap_bytes=1024 * MIB,
    p0_reserve_bytes=100 * MIB,
)
LTE_H3 = LinkConfig("wwan0", CostClass.CELLULAR, LinkBinding(), prefer_h3=True)


def _wifi_named(name: str) -> LinkConfig:
    return LinkConfig(name, CostClass.WIFI, LinkBinding(interface=name))


def view(
    config: LinkConfig,
    *,
    usable: bool = True,
    active: int = 0,
    budget: Mapping[UploadClass, int | None] = UNLIMITED,
    rtt_s: float | None = 0.02,
    loss_hint: float = 0.0,
    udp_blocked: bool = False,
) -> LinkView:
    return LinkView(config, usable, active, budget, rtt_s, loss_hint, udp_blocked)


def wifi(**kwargs: Any) -> LinkView:
    return view(WIFI, **kwargs)


def lte(**kwargs: Any) -> LinkView:
    return view(LTE, **kwargs)


def budget(p0_bytes: int, p1_bytes: int) -> dict[UploadClass, int | None]:
    return {P0: p0_bytes, P1: p1_bytes, P2: p1_bytes}


def cand(
    file_id: str,
    upload_class: UploadClass = P1,
    *,
    remaining: int = MIB,
    size: int | None = None,
    created_at_ms: int = 0,
    not_before_s: float = 0.0,
    blocked_reason: str | None = None,
) -> UploadCandidate:
    return UploadCandidate(
        file_id,
        remaining if size is None else size,
        remaining,
        upload_class,
        created_at_ms,
        not_before_s,
        blocked_reason,
    )


def placed(
    candidates: list[UploadCandidate],
    links: list[LinkView],
    in_flight: Mapping[str, str] | None = None,
    policy: SchedulerPolicy = POLICY,
) -> dict[str, str]:
    """file id -> link of the plan (insertion order = plan order)."""
    assignments = plan(NOW_S, candidates, links, in_flight or {}, policy)
    return {a.file_id: a.link for a in assignments}


# -- order -----------------------------------------------------------------------------------


def test_order_is_class_then_oldest_then_file_id() -> None:
    candidates = [
        cand("p2-old", P2, created_at_ms=1),
        cand("p1-new", P1, created_at_ms=9),
        cand("p1-b", P1, created_at_ms=5),
        cand("p1-a", P1, created_at_ms=5),
        cand("p0-new", P0, created_at_ms=8),
        cand("p0-old", P0, created_at_ms=2),
    ]
    wide = SchedulerPolicy(max_parallel_per_link=10)
    assert list(placed(candidates, [wifi()], policy=wide)) == [
        "p0-old",
        "p0-new",
        "p1-a",
        "p1-b",
        "p1-new",
        "p2-old",
    ]


def test_the_oldest_gets_the_last_slot() -> None:
    candidates = [cand(f"f{i}", P2, created_at_ms=10 - i) for i in range(5)]
    assert placed(candidates, [wifi(active=1)]) == {"f4": "wlan0"}


def test_plan_is_deterministic_whatever_the_input_order() -> None:
    candidates = [
        cand(f"f{i}", [P0, P1, P2][i % 3], created_at_ms=i // 2, remaining=(i + 1) * 10 * MIB)
        for i in range(8)
    ]
    links = [wifi(active=1), lte(budget=budget(200 * MIB, 100 * MIB)), view(_wifi_named("wlan1"))]
    expected = plan(NOW_S, candidates, links, {}, POLICY)
    assert expected  # the case must schedule something to mean anything
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(candidates)
        rng.shuffle(links)
        assert plan(NOW_S, candidates, links, {}, POLICY) == expected


# -- what is never scheduled -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "in_flight", "expected"),
    [
        (cand("f"), {}, {"f": "wlan0"}),
        (cand("f"), {"f": "wlan0"}, {}),
        (cand("f"), {"f": "gone0"}, {}),  # in flight on a link that vanished: still in flight
        (cand("f", blocked_reason="pin mismatch"), {}, {}),
        (cand("f", P0, blocked_reason="integrity"), {}, {}),
        (cand("f", not_before_s=NOW_S + 0.001), {}, {}),
        (cand("f", not_before_s=NOW_S), {}, {"f": "wlan0"}),
    ],
    ids=["ready", "in flight", "in flight elsewhere", "blocked", "blocked P0", "backoff", "due"],
)
def test_skips_in_flight_blocked_and_backoff(
    candidate: UploadCandidate, in_flight: dict[str, str], expected: dict[str, str]
) -> None:
    assert placed([candidate], [wifi()], in_flight) == expected


# -- class rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("links", "expected"),
    [
        ([lte()], {}),
        ([lte(), wifi(usable=False)], {}),
        ([lte(), wifi()], {"f": "wlan0"}),
    ],
    ids=["only LTE", "WiFi down", "WiFi up"],
)
def test_p2_waits_for_wifi(links: list[LinkView], expected: dict[str, str]) -> None:
    assert placed([cand("f", P2)], links) == expected


@pytest.mark.parametrize(
    ("remaining", "size", "expected"),
    [
        (64 * MIB, 64 * MIB, {"f": "wwan0"}),
        (64 * MIB + 1, 64 * MIB + 1, {}),
        (64 * MIB, 500 * MIB, {"f": "wwan0"}),  # a big file mostly sent: the rest fits
        (0, 500 * MIB, {"f": "wwan0"}),  # fully sent, awaiting the final check
    ],
)
def test_p1_size_limit_on_cellular(remaining: int, size: int, expected: dict[str, str]) -> None:
    assert placed([cand("f", remaining=remaining, size=size)], [lte()]) == expected


def test_p1_size_limit_is_a_policy() -> None:
    small = SchedulerPolicy(cellular_max_file_bytes=MIB - 1)
    assert placed([cand("f", remaining=MIB)], [lte()], policy=small) == {}


def test_wifi_drops_and_p1_continues_on_lte() -> None:
    big = cand("f", remaining=10 * MIB)
    assert placed([big], [wifi(), lte()]) == {"f": "wlan0"}
    assert placed([big], [wifi(usable=False), lte()]) == {"f": "wwan0"}
    assert placed([big], [lte()]) == {"f": "wwan0"}


@pytest.mark.parametrize(
    ("prefer_wifi", "expected"),
    [(True, {}), (False, {"f": "wwan0"})],
)
def test_p1_waits_for_busy_wifi_rather_than_spend_lte(
    prefer_wifi: bool, expected: dict[str, str]
) -> None:
    policy = SchedulerPolicy(prefer_wifi=prefer_wifi)
    assert placed([cand("f")], [wifi(active=2), lte()], policy=policy) == expected


def test_p1_uses_lte_when_wifi_cannot_pay_for_it() -> None:
    capped_wifi = wifi(budget=budget(0, 0))
    assert placed([cand("f")], [capped_wifi, lte()]) == {"f": "wwan0"}


@pytest.mark.parametrize(
    ("links", "expected_link"),
    [
        ([wifi(), lte()], "wlan0"),
        ([wifi(active=2), lte()], "wlan0"),  # the P0 extra slot on WiFi
        ([wifi(active=3), lte()], "wwan0"),  # WiFi full even for P0: LTE, now
        ([wifi(usable=False), lte()], "wwan0"),
        ([lte(active=2)], "wwan0"),
    ],
    ids=["WiFi", "WiFi busy", "WiFi full", "WiFi down", "LTE busy"],
)
def test_p0_goes_on_any_link_wifi_first(links: list[LinkView], expected_link: str) -> None:
    assert placed([cand("f", P0, remaining=900 * MIB)], links) == {"f": expected_link}


# -- slots -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("active", "in_flight_here", "expected_count"),
    [(0, 0, 2), (1, 0, 1), (2, 0, 0), (5, 0, 0), (0, 1, 1), (0, 2, 0), (1, 2, 0)],
)
def test_max_parallel_per_link(active: int, in_flight_here: int, expected_count: int) -> None:
    """Slots taken are the larger of the view's count and the in-flight map (a stale view)."""
    running = [cand(f"run{i}", P2) for i in range(in_flight_here)]
    waiting = [cand(f"f{i}", P2) for i in range(5)]
    in_flight = {c.file_id: "wlan0" for c in running}
    assert len(placed(running + waiting, [wifi(active=active)], in_flight)) == expected_count


@pytest.mark.parametrize(
    ("active", "classes", "expected"),
    [
        (2, [P0, P1], ["a"]),
        (2, [P0, P0], ["a"]),  # one extra slot per link, not one per P0
        (3, [P0, P1], []),
        (1, [P0, P1], ["a"]),  # P0 took the last normal slot; P1 may not use the extra one
        (0, [P0, P0, P0, P1], ["a", "b", "c"]),
        (0, [P1, P1, P0], ["c", "a"]),
    ],
)
def test_p0_may_exceed_the_limit_by_one(
    active: int, classes: list[UploadClass], expected: list[str]
) -> None:
    candidates = [cand(file_id, c) for file_id, c in zip("abcd", classes, strict=False)]
    assert list(placed(candidates, [wifi(active=active)])) == expected


def test_load_is_spread_over_equal_links() -> None:
    candidates = [cand(f"f{i}", P2, created_at_ms=i) for i in range(4)]
    links = [wifi(), view(_wifi_named("wlan1"))]
    assert placed(candidates, links) == {
        "f0": "wlan0",
        "f1": "wlan1",
        "f2": "wlan0",
        "f3": "wlan1",
    }


# -- budgets ---------------------------------------------------------------------------------


def test_lte_budget_runs_out_p2_waits_for_wifi_p0_still_goes() -> None:
    today = datetime.date(2024, 3, 20)
    data_budget = DataBudget.fresh(LTE, today)
    data_budget.spend(1024 * MIB - 100 * MIB, today)  # everything but the P0 reserve
    lte_now = lte(budget=data_budget.remaining_by_class(today))
    candidates = [
        cand("incident", P0, remaining=5 * MIB),
        cand("evidence", P1, remaining=5 * MIB),
        cand("routine", P2, remaining=5 * MIB),
    ]
    assert placed(candidates, [lte_now, wifi(usable=False)]) == {"incident": "wwan0"}
    assert explain_waiting(candidates[1], [lte_now], POLICY, NOW_S) == (
        "wwan0 budget used up, waiting for WiFi"
    )
    assert explain_waiting(candidates[2], [lte_now], POLICY, NOW_S) == (
        "waiting for WiFi (routine)"
    )
    wide = SchedulerPolicy(max_parallel_per_link=3)
    assert placed(candidates, [lte_now, wifi()], policy=wide) == {
        "incident": "wlan0",
        "evidence": "wlan0",
        "routine": "wlan0",
    }


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [(100 * MIB, {"f": "wwan0"}), (100 * MIB + 1, {})],
)
def test_p0_stays_within_the_p0_budget(remaining: int, expected: dict[str, str]) -> None:
    links = [lte(budget=budget(100 * MIB, 0))]
    assert placed([cand("f", P0, remaining=remaining)], links) == expected


def test_budget_is_committed_within_one_plan() -> None:
    candidates = [cand(f"f{i}", P1, remaining=30 * MIB, created_at_ms=i) for i in range(3)]
    links = [lte(budget=budget(100 * MIB, 80 * MIB))]
    assert placed(candidates, links) == {"f0": "wwan0", "f1": "wwan0"}


def test_p0_commits_against_the_p1_budget_too() -> None:
    candidates = [
        cand("incident", P0, remaining=60 * MIB),
        cand("evidence", P1, remaining=30 * MIB),
    ]
    links = [lte(budget=budget(100 * MIB, 80 * MIB))]
    assert placed(candidates, links) == {"incident": "wwan0"}


@pytest.mark.parametrize(
    ("new_remaining", "expected"),
    [(30 * MIB, {"new": "wwan0"}), (30 * MIB + 1, {})],
)
def test_bytes_still_to_send_in_flight_are_reserved(
    new_remaining: int, expected: dict[str, str]
) -> None:
    running = cand("running", P1, remaining=50 * MIB)
    new = cand("new", P1, remaining=new_remaining)
    links = [lte(budget=budget(100 * MIB, 80 * MIB))]
    assert placed([running, new], links, {"running": "wwan0"}) == expected


# -- transport -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "rtt_s", "loss_hint", "udp_blocked", "expected"),
    [
        (WIFI, 0.5, 0.2, False, "https"),  # measured: HTTPS wins on every emulated link
        (LTE, 0.3, 0.05, False, "https"),
        (LTE_H3, None, 0.0, False, "h3"),  # configured to prefer HTTP/3
        (LTE_H3, 0.3, 0.05, True, "https"),  # ... but UDP was found blocked
        (replace(LTE_H3, udp_allowed=False), 0.3, 0.05, False, "https"),
    ],
    ids=["wifi", "lte", "prefer h3", "udp blocked", "udp not allowed"],
)
def test_choose_transport(
    config: LinkConfig, rtt_s: float | None, loss_hint: float, udp_blocked: bool, expected: str
) -> None:
    link = view(config, rtt_s=rtt_s, loss_hint=loss_hint, udp_blocked=udp_blocked)
    assert choose_transport(link) == expected


def test_assignment_carries_the_links_transport() -> None:
    h3_lte = view(LTE_H3)
    assert plan(NOW_S, [cand("f", P0)], [h3_lte], {}, POLICY) == [Assignment("f", "wwan0", "h3")]


# -- the officer's reasons -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "links", "reason"),
    [
        (cand("f", blocked_reason="pin mismatch"), [wifi()], "blocked: pin mismatch"),
        (cand("f", not_before_s=NOW_S + 39.2), [wifi()], "retry in 40 s"),
        (cand("f", not_before_s=NOW_S + 40), [wifi()], "retry in 40 s"),
        (cand("f", P2), [lte()], "waiting for WiFi (routine)"),
        (cand("f", P2), [], "waiting for WiFi (routine)"),
        (cand("f", P2), [wifi(usable=False)], "waiting for WiFi (routine)"),
        (cand("f", P1), [lte(usable=False)], "waiting for an uplink"),
        (cand("f", P0), [], "waiting for an uplink"),
        (cand("f", P1, remaining=65 * MIB), [lte()], "waiting for WiFi (too large for wwan0)"),
        (cand("f", P1), [lte(budget=budget(MIB, 0))], "wwan0 budget used up, waiting for WiFi"),
        (cand("f", P0, remaining=2 * MIB), [lte(budget=budget(MIB, 0))], "wwan0 budget used up"),
        (cand("f", P2), [wifi(budget=budget(0, 0))], "wlan0 budget used up"),
        (cand("f", P1), [wifi(active=2), lte()], "waiting for a free upload slot"),
        (cand("f", P2), [wifi(active=2), lte()], "waiting for a free upload slot"),
        (cand("f", P0), [wifi(active=3), lte(active=3)], "waiting for a free upload slot"),
        (cand("f", P1), [wifi()], "starting shortly"),
    ],
    ids=[
        "blocked",
        "backoff rounds up",
        "backoff",
        "routine on LTE",
        "routine no link",
        "routine WiFi down",
        "evidence no link",
        "incident no link",
        "too large",
        "LTE budget",
        "LTE reserve",
        "WiFi budget",
        "evidence busy",
        "routine busy",
        "incident busy",
        "next round",
    ],
)
def test_explain_waiting(candidate: UploadCandidate, links: list[LinkView], reason: str) -> None:
    assert explain_waiting(candidate, links, POLICY, NOW_S) == reason


@pytest.mark.parametrize(
    ("candidate", "links", "code"),
    [
        (cand("f", blocked_reason="pin mismatch"), [wifi()], WaitReason(WaitCode.BLOCKED)),
        (cand("f", not_before_s=NOW_S + 40), [wifi()], WaitReason(WaitCode.RETRYING)),
        (cand("f", P2), [lte()], WaitReason(WaitCode.WAITING_FOR_WIFI)),
        (cand("f", P1), [lte(usable=False)], WaitReason(WaitCode.WAITING_FOR_UPLINK)),
        (
            cand("f", P1, remaining=65 * MIB),
            [lte()],
            WaitReason(WaitCode.TOO_LARGE_FOR_LINK, "wwan0"),
        ),
        (
            cand("f", P1),
            [lte(budget=budget(MIB, 0))],
            WaitReason(WaitCode.BUDGET_USED_UP_THEN_WIFI, "wwan0"),
        ),
        (
            cand("f", P0, remaining=2 * MIB),
            [lte(budget=budget(MIB, 0))],
            WaitReason(WaitCode.BUDGET_USED_UP, "wwan0"),
        ),
        (cand("f", P1), [wifi(active=2), lte()], WaitReason(WaitCode.WAITING_FOR_SLOT)),
        (cand("f", P1), [wifi()], WaitReason(WaitCode.STARTING_SHORTLY)),
    ],
)
def test_the_page_gets_the_same_reason_as_a_code(
    candidate: UploadCandidate, links: list[LinkView], code: WaitReason
) -> None:
    """The code the officer's page translates says what `explain_waiting` says in English
    (for the scheduler's own verdicts, word for word)."""
    assert waiting_code(candidate, links, POLICY, NOW_S) == code
    if code.code not in (WaitCode.BLOCKED, WaitCode.RETRYING):
        assert code.text() == explain_waiting(candidate, links, POLICY, NOW_S)


# -- validation ------------------------------------------------------------------------------


def test_duplicate_file_ids_and_link_names_are_refused() -> None:
    with pytest.raises(ValueError, match="file id"):
        plan(NOW_S, [cand("f"), cand("f", P2)], [wifi()], {}, POLICY)
    with pytest.raises(ValueError, match="link names"):
        plan(NOW_S, [cand("f")], [wifi(), wifi(usable=False)], {}, POLICY)


@pytest.mark.parametrize(
    "fields",
    [
        ("", 1, 1, P1, 0, 0.0, None),
        ("f", -1, 0, P1, 0, 0.0, None),
        ("f", 1, 2, P1, 0, 0.0, None),
        ("f", 1, -1, P1, 0, 0.0, None),
        ("f", 1, 1, "P1", 0, 0.0, None),
        ("f", 1, 1, P1, 0.5, 0.0, None),
        ("f", 1, 1, P1, 0, float("nan"), None),
        ("f", 1, 1, P1, 0, 0.0, ""),
        ("f", True, 1, P1, 0, 0.0, None),
    ],
    ids=repr,
)
def test_candidate_validation(fields: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case names its own field
        UploadCandidate(*fields)


@pytest.mark.parametrize(
    "changes",
    [
        {"active_uploads": -1},
        {"loss_hint": 1.5},
        {"loss_hint": float("nan")},
        {"rtt_s": float("inf")},
        {"budget_remaining_by_class": {P0: None, P1: None}},
        {"budget_remaining_by_class": {P0: -1, P1: 0, P2: 0}},
    ],
    ids=repr,
)
def test_link_view_validation(changes: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "config": LTE,
        "usable": True,
        "active_uploads": 0,
        "budget_remaining_by_class": UNLIMITED,
        "rtt_s": None,
        "loss_hint": 0.0,
        "udp_blocked": False,
    }
    fields.update(changes)
    with pytest.raises(ValueError):  # noqa: PT011 - each case names its own field
        LinkView(**fields)


def test_link_view_budget_is_a_snapshot() -> None:
    remaining: dict[UploadClass, int | None] = {P0: 10, P1: 5, P2: 5}
    link = lte(budget=remaining)
    remaining[P1] = 0
    assert link.budget_remaining_by_class[P1] == 5


@pytest.mark.parametrize(
    "fields", [{"max_parallel_per_link": 0}, {"cellular_max_file_bytes": -1}], ids=repr
)
def test_policy_validation(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case names its own field
        SchedulerPolicy(**fields)


# -- properties ------------------------------------------------------------------------------


@st.composite
def link_views(draw: st.DrawFn, name: str) -> LinkView:
    cost_class = draw(st.sampled_from(CostClass))
    config = LinkConfig(name, cost_class, LinkBinding(), udp_allowed=draw(st.booleans()))
    p0_bytes = draw(st.none() | st.integers(0, 300))
    p1_bytes = None if p0_bytes is None else draw(st.integers(0, p0_bytes))
    return LinkView(
        config,
        usable=draw(st.booleans()),
        active_uploads=draw(st.integers(0, 4)),
        budget_remaining_by_class={P0: p0_bytes, P1: p1_bytes, P2: p1_bytes},
        rtt_s=draw(st.none() | st.floats(0, 1)),
        loss_hint=draw(st.floats(0, 1)),
        udp_blocked=draw(st.booleans()),
    )


@st.composite
def candidates(draw: st.DrawFn) -> UploadCandidate:
    size = draw(st.integers(0, 200))
    return UploadCandidate(
        file_id=draw(st.text("abcdef", min_size=1, max_size=3)),
        size_bytes=size,
        remaining_bytes=draw(st.integers(0, size)),
        upload_class=draw(st.sampled_from(UploadClass)),
        created_at_ms=draw(st.integers(0, 5)),
        not_before_s=draw(st.sampled_from([0.0, NOW_S, NOW_S + 1])),
        blocked_reason=draw(st.sampled_from([None, None, None, "pin mismatch"])),
    )


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[list[UploadCandidate], list[LinkView], dict[str, str], SchedulerPolicy]:
    names = [f"l{i}" for i in range(draw(st.integers(0, 4)))]
    links = [draw(link_views(name)) for name in names]
    queue = draw(st.lists(candidates(), max_size=12, unique_by=lambda c: c.file_id))
    in_flight = {
        c.file_id: draw(st.sampled_from([*names, "gone0"]))
        for c in queue
        if draw(st.integers(0, 3)) == 0
    }
    policy = SchedulerPolicy(
        max_parallel_per_link=draw(st.integers(1, 3)),
        cellular_max_file_bytes=draw(st.sampled_from([0, 50, 150])),
        prefer_wifi=draw(st.booleans()),
    )
    return queue, links, in_flight, policy


Scenario = tuple[list[UploadCandidate], list[LinkView], dict[str, str], SchedulerPolicy]


def _initial_slots(link: LinkView, in_flight: Mapping[str, str]) -> int:
    return max(link.active_uploads, Counter(in_flight.values())[link.name])


@settings(max_examples=300)
@given(scenarios())
def test_plan_properties(scenario: Scenario) -> None:
    queue, links, in_flight, policy = scenario
    assignments = plan(NOW_S, queue, links, in_flight, policy)
    by_id = {c.file_id: c for c in queue}
    by_name = {link.name: link for link in links}

    file_ids = [a.file_id for a in assignments]
    assert len(file_ids) == len(set(file_ids)), "a file assigned twice"
    for a in assignments:
        candidate, link = by_id[a.file_id], by_name[a.link]
        assert a.file_id not in in_flight
        assert candidate.blocked_reason is None
        assert candidate.not_before_s <= NOW_S
        assert link.usable
        if link.is_cellular:
            assert candidate.upload_class is not P2, "routine upload on cellular"
        if link.is_cellular and candidate.upload_class is P1:
            assert candidate.remaining_bytes <= policy.cellular_max_file_bytes
        assert a.transport == choose_transport(link)

    limit = policy.max_parallel_per_link
    for link in links:
        here = [by_id[a.file_id] for a in assignments if a.link == link.name]
        initial = _initial_slots(link, in_flight)
        p0_count = sum(c.upload_class is P0 for c in here)
        assert initial + len(here) <= max(initial, limit + 1)
        assert len(here) - p0_count <= max(0, limit - initial - p0_count)
        committed = sum(
            by_id[f].remaining_bytes for f, name in in_flight.items() if name == link.name
        )
        for candidate in here:
            committed += candidate.remaining_bytes
            left = link.budget_remaining_by_class[candidate.upload_class]
            assert left is None or committed <= left, "budget overspent"


@given(scenarios(), st.randoms(use_true_random=False))
def test_plan_ignores_input_order(scenario: Scenario, rng: random.Random) -> None:
    queue, links, in_flight, policy = scenario
    expected = plan(NOW_S, queue, links, in_flight, policy)
    rng.shuffle(queue)
    rng.shuffle(links)
    shuffled_in_flight = dict(sorted(in_flight.items(), key=lambda _: rng.random()))
    assert plan(NOW_S, queue, links, shuffled_in_flight, policy) == expected


@given(scenarios())
def test_plan_uses_a_free_unmetered_wifi_slot(scenario: Scenario) -> None:
    """Liveness: a ready file and a free, unmetered, usable WiFi link never give an empty plan."""
    queue, links, in_flight, policy = scenario
    free_wifi = [
        link
        for link in links
        if link.usable
        and not link.is_cellular
        and all(v is None for v in link.budget_remaining_by_class.values())
        and _initial_slots(link, in_flight) < policy.max_parallel_per_link
    ]
    ready = [
        c
        for c in queue
        if c.file_id not in in_flight and c.blocked_reason is None and c.not_before_s <= NOW_S
    ]
    if free_wifi and ready:
        assert plan(NOW_S, queue, links, in_flight, policy)
