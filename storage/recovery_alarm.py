"""What the store tells recovery, and what it makes of recovery's refusals (storage/recovery.py).

`catalog_knowledge` is what the catalog knew before this open (the files it adopted from the card
at this open are left out: those it never registered). `raise_recovery_alarm` keeps the sticky
alarm `evidence_suspect` raised exactly while the card holds a quarantined `.part`
(`*.mvbe.quarantined*`): a file recovery refused to close as a power cut because the catalog
knew it sealed, or never knew it. The alarm survives restarts (sticky) and is checked again at
every open: it clears once the fleet admin has taken the quarantined files off the card for the
investigation (the audit log keeps `storage.part_refused` for each).
"""

from __future__ import annotations

from common.alarms import Alarms
from storage.card import QUARANTINE_SUFFIX, CardLayout
from storage.catalog import Catalog
from storage.recovery import CatalogKnowledge, KnownFile, RecoveryReport

ALARM = "evidence_suspect"


def catalog_knowledge(catalog: Catalog) -> CatalogKnowledge:
    adopted = {record.file_id for record in catalog.adopted_from_card}
    files = {
        record.file_id: KnownFile(record.state, record.recording_id)
        for record in catalog.all()
        if record.file_id not in adopted
    }
    return CatalogKnowledge(files, catalog.complete_before_open)


def quarantined_files(layout: CardLayout) -> int:
    if not layout.evidence_root.exists():
        return 0
    return sum(1 for _ in layout.evidence_root.glob(f"*/*{QUARANTINE_SUFFIX}*"))


def raise_recovery_alarm(alarms: Alarms, layout: CardLayout, report: RecoveryReport) -> None:
    """Raise (sticky) or clear `evidence_suspect` from what the card holds now."""
    kept = quarantined_files(layout)
    if kept == 0:
        alarms.clear(ALARM)
        return
    why = f"; this start: {report.refused[0].reason}" if report.refused else ""
    alarms.raise_(
        ALARM,
        f"{kept} file(s) on the card were not this box's to close after a power cut; they are "
        f"kept aside, never uploaded{why}. Tell the fleet admin",
        sticky=True,
    )
