"""The evidence store's part of a dying card (docs/dying-card.md): noting a card's fault, and
taking the card back into use without a restart. A mixin of `EvidenceStore` (storage/store.py),
kept apart so that the store's file stays readable in one sitting.

Invariants:
- `note_card_fault` never raises and raises the one alarm of the error's condition
  (storage/card_health.py); an error that is not the card's raises nothing;
- `reopen_card` never recovers a file a writer of this process still has open (`_live_files`:
  marked before its `.part` exists, unmarked once it is sealed or abandoned), and lets go of the
  old catalog before opening it again (storage/card_reopen.py).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable

from common.alarms import Alarms
from common.durable import make_dirs
from storage.audit_io import AuditLog
from storage.card import CardLayout
from storage.card_health import (
    ALARM_OF,
    CARD_ALARMS,
    CardCondition,
    alarm_message,
    condition_of,
    worse,
)
from storage.card_reopen import let_go
from storage.catalog import Catalog
from storage.devicekey import DeviceKey
from storage.models import FileState
from storage.recovery import RecoveryReport, recover_card
from storage.recovery_alarm import catalog_knowledge


class CardEpisodes(abc.ABC):
    """Needs of the store it is mixed into: its attributes (set by EvidenceStore.__init__) and
    the two abstract methods below (EvidenceStore implements them: a class that does not cannot
    be instantiated)."""

    alarms: Alarms
    audit: AuditLog
    catalog: Catalog
    clock_ms: Callable[[], int]
    device_key: DeviceKey
    layout: CardLayout
    _lock: threading.Lock
    _live_files: set[str]

    @abc.abstractmethod
    def _adopt_recovery(self, report: RecoveryReport) -> None:
        """Catalog what recovery closed or discarded, read the holds, raise its alarm."""

    @abc.abstractmethod
    def _forget_discarded(self, file_id: str) -> None:
        """A RECORDING entry whose file never reached the card leaves the catalog as DELETED."""

    def note_card_fault(self, exc: BaseException) -> CardCondition | None:
        """Raise the card alarm `exc` shows (read-only, missing, failed) and return its
        condition; None (and nothing raised) when `exc` is not the card's (a full card, a bug).
        Never raises: it is called from the paths that are handling the failure."""
        condition = condition_of(exc)
        if condition is not None:
            detail = getattr(exc, "strerror", None) or type(exc).__name__
            self.show_card_condition(condition, str(detail))
        return condition

    def show_card_condition(self, condition: CardCondition, detail: str | None = None) -> None:
        """One card, one alarm: the worse of `condition` and the one shown (missing over
        read-only over failed: a pulled card's stale handles fail EIO too), the others cleared.
        The probe sees the card as it is now: it calls `probe_shows` instead."""
        shown = self.card_condition()
        if shown is not None and worse(shown, condition) is shown:
            return
        self._replace_card_alarm(condition, detail)

    def probe_shows(self, condition: CardCondition) -> None:
        """What a probe of the card saw now replaces whatever was shown (a card that failed a
        write and is then pulled is missing; one that was missing and is back read-only is
        read-only)."""
        if condition is not self.card_condition():
            self._replace_card_alarm(condition, None)

    def card_condition(self) -> CardCondition | None:
        """The card alarm raised now (the worse one, should two be), or None."""
        shown: CardCondition | None = None
        for condition, code in ALARM_OF.items():
            if code in self.alarms:
                shown = worse(shown, condition)
        return shown

    def _replace_card_alarm(self, condition: CardCondition, detail: str | None) -> None:
        code = ALARM_OF[condition]
        for other in CARD_ALARMS - {code}:
            self.alarms.clear(other)
        if code not in self.alarms or detail is not None:
            self.alarms.raise_(code, alarm_message(condition, detail))

    def card_faulted(self) -> bool:
        """True while a card alarm is raised: the card watch probes until it is back."""
        return any(code in self.alarms for code in CARD_ALARMS)

    def reopen_card(self) -> RecoveryReport:
        """The card is back (reinserted, replaced, or working again): open its catalog anew,
        recover the `.part` files left by writers that failed (never one still being written),
        catalog what recovery closed, and clear the card alarms. Raises OSError or
        sqlite3.Error when the card fails again meanwhile (the caller keeps probing)."""
        with self._lock:
            live = frozenset(self._live_files)
            let_go(self, "catalog")  # before opening anew: storage/card_reopen.py
        now_ms = self.clock_ms()
        catalog, report = open_card(self.layout, self.device_key, self.audit, now_ms, live)
        with self._lock:
            self.catalog = catalog
        self._adopt_recovery(report)
        self._forget_never_written(live)
        for code in CARD_ALARMS:
            self.alarms.clear(code)
        self.audit.append(
            "storage.card_back",
            recovered=len(report.recovered),
            discarded=len(report.discarded),
            refused=len(report.refused),
        )
        return report

    def _forget_never_written(self, live: frozenset[str]) -> None:
        """A RECORDING entry whose file is not on the card at all, and that no writer in `live`
        is still creating. The catalog commits the entry before the `.part` exists (recovery
        must know it, storage/recovery.py), so a power cut before the `.part`'s header and
        directory entry were durable (labdisk soak: phantom files counted on the card forever),
        or a failing card that never created it, leaves the entry alone. Nothing of such a file
        was ever acknowledged: DELETED, audited `storage.file_never_written`. Any file of its id
        on the card (a sidecar, a quarantined copy) keeps the record as it is. Called at open
        (nothing live) and when a pulled card is back."""
        with self._lock:
            recording = [r for r in self.catalog.all() if r.state is FileState.RECORDING]
        for record in recording:
            folder = self.layout.recording_dir(record.recording_id)
            if record.file_id in live or any(folder.glob(f"{record.file_id}*")):
                continue
            self.audit.append(
                "storage.file_never_written",
                file_id=record.file_id,
                recording_id=record.recording_id,
            )
            self._forget_discarded(record.file_id)

    def _writer_opened(self, file_id: str) -> None:
        with self._lock:
            self._live_files.add(file_id)

    def _writer_ended(self, file_id: str) -> None:
        with self._lock:
            self._live_files.discard(file_id)


def open_card(
    layout: CardLayout, device_key: DeviceKey, audit: AuditLog, now_ms: int, live: frozenset[str]
) -> tuple[Catalog, RecoveryReport]:
    """The catalog (opened, or rebuilt) and recovery of every `.part` but the `live` ones."""
    make_dirs(layout.evidence_root)  # durable in the card root from the first open
    # The catalog first: recovery asks it whether a `.part` is a file this box was writing.
    catalog = Catalog.open(layout)
    try:
        if catalog.rebuilt_reason is not None:
            audit.append("storage.catalog_rebuilt", reason=catalog.rebuilt_reason)
        knowledge = catalog_knowledge(catalog)
        report = recover_card(layout, device_key, audit.append, now_ms, knowledge, skip=live)
    except BaseException:
        catalog.close()
        raise
    return catalog, report
