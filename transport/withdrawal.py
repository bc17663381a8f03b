"""The back office refused the box's credentials (401/403): stop, say so, resume on new ones.

A shell part of the uplink (transport/uplink.py). On a withdrawal it raises the alarm
`uplink_credentials`, audits `uplink.credentials_withdrawn` and records in the ledger which
credentials were refused; from then on the uplink starts nothing and probes nothing, except one
OPTIONS every WITHDRAWN_RECHECK_S (the refusal may have been the back office's mistake).
Meanwhile, every CREDENTIALS_CHECK_S, it compares the credentials on disk with those in use: new
ones (a re-pair: `mvb pair --re-pair`, or the page's pairing) are loaded at once and the uplink
resumes without a restart (`uplink.credentials_renewed`).

Unpaired (the refusal says `Mvb-Credentials: unpaired`, transport/unpairing.py): the admin
removed the box (RULES L5). The guard raises the sticky alarm `unpaired` instead, audits the
withdrawal with `unpaired: true` and calls `on_unpaired` (the box's unpairing, gateway/
unpairing.py: it forgets the credentials and the back office's address, and keeps the evidence).
No recheck then: there is nothing left to ask with. New credentials (the next pairing) lift it
as any withdrawal, and clear the alarm.

Invariants:
- withdrawn exactly while the ledger holds a withdrawal for the credentials in use: a restart
  with the same credentials stays withdrawn (nothing is sent but the hourly recheck), a restart
  with new ones starts clean;
- the alarm is raised while withdrawn and cleared when lifted; each change is audited once;
- the fingerprints are of public material: nothing secret reaches the ledger or the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from common.alarms import Alarms
from transport.credentials import Credentials
from transport.errors import CredentialsWithdrawn
from transport.ledger import LedgerCorrupt, UplinkLedger, Withdrawal
from transport.refusals import CREDENTIALS_CHECK_S, WITHDRAWN_RECHECK_S, Wait

log = logging.getLogger(__name__)

ALARM = "uplink_credentials"
REASON = "the back office refuses this box's certificate: pair the box again"
UNPAIRED_ALARM = "unpaired"
UNPAIRED_REASON = (
    "the back office removed this box (unpaired): its credentials and the back office's address "
    "are forgotten, its evidence stays on the box until it is paired again"
)

Audit = Callable[..., Awaitable[None]]


class CredentialsGuard:
    """Whether the uplink may talk to its back office, as far as credentials go."""

    def __init__(
        self,
        ledger: UplinkLedger,
        credentials: Credentials,
        alarms: Alarms,
        audit: Audit,
        clock_s: Callable[[], float],
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._ledger = ledger
        self._credentials = credentials
        self._alarms = alarms
        self._audit = audit
        self._clock_s = clock_s
        self._wall_ms = wall_ms
        self.withdrawn: Withdrawal | None = None
        self.unpaired = False
        self._recheck_at_s = 0.0
        self._checked_at_s = -CREDENTIALS_CHECK_S
        # What the box does when the back office says it was unpaired (set by its composition
        # root; nothing by default: a box configured by hand has no pairing to forget).
        self.on_unpaired: Callable[[], Awaitable[None]] = _nothing

    async def load(self) -> None:
        """At start: withdrawn if the ledger says the credentials in use were refused."""
        try:
            stored = await asyncio.to_thread(self._ledger.withdrawal)
        except LedgerCorrupt as exc:
            log.warning("uplink: %s; starting as not withdrawn", exc)
            stored = None
        if stored is None:
            return
        if stored.credentials != self._credentials.in_use():
            await asyncio.to_thread(self._ledger.put_withdrawal, None)  # re-paired since
            await self._audit("uplink.credentials_renewed", status=stored.status)
            return
        self.withdrawn = stored
        self._recheck_at_s = self._clock_s() + WITHDRAWN_RECHECK_S
        self._alarms.raise_(ALARM, f"{REASON} (HTTP {stored.status}); uploads stopped")

    def wait(self) -> Wait | None:
        """While withdrawn: why everything waits, until the next recheck."""
        if self.withdrawn is None:
            return None
        return Wait(max(self._recheck_at_s, self._clock_s() + 1e-3), REASON)

    def recheck_due(self) -> bool:
        """Withdrawn, and the hour is over: one OPTIONS may ask again (then the next hour)."""
        now_s = self._clock_s()
        if self.withdrawn is None or self.unpaired or now_s < self._recheck_at_s:
            return False
        self._recheck_at_s = now_s + WITHDRAWN_RECHECK_S
        return True

    async def withdraw(self, fault: CredentialsWithdrawn) -> None:
        """The back office refused the credentials in use (idempotent)."""
        if self.withdrawn is not None:
            return
        withdrawal = Withdrawal(self._credentials.in_use(), fault.status, self._wall_ms())
        self.withdrawn = withdrawal
        self._recheck_at_s = self._clock_s() + WITHDRAWN_RECHECK_S
        self._checked_at_s = -CREDENTIALS_CHECK_S  # look for new ones at once (a re-pair raced)
        await asyncio.to_thread(self._ledger.put_withdrawal, withdrawal)
        if fault.unpaired:
            self.unpaired = True
            log.warning("uplink: the back office says this box was unpaired (%d)", fault.status)
            self._alarms.raise_(UNPAIRED_ALARM, UNPAIRED_REASON, sticky=True)
            await self._audit("uplink.credentials_withdrawn", status=fault.status, unpaired=True)
            await self.on_unpaired()
            return
        log.warning("uplink: the back office refuses this box's credentials (%d)", fault.status)
        self._alarms.raise_(ALARM, f"{REASON} (HTTP {fault.status}); uploads stopped")
        await self._audit("uplink.credentials_withdrawn", status=fault.status)

    async def renewed(self) -> bool:
        """While withdrawn, at most every CREDENTIALS_CHECK_S: if the credentials on disk are
        new, load them and lift the withdrawal. True when it was lifted."""
        now_s = self._clock_s()
        if self.withdrawn is None or now_s - self._checked_at_s < CREDENTIALS_CHECK_S:
            return False
        self._checked_at_s = now_s
        try:
            on_disk = await asyncio.to_thread(self._credentials.on_disk)
        except (OSError, ValueError) as exc:  # a pairing being written: look again soon
            log.info("uplink: credentials unreadable for now: %s", type(exc).__name__)
            return False
        if on_disk is None or on_disk == self.withdrawn.credentials:
            return False
        await asyncio.to_thread(self._credentials.reload)
        await self.lift("new credentials")
        return True

    async def lift(self, why: str) -> None:
        """The back office accepts the box again (new credentials, or a recheck succeeded)."""
        withdrawn = self.withdrawn
        if withdrawn is None:
            return
        self.withdrawn = None
        self.unpaired = False
        log.info("uplink: resuming, %s", why)
        self._alarms.clear(ALARM)
        self._alarms.clear(UNPAIRED_ALARM)
        await asyncio.to_thread(self._ledger.put_withdrawal, None)
        await self._audit("uplink.credentials_renewed", status=withdrawn.status)


async def _nothing() -> None:
    return None
