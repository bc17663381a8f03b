"""Trusted time, the pure core: anchors, projection with drift, which source wins, the floor
across boots, bounds on a file's creation, and the state as JSON."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.trusted_time import (
    EARLIEST_TRUSTED_MS,
    GPS_LATENCY_MAX_MS,
    MONO_DRIFT_PPM,
    SOURCES_TOLERANCE_MS,
    Anchor,
    CreatedTime,
    Interval,
    Reading,
    TimeSource,
    TrustedNow,
    TrustedState,
    Verdict,
    advance_floor,
    back_office_anchor,
    created_now,
    describe,
    drift_ms,
    gps_anchor,
    observe,
    parse_http_date_ms,
    resolve_created,
    state_from_json,
    state_to_json,
    trusted_now,
)

T0 = 1_800_000_000_000  # true time at the boot's reading MONO0
MONO0 = 60_000
BOOT = "boot-a"
DAY_MS = 86_400_000


def reading(mono_ms: int = MONO0, boot: str = BOOT) -> Reading:
    return Reading(boot, mono_ms)


def gps(true_ms: int, mono_ms: int, *, latency_ms: int = 300, boot: str = BOOT) -> Anchor:
    return gps_anchor(true_ms - latency_ms, reading(mono_ms, boot))


def office(true_ms: int, mono_ms: int, *, boot: str = BOOT) -> Anchor:
    """The back office's Date of an exchange that took 80 ms, received at `mono_ms`."""
    stamp = (true_ms - 40) // 1000
    date = _http_date(stamp)
    anchor = back_office_anchor(date, reading(mono_ms, boot), 80)
    assert anchor is not None
    return anchor


def _http_date(seconds: int) -> str:
    from email.utils import formatdate

    return formatdate(seconds, usegmt=True)


def contains(interval: TrustedNow | Interval, true_ms: int) -> bool:
    if isinstance(interval, Interval):
        return interval.low_ms <= true_ms <= interval.high_ms
    assert interval.low_ms is not None
    assert interval.high_ms is not None
    return interval.low_ms <= true_ms <= interval.high_ms


# --- intervals, projection, sources ------------------------------------------------------------


def test_an_interval_is_never_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        Interval(2, 1)
    assert Interval(1, 3).distance_ms(Interval(3, 9)) == 0
    assert Interval(1, 3).distance_ms(Interval(10, 12)) == 7
    assert Interval(10, 12).distance_ms(Interval(1, 3)) == 7
    assert Interval(1, 5).intersect(Interval(4, 9)) == Interval(4, 5)
    assert Interval(1, 3).intersect(Interval(4, 9)) is None
    assert Interval(1, 3).hull(Interval(7, 9)) == Interval(1, 9)


@given(
    st.integers(-40 * DAY_MS, 40 * DAY_MS),
    st.integers(-MONO_DRIFT_PPM + 100, MONO_DRIFT_PPM - 100),
)
def test_a_projected_anchor_holds_the_truth_for_any_drift_within_the_bound(
    elapsed_true_ms: int, rate_ppm: int
) -> None:
    """The clock runs `rate_ppm` fast or slow; the anchor projected over its reading of the
    elapsed time still contains the true time."""
    anchor = gps(T0, MONO0, latency_ms=1000)
    elapsed_mono_ms = elapsed_true_ms + elapsed_true_ms * rate_ppm // 1_000_000
    assert contains(anchor.at(MONO0 + elapsed_mono_ms), T0 + elapsed_true_ms)


def test_projection_widens_by_the_drift_bound() -> None:
    anchor = gps(T0, MONO0, latency_ms=0)
    day = anchor.at(MONO0 + DAY_MS)
    assert day.width_ms == GPS_LATENCY_MAX_MS + 2 * drift_ms(DAY_MS)
    assert drift_ms(DAY_MS) == DAY_MS * MONO_DRIFT_PPM // 1_000_000 + 1


@pytest.mark.parametrize(
    ("value", "expected_s"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777),  # RFC 850, obsolete but valid
        ("Sun, 06 Nov 1994 08:49:37 +0000", 784111777),
        ("Sun, 06 Nov 1994 09:49:37 +0100", None),  # not a statement about GMT as HTTP needs
        ("Sun, 06 Nov 1994 08:49:37 -0000", None),  # "zone unknown"
        ("yesterday", None),
        ("", None),
        (None, None),
        ("Sun, 06 Nov 1994 08:49:37 GMT" + " " * 60, None),
    ],
)
def test_http_dates(value: str | None, expected_s: int | None) -> None:
    expected = None if expected_s is None else expected_s * 1000
    assert parse_http_date_ms(value) == expected


def test_the_back_office_date_holds_the_truth_given_the_round_trip() -> None:
    for server_delay_ms in (0, 40, 80):
        for true_ms in (T0, T0 + 999, T0 + 1):
            stamp_s = (true_ms - server_delay_ms) // 1000
            anchor = back_office_anchor(_http_date(stamp_s), reading(), 80)
            assert anchor is not None
            assert contains(anchor.wall, true_ms)
            assert anchor.wall.width_ms == 999 + 80
    assert back_office_anchor("garbage", reading(), 80) is None
    assert back_office_anchor(_http_date(T0 // 1000), reading(), -1) is None


def test_nothing_known_gives_the_floor_only() -> None:
    state = TrustedState(BOOT)
    now = trusted_now(state, reading())
    assert (now.low_ms, now.high_ms, now.source) == (EARLIEST_TRUSTED_MS, None, "floor")
    assert not now.known
    assert created_now(state, reading()) is None
    with pytest.raises(ValueError, match="another boot"):
        trusted_now(state, reading(boot="boot-b"))


def test_the_first_gps_fix_anchors_and_later_fixes_narrow() -> None:
    state, verdict = observe(TrustedState(BOOT), gps(T0, MONO0))
    assert verdict is Verdict.FIRST
    now = trusted_now(state, reading(MONO0 + 5000))
    assert now.source == "gps"
    assert contains(now, T0 + 5000)
    later = MONO0 + 10 * DAY_MS
    widened = trusted_now(state, reading(later))
    state, verdict = observe(state, gps(T0 + 10 * DAY_MS, later))
    assert verdict is Verdict.REFRESHED
    narrowed = trusted_now(state, reading(later))
    assert contains(narrowed, T0 + 10 * DAY_MS)
    assert narrowed.high_ms is not None
    assert widened.high_ms is not None
    assert narrowed.high_ms - (narrowed.low_ms or 0) < widened.high_ms - (widened.low_ms or 0)


def test_a_gps_jump_without_the_back_office_is_refused_and_noted() -> None:
    """A spoofer (or a receiver gone wrong) moves GPS time 40 days forward mid-boot."""
    state, _ = observe(TrustedState(BOOT), gps(T0, MONO0))
    later = MONO0 + 60_000
    state, verdict = observe(state, gps(T0 + 60_000 + 40 * DAY_MS, later))
    assert verdict is Verdict.REFUSED
    assert state.conflict_ms is not None
    assert state.conflict_ms > 39 * DAY_MS
    assert contains(trusted_now(state, reading(later)), T0 + 60_000)
    # The receiver comes right: agreeing fixes are taken again and the conflict ends.
    state, verdict = observe(state, gps(T0 + 120_000, MONO0 + 120_000))
    assert verdict is Verdict.REFRESHED
    assert state.conflict_ms is None


def test_missing_leap_seconds_are_within_tolerance() -> None:
    """A receiver without the almanac reports GPS time, 18 s ahead of UTC, then corrects."""
    state, _ = observe(TrustedState(BOOT), gps(T0 + 18_000, MONO0))
    state, verdict = observe(state, gps(T0 + 1000, MONO0 + 1000))
    assert verdict is Verdict.REFRESHED
    assert contains(trusted_now(state, reading(MONO0 + 1000)), T0 + 1000)


def test_the_back_office_wins_over_gps() -> None:
    state, _ = observe(TrustedState(BOOT), gps(T0 + 40 * DAY_MS, MONO0))  # GPS 40 days ahead
    state, verdict = observe(state, office(T0 + 1000, MONO0 + 1000))
    assert verdict is Verdict.CORRECTED
    assert state.gps is None
    assert state.conflict_ms is not None
    assert state.conflict_ms > 39 * DAY_MS
    now = trusted_now(state, reading(MONO0 + 2000))
    assert now.source == "back_office"
    assert contains(now, T0 + 2000)
    # GPS still 40 days off: refused; GPS agreeing with the back office: taken, conflict over.
    state, verdict = observe(state, gps(T0 + 40 * DAY_MS + 3000, MONO0 + 3000))
    assert verdict is Verdict.REFUSED
    state, verdict = observe(state, gps(T0 + 4000, MONO0 + 4000))
    assert verdict is Verdict.FIRST
    assert state.conflict_ms is None
    both = trusted_now(state, reading(MONO0 + 5000))
    assert both.source == "gps+back_office"
    assert contains(both, T0 + 5000)


def test_gps_that_drifts_from_the_back_office_later_is_not_believed() -> None:
    state, _ = observe(TrustedState(BOOT), office(T0, MONO0))
    state, _ = observe(state, gps(T0, MONO0))
    # Days later GPS says 2 min more than the back office's projection allows.
    later = MONO0 + 3 * DAY_MS
    state, verdict = observe(state, gps(T0 + 3 * DAY_MS + SOURCES_TOLERANCE_MS + 300_000, later))
    assert verdict is Verdict.REFUSED
    assert contains(trusted_now(state, reading(later)), T0 + 3 * DAY_MS)


def test_gps_earlier_than_the_floor_is_refused() -> None:
    """A week-number rollover or a spoofer turning the clock back."""
    state = TrustedState(BOOT, floor_ms=T0)
    state, verdict = observe(state, gps(T0 - 40 * DAY_MS, MONO0))
    assert verdict is Verdict.REFUSED
    assert state.gps is None
    assert state.conflict_ms is not None
    state, verdict = observe(TrustedState(BOOT), gps(EARLIEST_TRUSTED_MS - 10 * DAY_MS, MONO0))
    assert verdict is Verdict.REFUSED


def test_the_back_office_lowers_a_floor_that_a_wrong_source_raised() -> None:
    state = TrustedState(BOOT, floor_ms=T0 + 40 * DAY_MS)
    state, verdict = observe(state, office(T0, MONO0))
    assert verdict is Verdict.CORRECTED
    assert state.floor_ms <= T0
    assert contains(trusted_now(state, reading(MONO0)), T0)


def test_the_floor_lifts_the_low_bound_and_never_falls() -> None:
    state, _ = observe(TrustedState(BOOT), gps(T0, MONO0))
    now = trusted_now(state, reading(MONO0 + DAY_MS))
    raised = advance_floor(state, now)
    assert raised.floor_ms == now.low_ms
    assert advance_floor(raised, trusted_now(state, reading(MONO0))).floor_ms == now.low_ms
    unknown = trusted_now(TrustedState(BOOT), reading())
    assert advance_floor(raised, unknown) == raised  # nothing proved: unchanged
    lifted = trusted_now(raised, reading(MONO0 + DAY_MS))
    assert lifted.low_ms == raised.floor_ms


def test_another_boot_keeps_only_the_floor() -> None:
    state, _ = observe(TrustedState(BOOT), office(T0, MONO0))
    state = advance_floor(state, trusted_now(state, reading(MONO0 + 1000)))
    after_power_cut = state.for_boot("boot-b")
    assert after_power_cut == TrustedState("boot-b", floor_ms=state.floor_ms)
    assert state.for_boot(BOOT) is state
    state, verdict = observe(state, gps(T0, MONO0, boot="boot-b"))
    assert verdict is Verdict.REFUSED  # an anchor of another boot is never used


# --- a file's creation -------------------------------------------------------------------------


def test_a_file_recorded_with_the_time_known_is_dated_at_once() -> None:
    state, _ = observe(TrustedState(BOOT), gps(T0, MONO0))
    created = created_now(state, reading(MONO0 + 500))
    assert created is not None
    assert created.by == "anchor"
    assert created.low_ms is not None
    assert created.low_ms <= T0 + 500 <= created.high_ms


def test_a_file_recorded_before_the_first_fix_is_dated_by_it() -> None:
    state, _ = observe(TrustedState(BOOT), gps(T0, MONO0))
    now = trusted_now(state, reading(MONO0 + 1000))
    created = resolve_created(BOOT, MONO0 - 30 * 60_000, state, now)
    assert created is not None
    assert created.by == "same_boot"
    assert created.low_ms is not None
    assert created.low_ms <= T0 - 30 * 60_000 <= created.high_ms


def test_a_file_of_another_boot_is_dated_no_later_than_now() -> None:
    state, _ = observe(TrustedState(BOOT), gps(T0, MONO0))
    now = trusted_now(state, reading(MONO0))
    created = resolve_created("boot-old", 5000, state, now)
    assert created == CreatedTime(None, now.high_ms or 0, "seen")
    assert resolve_created(None, None, state, now) == created  # an older record: the same
    unknown = trusted_now(TrustedState(BOOT), reading())
    assert resolve_created("boot-old", 5000, TrustedState(BOOT), unknown) is None
    assert resolve_created(BOOT, MONO0, TrustedState(BOOT), unknown) is None


# --- the state as JSON -------------------------------------------------------------------------


anchors = st.builds(
    lambda source, mono, low, width: Anchor(source, BOOT, mono, Interval(low, low + width)),
    st.sampled_from(TimeSource),
    st.integers(0, 10**12),
    st.integers(EARLIEST_TRUSTED_MS, 4 * 10**12),
    st.integers(0, 10**7),
)


@given(
    st.one_of(st.none(), anchors.map(lambda a: Anchor(TimeSource.GPS, BOOT, a.mono_ms, a.wall))),
    st.one_of(
        st.none(),
        anchors.map(lambda a: Anchor(TimeSource.BACK_OFFICE, BOOT, a.mono_ms, a.wall)),
    ),
    st.integers(EARLIEST_TRUSTED_MS, 4 * 10**12),
    st.one_of(st.none(), st.integers(0, 10**12)),
)
def test_the_state_survives_json(
    gps_anchor_: Anchor | None, office_anchor: Anchor | None, floor_ms: int, conflict: int | None
) -> None:
    state = TrustedState(BOOT, gps_anchor_, office_anchor, floor_ms, conflict)
    assert state_from_json(state_to_json(state)) == state


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"version": 2}',
        '{"version": 1, "boot_id": 3, "anchors": [], "floor_ms": 0}',
        '{"version": 1, "boot_id": "b", "anchors": {}, "floor_ms": 0}',
        '{"version": 1, "boot_id": "b", "anchors": [3], "floor_ms": 0}',
        '{"version": 1, "boot_id": "b", "anchors": [], "floor_ms": true}',
        '{"version": 1, "boot_id": "b", "anchors": [], "floor_ms": 0, "conflict_ms": "x"}',
        '{"version": 1, "boot_id": "b", "floor_ms": 0, "anchors": '
        '[{"source": "ntp", "mono_ms": 1, "low_ms": 1, "high_ms": 2}]}',
        '{"version": 1, "boot_id": "b", "floor_ms": 0, "anchors": '
        '[{"source": "gps", "mono_ms": 1, "low_ms": 3, "high_ms": 2}]}',
    ],
)
def test_a_damaged_state_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"not|empty|list|object|is not a valid"):
        state_from_json(text)


def test_describe_says_what_is_known() -> None:
    assert describe(trusted_now(TrustedState(BOOT), reading())).startswith(
        "trusted time unknown in this boot; at least 2025-01-01"
    )
    state, _ = observe(TrustedState(BOOT), gps(T0, MONO0, latency_ms=0))
    assert describe(trusted_now(state, reading())) == (
        "trusted time 2027-01-15 07:59:59 UTC (+2 s) from gps"  # low: less 1 ms of reading
    )
    nothing = TrustedNow(reading(), None, None, "unknown")
    assert describe(nothing) == "trusted time unknown"
