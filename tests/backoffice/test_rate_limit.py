"""The back office's per-client rate limit (backoffice/rate_limit.py): pure, `now_s` given."""

from __future__ import annotations

import pytest

from backoffice.rate_limit import ClientRateLimit


def test_a_burst_passes_then_the_client_is_told_when_to_come_back() -> None:
    limit = ClientRateLimit(rate_per_s=2.0, burst=3)

    assert [limit.take("box-a", 0.0) for _ in range(3)] == [None, None, None]
    assert limit.take("box-a", 0.0) == 1  # half a second to a token: whole seconds, at least 1
    assert limit.take("box-b", 0.0) is None  # another box has its own bucket
    assert limit.take("box-a", 0.5) is None  # one token back after 1/rate s
    assert limit.take("box-a", 0.5) == 1


def test_a_slow_rate_asks_for_a_longer_wait() -> None:
    limit = ClientRateLimit(rate_per_s=0.1, burst=1)

    assert limit.take("box", 100.0) is None
    assert limit.take("box", 100.0) == 10
    assert limit.take("box", 105.0) == 5
    assert limit.take("box", 110.0) is None


def test_a_bucket_never_holds_more_than_the_burst() -> None:
    limit = ClientRateLimit(rate_per_s=10.0, burst=2)
    limit.take("box", 0.0)

    allowed = [limit.take("box", 1e6) is None for _ in range(3)]  # a long quiet spell

    assert allowed == [True, True, False]


def test_only_so_many_clients_are_remembered() -> None:
    limit = ClientRateLimit(rate_per_s=0.001, burst=1, max_clients=2)
    for client in ("a", "b", "c"):
        assert limit.take(client, 0.0) is None

    assert limit.take("c", 0.0) is not None  # remembered: its bucket is empty
    assert limit.take("a", 0.0) is None  # forgotten: a fresh, full bucket


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (1.0, 0), (-1.0, 5)])
def test_a_limit_needs_a_positive_rate_and_burst(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        ClientRateLimit(rate, burst)
