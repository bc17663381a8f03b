"""Behaviour of the evidence catalog: the state table, attestation, persistence and rebuilding."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import diskcache
import pytest

from common.faults import IllegalTransition
from storage.card import CardLayout, Sidecar, read_sidecar, write_sidecar
from storage.catalog import (
    LEGAL_TRANSITIONS,
    AttestationMismatch,
    Catalog,
    UnknownFileError,
    _means_corrupt,
)
from storage.catalog_rebuild import rebuild_from_card
from storage.evidence_format import (
    FLAG_INTERRUPTED,
    MAGIC,
    EvidenceHeader,
    RecipientStanza,
    RecordFraming,
    crc32,
    file_tag,
)
from storage.models import FileRecord, FileState

S = FileState
SHA_A = "a" * 64
SHA_B = "b" * 64
T0 = 1_700_000_000_000

# The table as the brief states it, written out independently of the code under test.
SPEC_LEGAL = {
    (S.RECORDING, S.SEALED),
    (S.RECORDING, S.DELETED),  # recovery discarded a file with no durable header
    (S.SEALED, S.UPLOADING),
    (S.UPLOADING, S.SEALED),
    (S.UPLOADING, S.VERIFIED),
    (S.SEALED, S.VERIFIED),
    (S.SEALED, S.DELETED),
    (S.UPLOADING, S.DELETED),
    (S.VERIFIED, S.DELETED),
}
ALL_PAIRS = {(a, b) for a in FileState for b in FileState}


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> CardLayout:
    root = tmp_path / "card"
    root.mkdir()
    return CardLayout(root)


@pytest.fixture
def catalog(layout: CardLayout) -> Iterator[Catalog]:
    cat = Catalog.open(layout)
    yield cat
    cat.close()


def must_get(cat: Catalog, file_id: str) -> FileRecord:
    found = cat.get(file_id)
    assert found is not None, f"no record for {file_id}"
    return found


def record(
    file_id: str = "f1",
    state: FileState = S.SEALED,
    *,
    recording_id: str = "r1",
    file_seq: int = 0,
    created_at_ms: int = T0,
    attested: str | None = None,
) -> FileRecord:
    return FileRecord(
        file_id=file_id,
        recording_id=recording_id,
        file_seq=file_seq,
        created_at_ms=created_at_ms,
        state=state,
        size_bytes=0 if state is S.RECORDING else 1234,
        sha256_hex=None if state is S.RECORDING else SHA_A,
        sealed_at_ms=None if state is S.RECORDING else created_at_ms + 60_000,
        attested_sha256_hex=attested,
    )


def fake_evidence_bytes(file_seq: int, created_at_ms: int, payload: bytes = b"") -> bytes:
    """Magic + 48 header bytes (through created_at_ms): all the catalog reads (44..56)."""
    return MAGIC + bytes(36) + struct.pack(">IQ", file_seq, created_at_ms) + payload


def put_fake_file(
    layout: CardLayout,
    recording_id: str,
    file_id: str,
    *,
    file_seq: int = 0,
    created_at_ms: int = T0,
    payload: bytes = b"ciphertext" * 100,
    part: bool = False,
) -> Path:
    path = (
        layout.part_path(recording_id, file_id)
        if part
        else layout.sealed_path(recording_id, file_id)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fake_evidence_bytes(file_seq, created_at_ms, payload))
    return path


def sidecar_for(
    recording_id: str,
    file_id: str,
    *,
    sha: str = SHA_A,
    interrupted: int | None = None,
    file_seq: int = 0,
) -> Sidecar:
    return Sidecar(
        recording_id=recording_id,
        file_id=file_id,
        file_seq=file_seq,
        created_at_ms=T0 + file_seq,
        size_bytes=4321,
        sha256_hex=sha,
        sealed_at_ms=T0 + 60_000,
        interrupted_at_chunk=interrupted,
    )


def sealed_with_sidecar(layout: CardLayout, sidecar: Sidecar) -> Path:
    path = put_fake_file(layout, sidecar.recording_id, sidecar.file_id)
    write_sidecar(layout, sidecar)
    return path


def reopen(cat: Catalog) -> Catalog:
    cat.close()
    return Catalog.open(cat.layout)


# --- basic storage -----------------------------------------------------------------------------


def test_put_then_get_returns_equal_record(catalog: Catalog) -> None:
    rec = record(attested=SHA_B)
    catalog.put(rec)
    assert catalog.get("f1") == rec
    assert catalog.get("nope") is None


def test_records_are_stored_as_plain_json_not_pickles(layout: CardLayout) -> None:
    with Catalog.open(layout) as cat:
        cat.put(record())
    db = sqlite3.connect(layout.catalog_dir / "cache.db")
    try:
        rows = db.execute("SELECT key, value FROM Cache").fetchall()
    finally:
        db.close()
    assert len(rows) == 1
    key, value = rows[0]
    assert key == "f1"
    obj = json.loads(value)  # readable with nothing but sqlite and json
    assert obj["state"] == "sealed"
    assert obj["sha256_hex"] == SHA_A
    assert obj["schema"] == 1


def test_catalog_never_evicts(layout: CardLayout) -> None:
    Catalog.open(layout).close()
    cache = diskcache.Cache(str(layout.catalog_dir))
    try:
        assert cache.eviction_policy == "none"
    finally:
        cache.close()


def test_records_persist_across_reopen(catalog: Catalog) -> None:
    catalog.put(record("f1"))
    catalog.put(record("f2", S.RECORDING))
    catalog.transition("f1", S.UPLOADING)
    catalog.record_attestation("f1", SHA_A)
    catalog.set_held("f2", True)
    before = catalog.all()

    again = reopen(catalog)
    try:
        assert again.all() == before
        assert again.get("f1") is not None
        assert must_get(again, "f1").state is S.VERIFIED
        assert again.rebuilt_reason is None
    finally:
        again.close()


def test_all_and_by_recording_include_deleted_and_are_ordered(catalog: Catalog) -> None:
    catalog.put(record("late", recording_id="r1", file_seq=1, created_at_ms=T0 + 60_000))
    catalog.put(record("early", recording_id="r1", file_seq=0, created_at_ms=T0))
    catalog.put(record("other", recording_id="r2", created_at_ms=T0 + 1))
    catalog.transition("early", S.DELETED, deleted_at_ms=T0 + 5)
    assert [r.file_id for r in catalog.all()] == ["early", "other", "late"]
    assert [r.file_id for r in catalog.by_recording("r1")] == ["early", "late"]
    assert catalog.by_recording("r3") == []


def test_context_manager_closes(layout: CardLayout) -> None:
    with Catalog.open(layout) as cat:
        cat.put(record())
    with Catalog.open(layout) as cat:
        assert cat.get("f1") == record()


# --- the transition table ----------------------------------------------------------------------


def test_table_is_exactly_the_specified_one() -> None:
    table = {(a, b) for a, targets in LEGAL_TRANSITIONS.items() for b in targets}
    assert table == SPEC_LEGAL


@pytest.mark.parametrize(("from_state", "to_state"), sorted(SPEC_LEGAL))
def test_every_legal_transition_works(
    catalog: Catalog, from_state: FileState, to_state: FileState
) -> None:
    catalog.put(record("f1", from_state))
    changes: dict[str, object] = {}
    if to_state is S.VERIFIED:
        changes["attested_sha256_hex"] = SHA_A
    if to_state is S.SEALED and from_state is S.RECORDING:
        changes.update(sha256_hex=SHA_B, size_bytes=99, interrupted_at_chunk=7)

    result = catalog.transition("f1", to_state, **changes)

    assert result.state is to_state
    assert catalog.get("f1") == result
    for name, value in changes.items():
        assert getattr(result, name) == value


@pytest.mark.parametrize(("from_state", "to_state"), sorted(ALL_PAIRS - SPEC_LEGAL))
def test_every_illegal_transition_raises_and_changes_nothing(
    catalog: Catalog, from_state: FileState, to_state: FileState
) -> None:
    before = record("f1", from_state, attested=SHA_A if from_state is S.VERIFIED else None)
    catalog.put(before)
    with pytest.raises(IllegalTransition) as info:
        catalog.transition("f1", to_state, attested_sha256_hex=SHA_A)
    message = str(info.value)
    assert "f1" in message
    assert f"{from_state.value} -> {to_state.value}" in message
    assert isinstance(info.value, ValueError)
    assert catalog.get("f1") == before


def test_deleted_is_final(catalog: Catalog) -> None:
    catalog.put(record("f1"))
    catalog.transition("f1", S.DELETED, deleted_at_ms=T0 + 1)
    for target in FileState:
        with pytest.raises(IllegalTransition):
            catalog.transition("f1", target)
    assert must_get(catalog, "f1").state is S.DELETED


def test_entering_verified_needs_a_matching_attestation(catalog: Catalog) -> None:
    catalog.put(record("f1", S.UPLOADING))
    with pytest.raises(AttestationMismatch):
        catalog.transition("f1", S.VERIFIED)
    with pytest.raises(AttestationMismatch):
        catalog.transition("f1", S.VERIFIED, attested_sha256_hex=SHA_B)
    assert catalog.get("f1") == record("f1", S.UPLOADING)


def test_transition_rejects_bad_changes_without_storing_them(layout: CardLayout) -> None:
    with Catalog.open(layout) as cat:
        cat.put(record("f1"))
        with pytest.raises(ValueError, match="no_such_field"):
            cat.transition("f1", S.UPLOADING, no_such_field=1)
        with pytest.raises(ValueError, match="file_id"):
            cat.transition("f1", S.UPLOADING, file_id="f2")
        with pytest.raises(ValueError, match="recording_id"):
            cat.transition("f1", S.UPLOADING, recording_id="r9")
        with pytest.raises(ValueError, match="state"):
            cat.transition("f1", S.UPLOADING, state=S.VERIFIED)
        with pytest.raises(ValueError, match="size_bytes"):
            cat.transition("f1", S.UPLOADING, size_bytes="12")
        assert cat.get("f1") == record("f1")
    # nothing undecodable reached the store, so the next open trusts it
    with Catalog.open(layout) as cat:
        assert cat.rebuilt_reason is None


def test_transition_of_unknown_file_raises(catalog: Catalog) -> None:
    with pytest.raises(UnknownFileError, match="ghost"):
        catalog.transition("ghost", S.SEALED)


def test_put_obeys_the_table_when_replacing(catalog: Catalog) -> None:
    catalog.put(record("f1", S.VERIFIED, attested=SHA_A))
    with pytest.raises(IllegalTransition):
        catalog.put(record("f1", S.SEALED))
    with pytest.raises(ValueError, match="belongs to recording r1"):
        catalog.put(record("f1", S.VERIFIED, recording_id="r9", attested=SHA_A))
    catalog.put(record("f1", S.DELETED, attested=SHA_A))
    assert must_get(catalog, "f1").state is S.DELETED


# --- attestation and holds ---------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.SEALED, S.UPLOADING])
def test_matching_attestation_verifies(catalog: Catalog, state: FileState) -> None:
    catalog.put(record("f1", state))
    result = catalog.record_attestation("f1", SHA_A.upper())
    assert result.state is S.VERIFIED
    assert result.attested_sha256_hex == SHA_A
    assert result.is_attested
    assert catalog.get("f1") == result
    # the back office repeating itself is harmless
    assert catalog.record_attestation("f1", SHA_A) == result


@pytest.mark.parametrize("state", [S.SEALED, S.UPLOADING])
def test_mismatching_attestation_keeps_state_and_notes_the_echo(
    catalog: Catalog, state: FileState
) -> None:
    catalog.put(record("f1", state))
    with pytest.raises(AttestationMismatch, match="f1"):
        catalog.record_attestation("f1", SHA_B)
    stored = catalog.get("f1")
    assert stored is not None
    assert stored.state is state
    assert stored.attested_sha256_hex == SHA_B
    assert not stored.is_attested


def test_attestation_of_recording_or_deleted_file_does_not_verify(catalog: Catalog) -> None:
    catalog.put(record("rec", S.RECORDING))
    with pytest.raises(AttestationMismatch):  # no checksum yet: nothing can match
        catalog.record_attestation("rec", SHA_A)
    catalog.put(record("gone", S.SEALED))
    catalog.transition("gone", S.DELETED)
    with pytest.raises(IllegalTransition):
        catalog.record_attestation("gone", SHA_A)
    assert must_get(catalog, "rec").state is S.RECORDING
    assert must_get(catalog, "gone").state is S.DELETED


def test_attestation_must_look_like_a_sha256(catalog: Catalog) -> None:
    catalog.put(record("f1"))
    for bad in ["", "a" * 63, "g" * 64]:
        with pytest.raises(ValueError, match="SHA-256"):
            catalog.record_attestation("f1", bad)
    assert catalog.get("f1") == record("f1")


def test_set_held_and_release(catalog: Catalog) -> None:
    catalog.put(record("f1"))
    assert catalog.set_held("f1", True).held
    assert must_get(catalog, "f1").held
    assert not catalog.set_held("f1", False).held
    with pytest.raises(UnknownFileError):
        catalog.set_held("ghost", True)


# --- broken catalog, rebuild -------------------------------------------------------------------


def test_corrupt_sqlite_is_moved_aside_and_rebuilt_from_sidecars(layout: CardLayout) -> None:
    plain = sidecar_for("r1", "f1", sha=SHA_A)
    cut = sidecar_for("r1", "f2", sha=SHA_B, interrupted=3, file_seq=1)
    sealed_with_sidecar(layout, plain)
    sealed_with_sidecar(layout, cut)
    with Catalog.open(layout) as cat:
        cat.record_attestation("f1", SHA_A)
        cat.set_held("f2", True)
        cat.put(record("old", S.DELETED, recording_id="r0"))
    junk = b"this is not a database " * 200
    (layout.catalog_dir / "cache.db").write_bytes(junk)

    with Catalog.open(layout) as cat:
        reason = cat.rebuilt_reason
        assert reason is not None
        assert "unreadable" in reason
        assert "catalog.broken-" in reason
        assert "attestations known only to the old catalog" in reason
        f1, f2 = cat.get("f1"), cat.get("f2")
        assert cat.get("old") is None  # known only to the broken catalog
        cat.put(record("new", recording_id="r5"))  # the fresh catalog works

    # facts come from the sidecars (the fake files do not hash to these values)
    assert f1 == FileRecord(
        "f1", "r1", 0, T0, S.SEALED, 4321, SHA_A, T0 + 60_000, None, None, False, None
    )
    assert f2 is not None
    assert (f2.sha256_hex, f2.interrupted_at_chunk, f2.file_seq) == (SHA_B, 3, 1)
    # attestation and hold are lost (documented): the box asks the back office again
    assert not f2.held
    assert f1.attested_sha256_hex is None
    # the broken catalog is kept for an investigator, byte for byte
    aside = sorted(layout.root.glob("catalog.broken-*"))
    assert len(aside) == 1
    assert (aside[0] / "cache.db").read_bytes() == junk
    assert aside[0].name in reason


def test_second_corruption_gets_its_own_aside_directory(layout: CardLayout) -> None:
    for _ in range(2):
        Catalog.open(layout).close()
        (layout.catalog_dir / "cache.db").write_bytes(b"\0garbage" * 100)
        with Catalog.open(layout) as cat:
            assert cat.rebuilt_reason is not None
    assert len(list(layout.root.glob("catalog.broken-*"))) == 2


def test_undecodable_record_counts_as_corrupt(layout: CardLayout) -> None:
    sealed_with_sidecar(layout, sidecar_for("r1", "f1"))
    Catalog.open(layout).close()
    cache = diskcache.Cache(str(layout.catalog_dir))
    cache.set("f1", '{"state": "teleported"}')
    cache.close()
    with Catalog.open(layout) as cat:
        assert cat.rebuilt_reason is not None
        assert cat.get("f1") is not None
        assert must_get(cat, "f1").state is S.SEALED
    assert len(list(layout.root.glob("catalog.broken-*"))) == 1


def test_busy_database_is_not_mistaken_for_corruption(tmp_path: Path) -> None:
    db_path = tmp_path / "x.db"
    holder = sqlite3.connect(db_path)
    holder.execute("CREATE TABLE t (x)")
    holder.commit()
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(db_path, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError) as busy:
            other.execute("SELECT * FROM t")
    finally:
        other.close()
        holder.close()
    assert not _means_corrupt(busy.value)

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"garbage" * 1000)
    conn = sqlite3.connect(junk)
    try:
        with pytest.raises(sqlite3.DatabaseError) as notadb:
            conn.execute("SELECT * FROM sqlite_master")
    finally:
        conn.close()
    assert _means_corrupt(notadb.value)


@pytest.mark.parametrize("damage", ["missing", "garbage", "other_file"])
def test_sidecar_missing_or_broken_is_recomputed_from_the_file(
    layout: CardLayout, damage: str
) -> None:
    path = put_fake_file(
        layout, "r1", "f1", file_seq=5, created_at_ms=T0 + 123, payload=bytes(range(256)) * 40
    )
    sidecar_path = layout.sidecar_path("r1", "f1")
    if damage == "garbage":
        sidecar_path.write_bytes(b"\xff{not json")
    elif damage == "other_file":
        write_sidecar(layout, sidecar_for("r1", "f9"))  # a valid sidecar, but for f9
        layout.sidecar_path("r1", "f9").replace(sidecar_path)

    with Catalog.open(layout) as cat:
        rec = cat.get("f1")
        assert cat.rebuilt_reason is not None

    content = path.read_bytes()
    expected_sha = hashlib.sha256(content).hexdigest()
    assert rec is not None
    assert rec.state is S.SEALED
    assert (rec.recording_id, rec.file_seq, rec.created_at_ms) == ("r1", 5, T0 + 123)
    assert (rec.sha256_hex, rec.size_bytes) == (expected_sha, len(content))
    assert rec.interrupted_at_chunk is None
    rewritten = read_sidecar(sidecar_path)
    assert rewritten.sha256_hex == expected_sha
    assert rewritten.size_bytes == len(content)
    assert (rewritten.file_id, rewritten.file_seq, rewritten.created_at_ms) == ("f1", 5, T0 + 123)


def _real_header(file_seq: int) -> bytes:
    stanza = RecipientStanza(bytes(8), bytes(range(32)), bytes(48))
    header = EvidenceHeader(
        recording_id=bytes(16),
        file_id=bytes(range(16)),
        file_seq=file_seq,
        created_at_ms=T0 + 7,
        chunk_max_bytes=4096,
        nonce_prefix=bytes(7),
        recipients=(stanza,),
    )
    return header.encode(mac_key=bytes(32))


def _interruption_record(header: bytes, chunk_count: int) -> bytes:
    body = (T0 + 999).to_bytes(8, "big") + bytes(range(64))
    framing = RecordFraming(file_tag(header), chunk_count, FLAG_INTERRUPTED, 72, crc32(body))
    return framing.encode() + body


@pytest.mark.parametrize(("tamper", "expected"), [(False, 4), (True, None)])
def test_recomputed_sidecar_detects_an_interruption_record(
    layout: CardLayout, tamper: bool, expected: int | None
) -> None:
    header = _real_header(file_seq=2)
    tail = bytearray(_interruption_record(header, chunk_count=4))
    if tamper:
        tail[-1] ^= 0x01  # crc no longer matches: not an interruption record
    path = layout.sealed_path("r1", "f1")
    path.parent.mkdir(parents=True)
    path.write_bytes(header + b"\x42" * 500 + bytes(tail))

    (rec,) = rebuild_from_card(layout)

    assert rec.interrupted_at_chunk == expected
    assert (rec.file_seq, rec.created_at_ms) == (2, T0 + 7)
    assert read_sidecar(layout.sidecar_path("r1", "f1")).interrupted_at_chunk == expected


def test_part_files_are_recording_and_unreadable_files_do_not_crash(layout: CardLayout) -> None:
    put_fake_file(layout, "r1", "live", file_seq=3, created_at_ms=T0 + 9, part=True)
    stub = layout.part_path("r1", "stub")
    stub.write_bytes(MAGIC[:3])  # power cut while writing the header
    alien = layout.sealed_path("r2", "alien")
    alien.parent.mkdir()
    alien.write_bytes(b"not an evidence file at all, and long enough to have offset 56")

    with Catalog.open(layout) as cat:
        live = cat.get("live")
        assert cat.get("stub") is None
        assert cat.get("alien") is None
        assert set(cat.unreadable_files) == {stub, alien}
        assert cat.rebuilt_reason is not None

    assert live is not None
    assert live.state is S.RECORDING
    assert (live.recording_id, live.file_seq, live.created_at_ms) == ("r1", 3, T0 + 9)
    assert live.sha256_hex is None
    assert not layout.sidecar_path("r1", "live").exists()  # sidecars are for sealed files


def test_first_boot_with_empty_card_is_not_a_rebuild(layout: CardLayout) -> None:
    with Catalog.open(layout) as cat:
        assert cat.rebuilt_reason is None
        assert cat.all() == []


def test_empty_catalog_on_a_card_with_files_is_rebuilt(layout: CardLayout) -> None:
    sealed_with_sidecar(layout, sidecar_for("r1", "f1"))
    with Catalog.open(layout) as cat:
        assert cat.rebuilt_reason is not None
        assert "empty" in cat.rebuilt_reason
        assert [r.file_id for r in cat.adopted_from_card] == ["f1"]


def test_healthy_catalog_keeps_what_it_knows_and_adopts_orphans(layout: CardLayout) -> None:
    sealed_with_sidecar(layout, sidecar_for("r1", "up", sha=SHA_A))
    with Catalog.open(layout) as cat:
        cat.transition("up", S.UPLOADING)
        cat.put(record("gone", S.SEALED, recording_id="r0"))
        cat.transition("gone", S.DELETED, deleted_at_ms=T0 + 1)
        cat.put(record("sealing", S.RECORDING, recording_id="r3"))
        cat.set_held("sealing", True)
    # while the box was off: recovery sealed "sealing", and an uncatalogued file appeared
    sealed_with_sidecar(layout, sidecar_for("r3", "sealing", sha=SHA_B, interrupted=2))
    sealed_with_sidecar(layout, sidecar_for("r4", "orphan"))

    with Catalog.open(layout) as cat:
        assert must_get(cat, "up").state is S.UPLOADING
        gone = cat.get("gone")
        assert gone is not None
        assert gone.state is S.DELETED  # not on the card, still remembered
        sealing = cat.get("sealing")
        assert sealing is not None
        assert (sealing.state, sealing.sha256_hex, sealing.held) == (S.SEALED, SHA_B, True)
        assert sealing.interrupted_at_chunk == 2
        assert cat.get("orphan") is not None
        # "sealing" was known (an update, not news); only the orphan counts as adopted
        assert {r.file_id for r in cat.adopted_from_card} == {"orphan"}
        assert cat.rebuilt_reason is not None
        assert "adopted 1" in cat.rebuilt_reason

    with Catalog.open(layout) as cat:  # reconciled once, trusted afterwards
        assert cat.rebuilt_reason is None


# --- the time facts retention judges by ----------------------------------------------------------


def timed(file_id: str = "f1", state: FileState = S.SEALED) -> FileRecord:
    return record(file_id, state).with_changes(boot_id="boot-a", created_mono_ms=61_000)


def test_a_record_written_before_time_facts_existed_still_reads(layout: CardLayout) -> None:
    """Backward compatibility: a catalog of an older box has no time facts; they read as None
    (and retention counts such a file's age from when it first sees it with trusted time)."""
    with Catalog.open(layout) as cat:
        cat.put(record("old"))
    db = sqlite3.connect(layout.catalog_dir / "cache.db")
    try:
        (value,) = db.execute("SELECT value FROM Cache WHERE key = 'old'").fetchone()
        obj = json.loads(value)
        for name in ("boot_id", "created_mono_ms", "trusted_created_high_ms"):
            del obj[name]
        db.execute("UPDATE Cache SET value = ? WHERE key = 'old'", (json.dumps(obj),))
        db.commit()
    finally:
        db.close()
    with Catalog.open(layout) as cat:
        old = must_get(cat, "old")
        assert (old.boot_id, old.created_mono_ms, old.trusted_created_high_ms) == (None,) * 3
        assert old == record("old")


def test_a_creation_bound_is_noted_once_and_kept(catalog: Catalog) -> None:
    catalog.put(timed())
    noted = catalog.set_trusted_created("f1", None, T0 + 5, "seen")
    assert (noted.trusted_created_high_ms, noted.trusted_created_by) == (T0 + 5, "seen")
    again = catalog.set_trusted_created("f1", T0, T0 + 1, "same_boot")
    assert again == noted  # a bound retention judged by is never moved
    assert reopen(catalog).get("f1") == noted


def test_recovery_sealing_a_file_keeps_its_time_facts(layout: CardLayout) -> None:
    with Catalog.open(layout) as cat:
        cat.put(timed("sealing", S.RECORDING))
        cat.set_trusted_created("sealing", T0 - 1, T0 + 2001, "anchor")
    sealed_with_sidecar(layout, sidecar_for("r1", "sealing"))  # recovery sealed it meanwhile
    with Catalog.open(layout) as cat:
        sealing = must_get(cat, "sealing")
        assert sealing.state is S.SEALED
        assert (sealing.boot_id, sealing.created_mono_ms) == ("boot-a", 61_000)
        assert (sealing.trusted_created_high_ms, sealing.trusted_created_by) == (
            T0 + 2001,
            "anchor",
        )
