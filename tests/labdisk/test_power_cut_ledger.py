"""The uplink ledger through a real power cut (issue 14): what `UplinkLedger` wrote before it
returned survives a labdisk cut, in both modes, from the first write on a fresh card.

The writer is a child process killed by SIGKILL before the cut, as the box is: a cut takes the
card away under every open handle, and only a new process reads the durable state.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.durable import make_dirs
from gateway.startup import check_card
from tests.labdisk.conftest import MakeDisk
from transport.ledger import LEDGER_DIR, FileUpload, UplinkLedger

pytestmark = pytest.mark.root

WRITER = """
import sys, time
from pathlib import Path
from transport.ledger import FileUpload, UplinkLedger
ledger = UplinkLedger(Path(sys.argv[1]))
for n in range(5):
    ledger.put_file(f"f{n}", FileUpload(upload_url=f"/files/{n}"))
ledger.put_budget("lte", {"month": "2026-12", "used_bytes": 123456})
print("WRITTEN", flush=True)
time.sleep(60)
"""


def write_then_kill(ledger_dir: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(ledger_dir)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"WRITTEN\n"
    child.send_signal(signal.SIGKILL)
    child.wait(10)


@pytest.mark.parametrize("mode", ["strict", "ext4"])
def test_what_the_ledger_wrote_survives_a_cut(
    make_disk: MakeDisk, tmp_path: Path, mode: str
) -> None:
    disk = make_disk(mode)
    card = tmp_path / "card"
    make_dirs(card)
    write_then_kill(card / LEDGER_DIR)

    disk.cut()

    ledger = UplinkLedger(card / LEDGER_DIR)
    try:
        assert {file_id for file_id, _ in ledger.files()} == {f"f{n}" for n in range(5)}
        assert ledger.file("f4") == FileUpload(upload_url="/files/4")
        assert ledger.budget("lte") == {"month": "2026-12", "used_bytes": 123456}
    finally:
        ledger.close()


def test_the_ledger_is_the_box_s_own_file_at_the_next_start(tmp_path: Path) -> None:
    """gateway/startup.py: a start after an upload raised card_foreign_files for the ledger."""
    card = tmp_path / "card"
    write_then_kill(card / LEDGER_DIR)  # killed: the WAL and its index stay beside the file
    assert (card / LEDGER_DIR / "cache.db").exists()
    assert check_card(card, require_mount=False).foreign_files == ()
    (card / LEDGER_DIR / "notes.txt").write_text("someone else's")
    assert check_card(card, require_mount=False).foreign_files == (f"{LEDGER_DIR}/notes.txt",)
