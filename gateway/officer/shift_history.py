"""Who held which bodycam when: the shift history `mvb import` attributes a docked clip by
(issue 15, item 4; RULES R5). Pure: the holdings, their changes and the look-up; the file is
`shift_history_io.py`'s.

A holding is one bodycam carried by one officer over `[from_ms, to_ms)` (wall clock, ms;
`to_ms` None while it lasts). Personal data stays as the shift keeps it (docs/audit-custody.md
6): the officer id only sealed to the back office (storage/sealed.py, label "officer_id": the
box cannot open it), the bodycam serial only as a tag, HMAC-SHA256 under a key derived from the
box's device key (`tag_key`), so the history names neither who nor which bodycam to a reader of
the state directory, while the box that holds the device key can still find a serial's
holdings. (Serials are short: a thief with the device key could try them all; without it a tag
tells nothing.)

Invariants:
- every change of the shift closes every open holding at `now_ms` and opens one per bodycam of
  the new shift, so at any instant at most one open holding has a given tag, and a clip's time
  falls in at most one holding of its tag unless the wall clock went back (then the latest
  start wins);
- holdings closed more than `KEEP_MS` ago are dropped (a clip is docked the day it was shot;
  evidence on the box lives 28 days at most); at most `MAX_HOLDINGS` are kept, newest.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from storage.sealed import is_sealed, label_of

TAG_KEY_MESSAGE = b"MVB bodycam tag key v1"
"""Signed by the device key (Ed25519 is deterministic): its SHA-256 is the tag key."""
OFFICER_LABEL = "officer_id"
KEEP_MS = 29 * 86_400_000
MAX_HOLDINGS = 4096
TAG_HEX = 32


@dataclass(frozen=True, slots=True)
class Holding:
    """One bodycam (by tag) carried by one officer (sealed) over `[from_ms, to_ms)`."""

    tag: str
    officer_sealed: str
    from_ms: int
    to_ms: int | None

    def covers(self, at_ms: int) -> bool:
        return self.from_ms <= at_ms and (self.to_ms is None or at_ms < self.to_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "officer_sealed": self.officer_sealed,
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
        }

    @classmethod
    def from_json(cls, data: Any) -> Holding:
        """ValueError unless `data` is what `to_json` wrote."""
        if not isinstance(data, dict) or set(data) != {"tag", "officer_sealed", "from_ms", "to_ms"}:
            raise ValueError("not a holding")
        tag, sealed = data["tag"], data["officer_sealed"]
        from_ms, to_ms = data["from_ms"], data["to_ms"]
        if not isinstance(tag, str) or len(tag) != TAG_HEX or not _is_hex(tag):
            raise ValueError("bad bodycam tag")
        if not is_sealed(sealed) or label_of(sealed) != OFFICER_LABEL:
            raise ValueError("the officer is not a sealed officer id")
        if type(from_ms) is not int or (to_ms is not None and type(to_ms) is not int):
            raise ValueError("bad holding times")
        return cls(tag, sealed, from_ms, to_ms)


def tag_key(sign: Callable[[bytes], bytes]) -> bytes:
    """The key bodycam tags are made with, from the device key's `sign` (the same key every
    start, no file of its own)."""
    return hashlib.sha256(sign(TAG_KEY_MESSAGE)).digest()


def bodycam_tag(key: bytes, serial: str) -> str:
    return hmac.new(key, serial.encode(), hashlib.sha256).hexdigest()[:TAG_HEX]


def after_change(
    history: tuple[Holding, ...], opened: Iterable[tuple[str, str]], now_ms: int
) -> tuple[Holding, ...]:
    """The history after the shift changed at `now_ms`: every open holding closed, one opened
    per `(tag, officer_sealed)` of the new shift (none: the shift ended), old ones dropped."""
    closed = tuple(h if h.to_ms is not None else replace(h, to_ms=now_ms) for h in history)
    fresh = tuple(Holding(tag, sealed, now_ms, None) for tag, sealed in opened)
    kept = tuple(h for h in closed if h.to_ms is None or h.to_ms >= now_ms - KEEP_MS)
    return (kept + fresh)[-MAX_HOLDINGS:]


def holder_at(history: Iterable[Holding], tag: str, at_ms: int) -> Holding | None:
    """The holding of bodycam `tag` at `at_ms` (the latest started, if the clock went back)."""
    covering = [h for h in history if h.tag == tag and h.covers(at_ms)]
    return max(covering, key=lambda h: h.from_ms, default=None)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
