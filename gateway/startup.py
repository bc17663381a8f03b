"""What `mvb run` checks before it records: the card, and (once GPS has a fix) the clock.

The card check answers three questions (issue: service lifecycle):
- **mounted**: with `storage.require_mount`, the card directory must be a mount point, or the
  box would fill its internal flash instead of the card;
- **writable**: a probe file is written, fsync'd and removed;
- **encrypted only**: every file on the card is the box's own: evidence files start with the
  evidence magic (docs/evidence-format.md), sidecars are JSON, the catalog lives in its folder,
  the uplink ledger in `uplink/` (its SQLite file and SQLite's companions).
  Anything else (a stray video, a copied file) is *foreign*: the box never deletes it (it may
  be someone's evidence), it raises an alarm and audits how many there are.

A card that is missing, read-only or failing is `CardUnusable` (with its condition): nothing can
be recorded, and the service runs degraded (gateway/degraded.py: the page and the API up, the
alarm saying why) until the card is usable, then starts in full. Foreign files are not fatal.

`classify` is pure (relative paths and header bytes in, verdicts out); `check_card` is the thin
shell that walks the card.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common.durable import is_tmp_name, make_dirs
from common.faults import StorageFault
from storage.card import (
    CATALOG_DIR,
    EVIDENCE_DIR,
    HOLDS_DIR,
    HOLDS_FILE,
    PART_SUFFIX,
    SEALED_SUFFIX,
    SIDECAR_SUFFIX,
)
from storage.card_health import CardCondition, condition_of
from storage.card_probe import PROBE_NAME, write_probe
from storage.evidence_format import MAGIC
from transport.ledger import LEDGER_DIR, LEDGER_FILES

CLOCK_OFFSET_ALARM_MS = 2_000  # wall clock this far from GPS time: stamps would mislead


class CardUnusable(StorageFault):
    """The card cannot hold evidence; the message says why, for the officer and the log, and
    `condition` how (missing, read-only, failed: storage/card_health.py)."""

    def __init__(self, message: str, condition: CardCondition = CardCondition.MISSING) -> None:
        super().__init__(message)
        self.condition = condition


@dataclass(frozen=True, slots=True)
class CardReport:
    """`foreign_files`: paths relative to the card that are not the box's own files."""

    foreign_files: tuple[str, ...]


def is_own_file(relative: Path, header: bytes) -> bool:
    """True for a file the box writes: catalog files, the uplink ledger, the holds file,
    sidecars, and evidence files (by magic)."""
    parts = relative.parts
    if not parts:
        return False
    if parts == (PROBE_NAME,) or parts[0] == CATALOG_DIR:
        return True
    if parts[0] == LEDGER_DIR and len(parts) == 2:
        return parts[1] in LEDGER_FILES  # the uplink ledger: its SQLite file, WAL and index
    if parts[0] == HOLDS_DIR and len(parts) == 2:
        # The holds file, one moved aside as unreadable, or an atomic write cut short.
        name = parts[1]
        return name == HOLDS_FILE or name.startswith(f"{HOLDS_FILE}.broken-") or is_tmp_name(name)
    if parts[0] != EVIDENCE_DIR or len(parts) != 3:
        return False
    name = parts[2]
    if name.endswith(SIDECAR_SUFFIX):
        return True
    if name.endswith(PART_SUFFIX):
        # A .part cut before its header was whole holds a prefix of it: recovery discards it.
        return header.startswith(MAGIC) or MAGIC.startswith(header)
    if name.endswith(SEALED_SUFFIX):
        return header.startswith(MAGIC)
    return is_tmp_name(name)  # an atomic write cut short; recovery tidies it


def classify(entries: Iterable[tuple[Path, bytes]]) -> CardReport:
    """Pure: (relative path, first bytes) per file -> the foreign ones, sorted."""
    foreign = sorted(str(path) for path, header in entries if not is_own_file(path, header))
    return CardReport(tuple(foreign))


def check_card(card_dir: Path, *, require_mount: bool) -> CardReport:
    """Raise CardUnusable when the card is missing, not mounted (if required) or not writable;
    otherwise report the foreign files on it. Without `require_mount` (a development machine)
    a missing folder is created, as the evidence store would."""
    if require_mount:
        if not card_dir.is_dir() or not os.path.ismount(card_dir):
            raise CardUnusable(f"no card is mounted at {card_dir}")
    else:
        try:
            make_dirs(card_dir)
        except OSError as exc:
            why = f"the card folder {card_dir} cannot be made ({exc.strerror})"
            raise CardUnusable(why, condition_of(exc) or CardCondition.MISSING) from exc
    _probe_writable(card_dir)
    return classify(_entries(card_dir))


def _probe_writable(card_dir: Path) -> None:
    try:
        write_probe(card_dir)
    except OSError as exc:
        why = f"the card at {card_dir} is not writable ({exc.strerror})"
        raise CardUnusable(why, condition_of(exc) or CardCondition.FAILED) from exc


def _entries(card_dir: Path) -> Iterable[tuple[Path, bytes]]:
    for directory, _subdirs, files in os.walk(card_dir):
        for name in files:
            path = Path(directory) / name
            if not path.is_file() or path.is_symlink():
                yield path.relative_to(card_dir), b"\x00not-a-regular-file"
                continue
            with path.open("rb") as handle:
                yield path.relative_to(card_dir), handle.read(len(MAGIC))


def clock_offset_alarm(offset_ms: float | None) -> str | None:
    """Pure: the alarm text when the wall clock is off GPS time by CLOCK_OFFSET_ALARM_MS or
    more (recordings are stamped with the wall clock and carry GPS time beside it)."""
    if offset_ms is None or abs(offset_ms) < CLOCK_OFFSET_ALARM_MS:
        return None
    return f"the clock is {offset_ms / 1000:+.1f} s off GPS time"
