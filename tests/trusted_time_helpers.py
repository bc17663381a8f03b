"""Moving a store's trusted time (docs/retention.md) forward in a test, as if the box had run
that long on the same boot with a GPS fix telling the time then: retention judges by trusted
time, so changing the store's wall clock (`clock_ms`) no longer ages anything."""

from __future__ import annotations

import time

from storage.store import EvidenceStore
from storage.trusted_time_io import TrustedClock, boottime_ms

DAY_MS = 86_400_000


def trusted_time_later(store: EvidenceStore, days: float) -> None:
    """Give `store` a trusted clock on this boot that reads `days` later than now, anchored by a
    GPS fix of that later time. Files recorded on this boot are dated by it (same boot id)."""
    offset_ms = int(days * DAY_MS)

    def later_mono_ms() -> int:
        return boottime_ms() + offset_ms

    later = TrustedClock(store.trusted.state, mono_ms=later_mono_ms)
    later.observe_gps(time.time_ns() // 1_000_000 + offset_ms, later_mono_ms())
    store.trusted = later
