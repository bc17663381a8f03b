"""What the box does when its back office says it was unpaired (RULES L5, docs/pairing.md 5.4).

The uplink (transport/withdrawal.py) and the fleet sync (gateway/fleet_sync.py) each may be the
first to hear `Mvb-Credentials: unpaired` on the pinned mutual-TLS link (transport/unpairing.py:
why that answer can be trusted). Either calls `Unpairing.unpaired`, which, once:
- forgets the credentials and the back office's address (gateway/pairing_client.py
  `forget_pairing`: the pairing directory, then the fleet trust root and fleet state);
- raises the sticky alarm `unpaired` (the officer's page shows it translated, and it survives
  a restart) and audits `gateway.unpaired` with the back office's address it forgot;
- keeps every piece of evidence: card, catalog, audit log and upload ledger stay as they are,
  retention goes on by its own rule (S4), and the next pairing uploads what is left.

`clear_if_paired` takes the alarm down once the box is paired again (at start, after the page's
pairing); a running uplink that loads new credentials clears it too (withdrawal.py `lift`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from common.alarms import Alarms
from gateway.pairing_client import forget_pairing, is_paired, pairing_files
from storage.audit_io import AuditLog
from transport.withdrawal import UNPAIRED_ALARM, UNPAIRED_REASON

log = logging.getLogger(__name__)


class Unpairing:
    def __init__(self, state_dir: Path, alarms: Alarms, audit: AuditLog) -> None:
        self.state_dir = state_dir
        self.alarms = alarms
        self.audit = audit
        self._lock = asyncio.Lock()

    async def unpaired(self) -> None:
        """The back office said this box was unpaired: forget it, say so, keep the evidence.
        Idempotent (both the uplink and the fleet sync may hear it)."""
        async with self._lock:
            if not await asyncio.to_thread(is_paired, self.state_dir):
                return
            try:
                address = await asyncio.to_thread(pairing_files(self.state_dir).address)
            except (OSError, ValueError):
                address = "unknown"
            await asyncio.to_thread(forget_pairing, self.state_dir)
            log.warning("the back office unpaired this box: its pairing is forgotten")
            self.alarms.raise_(UNPAIRED_ALARM, UNPAIRED_REASON, sticky=True)
            await asyncio.to_thread(self.audit.append, "gateway.unpaired", back_office=address)

    def clear_if_paired(self) -> None:
        """The box is paired (again): the alarm of an earlier unpair no longer holds."""
        if is_paired(self.state_dir):
            self.alarms.clear(UNPAIRED_ALARM)
