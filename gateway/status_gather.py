"""Reading the status facts (gateway/status_facts.py) off the running parts: the shell.

`read_storage_facts` and `read_uplink_facts` touch the catalog, the ledger and the card: call
them off the event loop. `gps_facts` and `recording_facts` read memory only.
"""

from __future__ import annotations

import datetime
import os

from gateway.capture.service import CaptureService
from gateway.gps import GpsTracker
from gateway.status_facts import (
    NOT_PAIRED,
    UPLINK_OFF,
    GpsFacts,
    LinkBudget,
    RecordingFacts,
    StorageFacts,
    UplinkFacts,
    UplinkIdle,
    storage_facts,
)
from gateway.uplink_from_config import UplinkNotStarted
from storage.store import EvidenceStore
from transport.budget import DataBudget
from transport.uplink import UplinkService

NS_PER_S = 1_000_000_000


def read_storage_facts(store: EvidenceStore) -> StorageFacts:
    """The catalog (sqlite) and statvfs of the card: call it off the event loop."""
    records = store.catalog.all()
    card = os.statvfs(store.layout.root)
    return storage_facts(
        records,
        card_total_bytes=card.f_blocks * card.f_frsize,
        card_free_bytes=card.f_bavail * card.f_frsize,
        reserve_bytes=store.settings.space.reserve_bytes,
        retention_days=store.settings.retention.retention_days,
    )


def unknown_storage_facts(store: EvidenceStore) -> StorageFacts:
    """The storage facts of a card that does not answer: nothing on it can be counted."""
    return StorageFacts(
        card_total_bytes=0,
        card_free_bytes=0,
        reserve_bytes=store.settings.space.reserve_bytes,
        retention_days=store.settings.retention.retention_days,
    )


def link_budgets(uplink: UplinkService, today: datetime.date) -> dict[str, LinkBudget]:
    """Each link's spend in today's billing cycle (read on a copy: status never rolls the
    stored cycle, the uplink does that when it spends)."""
    budgets = {}
    for name, link in uplink.links.items():
        if link.budget is None:
            budgets[name] = LinkBudget(None, 0)
            continue
        copy = DataBudget(link.budget.config, link.budget.state)
        copy.roll(today)
        budgets[name] = LinkBudget(link.config.monthly_cap_bytes, copy.state.used_bytes)
    return budgets


def read_uplink_facts(
    uplink: UplinkService | UplinkNotStarted | None, paired: bool
) -> UplinkFacts | UplinkIdle:
    """The uplink's status (it reads the catalog and its ledger): off the event loop."""
    if uplink is None:  # [uplink] is off in the configuration
        if paired:
            return UplinkIdle(UPLINK_OFF, "the uplink is off in this box's configuration")
        return UplinkIdle(NOT_PAIRED, "the box is not paired with a back office")
    if isinstance(uplink, UplinkNotStarted):  # configured, but it could not start
        status = uplink.status()
        return UplinkIdle(str(status["state"]), str(status.get("reason", "")))
    return UplinkFacts(uplink.status(), link_budgets(uplink, datetime.date.today()))


def gps_facts(gps: GpsTracker, now_ns: int) -> GpsFacts:
    fix = gps.fix
    return GpsFacts(
        status=gps.status(now_ns).value,
        mode=None if fix is None else fix.mode,
        speed_mps=gps.speed_mps(now_ns),
        clock_offset_ms=gps.clock_offset_ms,
        fix_age_s=None if fix is None else (now_ns - fix.received_mono_ns) / NS_PER_S,
        lat=None if fix is None else fix.lat,
        lon=None if fix is None else fix.lon,
    )


def recording_facts(service: CaptureService) -> RecordingFacts:
    recording = service.recording
    max_continuous_s = service.recorder.policy.max_continuous_s
    if recording is None:
        return RecordingFacts(None, None, None, max_continuous_s)
    trigger = recording.facts.get("trigger")
    source = trigger.get("source") if isinstance(trigger, dict) else None
    upload_class = recording.facts.get("upload_class")
    return RecordingFacts(
        recording.recording_id,
        None if source is None else str(source),
        None if upload_class is None else str(upload_class),
        max_continuous_s,
    )
