"""The evidence store's holds (storage/holds.py is the book): changing them and copying them into
the catalog's `held` flags. A mixin of `EvidenceStore` (storage/store.py), kept apart so that the
store's file stays readable in one sitting.

Invariants:
- the book (`<card>/holds/holds.json`) is written, durable, before the catalog's flags that copy
  it: a power cut in between leaves the book ahead, and the next open copies it again;
- the flags are copied under the store's `_lock`, the lock a new file is catalogued under, so a
  file catalogued meanwhile never keeps a stale hold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from storage.card import CardLayout
from storage.catalog import Catalog
from storage.holds import HoldBook
from storage.holds_io import write_holds
from storage.models import FileRecord, FileState


class StoreHolds:
    """Needs of the store it is mixed into (set by EvidenceStore.__init__)."""

    catalog: Catalog
    holds: HoldBook
    layout: CardLayout
    _lock: threading.Lock
    _holds_lock: threading.Lock

    def recording_files(self, recording_id: str) -> list[FileRecord]:
        """The catalog's records of one recording (DELETED ones included)."""
        with self._lock:
            return self.catalog.by_recording(recording_id)

    def change_holds(self, change: Callable[[HoldBook], HoldBook]) -> tuple[HoldBook, HoldBook]:
        """Apply `change` to the holds: the book is written (durable) first, then copied into
        the catalog's flags of the recordings whose hold changed. Returns (before, after). A
        power cut in between leaves the book ahead of the catalog: the next open copies it."""
        with self._holds_lock:
            before = self.holds
            after = change(before)
            if after != before:
                write_holds(self.layout, after)
                self._copy_holds_to_catalog(before.held() ^ after.held(), after)
        return before, after

    def _copy_holds_to_catalog(self, recording_ids: Iterable[str] | None, book: HoldBook) -> None:
        """Make `book` the store's holds and the catalog's `held` flags say what it says, for
        `recording_ids` (all: None). One lock with the registering of new files, so a file
        catalogued meanwhile takes either the old hold and is corrected here, or the new one."""
        with self._lock:
            self.holds = book
            if recording_ids is None:
                records = self.catalog.all()
            else:
                records = [r for i in sorted(recording_ids) for r in self.catalog.by_recording(i)]
            for record in records:
                held = book.is_held(record.recording_id)
                if record.state is not FileState.DELETED and record.held != held:
                    self.catalog.set_held(record.file_id, held)
