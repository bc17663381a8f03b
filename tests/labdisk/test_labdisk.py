"""labdisk on a real FUSE mount: each fault, proved by what a process sees through the mount.

Timing is only ever checked as a lower bound (a stall can only make things slower).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common.durable import fsync_dir
from labdisk import Delay, LabDiskClient, is_mounted
from labdisk.mount_io import ROOT
from tests.labdisk.conftest import MakeDisk

pytestmark = pytest.mark.root


def write_file(path: Path, data: bytes, *, fsync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def errno_of(act: Callable[[], object]) -> int:
    """The errno of the OSError `act` raises (the test fails if it raises none)."""
    try:
        act()
    except OSError as error:
        return error.errno or 0
    pytest.fail("no OSError")


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path below `root`: a file's content, None for a directory."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def wait_for_stall(disk: LabDiskClient) -> None:
    """Until an operation waits in a stall (the daemon counts them)."""
    deadline = time.monotonic() + 10
    while disk.status()["stalled"] == 0:
        assert time.monotonic() < deadline, "no operation reached the stall"
        time.sleep(0.01)


def card_and_backing(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "card", tmp_path / "backing"


# --- power cut ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["strict", "ext4"])
def test_a_write_not_fsynced_is_gone_after_a_cut_and_a_fsynced_one_is_there(
    make_disk: MakeDisk, tmp_path: Path, mode: str
) -> None:
    disk = make_disk(mode)
    card, backing = card_and_backing(tmp_path)
    write_file(card / "synced", b"S" * 10_000, fsync=True)
    write_file(card / "unsynced", b"U" * 10_000)
    write_file(card / "overwritten", b"old" * 1000, fsync=True)
    fsync_dir(card)
    fd = os.open(card / "overwritten", os.O_WRONLY)
    os.pwrite(fd, b"NEW", 0)
    os.close(fd)
    assert (card / "overwritten").read_bytes()[:6] == b"NEWold"
    report = disk.cut()
    assert tree(card) == {
        "overwritten": b"old" * 1000,
        "synced": b"S" * 10_000,
        "unsynced": b"",  # its name was durable (the directory fsync), its data never was
    }
    assert tree(backing) == tree(card)  # the backing directory holds exactly the durable state
    assert report["bytes_lost"] == 10_003
    assert report["files_restored"] == 2  # "unsynced" and "overwritten"
    assert disk.stats()["dirty_files"] == 0


@pytest.mark.parametrize("mode", ["strict", "ext4"])
def test_a_file_in_a_directory_never_fsynced(
    make_disk: MakeDisk, tmp_path: Path, mode: str
) -> None:
    """strict: gone after a cut even though the file was fsynced; ext4: there once another file
    is fsynced (the journal commit takes every entry; the data only where fsynced)."""
    disk = make_disk(mode)
    card, _ = card_and_backing(tmp_path)
    write_file(card / "created", b"C" * 5000)
    (card / "evidence").mkdir()
    write_file(card / "evidence" / "segment", b"E" * 5000, fsync=True)
    write_file(card / "other", b"O", fsync=True)  # another file's fsync
    disk.cut()
    if mode == "strict":
        assert tree(card) == {}
    else:
        assert tree(card) == {
            "created": b"",  # ext4's zero-length file: the name came through, not the data
            "evidence": None,
            "evidence/segment": b"E" * 5000,
            "other": b"O",
        }


def test_strict_a_directory_fsynced_in_a_parent_never_fsynced_is_lost(
    make_disk: MakeDisk, tmp_path: Path
) -> None:
    """The evidence writer's case in issue 14: evidence/<recording>/ fsynced, evidence/ not."""
    disk = make_disk("strict")
    card, _ = card_and_backing(tmp_path)
    (card / "evidence").mkdir()
    fsync_dir(card)
    (card / "evidence" / "rec").mkdir()
    write_file(card / "evidence" / "rec" / "seg", b"x" * 100, fsync=True)
    fsync_dir(card / "evidence" / "rec")
    disk.cut()
    assert tree(card) == {"evidence": None}
    (card / "evidence" / "rec").mkdir()
    write_file(card / "evidence" / "rec" / "seg", b"x" * 100, fsync=True)
    fsync_dir(card / "evidence" / "rec")
    fsync_dir(card / "evidence")
    disk.cut()
    assert tree(card) == {"evidence": None, "evidence/rec": None, "evidence/rec/seg": b"x" * 100}


@pytest.mark.parametrize("mode", ["strict", "ext4"])
def test_a_rename_over_a_name_without_a_directory_fsync(
    make_disk: MakeDisk, tmp_path: Path, mode: str
) -> None:
    """strict: reverts to the old file; ext4: it reverts too, until any fsync commits it."""
    disk = make_disk(mode)
    card, backing = card_and_backing(tmp_path)
    write_file(card / "name", b"old", fsync=True)
    fsync_dir(card)
    write_file(card / "name.tmp", b"new", fsync=True)
    (card / "name.tmp").replace(card / "name")
    assert disk.status()["parked"] == 1  # the old inode waits, hidden, for the cut
    assert ".labdisk" not in names(card)
    disk.cut()
    # ext4: the tmp file's fsync committed its creation; the rename after it was not committed
    expected = {"name": b"old"} if mode == "strict" else {"name": b"old", "name.tmp": b"new"}
    assert tree(card) == expected
    assert tree(backing) == expected
    if mode == "ext4":
        (card / "name.tmp").unlink()
    write_file(card / "name.tmp", b"new", fsync=True)
    (card / "name.tmp").replace(card / "name")
    write_file(card / "unrelated", b"u", fsync=True)  # ext4: commits the rename
    disk.cut()
    assert (card / "name").read_bytes() == (b"old" if mode == "strict" else b"new")
    assert disk.status()["parked"] == 0


def test_an_unlink_reverts_until_the_directory_is_fsynced(
    make_disk: MakeDisk, tmp_path: Path
) -> None:
    disk = make_disk("strict")
    card, backing = card_and_backing(tmp_path)
    (card / "d").mkdir()
    write_file(card / "d" / "f", b"f" * 9000, fsync=True)
    os.link(card / "d" / "f", card / "d" / "g")
    fsync_dir(card / "d")
    fsync_dir(card)
    (card / "d" / "f").unlink()
    (card / "d" / "g").unlink()
    (card / "d").rmdir()
    assert tree(card) == {}
    disk.cut()
    assert tree(card) == {"d": None, "d/f": b"f" * 9000, "d/g": b"f" * 9000}
    assert (card / "d" / "f").stat().st_ino == (card / "d" / "g").stat().st_ino
    (card / "d" / "f").unlink()
    fsync_dir(card / "d")
    disk.cut()
    assert tree(card) == {"d": None, "d/g": b"f" * 9000}
    assert tree(backing) == tree(card)


def test_a_torn_write_keeps_whole_pages_of_the_last_write(
    make_disk: MakeDisk, tmp_path: Path
) -> None:
    disk = make_disk("strict", seed=5)
    card, _ = card_and_backing(tmp_path)
    write_file(card / "f", b"." * 65536, fsync=True)
    fsync_dir(card)
    fd = os.open(card / "f", os.O_WRONLY)
    os.pwrite(fd, b"#" * 65536, 0)
    os.close(fd)
    report = disk.cut(torn=True)
    content = (card / "f").read_bytes()
    pages = [content[start : start + 4096] for start in range(0, 65536, 4096)]
    assert all(page in (b"." * 4096, b"#" * 4096) for page in pages)
    assert report["torn_pages"] == 16
    assert sum(page == b"#" * 4096 for page in pages) == report["torn_pages_kept"]
    assert 0 < report["torn_pages_kept"] < 16  # seed 5 keeps some and loses some


def test_a_handle_opened_before_a_cut_is_stale(make_disk: MakeDisk, tmp_path: Path) -> None:
    disk = make_disk()
    card, _ = card_and_backing(tmp_path)
    write_file(card / "f", b"data", fsync=True)
    fsync_dir(card)
    fd = os.open(card / "f", os.O_RDWR)
    try:
        disk.cut()
        assert errno_of(lambda: os.write(fd, b"more")) == errno.EIO
    finally:
        os.close(fd)
    assert (card / "f").read_bytes() == b"data"  # a new open works


def test_the_cut_comes_from_another_process(make_disk: MakeDisk, tmp_path: Path) -> None:
    disk = make_disk()
    card, _ = card_and_backing(tmp_path)
    write_file(card / "f", b"data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ctl = [sys.executable, "-m", "labdisk", "ctl", str(disk.control)]
    done = subprocess.run([*ctl, "cut"], capture_output=True, text=True, env=env, check=True)
    assert '"entries_reverted": 1' in done.stdout
    assert tree(card) == {}
    assert LabDiskClient(disk.control).status()["cuts"] == 1


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "ops", "act", "times"),
    [
        ("EIO", ["write"], "write", 1),
        ("EIO", ["fsync"], "fsync", 1),
        ("ENOSPC", ["create"], "create", 1),
        ("ENOSPC", ["write"], "write", 1),
        ("EIO", ["read"], "read", None),  # the kernel retries a failed readahead: fail them all
    ],
)
def test_an_injected_error_reaches_the_caller_with_its_errno(
    make_disk: MakeDisk, tmp_path: Path, error: str, ops: list[str], act: str, times: int | None
) -> None:
    disk = make_disk()
    card, _ = card_and_backing(tmp_path)
    (card / "evidence").mkdir()
    write_file(card / "evidence" / "a.mvb", b"durable", fsync=True)
    fsync_dir(card / "evidence")
    fsync_dir(card)
    disk.fail(error, ops=ops, path="evidence/*", times=times)
    write_file(card / "elsewhere", b"unaffected")

    def act_once() -> None:
        if act == "create":
            write_file(card / "evidence" / "b.mvb", b"x")
        elif act == "read":
            (card / "evidence" / "a.mvb").read_bytes()
        else:
            fd = os.open(card / "evidence" / "a.mvb", os.O_WRONLY)
            try:
                os.write(fd, b"changed")
                if act == "fsync":
                    os.fsync(fd)
            finally:
                os.close(fd)

    assert errno_of(act_once) == getattr(errno, error)
    disk.clear_faults()
    disk.cut()
    assert (card / "evidence" / "a.mvb").read_bytes() == b"durable"  # a failed fsync: not durable


def test_a_read_only_card_refuses_writes_and_serves_reads(
    make_disk: MakeDisk, tmp_path: Path
) -> None:
    disk = make_disk()
    card, _ = card_and_backing(tmp_path)
    write_file(card / "f", b"data", fsync=True)
    fsync_dir(card)
    fd = os.open(card / "f", os.O_WRONLY)
    try:
        disk.read_only()
        for act in (
            lambda: os.write(fd, b"x"),
            lambda: os.fsync(fd),
            lambda: os.open(card / "f", os.O_WRONLY),
            lambda: write_file(card / "g", b"x"),
            lambda: (card / "d").mkdir(),
            lambda: (card / "f").rename(card / "h"),
            lambda: (card / "f").unlink(),
        ):
            assert errno_of(act) == errno.EROFS
    finally:
        os.close(fd)
    assert (card / "f").read_bytes() == b"data"
    assert names(card) == ["f"]
    disk.read_only(on=False)
    write_file(card / "g", b"x")


@pytest.mark.parametrize("error", ["ENODEV", "ENOTCONN"])
def test_a_pulled_card_fails_everything_until_reinserted(
    make_disk: MakeDisk, tmp_path: Path, error: str
) -> None:
    disk = make_disk()
    card, _ = card_and_backing(tmp_path)
    write_file(card / "durable", b"d", fsync=True)
    fsync_dir(card)
    write_file(card / "lost", b"l")
    fd = os.open(card / "durable", os.O_RDONLY)
    try:
        disk.pull(error)
        for act in (
            lambda: names(card),
            lambda: (card / "durable").read_bytes(),
            lambda: os.read(fd, 1),
            lambda: write_file(card / "new", b"n"),
        ):
            assert errno_of(act) == getattr(errno, error)
        disk.reinsert()
        assert tree(card) == {"durable": b"d"}  # the pull was a power cut for the card
        assert errno_of(lambda: os.read(fd, 1)) == errno.EIO  # a handle from before stays dead
    finally:
        os.close(fd)


# --- latency and accounting ---------------------------------------------------------------------


def test_a_stall_delays_fsync_by_at_least_the_stall(make_disk: MakeDisk, tmp_path: Path) -> None:
    disk = make_disk(seed=1)
    card, _ = card_and_backing(tmp_path)
    (card / "slow").mkdir()
    write_file(card / "slow" / "f", b"x")
    disk.stall(Delay.fixed(0.4), ops=["fsync"], path="slow/*", times=1)
    disk.stall(Delay.uniform(0.2, 0.3), ops=["write"], path="slow/*", times=1)
    started = time.monotonic()
    fsync_file(card / "slow" / "f")
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    write_file(card / "slow" / "f", b"y")
    assert time.monotonic() - started >= 0.2


def test_a_cut_during_a_stalled_fsync_makes_nothing_durable(
    make_disk: MakeDisk, tmp_path: Path
) -> None:
    disk = make_disk()
    card, _ = card_and_backing(tmp_path)
    write_file(card / "f", b"old", fsync=True)
    fsync_dir(card)
    fd = os.open(card / "f", os.O_WRONLY)
    os.write(fd, b"new")
    disk.stall(1.0, ops=["fsync"], times=1)
    errors: list[int] = []

    def fsync() -> None:
        try:
            os.fsync(fd)
        except OSError as error:
            errors.append(error.errno or 0)

    worker = threading.Thread(target=fsync)
    worker.start()
    wait_for_stall(disk)
    disk.cut()
    worker.join(10)
    os.close(fd)
    assert errors == [errno.EIO]
    assert (card / "f").read_bytes() == b"old"


def test_accounting_counts_bytes_and_fsyncs_by_class(make_disk: MakeDisk, tmp_path: Path) -> None:
    disk = make_disk(classes=[("evidence", "*.mvb*"), ("catalog", "catalog/*")])
    card, _ = card_and_backing(tmp_path)
    (card / "catalog").mkdir()
    write_file(card / "rec.mvb", b"e" * 300_000, fsync=True)
    write_file(card / "catalog" / "cache.db", b"c" * 1000, fsync=True)
    fsync_file(card / "catalog" / "cache.db")
    fsync_dir(card / "catalog")
    write_file(card / "audit.jsonl", b"a" * 10)
    shown = disk.stats(reset=True)["classes"]
    assert shown["evidence"]["bytes_written"] == 300_000
    assert shown["evidence"]["fsyncs"] == 1
    assert shown["catalog"]["bytes_written"] == 1000
    assert shown["catalog"]["fsyncs"] == 2
    assert shown["other"]["bytes_written"] == 10
    assert shown["other"]["dir_fsyncs"] == 1  # "catalog" itself does not match "catalog/*"
    assert shown["total"]["bytes_written"] == 301_010
    assert disk.stats()["classes"]["total"]["bytes_written"] == 0


# --- the mount's life ---------------------------------------------------------------------------


def test_a_daemon_that_dies_takes_its_mount_with_it(make_disk: MakeDisk, tmp_path: Path) -> None:
    disk = make_disk()
    card, _ = card_and_backing(tmp_path)
    assert disk.pid is not None
    os.kill(disk.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_mounted(card) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_mounted(card)
    disk.close()  # still fine


def test_close_unmounts_even_while_the_mount_is_busy(make_disk: MakeDisk, tmp_path: Path) -> None:
    disk = make_disk()
    card, _ = card_and_backing(tmp_path)
    fd = os.open(card, os.O_RDONLY)
    try:
        disk.close()
        assert not is_mounted(card)
    finally:
        os.close(fd)


def test_appends_continue_at_the_durable_end_and_flock_excludes(
    make_disk: MakeDisk, tmp_path: Path
) -> None:
    """What the audit log relies on: O_APPEND writes after a cut land at the durable end, and an
    exclusive flock keeps a second writer out."""
    disk = make_disk()
    card, _ = card_and_backing(tmp_path)
    fd = os.open(card / "audit.jsonl", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    os.write(fd, b"one\n")
    os.fsync(fd)
    fsync_dir(card)
    os.write(fd, b"two\n")
    os.close(fd)
    disk.cut()
    first = os.open(card / "audit.jsonl", os.O_WRONLY | os.O_APPEND)
    second = os.open(card / "audit.jsonl", os.O_WRONLY | os.O_APPEND)
    try:
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(first, b"three\n")
    finally:
        os.close(first)
        os.close(second)
    assert (card / "audit.jsonl").read_bytes() == b"one\nthree\n"


@pytest.mark.parametrize(("synchronous", "rows"), [("FULL", 50), ("OFF", None)])
def test_sqlite_in_wal_mode_keeps_exactly_its_fsynced_commits(
    make_disk: MakeDisk, tmp_path: Path, synchronous: str, rows: int | None
) -> None:
    """sqlite (the catalog's diskcache) runs on labdisk: locks, the mmapped -shm, the WAL. With
    synchronous=FULL every commit survives a cut; with OFF not even the table does."""
    disk = make_disk("strict")
    card, _ = card_and_backing(tmp_path)
    db = sqlite3.connect(card / "cache.db")
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        db.commit()
        fsync_dir(card)
        for key in range(50):
            db.execute("INSERT INTO t VALUES (?, ?)", (key, os.urandom(3000)))
            db.commit()
        disk.cut()
    finally:
        db.close()
    db = sqlite3.connect(card / "cache.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        if rows is None:
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                db.execute("SELECT count(*) FROM t")
        else:
            assert db.execute("SELECT count(*) FROM t").fetchone() == (rows,)
    finally:
        db.close()
