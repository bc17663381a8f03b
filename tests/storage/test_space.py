"""The full-card guard: refuse new recordings, stop at the reserve, and the reserve is real."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.errors import StoreError
from storage.space import (
    CardFullError,
    SpacePolicy,
    Verdict,
    card_free_bytes,
    decide_admission,
    must_stop_writing,
    write_guard,
)
from tests.evidence_helpers import mounted_tmpfs

KIB = 1024
MIB = 1024 * KIB
POLICY = SpacePolicy(reserve_bytes=256 * KIB, min_free_to_start_bytes=512 * KIB)


# --- pure core ---------------------------------------------------------------------------------


def test_admission_boundary() -> None:
    at = POLICY.min_free_to_start_bytes
    assert decide_admission(at, POLICY).admitted
    assert decide_admission(at + 1, POLICY).verdict is Verdict.ADMIT
    assert decide_admission(at, POLICY).reason is None
    refused = decide_admission(at - 1, POLICY)
    assert refused.verdict is Verdict.REFUSE
    assert not refused.admitted
    assert refused.reason is not None
    assert str(at - 1) in refused.reason
    assert str(at) in refused.reason
    assert not decide_admission(0, POLICY).admitted


def test_must_stop_writing_once_down_to_the_reserve() -> None:
    reserve = POLICY.reserve_bytes
    assert not must_stop_writing(reserve + 1, POLICY)
    assert must_stop_writing(reserve, POLICY)
    assert must_stop_writing(0, POLICY)


def test_an_admitted_recording_can_write_before_it_must_stop() -> None:
    assert not must_stop_writing(POLICY.min_free_to_start_bytes, POLICY)


def test_negative_free_space_is_a_bug() -> None:
    with pytest.raises(ValueError, match="negative"):
        decide_admission(-1, POLICY)
    with pytest.raises(ValueError, match="negative"):
        must_stop_writing(-1, POLICY)


@pytest.mark.parametrize(("reserve", "start"), [(-1, 10), (10, 10), (10, 9)])
def test_invalid_policy_is_rejected(reserve: int, start: int) -> None:
    with pytest.raises(ValueError, match="bytes"):
        SpacePolicy(reserve_bytes=reserve, min_free_to_start_bytes=start)


def test_card_full_error_says_what_and_is_a_store_error() -> None:
    err = CardFullError(free_bytes=1234, reserve_bytes=5678)
    assert isinstance(err, StoreError)
    assert "1234" in str(err)
    assert "5678" in str(err)
    assert (err.free_bytes, err.reserve_bytes) == (1234, 5678)


def test_card_free_bytes_matches_statvfs(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    # other processes may write meanwhile; the two reads must still be of the same order
    assert abs(card_free_bytes(tmp_path) - st.f_bavail * st.f_frsize) < 64 * MIB


# --- a real, size-limited card -----------------------------------------------------------------


@pytest.fixture
def small_card(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs card."""
    with mounted_tmpfs(tmp_path / "card", "2m") as mountpoint:
        yield mountpoint


def _write_file(path: Path, size: int) -> None:
    with path.open("wb") as stream:
        stream.write(b"\x5a" * size)
        stream.flush()
        os.fsync(stream.fileno())


@pytest.mark.root
def test_guard_agrees_with_a_real_full_card(small_card: Path) -> None:
    block = 32 * KIB
    free = card_free_bytes(small_card)
    assert 2 * MIB - 64 * KIB <= free <= 2 * MIB

    # record (one file per admitted recording) until admission refuses
    recordings = 0
    while decide_admission(card_free_bytes(small_card), POLICY).admitted:
        before = card_free_bytes(small_card)
        _write_file(small_card / f"rec{recordings}.mvbe", block)
        assert card_free_bytes(small_card) == before - block  # the measure follows reality
        recordings += 1
    free = card_free_bytes(small_card)
    assert recordings > 0
    assert POLICY.reserve_bytes < free < POLICY.min_free_to_start_bytes

    # a running writer is stopped by the guard before it eats into the reserve
    guard = write_guard(small_card, POLICY)
    guard(free - POLICY.reserve_bytes - 1)
    with pytest.raises(CardFullError):
        guard(free - POLICY.reserve_bytes)

    # the reserve is real: sealing and catalog/audit writes of that size still succeed
    _write_file(small_card / "seal-and-audit", POLICY.reserve_bytes)
    assert card_free_bytes(small_card) == free - POLICY.reserve_bytes

    # and what card_free_bytes reports is exactly what is left: that much fits, no more
    rest = card_free_bytes(small_card)
    assert must_stop_writing(rest, POLICY)
    _write_file(small_card / "rest", rest)
    assert card_free_bytes(small_card) == 0
    with pytest.raises(OSError, match="No space left") as no_space:
        _write_file(small_card / "one-more", 4 * KIB)
    assert no_space.value.errno == errno.ENOSPC
    # nothing was deleted to make room
    assert len(list(small_card.glob("rec*.mvbe"))) == recordings
