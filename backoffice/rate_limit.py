"""A per-client request rate limit for the reference back office (pure: `now_s` is given).

A token bucket per client id (the certificate's CN): `rate_per_s` requests a second on average,
bursts of `burst` at once. A request over it is answered 429 with `Retry-After` (whole seconds
until a token is back), so one box cannot starve the others and a box learns to slow down
(docs/tus-profile.md 7: the box pauses every upload to that server for at least that long).

Invariants: at most `max_clients` buckets are kept (the least recently seen goes first: a
forgotten client starts with a full bucket, which only ever errs towards serving); a bucket
never holds more than `burst` tokens; `take` never blocks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_CLIENTS: Final = 10_000


@dataclass
class _Bucket:
    tokens: float
    at_s: float


class ClientRateLimit:
    """See the module docstring."""

    def __init__(
        self, rate_per_s: float, burst: int, *, max_clients: int = DEFAULT_MAX_CLIENTS
    ) -> None:
        if not (rate_per_s > 0 and burst >= 1 and max_clients >= 1):
            raise ValueError("rate_per_s must be > 0, burst and max_clients >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, client_id: str, now_s: float) -> int | None:
        """None if `client_id` may send a request now (one token taken); else the whole
        seconds (>= 1) until it may: the Retry-After to answer with."""
        bucket = self._buckets.pop(client_id, None) or _Bucket(float(self.burst), now_s)
        elapsed_s = max(0.0, now_s - bucket.at_s)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed_s * self.rate_per_s)
        bucket.at_s = now_s
        self._buckets[client_id] = bucket
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate_per_s))
