"""Retention planning on trusted time: S3 (delete once attested, held or not) and S4 (at most 28
days), never unattested held evidence, never an unattested file whose trusted age may still be
within the period, and the escalating alarms before a deletion."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.models import FileRecord, FileState
from storage.retention import (
    CRITICAL_BEFORE_MS,
    MS_PER_DAY,
    TIME_UNKNOWN_GRACE_MS,
    WARN_BEFORE_MS,
    Deletion,
    DeletionReason,
    DueSoon,
    RetentionPlan,
    RetentionPolicy,
    plan_retention,
    retention_alarms,
)
from storage.trusted_time import Reading, TrustedNow

S = FileState
NOW = 1_800_000_000_000
SHA_A = "a" * 64
SHA_B = "b" * 64
DELETABLE_STATES = (S.SEALED, S.UPLOADING, S.VERIFIED)
UPTIME_MS = 3_600_000  # an hour after boot: past the grace of the time-unknown alarm


def at(
    low_ms: int | None = NOW, high_ms: int | None = NOW, *, mono_ms: int = UPTIME_MS
) -> TrustedNow:
    return TrustedNow(Reading("boot-a", mono_ms), low_ms, high_ms, "gps")


def rec(
    file_id: str = "f1",
    *,
    age_ms: int | None,
    state: FileState = S.SEALED,
    held: bool = False,
    attested: str | None = None,
    recording_id: str = "r1",
    wall_ms: int = NOW,
) -> FileRecord:
    """A file whose trusted creation is at most `age_ms` ago (None: not known)."""
    return FileRecord(
        file_id=file_id,
        recording_id=recording_id,
        file_seq=0,
        created_at_ms=wall_ms,
        state=state,
        size_bytes=0 if state is S.RECORDING else 10,
        sha256_hex=None if state is S.RECORDING else SHA_A,
        attested_sha256_hex=attested,
        held=held,
        trusted_created_high_ms=None if age_ms is None else NOW - age_ms,
        trusted_created_by=None if age_ms is None else "anchor",
    )


def near_day(days: int) -> st.SearchStrategy[int]:
    return st.integers(days * MS_PER_DAY - 2, days * MS_PER_DAY + 2)


@st.composite
def records(draw: st.DrawFn) -> FileRecord:
    state = draw(st.sampled_from(FileState))
    # from a day in the future to 60 days old, dense around the day marks; or unknown
    age_ms = draw(
        st.one_of(
            st.none(),
            st.integers(-MS_PER_DAY, 60 * MS_PER_DAY),
            st.integers(1, 29).flatmap(near_day),
        )
    )
    return FileRecord(
        file_id=draw(st.text("0123456789abcdef", min_size=1, max_size=8)),
        recording_id=draw(st.sampled_from(["r1", "r2", "r3"])),
        file_seq=draw(st.integers(0, 5)),
        # The wall clock's stamp: anything at all (a clock 40 days off either way, 1970 ...)
        created_at_ms=draw(st.integers(0, 2 * NOW)),
        state=state,
        sha256_hex=None if state is S.RECORDING else draw(st.sampled_from([SHA_A, None])),
        attested_sha256_hex=draw(st.sampled_from([None, SHA_A, SHA_B])),
        held=draw(st.booleans()),
        trusted_created_high_ms=None if age_ms is None else NOW - age_ms,
    )


@st.composite
def nows(draw: st.DrawFn) -> TrustedNow:
    """Trusted time now: known to within up to a day, known only from below, or unknown."""
    low = draw(st.one_of(st.none(), st.integers(NOW - 2 * MS_PER_DAY, NOW)))
    if low is None:
        return at(None, None)
    doubt = draw(st.one_of(st.none(), st.integers(0, MS_PER_DAY)))
    return at(low, None if doubt is None else low + doubt)


record_lists = st.lists(records(), max_size=30, unique_by=lambda r: r.file_id)
policies = st.integers(1, 28).map(lambda d: RetentionPolicy(retention_days=d))


def planned_ids(plan: RetentionPlan) -> set[str]:
    return {d.file_id for d in plan.deletions}


def min_age_ms(record: FileRecord, now: TrustedNow) -> int | None:
    if record.trusted_created_high_ms is None or now.low_ms is None:
        return None
    return now.low_ms - record.trusted_created_high_ms


# --- properties --------------------------------------------------------------------------------


@given(record_lists, nows(), policies)
def test_never_plans_unattested_held_recording_or_deleted(
    files: list[FileRecord], now: TrustedNow, policy: RetentionPolicy
) -> None:
    plan = plan_retention(files, now, policy)
    judged = planned_ids(plan) | {d.file_id for d in plan.due_soon} | set(plan.time_unknown)
    for r in files:
        if (r.held and not r.is_attested) or r.state in (S.RECORDING, S.DELETED):
            assert r.file_id not in judged


@given(record_lists, nows(), policies)
def test_never_plans_an_unattested_file_that_may_be_within_retention(
    files: list[FileRecord], now: TrustedNow, policy: RetentionPolicy
) -> None:
    """The rule of S4 on trusted time: an unattested file goes only when even its youngest
    possible age is past the period; without a bound on its age or on now, never."""
    plan = plan_retention(files, now, policy)
    for r in files:
        if r.is_attested or r.file_id not in planned_ids(plan):
            continue
        age_ms = min_age_ms(r, now)
        assert age_ms is not None
        assert age_ms > policy.retention_days * MS_PER_DAY


@given(record_lists, nows(), policies)
def test_always_plans_attested_files_held_or_not_whatever_the_time(
    files: list[FileRecord], now: TrustedNow, policy: RetentionPolicy
) -> None:
    """S3: a transferred file does not stay on the device; a hold binds the back office."""
    plan = {d.file_id: d for d in plan_retention(files, now, policy).deletions}
    for r in files:
        if r.is_attested and r.state in DELETABLE_STATES:
            assert plan[r.file_id].reason is DeletionReason.ATTESTED


@given(record_lists, nows(), policies)
def test_every_unheld_file_is_deleted_due_soon_unknown_or_safely_young(
    files: list[FileRecord], now: TrustedNow, policy: RetentionPolicy
) -> None:
    plan = plan_retention(files, now, policy)
    deleted = {d.file_id: d for d in plan.deletions}
    due = {d.file_id: d.left_ms for d in plan.due_soon}
    for r in files:
        if r.held or r.state not in DELETABLE_STATES or r.is_attested:
            continue
        age_ms = min_age_ms(r, now)
        if age_ms is not None and age_ms > policy.retention_ms:
            assert deleted[r.file_id].reason is DeletionReason.EXPIRED
            assert deleted[r.file_id].age_days == age_ms / MS_PER_DAY
        elif r.trusted_created_high_ms is None or now.high_ms is None:
            assert r.file_id in plan.time_unknown
        else:
            left_ms = r.trusted_created_high_ms + policy.retention_ms - now.high_ms
            assert (r.file_id in due) is (left_ms <= WARN_BEFORE_MS)
            if r.file_id in due:
                assert due[r.file_id] == left_ms


@given(record_lists, nows(), policies, st.randoms(use_true_random=False))
def test_the_wall_clock_decides_nothing(
    files: list[FileRecord], now: TrustedNow, policy: RetentionPolicy, rnd: random.Random
) -> None:
    """Any stamps the wall clock may have written (stepped, 1970, 40 days off): the same files
    are deleted, due and kept."""
    plan = plan_retention(files, now, policy)
    restamped = [r.with_changes(created_at_ms=rnd.randrange(0, 2 * NOW)) for r in files]
    other = plan_retention(restamped, now, policy)
    assert planned_ids(other) == planned_ids(plan)
    assert other.due_soon == plan.due_soon
    assert other.time_unknown == plan.time_unknown


@given(record_lists, nows(), policies, st.randoms(use_true_random=False))
def test_plan_is_independent_of_input_order(
    files: list[FileRecord], now: TrustedNow, policy: RetentionPolicy, rnd: random.Random
) -> None:
    plan = plan_retention(files, now, policy)
    shuffled = list(files)
    rnd.shuffle(shuffled)
    assert plan_retention(shuffled, now, policy) == plan
    assert len(planned_ids(plan)) == len(plan.deletions)  # each file at most once
    by_id = {r.file_id: r for r in files}
    stamps = [by_id[d.file_id].created_at_ms for d in plan.deletions]
    assert stamps == sorted(stamps)
    assert [d.left_ms for d in plan.due_soon] == sorted(d.left_ms for d in plan.due_soon)


# --- explicit cases ----------------------------------------------------------------------------


def test_exactly_28_days_is_kept_and_one_ms_more_is_deleted() -> None:
    policy = RetentionPolicy()
    assert policy.retention_days == 28
    day28 = 28 * MS_PER_DAY
    plan = plan_retention([rec("kept", age_ms=day28), rec("gone", age_ms=day28 + 1)], at(), policy)
    assert plan.deletions == (
        Deletion("gone", "r1", DeletionReason.EXPIRED, (day28 + 1) / MS_PER_DAY),
    )


def test_the_doubt_of_trusted_time_counts_for_the_file() -> None:
    """Now is known to within an hour: a file 28 days and 30 min old by the late end of that
    hour, but not by its early end, is kept."""
    hour = 3_600_000
    files = [rec("doubtful", age_ms=28 * MS_PER_DAY + hour // 2)]
    plan = plan_retention(files, at(NOW - hour, NOW), RetentionPolicy())
    assert plan.deletions == ()
    assert plan.due_soon == (DueSoon("doubtful", -hour // 2),)


def test_shorter_policy_boundary() -> None:
    policy = RetentionPolicy(retention_days=14)
    day14 = 14 * MS_PER_DAY
    files = [rec("kept", age_ms=day14), rec("gone", age_ms=day14 + 1)]
    assert planned_ids(plan_retention(files, at(), policy)) == {"gone"}


def test_attested_file_goes_at_once_held_or_not_even_with_the_time_unknown() -> None:
    files = [
        rec("fresh", age_ms=None, state=S.VERIFIED, attested=SHA_A),
        rec("held", age_ms=1, state=S.VERIFIED, attested=SHA_A, held=True),
        rec("mismatch", age_ms=1, state=S.UPLOADING, attested=SHA_B),
    ]
    plan = plan_retention(files, at(None, None), RetentionPolicy())
    assert {d.file_id: d.reason for d in plan.deletions} == {
        "fresh": DeletionReason.ATTESTED,
        "held": DeletionReason.ATTESTED,
    }
    assert plan.time_unknown == ("mismatch",)


def test_held_expired_file_is_kept() -> None:
    files = [rec("held", age_ms=100 * MS_PER_DAY, held=True)]
    plan = plan_retention(files, at(), RetentionPolicy())
    assert plan == RetentionPlan(at(), (), (), ())


def test_recording_and_deleted_files_are_never_planned() -> None:
    old = 100 * MS_PER_DAY
    files = [
        rec("live", age_ms=old, state=S.RECORDING),
        rec("gone", age_ms=old, state=S.DELETED, attested=SHA_A),
    ]
    assert plan_retention(files, at(), RetentionPolicy()).deletions == ()


def test_a_file_from_the_future_is_not_expired() -> None:
    plan = plan_retention([rec("skew", age_ms=-MS_PER_DAY)], at(), RetentionPolicy())
    assert plan.deletions == ()


def test_a_file_of_unknown_age_is_kept_and_counted() -> None:
    """Recorded while the time was unknown (no RTC, no fix yet), stamped 40 days ago by a wall
    clock that stood behind: kept, whatever its stamp says."""
    wall_40_days_ago = NOW - 40 * MS_PER_DAY
    files = [rec("unknown", age_ms=None, wall_ms=wall_40_days_ago)]
    plan = plan_retention(files, at(), RetentionPolicy())
    assert plan.deletions == ()
    assert plan.time_unknown == ("unknown",)


def test_with_only_a_floor_old_files_go_and_the_rest_cannot_be_judged() -> None:
    """After a reboot without an anchor yet, trusted time is known only from below (the floor
    an earlier boot proved): what was past due then goes, nothing else is judged."""
    files = [rec("old", age_ms=29 * MS_PER_DAY), rec("young", age_ms=MS_PER_DAY)]
    plan = plan_retention(files, at(NOW, None), RetentionPolicy())
    assert planned_ids(plan) == {"old"}
    assert plan.time_unknown == ("young",)


def test_order_is_by_wall_stamp_with_ties_broken_by_ids() -> None:
    old = 40 * MS_PER_DAY
    files = [
        rec("b", age_ms=old, recording_id="r1"),
        rec("a", age_ms=old, recording_id="r2"),
        rec("c", age_ms=old, wall_ms=NOW - 5),
        rec("d", age_ms=1, state=S.VERIFIED, attested=SHA_A, wall_ms=NOW + 1),
    ]
    plan = plan_retention(files, at(), RetentionPolicy())
    assert [d.file_id for d in plan.deletions] == ["c", "b", "a", "d"]


# --- the alarms ----------------------------------------------------------------------------------


def alarms_for(files: list[FileRecord], now: TrustedNow | None = None) -> dict[str, str | None]:
    policy = RetentionPolicy()
    return retention_alarms(plan_retention(files, now or at(), policy), policy)


def test_no_alarm_for_young_files() -> None:
    assert alarms_for([rec("young", age_ms=MS_PER_DAY)]) == {
        "retention_imminent": None,
        "retention_near": None,
        "retention_time_unknown": None,
    }


def test_seven_days_before_a_warning_one_day_before_critical() -> None:
    period = 28 * MS_PER_DAY
    just_outside = rec("a", age_ms=period - WARN_BEFORE_MS - 1)
    assert alarms_for([just_outside])["retention_near"] is None
    seven = rec("b", age_ms=period - WARN_BEFORE_MS)
    alarms = alarms_for([seven])
    assert alarms["retention_near"] == (
        "1 file(s) not uploaded reach the 28-day limit within 7 days (the first in 7.0 days) "
        "and will then be deleted"
    )
    assert alarms["retention_imminent"] is None
    one = rec("c", age_ms=period - CRITICAL_BEFORE_MS)
    alarms = alarms_for([seven, one])
    assert alarms["retention_imminent"] == (
        "1 file(s) not uploaded reach the 28-day limit within a day and will then be deleted"
    )
    assert alarms["retention_near"] is not None
    assert alarms_for([one])["retention_near"] is None


def test_attested_held_and_deleted_files_raise_no_retention_alarm() -> None:
    period = 28 * MS_PER_DAY
    files = [
        rec("held", age_ms=period, held=True),
        rec("gone", age_ms=period, state=S.DELETED),
        rec("attested", age_ms=period, state=S.VERIFIED, attested=SHA_A),
    ]
    assert set(alarms_for(files).values()) == {None}


def test_files_of_unknown_age_alarm_after_the_boots_grace() -> None:
    files = [rec("unknown", age_ms=None)]
    early = at(mono_ms=TIME_UNKNOWN_GRACE_MS - 1)
    assert alarms_for(files, early)["retention_time_unknown"] is None
    later = at(mono_ms=TIME_UNKNOWN_GRACE_MS)
    assert alarms_for(files, later)["retention_time_unknown"] == (
        "1 file(s) not uploaded are kept past the retention rule: the box does not know the "
        "time (no GPS time, no back office) to judge their age"
    )
    without_anchor = at(NOW, None)
    assert alarms_for([rec("young", age_ms=MS_PER_DAY)], without_anchor)["retention_time_unknown"]


@pytest.mark.parametrize("days", [0, -1, 29, 365, True])
def test_retention_outside_1_to_28_days_is_rejected(days: int) -> None:
    with pytest.raises(ValueError, match="retention_days"):
        RetentionPolicy(retention_days=days)


def test_retention_days_must_be_an_int() -> None:
    with pytest.raises(ValueError, match="retention_days"):
        RetentionPolicy(retention_days=14.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("days", [1, 14, 28])
def test_retention_inside_range_is_accepted(days: int) -> None:
    assert RetentionPolicy(retention_days=days).retention_days == days
