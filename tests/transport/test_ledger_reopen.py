"""The uplink ledger after its card was pulled and pushed back in (docs/dying-card.md): the
handles of before are dead; `reopen` lets them go first and then opens the files again, and the
ledger reads and writes as before. On a real labdisk card (tests/labdisk)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from labdisk import LabDisk
from transport.ledger import FileUpload, UplinkLedger

pytestmark = pytest.mark.root


@pytest.fixture
def card(tmp_path: Path) -> Iterator[LabDisk]:
    disk = LabDisk(tmp_path / "backing", tmp_path / "card", mode="ext4").start()
    try:
        yield disk
    finally:
        disk.close()


def used_from_another_thread(ledger: UplinkLedger) -> None:
    """The uplink reads the ledger from worker threads: each has a connection of its own."""
    thread = threading.Thread(target=lambda: ledger.file("aa"))
    thread.start()
    thread.join()


def test_after_a_pull_and_a_reinsert_the_reopened_ledger_works(card: LabDisk) -> None:
    ledger = UplinkLedger(card.mountpoint / "uplink")
    try:
        upload = FileUpload(upload_url="/files/aa")
        ledger.put_file("aa", upload)
        used_from_another_thread(ledger)
        card.pull("ENODEV")
        with pytest.raises((OSError, sqlite3.Error)):
            ledger.put_file("bb", FileUpload(upload_url="/files/bb"))
        card.reinsert()
        ledger.reopen()
        assert ledger.file("aa") == upload, "a committed entry is durable (synchronous=FULL)"
        ledger.put_file("bb", FileUpload(upload_url="/files/bb"))
        assert ledger.file("bb").upload_url == "/files/bb"
        used_from_another_thread(ledger)
    finally:
        ledger.close()
