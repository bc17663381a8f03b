"""The catalog through a real power cut (issue 14, found by the labdisk soak): the catalog
commits a file as RECORDING before its `.part` exists (recovery must know it), so a cut before
the `.part`'s directory entry is durable leaves an entry for a file that is not on the card.
The next start must settle it (DELETED, audited), not count a phantom file forever (the soak's
drain never ended: "3 files on the card" that were not there)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backoffice.keys import create_recording_keys
from common.durable import make_dirs
from config.local import load_config
from gateway.box import AUDIT_LOG_NAME, open_box
from labdisk.durability import Mode
from storage.models import FileState
from tests.evidence_helpers import write_box_config
from tests.labdisk.conftest import MakeDisk
from tests.labdisk.test_labdisk import wait_for_stall

pytestmark = pytest.mark.root


WRITER = """
import sys
from pathlib import Path
from config.local import load_config
from gateway.box import open_box
box = open_box(load_config(Path(sys.argv[1])))
recording = box.store.start_recording(box.facts)
print("READY", flush=True)
sys.stdin.readline()  # the stall is in place: write
stream = recording.open_stream("dashcam")
stream.append_media(b"G" * 4000)
stream.end_segment({"index": 1})
print("ACK", flush=True)
"""


@pytest.mark.parametrize(("mode", "stalled_op"), [("strict", "fsyncdir"), ("ext4", "fsync")])
def test_a_file_cut_before_its_entry_was_durable_leaves_no_phantom(
    make_disk: MakeDisk, tmp_path: Path, mode: Mode, stalled_op: str
) -> None:
    """strict: the cut comes while the recording folder's fsync after the header waits (the
    `.part`'s entry not yet durable); ext4: while the header's fsync waits (no fsync since the
    create). The writer is a process SIGKILLed first, as the box is: nothing of it may land
    after the cut (its error path would tidy the catalog on the new state)."""
    disk = make_disk(mode)
    data = tmp_path / "card"
    make_dirs(data / "card")
    make_dirs(data / "state")
    _, public_path = create_recording_keys(tmp_path / "backoffice")
    config_path = write_box_config(tmp_path / "box", public_path, data_dir=data)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stdout.readline() == b"READY\n"
    # The writer waits for the stall: a writer that went on at once could pass the folder's
    # fsync before the stall was in place (seen under load), and then nothing would wait in it.
    disk.stall(5.0, ops=[stalled_op], path="card/evidence/*", times=1)
    child.stdin.write(b"GO\n")
    child.stdin.flush()
    wait_for_stall(disk)
    child.send_signal(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(2)  # a process waiting in FUSE may only die once its call returns
    disk.cut()
    assert child.wait(10) == -signal.SIGKILL
    assert b"ACK" not in child.stdout.read()

    box = open_box(load_config(config_path))
    try:
        records = box.store.catalog.all()
        assert records, "the catalog entry was committed before the cut"
        assert [r.state for r in records] == [FileState.DELETED] * len(records)
        assert not list((data / "card" / "evidence").rglob("*.part"))
        log = (data / "state" / AUDIT_LOG_NAME).read_text()
        assert log.count('"storage.file_never_written"') == len(records)
    finally:
        box.close()
