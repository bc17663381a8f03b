"""The holds file on the card (`<card>/holds/holds.json`, storage/card.py): read, written
atomically (common/durable.py), moved aside when unreadable. The book's rules are
storage/holds.py's; the store (storage/store.py) decides when to read and write."""

from __future__ import annotations

import time
from pathlib import Path

from common.alarms import Alarms
from common.durable import atomic_write_bytes, durable_rename, make_dirs, sweep_tmp_files
from storage.audit_io import AuditLog
from storage.card import CardLayout
from storage.catalog import Catalog
from storage.holds import HoldBook, HoldBookError
from storage.models import FileState

HOLDS_FILE_MODE = 0o640  # like the sidecars: ids and codes, nothing personal


def read_holds(layout: CardLayout) -> HoldBook:
    """The book, or an empty one when there is no file. Raises HoldBookError when the file is
    not a book (an I/O error is the card's, and propagates as OSError). Sweeps what an
    interrupted write left in the folder first: nothing writes it before the store opens."""
    sweep_tmp_files(layout.holds_dir)
    try:
        raw = layout.holds_path.read_bytes()
    except FileNotFoundError:
        return HoldBook()
    return HoldBook.from_json(raw)


def write_holds(layout: CardLayout, book: HoldBook) -> None:
    """tmp, fsync, rename, fsync dir: the book survives a power cut whole or not at all."""
    make_dirs(layout.holds_dir)
    atomic_write_bytes(layout.holds_path, book.to_json(), mode=HOLDS_FILE_MODE)


def move_holds_aside(layout: CardLayout) -> Path:
    """Rename an unreadable holds file to `holds.json.broken-<ms>` (kept for an investigator)."""
    stamp = time.time_ns() // 1_000_000
    target = layout.holds_path.with_name(f"{layout.holds_path.name}.broken-{stamp}")
    while target.exists():
        stamp += 1
        target = layout.holds_path.with_name(f"{layout.holds_path.name}.broken-{stamp}")
    durable_rename(layout.holds_path, target)
    return target


def load_holds(
    layout: CardLayout, catalog: Catalog, audit: AuditLog, alarms: Alarms, now_ms: int
) -> HoldBook:
    """The book on the card, at open. An unreadable one is moved aside (kept) and every
    recording on the card is held until an admin releases it: a lost hold must not let
    retention delete what someone asked to keep. Loudly: a sticky alarm and an audit event."""
    try:
        return read_holds(layout)
    except HoldBookError as exc:
        aside = move_holds_aside(layout)
        on_card = {r.recording_id for r in catalog.all() if r.state is not FileState.DELETED}
        book = HoldBook().recovered(frozenset(on_card), now_ms)
        write_holds(layout, book)
        audit.append("storage.holds_unreadable", moved_to=aside.name, held_recordings=len(on_card))
        alarms.raise_(
            "holds_unreadable",
            f"the holds file was unreadable ({exc}); every recording on the card is held until "
            "an admin releases it (mvb hold --release)",
            sticky=True,
        )
        return book
