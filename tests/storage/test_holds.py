"""Holds on a real card: a held recording outlives retention, with every file sealed later, after
a restart, after the catalog was rebuilt from the card, and when the holds file itself is lost
to damage. The book's own rules (storage/holds.py) are tested on values."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.holds import HoldBook, HoldBookError, LocalHold
from storage.models import FileState
from storage.retention import MS_PER_DAY, RetentionPolicy
from storage.space import SpacePolicy
from storage.store import EvidenceStore, StoreSettings
from tests.storage.test_store import Clock

RID = "ab" * 16
OTHER = "cd" * 16


class Card:
    """One card and state directory; `open()` is a start of the box (recovery, catalog)."""

    def __init__(self, root: Path, recipient: RecipientPrivateKey) -> None:
        self.root = root
        self.recipient = recipient
        self.clock = Clock()
        (root / "state").mkdir(parents=True, exist_ok=True)
        self.device = DeviceKey.load_or_create(root / "state")
        self.settings = StoreSettings(
            card_dir=root / "card",
            chunk_max_bytes=8192,
            space=SpacePolicy(reserve_bytes=0, min_free_to_start_bytes=1),
            retention=RetentionPolicy(retention_days=14),
        )

    def open(self) -> EvidenceStore:
        audit = AuditLog.open(self.root / "state" / "audit.jsonl", self.device, clock_ms=self.clock)
        store, _ = EvidenceStore.open(
            self.settings,
            (self.recipient.public(),),
            self.device,
            audit,
            self.clock,
            trusted=self.clock.trusted(),  # retention judges by trusted time (docs/retention.md)
        )
        return store

    def audit_text(self) -> str:
        return (self.root / "state" / "audit.jsonl").read_text()


def close(store: EvidenceStore) -> None:
    store.close()
    store.audit.close()


def record(store: EvidenceStore) -> str:
    recording = store.start_recording({"officer_id": "boa-17"})
    stream = recording.open_stream("dashcam")
    stream.append_media(os.urandom(20_000))
    stream.end_segment({"index": 0})
    recording.close()
    return recording.recording_id


def states(store: EvidenceStore, recording_id: str) -> list[tuple[FileState, bool]]:
    return [(r.state, r.held) for r in store.recording_files(recording_id)]


@pytest.fixture
def card(tmp_path: Path, recipient: RecipientPrivateKey) -> Card:
    return Card(tmp_path, recipient)


def test_a_held_recording_outlives_retention_with_files_sealed_later_and_a_restart(
    card: Card,
) -> None:
    store = card.open()
    held_id, free_id = record(store), record(store)
    store.change_holds(lambda book: book.with_local(held_id, LocalHold(1, "local", "local")))
    # A file sealed after the hold (a report, a note) is held like the rest.
    store.write_report(held_id, {"what": "x"})
    card.clock.advance(15 * MS_PER_DAY)  # past the 14 days of retention

    deleted = store.apply_retention()

    assert {d.recording_id for d in deleted} == {free_id}
    assert states(store, held_id) == [(FileState.SEALED, True)] * 2
    close(store)
    store = card.open()  # a restart: the book is read from the card
    assert store.apply_retention() == []
    assert states(store, held_id) == [(FileState.SEALED, True)] * 2
    close(store)


def test_a_hold_survives_a_catalog_rebuilt_from_the_card(card: Card) -> None:
    store = card.open()
    held_id, free_id = record(store), record(store)
    store.change_holds(lambda book: book.with_local(held_id, LocalHold(1, "web", "0" * 12)))
    close(store)
    shutil.rmtree(card.root / "card" / "catalog")  # the catalog is gone: rebuilt at open

    store = card.open()
    assert "storage.catalog_rebuilt" in card.audit_text()
    assert states(store, held_id) == [(FileState.SEALED, True)]
    assert store.apply_retention() == []  # a rebuilt file's age counts from now: both stay
    card.clock.advance(15 * MS_PER_DAY)  # past the 14 days, counted from the rebuild

    assert {d.recording_id for d in store.apply_retention()} == {free_id}
    assert (store.layout.sealed_path(held_id, store.recording_files(held_id)[0].file_id)).exists()
    close(store)


def test_a_released_recording_expires_and_a_hold_never_touches_other_recordings(
    card: Card,
) -> None:
    store = card.open()
    held_id, other_id = record(store), record(store)
    store.change_holds(lambda book: book.with_local(held_id, LocalHold(1, "local", "local")))
    assert states(store, other_id) == [(FileState.SEALED, False)]
    store.change_holds(lambda book: book.without_local(held_id))
    card.clock.advance(15 * MS_PER_DAY)

    assert {d.recording_id for d in store.apply_retention()} == {held_id, other_id}
    close(store)


def test_a_damaged_holds_file_holds_everything_on_the_card_loudly(card: Card) -> None:
    store = card.open()
    first, second = record(store), record(store)
    close(store)
    holds_path = card.root / "card" / "holds" / "holds.json"
    holds_path.parent.mkdir()
    holds_path.write_bytes(b"{not json")
    card.clock.advance(15 * MS_PER_DAY)

    store = card.open()

    assert store.apply_retention() == [], "nothing deleted while the holds are unknown"
    assert store.holds.held() == {first, second}
    assert "holds_unreadable" in store.alarms
    assert "storage.holds_unreadable" in card.audit_text()
    assert [p.name.startswith("holds.json.broken-") for p in holds_path.parent.iterdir()].count(
        True
    ) == 1, "the damaged file is kept for an investigator"
    close(store)


# --- the book's rules -------------------------------------------------------------------------


def test_the_fleet_adds_holds_when_it_names_them_and_releases_only_when_applied() -> None:
    book = HoldBook().with_local(RID, LocalHold(1, "local", "local"))
    named = book.with_fleet_named(7, {OTHER: "police_demand"})
    assert named.held() == {RID, OTHER}
    assert named.sources(OTHER) == ("fleet",)
    # A later document that no longer names OTHER releases it; the local hold is not the fleet's.
    applied = named.with_fleet_applied(8, {RID: "complaint"})
    assert applied.held() == {RID}
    assert applied.sources(RID) == ("local", "fleet")
    assert applied.fleet[RID].config_serial == 8
    assert applied.with_fleet_applied(9, {RID: "complaint"}).fleet[RID].config_serial == 8


def test_the_book_reads_back_what_it_wrote_and_refuses_anything_else() -> None:
    book = HoldBook().with_local(RID, LocalHold(5, "web", "0123456789ab", "ef" * 16))
    book = book.with_fleet_named(3, {OTHER: "request"})
    assert HoldBook.from_json(book.to_json()) == book
    for bad in (
        b"[]",
        b'{"format": 2, "local": {}, "fleet": {}}',
        b'{"format": 1, "local": {}, "fleet": {}, "reason": "x"}',
        book.to_json().replace(b'"request"', b'"curiosity"'),
        book.to_json().replace(b'"web"', b'"email"'),
        book.to_json().replace(b"0123456789ab", b"Jan Jansen"),
    ):
        with pytest.raises(HoldBookError):
            HoldBook.from_json(bad)
    with pytest.raises(ValueError, match="32 lower-case hex"):
        book.with_local("not-an-id", LocalHold(1, "local", "local"))
