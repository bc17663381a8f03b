"""The rate cap's token bucket, driven with explicit time (no sleeps)."""

from __future__ import annotations

import pytest

from transport.pacing import BURST_S, TokenBucket


def test_unlimited_never_waits() -> None:
    bucket = TokenBucket(None)
    assert bucket.delay_s(10**9, 0.0) == 0.0


def test_a_steady_sender_is_held_to_the_rate() -> None:
    bucket = TokenBucket(1000.0)
    now_s, sent_bytes = 0.0, 0
    for _ in range(100):
        now_s += bucket.delay_s(100, now_s)
        sent_bytes += 100
    # 10_000 bytes at 1000 B/s: the last send waits until ~10 s (less the burst never earned here)
    assert now_s == pytest.approx(sent_bytes / 1000.0, rel=0.01)


def test_idle_time_earns_at_most_one_burst() -> None:
    bucket = TokenBucket(1000.0)
    assert bucket.delay_s(1, 0.0) == pytest.approx(0.001)
    later_s = 3600.0
    burst_bytes = int(1000 * BURST_S)
    assert bucket.delay_s(burst_bytes, later_s) == 0.0
    assert bucket.delay_s(500, later_s) == pytest.approx(0.5)


def test_lowering_the_rate_applies_to_the_next_take() -> None:
    bucket = TokenBucket(1000.0)
    bucket.delay_s(250, 0.0)
    bucket.rate_bytes_per_s = 100.0
    assert bucket.delay_s(100, 0.0) == pytest.approx(3.5)
