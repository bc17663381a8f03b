"""Bytes promised to unfinished uploads: reserved at creation, released when they end (pure).

Creating an upload of `length_bytes` is a promise to take that many bytes. Without a record of
the promises, ten creations of 16 GiB each pass a free-space check of 76 GiB one by one, and the
disk runs out halfway through somebody's evidence. So the store books every unfinished upload
here: its owner (the box's client id), its length and how far it got. A creation is admitted
only when

- the disk holds it: free bytes - bytes still to come for every booked upload - the new length
  >= the store's reserve (`fits_disk`), and
- its box stays within its share: the lengths of that box's unfinished uploads plus the new
  length <= the per-box limit (`client_bytes`), so one box cannot book the disk for itself.

Invariants: an upload is booked from its creation until it is completed, terminated or expired
(`release`), and at most once; `remaining` is never negative (progress past the length counts as
the length). Thread-safe (a lock): appends settle in worker threads while creations check on the
event loop. No I/O, no clock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(slots=True)
class _Booked:
    client_id: str
    length_bytes: int
    offset_bytes: int

    @property
    def remaining_bytes(self) -> int:
        return max(0, self.length_bytes - self.offset_bytes)


class Reservations:
    """The book of unfinished uploads; see the module docstring."""

    def __init__(self) -> None:
        self._booked: dict[str, _Booked] = {}
        self._lock = threading.Lock()

    def book(
        self, upload_id: str, client_id: str, length_bytes: int, offset_bytes: int = 0
    ) -> None:
        """Book an unfinished upload (at creation, or when the store opens)."""
        if length_bytes < 0 or offset_bytes < 0:
            raise ValueError("length_bytes and offset_bytes must be >= 0")
        with self._lock:
            self._booked[upload_id] = _Booked(client_id, length_bytes, offset_bytes)

    def progress(self, upload_id: str, offset_bytes: int) -> None:
        """The upload's durable offset is now `offset_bytes` (an append was kept or cut back)."""
        with self._lock:
            booked = self._booked.get(upload_id)
            if booked is not None:
                booked.offset_bytes = offset_bytes

    def release(self, upload_id: str) -> None:
        """The upload ended (completed, terminated, expired): its promise is void. Idempotent."""
        with self._lock:
            self._booked.pop(upload_id, None)

    def outstanding_bytes(self) -> int:
        """Bytes still to come for every booked upload: what the disk must keep free for them."""
        with self._lock:
            return sum(booked.remaining_bytes for booked in self._booked.values())

    def client_bytes(self, client_id: str) -> int:
        """The lengths of `client_id`'s unfinished uploads: what that box holds of the disk, the
        bytes it sent and the bytes it was promised."""
        with self._lock:
            return sum(b.length_bytes for b in self._booked.values() if b.client_id == client_id)

    def fits_disk(self, free_bytes: int, reserve_bytes: int, length_bytes: int) -> bool:
        """Whether a new upload of `length_bytes` fits beside every promise and the reserve."""
        return free_bytes - self.outstanding_bytes() - length_bytes >= reserve_bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._booked)
