"""The card watch: while the card is failing, probe it; once it works, resume recording on it.

A supervised child of the service (gateway/run.py). It does nothing while no card alarm is
raised (storage/card_health.py `CARD_ALARMS`: the writers raise them the moment an operation of
the card fails). While one is raised it probes the card every `probe_s` (storage/card_probe.py):
- the probe fails: the alarm is set to what the card shows now (a card that failed a write and
  is then pulled turns `card_write_failed` into `card_missing`), nothing else changes;
- the probe succeeds (the card was reinserted, replaced, or the error passed): the capture
  service closes the parts that failed, the store opens the card again (catalog, recovery of
  the interrupted files: EvidenceStore.reopen_card, which clears the alarms), the running
  recording goes on in new files fed from the pre-record ring, and `on_back` runs (the uplink
  opens its ledger again). No restart of the service.

Meanwhile the pre-record rings keep running in RAM (capture never waits for a failed card), and
the page shows the alarm (docs/webui.md: card_write_failed, card_read_only, card_missing).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Final

from gateway.capture.service import CaptureService
from storage.card_probe import probe_card
from storage.store import EvidenceStore

log = logging.getLogger(__name__)

CARD_PROBE_S: Final = 1.0
"""How often a failing card is probed: a reinserted card is written to within about a second."""


async def card_back(
    store: EvidenceStore, service: CaptureService, on_back: Sequence[Callable[[], None]] = ()
) -> bool:
    """Try to take the card back into use; False (its alarm raised) when it fails meanwhile."""
    try:
        resumed = await service.resume_on_card(store.reopen_card)
    except (OSError, sqlite3.Error) as exc:
        if store.note_card_fault(exc) is None:
            raise
        return False
    for hook in on_back:
        try:
            await asyncio.to_thread(hook)
        except Exception:  # the uplink retries by itself; the card is in use again regardless
            log.exception("after the card came back, a part could not reopen its files")
    log.warning("the card is back; recording resumed for %d camera(s)", len(resumed))
    return True


async def watch_card(
    store: EvidenceStore,
    service: CaptureService,
    *,
    probe_s: float = CARD_PROBE_S,
    on_back: Sequence[Callable[[], None]] = (),
) -> None:
    """Forever: while a card alarm is raised, probe; take the card back once it works."""
    while True:
        await asyncio.sleep(probe_s)
        if not store.card_faulted():
            continue
        condition = await asyncio.to_thread(probe_card, store.layout.root)
        if condition is not None:
            store.probe_shows(condition)
            continue
        await card_back(store, service, on_back)
