"""Retention planning: S3 (delete once attested) and S4 (at most 28 days), never held evidence."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.models import FileRecord, FileState
from storage.retention import (
    MS_PER_DAY,
    Deletion,
    DeletionReason,
    RetentionPolicy,
    plan_retention,
)

S = FileState
NOW = 1_800_000_000_000
SHA_A = "a" * 64
SHA_B = "b" * 64
DELETABLE_STATES = (S.SEALED, S.UPLOADING, S.VERIFIED)


def rec(
    file_id: str = "f1",
    *,
    age_ms: int,
    state: FileState = S.SEALED,
    held: bool = False,
    attested: str | None = None,
    recording_id: str = "r1",
) -> FileRecord:
    return FileRecord(
        file_id=file_id,
        recording_id=recording_id,
        file_seq=0,
        created_at_ms=NOW - age_ms,
        state=state,
        size_bytes=0 if state is S.RECORDING else 10,
        sha256_hex=None if state is S.RECORDING else SHA_A,
        attested_sha256_hex=attested,
        held=held,
    )


@st.composite
def records(draw: st.DrawFn) -> FileRecord:
    state = draw(st.sampled_from(FileState))
    return FileRecord(
        file_id=draw(st.text("0123456789abcdef", min_size=1, max_size=8)),
        recording_id=draw(st.sampled_from(["r1", "r2", "r3"])),
        file_seq=draw(st.integers(0, 5)),
        # from a day in the future (clock skew) to 60 days old, dense around the 1..28 day marks
        created_at_ms=NOW
        - draw(
            st.one_of(
                st.integers(-MS_PER_DAY, 60 * MS_PER_DAY),
                st.integers(1, 28).flatmap(
                    lambda d: st.integers(d * MS_PER_DAY - 2, d * MS_PER_DAY + 2)
                ),
            )
        ),
        state=state,
        sha256_hex=None if state is S.RECORDING else draw(st.sampled_from([SHA_A, None])),
        attested_sha256_hex=draw(st.sampled_from([None, SHA_A, SHA_B])),
        held=draw(st.booleans()),
    )


record_lists = st.lists(records(), max_size=30, unique_by=lambda r: r.file_id)
policies = st.integers(1, 28).map(lambda d: RetentionPolicy(retention_days=d))


def planned_ids(plan: list[Deletion]) -> set[str]:
    return {d.file_id for d in plan}


# --- properties --------------------------------------------------------------------------------


@given(record_lists, policies)
def test_never_plans_held_recording_or_deleted(
    files: list[FileRecord], policy: RetentionPolicy
) -> None:
    plan = planned_ids(plan_retention(files, NOW, policy))
    for r in files:
        if r.held or r.state in (S.RECORDING, S.DELETED):
            assert r.file_id not in plan


@given(record_lists, policies)
def test_never_plans_unattested_file_within_retention(
    files: list[FileRecord], policy: RetentionPolicy
) -> None:
    plan = planned_ids(plan_retention(files, NOW, policy))
    for r in files:
        if not r.is_attested and NOW - r.created_at_ms <= policy.retention_days * MS_PER_DAY:
            assert r.file_id not in plan


@given(record_lists, policies)
def test_always_plans_attested_files_that_are_not_held(
    files: list[FileRecord], policy: RetentionPolicy
) -> None:
    plan = {d.file_id: d for d in plan_retention(files, NOW, policy)}
    for r in files:
        if r.is_attested and not r.held and r.state in DELETABLE_STATES:
            assert plan[r.file_id].reason is DeletionReason.ATTESTED


@given(record_lists, policies)
def test_always_plans_expired_files_that_are_not_held(
    files: list[FileRecord], policy: RetentionPolicy
) -> None:
    plan = {d.file_id: d for d in plan_retention(files, NOW, policy)}
    for r in files:
        expired = NOW - r.created_at_ms > policy.retention_days * MS_PER_DAY
        if expired and not r.held and r.state in DELETABLE_STATES:
            expected = DeletionReason.ATTESTED if r.is_attested else DeletionReason.EXPIRED
            assert plan[r.file_id].reason is expected


@given(record_lists, policies, st.randoms(use_true_random=False))
def test_plan_is_oldest_first_and_independent_of_input_order(
    files: list[FileRecord], policy: RetentionPolicy, rnd: random.Random
) -> None:
    plan = plan_retention(files, NOW, policy)
    shuffled = list(files)
    rnd.shuffle(shuffled)
    assert plan_retention(shuffled, NOW, policy) == plan
    ages = [d.age_days for d in plan]
    assert ages == sorted(ages, reverse=True)
    assert len(planned_ids(plan)) == len(plan)  # each file at most once
    by_id = {r.file_id: r for r in files}
    for d in plan:
        assert d.recording_id == by_id[d.file_id].recording_id
        assert d.age_days == (NOW - by_id[d.file_id].created_at_ms) / MS_PER_DAY


# --- explicit cases ----------------------------------------------------------------------------


def test_exactly_28_days_is_kept_and_one_ms_more_is_deleted() -> None:
    policy = RetentionPolicy()
    assert policy.retention_days == 28
    day28 = 28 * MS_PER_DAY
    plan = plan_retention([rec("kept", age_ms=day28), rec("gone", age_ms=day28 + 1)], NOW, policy)
    assert plan == [Deletion("gone", "r1", DeletionReason.EXPIRED, (day28 + 1) / MS_PER_DAY)]


def test_shorter_policy_boundary() -> None:
    policy = RetentionPolicy(retention_days=14)
    day14 = 14 * MS_PER_DAY
    files = [rec("kept", age_ms=day14), rec("gone", age_ms=day14 + 1)]
    assert planned_ids(plan_retention(files, NOW, policy)) == {"gone"}


def test_attested_file_goes_at_once_unless_held() -> None:
    files = [
        rec("fresh", age_ms=1, state=S.VERIFIED, attested=SHA_A),
        rec("kept", age_ms=1, state=S.VERIFIED, attested=SHA_A, held=True),
        rec("mismatch", age_ms=1, state=S.UPLOADING, attested=SHA_B),
    ]
    plan = plan_retention(files, NOW, RetentionPolicy())
    assert plan == [Deletion("fresh", "r1", DeletionReason.ATTESTED, 1 / MS_PER_DAY)]


def test_held_expired_file_is_kept() -> None:
    files = [rec("held", age_ms=100 * MS_PER_DAY, held=True)]
    assert plan_retention(files, NOW, RetentionPolicy()) == []


def test_recording_and_deleted_files_are_never_planned() -> None:
    old = 100 * MS_PER_DAY
    files = [
        rec("live", age_ms=old, state=S.RECORDING),
        rec("gone", age_ms=old, state=S.DELETED, attested=SHA_A),
    ]
    assert plan_retention(files, NOW, RetentionPolicy()) == []


def test_file_from_the_future_is_not_expired() -> None:
    assert plan_retention([rec("skew", age_ms=-MS_PER_DAY)], NOW, RetentionPolicy()) == []


def test_order_is_oldest_first_with_ties_broken_by_ids() -> None:
    old = 40 * MS_PER_DAY
    files = [
        rec("b", age_ms=old, recording_id="r1"),
        rec("a", age_ms=old, recording_id="r2"),
        rec("c", age_ms=old + 5),
        rec("d", age_ms=1, state=S.VERIFIED, attested=SHA_A),
    ]
    assert [d.file_id for d in plan_retention(files, NOW, RetentionPolicy())] == [
        "c",
        "b",
        "a",
        "d",
    ]


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
