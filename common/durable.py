"""The one durable write of the box and the back office: litestream's discipline, in one place.

Every file or directory that must survive a power cut is written through this module; no other
module renames, makes temporary files or opens a directory to fsync it
(tests/common/test_one_durable_writer.py checks the source). Everything here blocks on fsync:
async code calls it on a worker thread.

Rules:
1. **A file is replaced whole**: write a tmp file beside it, fsync the file, rename it over the
   name, fsync the directory (`atomic_write_bytes`, `atomic_writer`, `pending_file`). After a
   power cut the name holds the old or the new content: never a mix, never an empty file.
2. **A directory entry is durable when the function returns**: every create, rename, link,
   unlink, mkdir and rmdir here is followed by an fsync of the directory holding the entry (for
   `make_dirs`, of each new level's parent: the card root when `evidence/` is made).
3. **Tmp names are recognisable**: `.<name>.<16 hex digits>.tmp` beside the target (random, so
   two writers of one name never share a tmp file). Any name ending in `.tmp` in a directory the
   box or the back office writes is a leftover of an interrupted write (so is the `<name>.tmp`
   of earlier versions): `sweep_tmp_files` deletes them. Never give a real file that suffix.
4. **A failed write changes nothing**: an exception (ENOSPC, EIO, a fault in the caller's own
   writing) leaves the old content at the name and deletes the tmp file. Only a power cut leaves
   a tmp file behind, for the sweep.
5. **A directory is replaced whole** (`replace_directory`): it is built beside its name as
   `.<name>-new`, every file in it and the directory itself are fsynced, and it is swapped in by
   two renames (the old one waits as `.<name>-old` in between). A crash between the two renames
   leaves no directory at the name, so `recover_directory_swap` (which finishes the swap, or
   drops an unfinished build) must run before the directory is read.
6. **A write-once file** (`atomic_create_bytes`) appears whole or not at all and never replaces
   a file: the fsynced tmp file is hard-linked to the name, which fails if the name exists.
7. **A log grows by whole lines** (`append_line`): one write(2) in O_APPEND of a line ending in
   a newline, then fsync; the file's first line also fsyncs the directory. After a power cut the
   last line may be cut short: readers skip a last line without its newline.
8. **A symbolic link is re-pointed whole** (`replace_symlink`): a tmp link renamed over it, then
   the directory fsynced; it never disappears in between.

Permission bits: a file written by `atomic_*` or `pending_file` gets exactly `mode` (set with
fchmod, so keys and certificates do not depend on the umask), or, with `mode=None`, 0o666 less
the umask as open() gives. Directories (`make_dir`, `make_dirs`, `replace_directory`) and the
files of `replace_directory` are created as mkdir(2) and open(2) do: the umask applies.

Imports nothing of ours (common/ is the bottom layer).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Final

TMP_SUFFIX: Final = ".tmp"
NEW_DIR_SUFFIX: Final = "-new"
OLD_DIR_SUFFIX: Final = "-old"
DEFAULT_FILE_MODE: Final = 0o600
_TMP_RANDOM_BYTES: Final = 8  # 16 hex digits: two writers of one name never collide
_CREATE_NEW: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def is_tmp_name(name: str) -> bool:
    """True for the name of a tmp file (rule 3): any name ending in `.tmp`."""
    return name.endswith(TMP_SUFFIX)


def tmp_name_for(name: str) -> str:
    """A fresh tmp name for a write of `name`: `.<name>.<16 hex digits>.tmp`."""
    return f".{name}.{secrets.token_hex(_TMP_RANDOM_BYTES)}{TMP_SUFFIX}"


def fsync_dir(directory: Path) -> None:
    """Make the creations, renames and unlinks inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- files -------------------------------------------------------------------------------------


class PendingFile:
    """A tmp file being written beside the name it will get (see `pending_file`).

    Invariant: no real name changes until `commit` or `commit_new`; `discard` (also after a
    failed commit) closes and deletes the tmp file unless a commit put it in place.
    """

    def __init__(self, directory: Path, name: str, mode: int | None) -> None:
        self.directory = directory
        self.tmp_path = directory / tmp_name_for(name)
        fd = os.open(self.tmp_path, _CREATE_NEW, 0o666 if mode is None else DEFAULT_FILE_MODE)
        try:
            if mode is not None:
                os.fchmod(fd, mode)  # exact bits: the umask must not decide a key's readers
            self.handle: BinaryIO = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self.tmp_path.unlink()
            raise
        self._placed = False

    def commit(self, path: Path) -> None:
        """Put the written bytes at `path` (same directory), replacing what is there (rule 1)."""
        self._seal(path)
        self.tmp_path.replace(path)
        self._placed = True
        fsync_dir(self.directory)

    def commit_new(self, path: Path) -> None:
        """Put the written bytes at `path` (same directory); FileExistsError if it exists."""
        self._seal(path)
        os.link(self.tmp_path, path)  # atomic, and refuses an existing name
        self._placed = True
        self.tmp_path.unlink()
        fsync_dir(self.directory)  # one fsync makes the link and the unlink durable

    def discard(self) -> None:
        """Close and delete the tmp file; nothing at a real name changes. Idempotent."""
        with contextlib.suppress(OSError):
            self.handle.close()  # may fail flushing the very bytes that did not fit
        if not self._placed:
            self.tmp_path.unlink(missing_ok=True)

    def _seal(self, path: Path) -> None:
        if path.parent != self.directory:
            raise ValueError(f"{path} is not in {self.directory}: a rename must stay in it")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


@contextlib.contextmanager
def pending_file(
    directory: Path, *, name: str, mode: int | None = DEFAULT_FILE_MODE
) -> Iterator[PendingFile]:
    """A tmp file in `directory`, named after `name`, to write through `.handle` and then put in
    place with `.commit(path)`: for a write whose final name is known only at its end. When the
    block ends without a commit, or raises, the tmp file is deleted (rule 4)."""
    pending = PendingFile(directory, name, mode)
    try:
        yield pending
    finally:
        pending.discard()


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int | None = DEFAULT_FILE_MODE) -> Iterator[BinaryIO]:
    """Write the new content of `path` through the yielded file. It replaces `path` (rule 1)
    when the block ends normally; an exception leaves the old content and no tmp file."""
    with pending_file(path.parent, name=path.name, mode=mode) as pending:
        yield pending.handle
        pending.commit(path)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = DEFAULT_FILE_MODE) -> None:
    """Replace `path` with `data`: tmp, fsync, rename, fsync dir.

    After a power cut `path` holds its old content or `data`, never a mix or an empty file; the
    directory entry is durable when this returns. On an exception (ENOSPC ...) the old content
    stays and no tmp file remains.
    """
    with atomic_writer(path, mode=mode) as handle:
        handle.write(data)


def atomic_write_text(
    path: Path, text: str, *, mode: int | None = DEFAULT_FILE_MODE, encoding: str = "utf-8"
) -> None:
    """`atomic_write_bytes` of `text` encoded (UTF-8 unless told)."""
    atomic_write_bytes(path, text.encode(encoding), mode=mode)


def atomic_create_bytes(path: Path, data: bytes, *, mode: int | None = DEFAULT_FILE_MODE) -> None:
    """Create `path` holding `data`; never replaces a file (FileExistsError, nothing changed).

    After a power cut `path` is absent or holds all of `data`, never a part (rule 6); the
    directory entry is durable when this returns. Needs hard links (the back office's disks).
    """
    with pending_file(path.parent, name=path.name, mode=mode) as pending:
        pending.handle.write(data)
        pending.commit_new(path)


# --- directory entries ---------------------------------------------------------------------------


def append_line(path: Path, line: bytes, *, mode: int = DEFAULT_FILE_MODE) -> None:
    """Append `line` (which must end in a newline and hold no other) to the log `path`,
    creating it with `mode`; durable when this returns (rule 7)."""
    if not line.endswith(b"\n") or b"\n" in line[:-1]:
        raise ValueError("append_line takes exactly one line, ending in a newline")
    append_lines(path, line, mode=mode)


def append_lines(path: Path, lines: bytes, *, mode: int = DEFAULT_FILE_MODE) -> None:
    """Append whole `lines` (ending in a newline) to the log `path` in one write(2) and one
    fsync, creating it with `mode`; durable when this returns (rule 7: after a power cut the
    last of them may be cut short, and readers skip a last line without its newline)."""
    if not lines.endswith(b"\n"):
        raise ValueError("append_lines takes whole lines, ending in a newline")
    new_file = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, mode)
    try:
        written = os.write(fd, lines)
        if written != len(lines):
            raise OSError(f"short append to {path}: {written} of {len(lines)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)
    if new_file:
        fsync_dir(path.parent)  # the first line is durable only with the file's entry


def make_dir(path: Path, *, mode: int = 0o777, exist_ok: bool = False) -> None:
    """mkdir `path` (its parent exists) and fsync the parent: the entry is durable on return.
    An existing directory is left as it is when `exist_ok` (FileExistsError otherwise)."""
    try:
        path.mkdir(mode)
    except FileExistsError:
        if not (exist_ok and path.is_dir()):
            raise
        return
    fsync_dir(path.parent)


def make_dirs(path: Path, *, mode: int = 0o777) -> None:
    """`path.mkdir(parents=True, exist_ok=True, mode=mode)` made durable: every level it
    creates is fsynced in its parent. Missing parents get 0o777 (less the umask), as there."""
    missing: list[Path] = []
    level = path
    while not level.is_dir() and level.parent != level:
        missing.append(level)
        level = level.parent
    for new_level in reversed(missing):
        make_dir(new_level, mode=mode if new_level == path else 0o777, exist_ok=True)


def durable_rename(source: Path, target: Path) -> None:
    """Rename `source` to `target` (replacing a file there, as rename(2) does) and fsync the
    directory of each: the new name is durable when this returns."""
    source.replace(target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def replace_symlink(link: Path, target: str) -> None:
    """Point the symbolic link `link` at `target` (a path as the link should hold it, e.g.
    relative), atomically: a tmp link beside it (rule 3's name) renamed over it, then the
    directory fsynced. After a power cut `link` names the old or the new target, never nothing
    (what the A/B switch of releases stands on: gateway/release_switch_io.py)."""
    tmp = link.parent / tmp_name_for(link.name)
    tmp.symlink_to(target)
    try:
        tmp.replace(link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


def durable_unlink(path: Path, *, missing_ok: bool = True) -> None:
    """Delete the file `path` and fsync its directory; a missing file is fine when `missing_ok`
    (FileNotFoundError otherwise)."""
    try:
        path.unlink()
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    fsync_dir(path.parent)


def remove_empty_dir(path: Path) -> bool:
    """rmdir `path` and fsync its parent; False, with nothing changed, when it is not empty or
    cannot be removed (already gone, say)."""
    try:
        path.rmdir()
    except OSError:
        return False
    fsync_dir(path.parent)
    return True


def remove_tree(path: Path) -> None:
    """Delete the directory `path` and all below it (a missing one is fine); fsync its parent."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


# --- directory swaps ------------------------------------------------------------------------------


def swap_paths(target: Path) -> tuple[Path, Path]:
    """Where `replace_directory` builds the new `target` and parks the old one (rule 5)."""
    return (
        target.with_name(f".{target.name}{NEW_DIR_SUFFIX}"),
        target.with_name(f".{target.name}{OLD_DIR_SUFFIX}"),
    )


def replace_directory(
    target: Path, files: Mapping[str, tuple[bytes, int]], *, mode: int = 0o700
) -> None:
    """Make `target` a directory holding exactly `files` (name -> (content, permission bits)),
    replacing any directory there as one step (rule 5). Its parent must exist.

    After a power cut, once `recover_directory_swap(target)` ran, `target` holds the old set or
    the new set of files, never a mix and never none when there was one; durable on return.
    Files are created with their final mode (a key is never readable by others for a moment).
    """
    recover_directory_swap(target)
    new, old = swap_paths(target)
    make_dir(new, mode=mode)
    try:
        for name, (data, file_mode) in files.items():
            _write_new_file(new / name, data, file_mode)
        fsync_dir(new)
    except BaseException:
        remove_tree(new)
        raise
    if target.exists():
        target.replace(old)
    # Between these two renames the name is missing: recover_directory_swap promotes `new`,
    # which was whole and durable before the first one.
    new.replace(target)
    fsync_dir(target.parent)
    with contextlib.suppress(OSError):
        remove_tree(old)  # the swap is done; a copy left here goes at the next recovery


def recover_directory_swap(target: Path) -> None:
    """Finish or undo a `replace_directory(target, ...)` that a crash interrupted.

    `.<name>-old` exists without `target` only between the two renames, when the new directory
    was already whole: promote it (or put the old one back if it is gone). Any other leftover is
    an unfinished build or a replaced copy, and is deleted. Durable when this returns.
    """
    new, old = swap_paths(target)
    if not target.exists() and old.exists():
        durable_rename(new if new.is_dir() else old, target)
    for leftover in (new, old):
        remove_tree(leftover)


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, _CREATE_NEW, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


# --- after a power cut ----------------------------------------------------------------------------


def sweep_tmp_files(root: Path) -> list[Path]:
    """Delete the tmp files interrupted writes left below `root` (rule 3); return them, sorted.

    Run it before anything writes below `root` (at start): it cannot tell a leftover from a
    write in progress. Directories, and names that are not tmp names, are left alone.
    """
    if not root.exists():
        return []
    swept = sorted(path for path in root.rglob("*") if is_tmp_name(path.name) and not path.is_dir())
    for tmp in swept:
        durable_unlink(tmp)
    return swept
