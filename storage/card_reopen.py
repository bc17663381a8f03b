"""Letting go of a card's sqlite files before opening them again (the catalog, the ledger).

Why this is not a plain close-then-open: SQLite shares one record of each open file per
process (keyed by device and inode), with its file descriptors and its shared-memory mapping.
A card pulled and pushed back in shows the same device and inode, so a new connection opened
while any connection of before is still open (diskcache keeps one per thread, and `close()`
closes only the calling thread's) inherits the dead descriptors: "disk I/O error" at once.
Measured on labdisk: opening anew with the old cache still referenced failed 3 times in 3;
dropping every reference first (which frees every thread's connection) and collecting worked
3 times in 3. So the old object is replaced by `CardAway` (every use raises a card error, which
the callers already handle as the card missing), collected, and only then is the file opened.
"""

from __future__ import annotations

import errno
import gc
from typing import NoReturn

from common.faults import StorageFault


class CardAway(OSError, StorageFault):
    """The card's files are being opened again (or could not be): raised by every use of a
    `AwayFiles`. An OSError with ENODEV: callers read it as the card missing."""

    def __init__(self) -> None:
        super().__init__(errno.ENODEV, "the card's files are being opened again")


class AwayFiles:
    """Stands in for a cache whose card went away: every attribute raises CardAway."""

    def __getattr__(self, name: str) -> NoReturn:
        raise CardAway()


def let_go(holder: object, attribute: str) -> None:
    """Put a stand-in in `holder.attribute` and collect, so that no connection of the object it
    held stays open (nothing else may hold a reference to that object)."""
    setattr(holder, attribute, AwayFiles())
    gc.collect()
