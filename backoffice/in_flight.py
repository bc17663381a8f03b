"""The requests each box has in flight: a cap per box, and the cut when its certificate goes.

Both listeners of one back office (HTTPS and HTTP/3) share one InFlight. Every request of a
verified client enters it before it is served and leaves it when answered:

- **A cap per box.** A box (client id, the certificate's CN) may have at most
  `max_per_client` requests in flight; one more is refused at once (the shells answer 429 with
  Retry-After: the box then pauses every upload to this back office for that long). A box that
  holds 260 slow uploads open thus holds `max_per_client` slots, and every other box keeps the
  rest of the server's global bound (`max_concurrent_requests`).
- **The cut.** An unpair (or a re-pair) withdraws a certificate serial; the gate refuses its next
  request, and `cut(serial)` ends the ones already running: each Ticket is marked withdrawn and
  its shell's `cutter` makes the body raise RequestWithdrawn at once (TusApp answers 403, keeps
  none of that request's bytes and never says success). `cut_withdrawn_periodically` asks the
  pairing ledger (`withdrawn_among`) about the serials in flight, whenever it changed.

Invariants: a box's count is the number of its tickets entered and not left; `enter` refuses
(None) exactly when the count is at the cap; a ticket cut stays cut; `cut` calls each cutter at
most once. The book is pure (no clock, no I/O); only the periodic check awaits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUESTS_PER_CLIENT: Final = 8
"""An honest box has one request per upload in flight (one upload per link), a fleet poll and
now and then a report: eight leave room for all of those at once."""
DEFAULT_WITHDRAWAL_POLL_S: Final = 0.5
"""How often the ledger file is looked at (one stat) for serials withdrawn meanwhile."""
IN_FLIGHT_RETRY_AFTER_S: Final = 5

WithdrawnAmong = Callable[[frozenset[int]], Awaitable[frozenset[int]]]
"""`await withdrawn_among(serials)`: those of `serials` the pairing ledger denies now."""


@dataclass(eq=False)
class Ticket:
    """One request in flight. `cutter` is what interrupts its body (set by the shell once the
    body exists); `withdrawn()` is what TusApp asks before it answers."""

    client_id: str
    serial: int | None
    cutter: Callable[[], None] | None = None
    cut: bool = field(default=False, init=False)

    def withdrawn(self) -> bool:
        return self.cut


class InFlight:
    """The book of requests in flight; see the module docstring."""

    def __init__(self, max_per_client: int = DEFAULT_MAX_REQUESTS_PER_CLIENT) -> None:
        if max_per_client < 1:
            raise ValueError("max_per_client must be >= 1")
        self.max_per_client = max_per_client
        self._tickets: set[Ticket] = set()
        self._counts: dict[str, int] = {}

    def enter(self, client_id: str, serial: int | None) -> Ticket | None:
        """A ticket for a new request of `client_id`, or None when the box is at its cap."""
        count = self._counts.get(client_id, 0)
        if count >= self.max_per_client:
            return None
        ticket = Ticket(client_id, serial)
        self._tickets.add(ticket)
        self._counts[client_id] = count + 1
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """The request was answered (or failed). Idempotent."""
        if ticket not in self._tickets:
            return
        self._tickets.discard(ticket)
        count = self._counts[ticket.client_id] - 1
        if count:
            self._counts[ticket.client_id] = count
        else:
            del self._counts[ticket.client_id]

    def count(self, client_id: str) -> int:
        return self._counts.get(client_id, 0)

    def serials(self) -> frozenset[int]:
        """The certificate serials with a request in flight."""
        return frozenset(t.serial for t in self._tickets if t.serial is not None)

    def cut(self, serial: int) -> int:
        """Cut every request in flight under certificate `serial`; how many were cut now."""
        cut_now = 0
        for ticket in list(self._tickets):
            if ticket.serial != serial or ticket.cut:
                continue
            ticket.cut = True
            cut_now += 1
            if ticket.cutter is not None:
                ticket.cutter()
        return cut_now


async def cut_withdrawn(in_flight: InFlight, withdrawn_among: WithdrawnAmong) -> int:
    """One look: cut the requests of every serial in flight the ledger denies now."""
    serials = in_flight.serials()
    if not serials:
        return 0
    cut_now = 0
    for serial in sorted(await withdrawn_among(serials)):
        count = in_flight.cut(serial)
        if count:
            log.warning(
                "cut requests in flight of a withdrawn certificate serial=%x requests=%d",
                serial,
                count,
            )
        cut_now += count
    return cut_now


async def cut_withdrawn_periodically(
    in_flight: InFlight,
    withdrawn_among: WithdrawnAmong,
    poll_s: float = DEFAULT_WITHDRAWAL_POLL_S,
) -> None:
    """`cut_withdrawn` every `poll_s` until cancelled; a ledger that cannot be read is logged
    and asked again (the gate fails closed for new requests meanwhile)."""
    while True:
        try:
            await cut_withdrawn(in_flight, withdrawn_among)
        except Exception:  # the check must outlive a bad read; the next one tries again
            log.exception("checking requests in flight against the ledger failed")
        await asyncio.sleep(poll_s)
