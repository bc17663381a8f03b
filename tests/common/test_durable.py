"""common/durable.py keeps its promises: the old or the new content at a name, never a mix; no tmp
file after a failure; the file and its directory fsynced before a function returns."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common import durable
from common.durable import (
    append_line,
    append_lines,
    atomic_create_bytes,
    atomic_write_bytes,
    atomic_write_text,
    atomic_writer,
    durable_rename,
    durable_unlink,
    is_tmp_name,
    make_dirs,
    pending_file,
    recover_directory_swap,
    remove_empty_dir,
    remove_tree,
    replace_directory,
    sweep_tmp_files,
    tmp_name_for,
)
from tests.evidence_helpers import mounted_tmpfs

TMP_NAME = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{16}\.tmp")


class PowerCut(Exception):
    """Stands for the machine stopping at this point: nothing after it runs."""


def fsynced(
    monkeypatch: pytest.MonkeyPatch, watched: Path | None = None
) -> list[tuple[str, bytes]]:
    """Record every fsync as (the fd's path, what `watched` held at that moment)."""
    calls: list[tuple[str, bytes]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        held = watched.read_bytes() if watched is not None and watched.exists() else b""
        calls.append((str(Path(f"/proc/self/fd/{fd}").readlink()), held))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


# --- replacing a file ----------------------------------------------------------------------------


def test_bytes_and_text_round_trip_and_replace_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_bytes(path, b"old content, longer than the new one")
    atomic_write_text(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert names(tmp_path) == ["state.json"]


def test_the_mode_is_exact_whatever_the_umask_unless_none(tmp_path: Path) -> None:
    with umask(0o077):
        atomic_write_bytes(tmp_path / "public.pem", b"k", mode=0o644)
        atomic_write_bytes(tmp_path / "private.pem", b"k")
        atomic_write_bytes(tmp_path / "plain", b"k", mode=None)
    assert (tmp_path / "public.pem").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o600  # 0o666 less the umask


def test_the_file_then_its_directory_are_fsynced_before_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    atomic_write_bytes(path, b"old")
    calls = fsynced(monkeypatch, watched=path)
    atomic_write_bytes(path, b"new")
    (file_path, held_then), (dir_path, held_at_dir_fsync) = calls
    tmp = Path(file_path)
    match = TMP_NAME.fullmatch(tmp.name)
    assert match is not None
    assert match["name"] == "state.json"
    assert tmp.parent == tmp_path.resolve()
    assert held_then == b"old"  # the tmp file is durable before the name changes
    assert dir_path == str(tmp_path.resolve())
    assert held_at_dir_fsync == b"new"  # the rename happened, and its entry is made durable
    assert not tmp.exists()


def test_an_exception_while_writing_leaves_the_old_content_and_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "shift.json"
    atomic_write_bytes(path, b"old")

    def write_half_then_stop() -> None:
        with atomic_writer(path) as handle:
            handle.write(b"half of the new")
            raise PowerCut

    with pytest.raises(PowerCut):
        write_half_then_stop()
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["shift.json"]


def test_a_full_disk_leaves_the_old_content_and_no_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC from the writer: delayed allocation reports a full disk at fsync."""
    path = tmp_path / "fleet-state.json"
    atomic_write_bytes(path, b"old")

    def disk_full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert sweep_tmp_files(tmp_path) == []
    assert names(tmp_path) == ["fleet-state.json"]


@pytest.mark.root
def test_a_really_full_file_system_leaves_the_old_content_and_no_tmp(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "small", "64k") as small:
        path = small / "catalog-note"
        atomic_write_bytes(path, b"old")
        with pytest.raises(OSError, match="No space left") as raised:
            atomic_write_bytes(path, os.urandom(1024 * 1024))
        assert raised.value.errno == errno.ENOSPC
        assert path.read_bytes() == b"old"
        assert names(small) == ["catalog-note"]


def test_a_commit_outside_the_tmp_file_s_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()

    def commit_elsewhere() -> None:
        with pending_file(tmp_path, name="x") as pending:
            pending.handle.write(b"data")
            pending.commit(tmp_path / "elsewhere" / "x")

    with pytest.raises(ValueError, match="stay in"):
        commit_elsewhere()
    assert names(tmp_path) == ["elsewhere"]


def test_a_pending_file_takes_its_name_at_the_end(tmp_path: Path) -> None:
    with pending_file(tmp_path, name="source.mvbe", mode=0o640) as pending:
        pending.handle.write(b"media")
        pending.commit(tmp_path / "decided-late.ts")
    assert (tmp_path / "decided-late.ts").read_bytes() == b"media"
    assert names(tmp_path) == ["decided-late.ts"]


# --- write-once files ----------------------------------------------------------------------------


def test_a_write_once_file_never_replaces_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "1.root.json"
    calls = fsynced(monkeypatch, watched=path)
    atomic_create_bytes(path, b"first", mode=0o644)
    assert [Path(p).parent for p, _ in calls] == [tmp_path.resolve(), tmp_path.parent.resolve()]
    assert calls[-1] == (str(tmp_path.resolve()), b"first")
    with pytest.raises(FileExistsError):
        atomic_create_bytes(path, b"second")
    assert path.read_bytes() == b"first"
    assert path.stat().st_mode & 0o777 == 0o644
    assert names(tmp_path) == ["1.root.json"]


# --- after a power cut: the sweep ----------------------------------------------------------------


def test_the_sweep_takes_tmp_names_and_leaves_everything_else(tmp_path: Path) -> None:
    recording = tmp_path / "evidence" / "abc"
    recording.mkdir(parents=True)
    leftovers = [
        recording / tmp_name_for("f.json"),  # this module's scheme
        recording / "f2.json.tmp",  # storage/fsutil.py's scheme, on a card of an older box
        tmp_path / tmp_name_for("shift.json"),
    ]
    kept = [
        recording / "f.json",
        recording / "f.mvbe",
        recording / "f3.mvbe.part",
        recording / ".hidden",
        recording / "notes.tmpl",
        recording / "x.tmp.bak",
        tmp_path / ".pairing-new" / "client.key",
    ]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / "a-directory.tmp").mkdir()

    assert sweep_tmp_files(tmp_path) == sorted(leftovers)
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in kept)
    assert (tmp_path / "a-directory.tmp").is_dir()
    assert sweep_tmp_files(tmp_path / "missing") == []


def test_tmp_names_are_recognised_and_fresh() -> None:
    first, second = tmp_name_for("info.json"), tmp_name_for("info.json")
    assert first != second
    assert is_tmp_name(first)
    assert TMP_NAME.fullmatch(first)
    assert not is_tmp_name("info.json")
    assert not is_tmp_name("tmp")


def test_a_tmp_file_a_power_cut_left_is_swept(tmp_path: Path) -> None:
    path = tmp_path / "current"
    atomic_write_bytes(path, b"old")
    pending = durable.PendingFile(tmp_path, "current", 0o600)
    pending.handle.write(b"ne")
    pending.handle.flush()  # the machine stops here: no commit, no discard
    assert sweep_tmp_files(tmp_path) == [pending.tmp_path]
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["current"]
    pending.discard()


# --- directory swaps -----------------------------------------------------------------------------

OLD_SET = {"client.key": (b"old key", 0o600), "address": (b"old.example\n", 0o644)}
NEW_SET = {"client.key": (b"new key", 0o600), "pins.json": (b"[]", 0o644)}


def contents(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def expected(files: dict[str, tuple[bytes, int]]) -> dict[str, bytes]:
    return {name: data for name, (data, _mode) in files.items()}


def test_a_directory_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "pairing"
    replace_directory(target, OLD_SET)
    replace_directory(target, NEW_SET)
    assert contents(target) == expected(NEW_SET)
    assert (target / "client.key").stat().st_mode & 0o777 == 0o600
    assert target.stat().st_mode & 0o777 == 0o700
    assert names(tmp_path) == ["pairing"]


def test_every_file_and_the_new_directory_are_fsynced_before_the_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "pairing"
    replace_directory(target, OLD_SET)
    calls = fsynced(monkeypatch, watched=target / "client.key")
    replace_directory(target, NEW_SET)
    parent = str(tmp_path.resolve())
    new = f"{parent}/.pairing-new"
    assert [path for path, _held in calls] == [
        parent,  # `.pairing-new` made
        f"{new}/client.key",  # every file, whole
        f"{new}/pins.json",
        new,  # then the directory, before any rename
        parent,  # the two renames
        parent,  # `.pairing-old` removed
    ]
    assert calls[4][1] == b"new key"  # the renames happened before that fsync


@pytest.mark.parametrize("cut_at_rename", [1, 2])
def test_a_swap_cut_by_a_power_cut_leaves_the_old_or_the_new_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut_at_rename: int
) -> None:
    target = tmp_path / "pairing"
    replace_directory(target, OLD_SET)
    real_replace = os.replace
    renames: list[int] = []

    def replace_until_the_cut(source: Path, destination: Path) -> None:
        renames.append(1)
        if len(renames) == cut_at_rename:
            raise PowerCut
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace_until_the_cut)
    with pytest.raises(PowerCut):
        replace_directory(target, NEW_SET)
    monkeypatch.undo()

    recover_directory_swap(target)
    # Cut before the first rename: the old set; between the renames: the (whole) new set.
    assert contents(target) == expected(OLD_SET if cut_at_rename == 1 else NEW_SET)
    assert names(tmp_path) == ["pairing"]


def test_a_build_that_fails_leaves_the_old_directory_and_no_leftover(tmp_path: Path) -> None:
    target = tmp_path / "pairing"
    replace_directory(target, OLD_SET)
    with pytest.raises(FileNotFoundError):
        replace_directory(target, {"sub/file": (b"x", 0o600)})
    assert contents(target) == expected(OLD_SET)
    assert names(tmp_path) == ["pairing"]


def test_recovery_puts_the_old_directory_back_when_no_new_one_is_left(tmp_path: Path) -> None:
    target = tmp_path / "pairing"
    replace_directory(target, OLD_SET)
    target.rename(tmp_path / ".pairing-old")
    recover_directory_swap(target)
    assert contents(target) == expected(OLD_SET)
    assert names(tmp_path) == ["pairing"]


# --- directory entries ---------------------------------------------------------------------------


def test_make_dirs_fsyncs_the_parent_of_every_level_it_creates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fsynced(monkeypatch)
    card = tmp_path.resolve()
    make_dirs(tmp_path / "evidence" / "rec", mode=0o750)
    assert [path for path, _ in calls] == [str(card), str(card / "evidence")]
    assert (tmp_path / "evidence" / "rec").stat().st_mode & 0o777 == 0o750 & ~current_umask()
    calls.clear()
    make_dirs(tmp_path / "evidence" / "rec")
    assert calls == []  # nothing created, nothing to make durable
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_dirs(tmp_path / "file")


def current_umask() -> int:
    value = os.umask(0)
    os.umask(value)
    return value


Change = Callable[[Path], object]


@pytest.mark.parametrize(
    ("prepare", "change"),
    [
        ("file", durable_unlink),
        ("dir", remove_empty_dir),
        ("tree", remove_tree),
        ("file", lambda p: durable_rename(p, p.with_name("renamed"))),
    ],
    ids=["unlink", "rmdir", "rmtree", "rename"],
)
def test_every_change_of_an_entry_fsyncs_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prepare: str, change: Change
) -> None:
    path = tmp_path / "entry"
    if prepare == "file":
        path.write_bytes(b"x")
    else:
        path.mkdir()
        if prepare == "tree":
            (path / "inner").write_bytes(b"x")
    calls = fsynced(monkeypatch)
    change(path)
    assert not path.exists()
    assert [p for p, _ in calls] == [str(tmp_path.resolve())]


def test_missing_entries_are_fine_only_where_said(tmp_path: Path) -> None:
    durable_unlink(tmp_path / "missing")
    remove_tree(tmp_path / "missing")
    assert remove_empty_dir(tmp_path / "missing") is False
    with pytest.raises(FileNotFoundError):
        durable_unlink(tmp_path / "missing", missing_ok=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_bytes(b"")
    assert remove_empty_dir(tmp_path / "full") is False


# --- a log that grows by lines --------------------------------------------------------------------


def test_a_log_grows_by_fsynced_lines_and_its_first_line_fsyncs_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "reports.jsonl"
    calls = fsynced(monkeypatch, watched=log)

    append_line(log, b"first\n")
    append_line(log, b"second\n")

    assert log.read_bytes() == b"first\nsecond\n"
    assert log.stat().st_mode & 0o777 == 0o600
    assert calls == [
        (str(log.resolve()), b"first\n"),
        (str(tmp_path.resolve()), b"first\n"),  # the new file's entry
        (str(log.resolve()), b"first\nsecond\n"),  # no directory fsync after the first line
    ]


@pytest.mark.parametrize("line", [b"no newline", b"two\nlines\n", b""])
def test_a_log_takes_exactly_one_line(tmp_path: Path, line: bytes) -> None:
    with pytest.raises(ValueError, match="exactly one line"):
        append_line(tmp_path / "log", line)
    assert not (tmp_path / "log").exists()


def test_lines_appended_at_once_are_one_write_and_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "held.jsonl"
    append_line(log, b"first\n")
    calls = fsynced(monkeypatch, watched=log)

    append_lines(log, b"second\nthird\n")

    assert log.read_bytes() == b"first\nsecond\nthird\n"
    assert calls == [(str(log.resolve()), b"first\nsecond\nthird\n")]


@pytest.mark.parametrize("lines", [b"no newline", b"two\nlines", b""])
def test_appended_lines_must_be_whole(tmp_path: Path, lines: bytes) -> None:
    with pytest.raises(ValueError, match="whole lines"):
        append_lines(tmp_path / "log", lines)
    assert not (tmp_path / "log").exists()
