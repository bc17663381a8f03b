"""What a failed card operation says about the card: the pure core of a dying card.

An SD card in a car ends its life in a few ways, and each asks the officer for the same thing
(replace the card) but for a different reason:
- **read-only**: the card's controller turned it read-only at the end of its life (EROFS); what
  it holds stays readable;
- **missing**: the card was pulled, or its reader is gone (ENODEV, ENOTCONN, ENXIO, ENOMEDIUM,
  ESTALE): nothing on it is reachable until it is back;
- **failed**: anything else an operation of the card raised (EIO above all): a write or an
  fsync of it failed, and what it kept is not known.

A full card (ENOSPC) is none of these: the space policy owns it (storage/space.py, alarm
`card_full`), and `condition_of` returns None for it, as for an error that is not the card's.

Invariants:
- `condition_of` looks at the error and the errors it was raised from (`__cause__`, then
  `__context__`), first match wins: a WriterPoisoned says what the OSError under it said;
- each condition has exactly one alarm code (`ALARM_OF`); `CARD_ALARMS` are all of them, so a
  card that comes back clears every one, whatever it was before;
- sqlite's own errors (the catalog, the uplink ledger) are read by their message, the only place
  the library states the kind ("attempt to write a readonly database", "disk I/O error",
  "database disk image is malformed").
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterable
from enum import StrEnum
from typing import Final, Literal


class CardCondition(StrEnum):
    READ_ONLY = "read_only"
    MISSING = "missing"
    FAILED = "failed"


ALARM_OF: Final = {
    CardCondition.READ_ONLY: "card_read_only",
    CardCondition.MISSING: "card_missing",
    # The code the box raised for a failed write before issue 14: kept, the page knows it.
    CardCondition.FAILED: "card_write_failed",
}
CARD_ALARMS: Final = frozenset(ALARM_OF.values())

MISSING_ERRNOS: Final = frozenset(
    {errno.ENODEV, errno.ENOTCONN, errno.ENXIO, errno.ENOMEDIUM, errno.ESTALE}
)
NOT_THE_CARDS_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A full card: the space policy's alarm (`card_full`), not a dying card."""

_SQLITE_READ_ONLY = ("readonly database", "read-only file system")
_SQLITE_FULL = ("database or disk is full",)
# "malformed": measured on labdisk, a connection of before a pull read pages of the reinserted
# card's file beside its own stale ones; the reopen (a new connection, or a rebuilt catalog if
# the file really is damaged: storage/catalog.py) is the repair either way.
_SQLITE_FAILED = ("disk i/o error", "unable to open database", "malformed", "not a database")
_MAX_CHAIN = 8  # exceptions chained deeper than this are not the card's story

MESSAGE_OF: Final = {
    CardCondition.READ_ONLY: "the memory card turned read-only: replace it",
    CardCondition.MISSING: "the memory card is missing or unreachable: put it back or replace it",
    CardCondition.FAILED: "the memory card failed a write: replace it",
}


def condition_of(exc: BaseException) -> CardCondition | None:
    """The card condition `exc` shows (or any error it was raised from), or None when it does
    not show one (a full card, a bug, a closed writer)."""
    seen: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if seen is None:
            return None
        found = _condition_of_one(seen)
        if found is not None:
            return found if isinstance(found, CardCondition) else None
        seen = seen.__cause__ or seen.__context__
    return None


def _condition_of_one(exc: BaseException) -> CardCondition | Literal["full"] | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in NOT_THE_CARDS_ERRNOS:
            return "full"
        if exc.errno == errno.EROFS:
            return CardCondition.READ_ONLY
        if exc.errno in MISSING_ERRNOS:
            return CardCondition.MISSING
        return CardCondition.FAILED
    if isinstance(exc, sqlite3.DatabaseError):  # OperationalError is one too
        text = str(exc).lower()
        if any(words in text for words in _SQLITE_FULL):
            return "full"
        if any(words in text for words in _SQLITE_READ_ONLY):
            return CardCondition.READ_ONLY
        if any(words in text for words in _SQLITE_FAILED):
            return CardCondition.FAILED
    return None


def alarm_message(condition: CardCondition, detail: str | None = None) -> str:
    """The alarm's text for a person (the page shows its own words for the code)."""
    message = MESSAGE_OF[condition]
    return message if not detail else f"{message} ({detail})"


def worse(first: CardCondition | None, second: CardCondition | None) -> CardCondition | None:
    """The condition to tell when two operations disagree: missing over read-only over failed
    (a pulled card fails its writes too; a read-only one fails them as EROFS)."""
    order = (CardCondition.MISSING, CardCondition.READ_ONLY, CardCondition.FAILED)
    for condition in order:
        if condition in (first, second):
            return condition
    return None


def card_state(raised_alarms: Iterable[str]) -> str:
    """The card's state as the status document names it: "ok", or the condition of the card
    alarm raised ("missing" over "read_only" over "failed" should two be raised at once)."""
    raised = set(raised_alarms)
    shown: CardCondition | None = None
    for condition, code in ALARM_OF.items():
        if code in raised:
            shown = worse(shown, condition)
    return "ok" if shown is None else shown.value
