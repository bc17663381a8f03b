"""A token bucket that keeps uploads under a link's rate cap (leaving headroom for other traffic).

Pure core (`TokenBucket.delay_s`) plus a one-line async shell (`Pacer.take`). The rate may change
at any time (the link manager re-derives it from measured goodput); a rate of None is unlimited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

BURST_S = 0.25
"""The bucket holds a quarter second of traffic: smooth enough for a 4G scheduler, and a chunk of
any size still passes (it just waits for its tokens)."""


@dataclass
class TokenBucket:
    """Invariant: `tokens_bytes` <= burst; taking more than is there leaves a debt that delays."""

    rate_bytes_per_s: float | None
    tokens_bytes: float = 0.0
    updated_s: float = 0.0

    def delay_s(self, body_bytes: int, now_s: float) -> float:
        """Take `body_bytes` now; return how long the caller must wait before sending them."""
        if self.rate_bytes_per_s is None or self.rate_bytes_per_s <= 0:
            return 0.0
        burst_bytes = self.rate_bytes_per_s * BURST_S
        elapsed_s = max(0.0, now_s - self.updated_s)
        self.tokens_bytes = min(burst_bytes, self.tokens_bytes + elapsed_s * self.rate_bytes_per_s)
        self.updated_s = now_s
        self.tokens_bytes -= body_bytes
        if self.tokens_bytes >= 0:
            return 0.0
        return -self.tokens_bytes / self.rate_bytes_per_s


class Pacer:
    """Async shell: `await pacer.take(n)` sleeps as long as the bucket says."""

    def __init__(
        self, rate_bytes_per_s: float | None, clock_s: Callable[[], float] = time.monotonic
    ) -> None:
        self.bucket = TokenBucket(rate_bytes_per_s, updated_s=clock_s())
        self._clock_s = clock_s

    def set_rate(self, rate_bytes_per_s: float | None) -> None:
        self.bucket.rate_bytes_per_s = rate_bytes_per_s

    async def take(self, body_bytes: int) -> None:
        delay_s = self.bucket.delay_s(body_bytes, self._clock_s())
        if delay_s > 0:
            await asyncio.sleep(delay_s)
