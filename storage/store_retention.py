"""The evidence store's retention pass (storage/retention.py decides, docs/retention.md): what
may be deleted is deleted and audited, and the retention alarms follow the plan. A mixin of
`EvidenceStore` (storage/store.py), kept apart so that the store's file stays readable in one
sitting.

Invariants:
- one pass at a time (`_retention_lock`): each file is deleted and audited once, however many
  callers ask at the same time;
- a deletion is audited before the catalog says DELETED (S5): a power cut in between audits it
  again at the next pass, never leaves a deletion without its audit entry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from common.alarms import Alarms
from common.durable import durable_unlink, remove_empty_dir
from storage.audit_io import AuditLog
from storage.card import CardLayout
from storage.catalog import Catalog
from storage.models import FileRecord, FileState
from storage.retention import (
    Deletion,
    DeletionReason,
    RetentionPlan,
    plan_retention,
    retention_alarms,
)
from storage.store_settings import StoreSettings
from storage.trusted_time import TrustedNow, TrustedState, resolve_created
from storage.trusted_time_io import TrustedClock

log = logging.getLogger(__name__)


class StoreRetention:
    """Needs of the store it is mixed into (set by EvidenceStore.__init__)."""

    alarms: Alarms
    audit: AuditLog
    catalog: Catalog
    clock_ms: Callable[[], int]
    last_retention: RetentionPlan | None
    layout: CardLayout
    settings: StoreSettings
    trusted: TrustedClock
    _lock: threading.Lock
    _retention_lock: threading.Lock

    def apply_retention(self) -> list[Deletion]:
        """Delete what retention allows (attested, or expired in trusted time and not held);
        audit each one; raise or clear the retention alarms. Returns what was deleted.

        Files whose creation had no trusted bound get one first, if trusted time now allows
        (noted in the catalog for good). Passes run one after the other (a later pass plans from
        what the earlier one left), so every file is deleted and audited once however many
        callers ask at the same time (the uplink after each attestation, the retention timer).
        """
        with self._retention_lock:
            state, now = self.trusted.snapshot()
            with self._lock:
                records = self._bound_creation_times(self.catalog.all(), state, now)
            plan = plan_retention(records, now, self.settings.retention)
            deleted_at_ms = self.clock_ms()
            for deletion in plan.deletions:
                self._delete_file(deletion, deleted_at_ms, now)
            grace_ms = round(self.settings.time_unknown_alarm_after_s * 1000)
            alarms = retention_alarms(plan, self.settings.retention, grace_ms)
            for code, message in alarms.items():
                if message is None:
                    self.alarms.clear(code)
                else:
                    self.alarms.raise_(code, message)
            self.trusted.passed(now)
            self.last_retention = plan
        return list(plan.deletions)

    def _bound_creation_times(
        self, records: list[FileRecord], state: TrustedState, now: TrustedNow
    ) -> list[FileRecord]:
        """The records, with a trusted creation bound for each that lacked one and can get one
        now (stored in the catalog). Called under `_lock`."""
        bounded = []
        for record in records:
            if record.trusted_created_high_ms is None and record.state is not FileState.DELETED:
                created = resolve_created(record.boot_id, record.created_mono_ms, state, now)
                if created is not None:
                    record = self.catalog.set_trusted_created(
                        record.file_id, created.low_ms, created.high_ms, created.by
                    )
            bounded.append(record)
        return bounded

    def _delete_file(self, deletion: Deletion, now_ms: int, now: TrustedNow) -> None:
        durable_unlink(self.layout.sealed_path(deletion.recording_id, deletion.file_id))
        durable_unlink(self.layout.sidecar_path(deletion.recording_id, deletion.file_id))
        # Audited before the catalog says DELETED: after a power cut between the two, the next
        # pass finds the file still due, finds it gone, and audits the deletion again. The other
        # order would leave a deletion that no audit entry ever records (S5).
        expiry: dict[str, str | float] = {}
        if deletion.reason is DeletionReason.EXPIRED and deletion.age_days is not None:
            # An unuploaded recording is lost (S4): loudly, with what the decision rested on.
            expiry = {"age_days": round(deletion.age_days, 2), "time_source": now.source}
            log.warning(
                "retention: unuploaded file %s deleted after %.1f days (trusted time from %s)",
                deletion.file_id,
                deletion.age_days,
                now.source,
            )
        self.audit.append(
            "storage.file_deleted",
            file_id=deletion.file_id,
            recording_id=deletion.recording_id,
            reason=deletion.reason.value,
            **expiry,
        )
        with self._lock:
            self.catalog.transition(deletion.file_id, FileState.DELETED, deleted_at_ms=now_ms)
        # Not empty (other files of the recording) or already gone: kept, nothing to do.
        remove_empty_dir(self.layout.recording_dir(deletion.recording_id))
