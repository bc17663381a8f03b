"""Shipping the audit log: where the box stands and what an answer means (pure).

The shell is transport/audit_shipping_io.py; the protocol transport/audit_wire.py and
docs/audit-custody.md. The box keeps one `Position`: the last entry the back office confirmed
it holds, and where that entry's line ends in the local `audit.jsonl`. Invariants:
- a position is only ever taken from the back office's answer (`Mvb-Audit-Held`) and checked
  against the local log (that entry's line, with that hash, ends there), so the box never
  skips an entry the back office does not hold;
- a request is whole lines from the position on, so sending it again is harmless: the back
  office takes what it holds as already held (docs/audit-custody.md 3).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Final

from common.faults import StorageFault
from storage.audit_head import AuditHead, HeadFormatError
from transport.audit_wire import STATUS_HELD, STATUS_REFUSED, STATUS_START_ELSEWHERE

NO_ROUTE: Final = frozenset({404, 405})
WITHDRAWN: Final = frozenset({401, 403})


class PositionUnreadable(ValueError, StorageFault):
    """The position file is not what this module writes."""


@dataclass(frozen=True, slots=True)
class Position:
    """The last entry the back office confirmed (`head`) and the end of its line in the local
    log (`end_bytes`); the empty head at 0 before anything is held."""

    head: AuditHead
    end_bytes: int

    @classmethod
    def start(cls) -> Position:
        return cls(AuditHead.empty(), 0)

    def to_json(self) -> str:
        return json.dumps(
            {"seq": self.head.seq, "sha256": self.head.sha256_hex, "end_bytes": self.end_bytes},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Position:
        try:
            raw = json.loads(text)
            head = AuditHead(int(raw["seq"]), str(raw["sha256"]))
            end_bytes = raw["end_bytes"]
        except (ValueError, KeyError, TypeError, HeadFormatError) as exc:
            raise PositionUnreadable(f"audit shipping position unreadable: {exc}") from None
        if type(end_bytes) is not int or end_bytes < 0:
            raise PositionUnreadable("audit shipping position: end_bytes is not a size")
        return cls(head, end_bytes)


class Step(enum.Enum):
    """What the shipper does after an answer."""

    ADVANCE = "advance"  # the back office holds what was sent: move the position on
    RESYNC = "resync"  # it holds something else: find its head in the local log
    REFUSED = "refused"  # it refuses the log (a fork, a rewrite, a truncation): alarm, wait
    NO_ROUTE = "no_route"  # a back office without the route: ask again much later
    WITHDRAWN = "withdrawn"  # the credentials are refused: the uplink's guard handles it
    RETRY = "retry"  # anything else (429, 5xx, a malformed answer): back off, try again


def step_after(status: int, held: AuditHead | None, sent: AuditHead) -> Step:
    """What an append's answer means; `sent` is the head of the last line sent (the position's
    when the request had no lines), `held` the answer's `Mvb-Audit-Held`."""
    if status == STATUS_HELD and held is not None:
        return Step.ADVANCE if held == sent else Step.RESYNC
    if status == STATUS_START_ELSEWHERE and held is not None:
        return Step.RESYNC
    if status == STATUS_REFUSED:
        return Step.REFUSED
    if status in NO_ROUTE:
        return Step.NO_ROUTE
    if status in WITHDRAWN:
        return Step.WITHDRAWN
    return Step.RETRY


def seq_of_line(line: bytes) -> int:
    """The seq of an entry's line (shape is the back office's to check); ValueError if none."""
    seq = json.loads(line)["seq"]
    if type(seq) is not int:
        raise ValueError("an entry without an integer seq")
    return seq


def find_entry(lines: list[bytes], base_bytes: int, seq: int) -> tuple[int, str] | None:
    """In consecutive whole `lines` starting at offset `base_bytes`: the end offset and hash of
    the line whose entry has `seq`, or None when none of them has it."""
    offset = base_bytes
    for line in lines:
        offset += len(line) + 1
        try:
            if seq_of_line(line) == seq:
                return offset, hashlib.sha256(line).hexdigest()
        except (ValueError, KeyError, TypeError):
            continue
    return None
