"""The card's sqlite databases are made with small pages; existing ones are left as they are."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import diskcache
import pytest

from common.durable import make_dirs
from labdisk import LabDisk
from storage.card import CardLayout
from storage.catalog import Catalog
from storage.models import FileRecord, FileState
from storage.sqlite_files import DATABASE_NAME, PAGE_BYTES, create_database, page_bytes_of
from tests.labdisk.conftest import fuse_ready
from transport.ledger import FileUpload, UplinkLedger

T0 = 1_700_000_000_000


def _record(file_id: str) -> FileRecord:
    return FileRecord(
        file_id=file_id,
        recording_id="c" * 32,
        file_seq=0,
        created_at_ms=T0,
        state=FileState.RECORDING,
    )


def test_a_new_catalog_has_small_pages_and_keeps_its_records(tmp_path: Path) -> None:
    layout = CardLayout(tmp_path / "card")
    with Catalog.open(layout) as catalog:
        catalog.put(_record("f" * 32))
        catalog.transition("f" * 32, FileState.SEALED, size_bytes=10, sha256_hex="a" * 64)
    assert page_bytes_of(layout.catalog_dir) == PAGE_BYTES == 1024
    with Catalog.open(layout) as catalog:
        record = catalog.get("f" * 32)
    assert record is not None
    assert record.state is FileState.SEALED
    assert page_bytes_of(layout.catalog_dir) == 1024  # reopening does not change it


def test_a_catalog_made_before_keeps_its_page_size_and_works(tmp_path: Path) -> None:
    layout = CardLayout(tmp_path / "card")
    # A card written by a box before small pages: diskcache made the file itself (4096).
    old = diskcache.Cache(str(layout.catalog_dir), eviction_policy="none")
    old.close()
    assert page_bytes_of(layout.catalog_dir) == 4096
    with Catalog.open(layout) as catalog:
        catalog.put(_record("e" * 32))
    with Catalog.open(layout) as catalog:
        assert catalog.get("e" * 32) is not None
    assert page_bytes_of(layout.catalog_dir) == 4096


def test_create_database_leaves_a_database_or_a_lone_wal_alone(tmp_path: Path) -> None:
    assert create_database(tmp_path) is True
    assert create_database(tmp_path) is False  # exists: untouched
    assert page_bytes_of(tmp_path) == 1024
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / (DATABASE_NAME + "-wal")).write_bytes(b"left by a power cut")
    assert create_database(lone) is False
    assert not (lone / DATABASE_NAME).exists()  # sqlite judges that WAL, as before


def test_create_database_makes_a_wal_database_with_the_page_size_asked(tmp_path: Path) -> None:
    assert create_database(tmp_path, page_bytes=2048)
    connection = sqlite3.connect(tmp_path / DATABASE_NAME)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA page_size").fetchone() == (2048,)
    finally:
        connection.close()


def test_a_new_upload_ledger_has_small_pages_and_keeps_its_entries(tmp_path: Path) -> None:
    folder = tmp_path / "card" / "uplink"  # made by the ledger, parents and all
    ledger = UplinkLedger(folder)
    ledger.put_file("f" * 32, FileUpload(upload_url="/files/x"))
    ledger.put_budget("lte", {"cycle_start": "2026-11-01", "used_bytes": 5})
    ledger.close()
    assert page_bytes_of(folder) == 1024
    again = UplinkLedger(folder)
    try:
        assert again.file("f" * 32).upload_url == "/files/x"
        assert again.budget("lte") == {"cycle_start": "2026-11-01", "used_bytes": 5}
    finally:
        again.close()


# A box writing the catalog of a new card, until a power cut takes it (SIGKILL, then the card's
# cut: what was not fsynced is gone, strict POSIX rules for directory entries).
_WRITER = """
import sys, time
from pathlib import Path
from common.durable import make_dirs
from labdisk import LabDisk
from storage.card import CardLayout
from storage.catalog import Catalog
from storage.models import FileRecord, FileState
catalog = Catalog.open(CardLayout(Path(sys.argv[1])))
for seq in range(5):
    catalog.put(FileRecord(file_id=f"{seq:032x}", recording_id="c" * 32, file_seq=seq,
                           created_at_ms=1, state=FileState.RECORDING))
catalog.transition(f"{0:032x}", FileState.SEALED, size_bytes=1, sha256_hex="a" * 64)
print("committed", flush=True)
time.sleep(60)
"""


def test_what_a_small_page_catalog_committed_survives_a_power_cut(tmp_path: Path) -> None:
    if not fuse_ready():
        pytest.fail("labdisk needs root, /dev/fuse and fusermount3 (apt fuse3)")
    with LabDisk(tmp_path / "backing", tmp_path / "mount", mode="strict") as disk:
        card = tmp_path / "mount" / "card"
        make_dirs(card)
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(card)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "committed"
        finally:
            writer.kill()
            writer.wait(10)
        disk.cut()
        layout = CardLayout(card)
        with Catalog.open(layout) as catalog:
            records = catalog.all()
            assert catalog.rebuilt_reason is None  # the catalog itself came back, not a rebuild
        assert [r.file_seq for r in records] == [0, 1, 2, 3, 4]
        assert records[0].state is FileState.SEALED
        assert page_bytes_of(layout.catalog_dir) == 1024
