"""`mvb-admin config check-now --box ID`: a box checks its fleet configuration at its next contact
(docs/fleet-admin.md 7.1, docs/fleet-health.md 2.1).

A box behind carrier NAT cannot be called. What it does do is contact the back office: its health
report (`POST /fleet/health`, at least every 5 minutes and within 15 s of a change) and its fleet
poll. So the admin's request is kept here, one empty-ish file per box, and the answer to the
box's next health report carries CHECK_NOW_HEADER; the box then checks its fleet configuration at
once instead of at its next poll. The instruction travels only in an answer of the pinned,
mutually authenticated back office (the box trusts no other source for it: its health link is
the pinned link of its fleet sync), and it carries nothing but "check now": the box still
verifies whatever it downloads by TUF as always, so a forged instruction could at most make a
box poll early.

Invariants:
- A request is durable before the command reports success (common/durable.py), and is removed
  only once the box fetched its `timestamp.json`: the check it asked for happened (or a poll of
  the box's own that came first did the same), so an answer lost on the way costs one more
  instruction at the next report, never the check.
- Box ids are the pairing ledger's (certificate CNs): `[A-Za-z0-9._-]`, 1-64, not a path.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Final

from common.durable import atomic_write_bytes, durable_unlink, make_dirs
from common.faults import MisuseFault
from protocol.health_report import CHECK_NOW_HEADER as CHECK_NOW_HEADER
from protocol.health_report import CHECK_NOW_VALUE as CHECK_NOW_VALUE

CHECK_NOW_DIR: Final = "fleet-check-now"
TIMESTAMP_PATH: Final = "/fleet/metadata/timestamp.json"
"""A box's fetch of this file is the check the request asked for."""
_BOX_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class CheckNowRefused(MisuseFault):
    """A box id that cannot be one (exit 2)."""


class CheckNowBook:
    """The boxes asked to check now, under `<store>/fleet-check-now/<box>.json`."""

    def __init__(self, store_dir: Path) -> None:
        self.directory = store_dir / CHECK_NOW_DIR

    def request(self, box_id: str, now_ms: int | None = None) -> None:
        _require_box_id(box_id)
        at_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        make_dirs(self.directory, mode=0o700)
        body = json.dumps({"box_id": box_id, "requested_at_ms": at_ms}).encode()
        atomic_write_bytes(self.directory / f"{box_id}.json", body, mode=0o600)

    def pending(self, box_id: str) -> bool:
        return (
            _BOX_ID.fullmatch(box_id) is not None and (self.directory / f"{box_id}.json").exists()
        )

    def done(self, box_id: str) -> None:
        """The box fetched its timestamp: its request (if any) is fulfilled."""
        if self.pending(box_id):
            durable_unlink(self.directory / f"{box_id}.json")

    def waiting(self) -> list[str]:
        """Boxes whose request is not fulfilled yet, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(path.stem for path in self.directory.glob("*.json"))


def _require_box_id(box_id: str) -> None:
    if _BOX_ID.fullmatch(box_id) is None:
        raise CheckNowRefused(f"box id {box_id!r} must be 1-64 of A-Z a-z 0-9 . _ -")
