"""Evidence made durable before the card was pulled uploads once it is back (issue 14 item 3:
"evidence already durable stays readable and uploadable"), over the real uplink to the reference
back office, with the card (store, catalog and uplink ledger) on a real labdisk.

While the card is out the uplink's rounds fail (what they read is gone) and the uplink goes on;
the card comes back, the store and the ledger open their files again (what gateway/card_watch.py
does in `mvb run`), and every file is uploaded, attested with the SHA-256 the box computed, and
deleted from the card (S3). Left out: a pull in the middle of a PATCH (the tus resume after a
broken transfer is tests/transport's subject; here the card fails between uploads)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from labdisk import LabDisk
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from tests.tls_helpers import TestPki
from tests.transport.test_uplink_refusals import drain
from tests.transport.uplink_rig import record_evidence, uplink_rig, wifi

pytestmark = pytest.mark.root


@pytest.fixture
def card(tmp_path: Path) -> Iterator[LabDisk]:
    disk = LabDisk(tmp_path / "card-backing", tmp_path / "card", mode="ext4").start()
    try:
        yield disk
    finally:
        disk.close()


async def test_files_sealed_before_a_pull_upload_after_the_card_is_back(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki, card: LabDisk
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        for size in (200_000, 300_000):
            record_evidence(rig.store, size)
        sealed = {r.file_id: r.sha256_hex for r in rig.records()}
        assert len(sealed) == 2
        assert rig.back_office.completed_sha256() == set()

        card.pull("ENODEV")
        with contextlib.suppress(OSError, sqlite3.Error):
            await rig.service.run_once()  # nothing to read: the round fails, nothing is lost
        assert rig.back_office.completed_sha256() == set()

        card.reinsert()
        rig.store.reopen_card()
        rig.service.ledger.reopen()
        assert {r.file_id: r.sha256_hex for r in rig.records()} == sealed
        await drain(rig)

        assert {r.state for r in rig.records()} == {FileState.DELETED}
        assert rig.back_office.completed_sha256() == set(sealed.values())
