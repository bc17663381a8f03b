"""labdisk tells a durable write from one that only looks durable.

The project's one durable write (common/durable.py `atomic_write_bytes`: tmp, fsync, rename,
fsync the directory) leaves the old or the new content after a strict-mode cut at any step; a
plain write and rename without the file's fsync leaves an empty file: neither.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from common.durable import atomic_write_bytes, fsync_dir, make_dirs
from tests.labdisk.conftest import MakeDisk
from tests.labdisk.test_labdisk import names, tree, wait_for_stall, write_file

pytestmark = pytest.mark.root

OLD = b"old content " * 700  # more than a page
NEW = b"NEW" * 3000


@pytest.mark.parametrize("step", ["create", "write", "fsync", "rename", "fsyncdir"])
def test_atomic_write_bytes_leaves_old_or_new_at_a_strict_cut_during_any_step(
    make_disk: MakeDisk, tmp_path: Path, step: str
) -> None:
    disk = make_disk("strict")
    state = tmp_path / "card" / "state"
    make_dirs(state)
    atomic_write_bytes(state / "pairing.json", OLD)
    disk.cut()
    assert (state / "pairing.json").read_bytes() == OLD
    disk.stall(5.0, ops=[step], times=1)
    failures: list[BaseException] = []

    def write() -> None:
        try:
            atomic_write_bytes(state / "pairing.json", NEW)
        except OSError as error:
            failures.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    wait_for_stall(disk)
    disk.cut()  # while `step` of the write waits: the power goes
    writer.join(10)
    assert failures  # the write did not claim success
    assert (state / "pairing.json").read_bytes() == OLD
    assert names(state) == ["pairing.json"]  # no tmp file left
    atomic_write_bytes(state / "pairing.json", NEW)
    disk.cut()
    assert (state / "pairing.json").read_bytes() == NEW


@pytest.mark.parametrize("mode", ["strict", "ext4"])
def test_atomic_write_bytes_survives_a_cut_right_after_it_returns(
    make_disk: MakeDisk, tmp_path: Path, mode: str
) -> None:
    disk = make_disk(mode)
    card = tmp_path / "card"
    make_dirs(card / "state")
    atomic_write_bytes(card / "state" / "root.json", OLD)
    atomic_write_bytes(card / "state" / "root.json", NEW)
    disk.cut()
    assert tree(card) == {"state": None, "state/root.json": NEW}


@pytest.mark.parametrize("mode", ["strict", "ext4"])
def test_a_write_and_rename_without_the_files_fsync_leaves_an_empty_file(
    make_disk: MakeDisk, tmp_path: Path, mode: str
) -> None:
    """strict: the directory was fsynced, the file never was; ext4 (issue 14's python-tuf case):
    another file's fsync committed the rename before the data was written back."""
    disk = make_disk(mode)
    card = tmp_path / "card"
    make_dirs(card / "state")
    atomic_write_bytes(card / "state" / "timestamp.json", OLD)
    write_file(card / "state" / "timestamp.json.new", NEW)
    (card / "state" / "timestamp.json.new").replace(card / "state" / "timestamp.json")
    if mode == "strict":
        fsync_dir(card / "state")
    else:
        write_file(card / "unrelated", b"x", fsync=True)
    disk.cut()
    assert (card / "state" / "timestamp.json").read_bytes() == b""  # neither OLD nor NEW


def test_a_write_and_rename_without_any_fsync_is_simply_not_there_in_strict_mode(
    make_disk: MakeDisk, tmp_path: Path
) -> None:
    disk = make_disk("strict")
    card = tmp_path / "card"
    make_dirs(card / "state")
    atomic_write_bytes(card / "state" / "snapshot.json", OLD)
    write_file(card / "state" / "snapshot.json.new", NEW)
    (card / "state" / "snapshot.json.new").replace(card / "state" / "snapshot.json")
    assert (card / "state" / "snapshot.json").read_bytes() == NEW  # until the power goes
    disk.cut()
    assert tree(card) == {"state": None, "state/snapshot.json": OLD}
