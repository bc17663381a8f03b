"""labdisk's FUSE file system (mfusepy over libfuse 3): the shell around durability.py and
faults.py. Runs in the daemon process (`python -m labdisk serve`, started by labdisk.LabDisk).

Every operation is applied to the backing directory at once (a passthrough file system), so the
backing directory holds the live state while mounted; the durability model records what a cut
must put back. Every operation and the cut run under one lock; stalls wait before the lock, so a
stalled fsync delays its caller only.

An inode that loses its last live name while a record still names it (an unlink or a replacing
rename not yet durable) is parked in `<backing>/.labdisk/<inode>` (hidden from the mount) until
no record names it; `.labdisk` is removed when empty, and always by a cut.

A cut (`cut`, `pull`): bump the generation (every open handle is stale from then on: EIO), then
labdisk/cut_io.py puts the durable content back into each changed file, keeps a torn write's
chosen pages and rebuilds the tree. The backing directory then holds exactly the durable
state, which the mount serves at once.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any, Final

from labdisk.cut_io import PARKING
from labdisk.fs_control_io import FsControl
from labdisk.fs_core_io import _fail
from labdisk.fs_tree_io import TreeOps

# mfusepy picks libfuse 2 when both are installed; labdisk is built and tested on libfuse 3.
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy

STAT_KEYS: Final = (
    "st_mode",
    "st_ino",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_blocks",
    "st_blksize",
    "st_rdev",
)
STATVFS_KEYS: Final = (
    "f_bsize",
    "f_frsize",
    "f_blocks",
    "f_bfree",
    "f_bavail",
    "f_files",
    "f_ffree",
    "f_favail",
    "f_flag",
    "f_namemax",
)
UTIME_NOW: Final = (1 << 30) - 1
UTIME_OMIT: Final = (1 << 30) - 2
MOUNT_OPTIONS: Final[dict[str, Any]] = {
    "foreground": True,
    "fsname": "labdisk",
    "subtype": "labdisk",
    "hard_remove": True,  # an unlinked open file is not renamed to .fuse_hidden*
    "use_ino": True,  # st_ino of the backing file: hard links and samefile() work
    "entry_timeout": 0,  # the kernel asks again for every lookup: after a cut, names change
    "attr_timeout": 0,
    "negative_timeout": 0,
    "default_permissions": True,  # the kernel checks modes against the caller
    "auto_unmount": True,  # a daemon that dies takes its mount with it
}


class LabDiskFs(TreeOps, FsControl):
    """The file system's operations (mfusepy calls them, paths start with "/") and its control
    (the control socket calls them): cut, pull, reinsert, errors, stalls, stats. The shared
    state and plumbing are FsCore's (labdisk/fs_core_io.py), the namespace operations
    TreeOps' (labdisk/fs_tree_io.py), the control FsControl's (labdisk/fs_control_io.py); the
    file and directory data operations are here."""

    use_ns = True  # mfusepy: times in nanoseconds

    # --- file system operations (mfusepy) -------------------------------------------------------

    def init(self, path: str) -> None:
        print(f"labdisk: serving {self.backing}", file=sys.stderr, flush=True)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        generation = self._begin("getattr", self._handle_path(path, fh))
        with self._locked(generation):
            st = os.fstat(self._handle(fh).fd) if fh is not None else os.lstat(self._real(path))
        attrs = {key: getattr(st, key) for key in STAT_KEYS}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def access(self, path: str, amode: int) -> int:
        generation = self._begin("access", path)
        with self._locked(generation):
            os.lstat(self._real(path))
        return 0

    def readlink(self, path: str) -> str:
        generation = self._begin("readlink", path)
        with self._locked(generation):
            return os.readlink(self._real(path))

    def statfs(self, path: str) -> dict[str, int]:
        generation = self._begin("statfs", path)
        with self._locked(generation):
            sv = os.statvfs(self.backing)
        return {key: getattr(sv, key) for key in STATVFS_KEYS}

    def opendir(self, path: str) -> int:
        generation = self._begin("open", path)
        with self._locked(generation):
            if not stat.S_ISDIR(os.lstat(self._real(path)).st_mode):
                raise _fail(errno.ENOTDIR)
        return 0

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """Names with their inode and type (readdir(3) skips an entry whose inode is 0)."""
        generation = self._begin("readdir", path)
        with self._locked(generation):
            real = self._real(path)
            here = os.lstat(real)
            listing = [(".", _dirent(here), 0), ("..", _dirent(here), 0)]
            with os.scandir(real) as entries:
                for entry in entries:
                    if real == self.backing and entry.name == PARKING:
                        continue
                    listing.append((entry.name, _dirent(entry.stat(follow_symlinks=False)), 0))
        return listing

    def releasedir(self, path: str, fh: int) -> int:
        return 0

    def open(self, path: str, flags: int) -> int:
        writes = (flags & os.O_ACCMODE) != os.O_RDONLY
        generation = self._begin("open", path, writes=writes)
        with self._locked(generation):
            return self._open_locked(path, flags, writes)

    def _open_locked(self, path: str, flags: int, writes: bool) -> int:
        real = self._real(path)
        base = os.O_RDWR if writes else os.O_RDONLY  # RDWR: a write must read pages to save
        fd = os.open(real, base | os.O_CLOEXEC | (flags & os.O_NOFOLLOW))
        try:
            if writes and flags & os.O_TRUNC:
                st = os.fstat(fd)
                if st.st_size:
                    self._save_pages(fd, st.st_ino, 0, st.st_size, st.st_size)
                    os.ftruncate(fd, 0)
                    self.model.truncated(st.st_ino, st.st_size, 0)
                    self.accounting.metadata(path.lstrip("/"))
            return self._new_handle(fd, path, flags)
        except BaseException:
            os.close(fd)
            raise

    def create(self, path: str, mode: int, flags: int) -> int:
        generation = self._begin("create", path)
        with self._locked(generation):
            real = self._real(path)
            if os.path.lexists(real):
                if flags & os.O_EXCL:
                    raise _fail(errno.EEXIST)
                return self._open_locked(path, flags, writes=True)
            parent_ino, name = self._parent(path)
            fd = os.open(real, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            try:
                self._give_to_caller(real)
                self.model.created_inode(os.fstat(fd).st_ino, regular=True)
                self.model.entry_changed(parent_ino, name, None)
                self.accounting.metadata(path.lstrip("/"))
                return self._new_handle(fd, path, flags)
            except BaseException:
                os.close(fd)
                raise

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        generation = self._begin("read", self._handle_path(path, fh))
        with self._locked(generation):
            return os.pread(self._handle(fh).fd, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        rel = self._handle_path(path, fh).lstrip("/")
        generation = self._begin("write", rel)
        with self._locked(generation):
            handle = self._handle(fh)
            size_before = os.fstat(handle.fd).st_size
            self._save_pages(handle.fd, handle.ino, offset, offset + len(data), size_before)
            written = os.pwrite(handle.fd, data, offset)
            self.model.wrote(handle.ino, offset, data[:written], size_before)
            self.accounting.wrote(rel, written)
            if handle.sync:
                self._fsynced_locked(handle.ino, rel)
        return written

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        rel = self._handle_path(path, fh).lstrip("/")
        generation = self._begin("truncate", rel)
        with self._locked(generation):
            if fh is not None:
                self._truncate_fd(self._handle(fh).fd, length, rel)
            else:
                fd = os.open(self._real(rel), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
                try:
                    self._truncate_fd(fd, length, rel)
                finally:
                    os.close(fd)
        return 0

    def _truncate_fd(self, fd: int, length: int, rel: str) -> None:
        st = os.fstat(fd)
        self._save_pages(fd, st.st_ino, length, st.st_size, st.st_size)
        os.ftruncate(fd, length)
        self.model.truncated(st.st_ino, st.st_size, length)
        self.accounting.metadata(rel)

    def flush(self, path: str | None, fh: int) -> int:
        """close(2): nothing to write back (writes go through at once). Fails only by a rule on
        "flush": a stale handle, or any handle of a pulled card, closes quietly, as close(2) on
        a dead disk does."""
        if self.plan.pulled is None:
            self._begin("flush", self._handle_path(path, fh))
        return 0

    def release(self, path: str | None, fh: int) -> int:
        with self._lock:
            handle = self._handles.pop(fh, None)
            if handle is not None and handle.fd >= 0:
                os.close(handle.fd)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        rel = self._handle_path(path, fh).lstrip("/")
        generation = self._begin("fsync", rel)
        with self._locked(generation):
            self._fsynced_locked(self._handle(fh).ino, rel)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        generation = self._begin("fsyncdir", path)
        with self._locked(generation):
            self.model.fsync_dir(os.lstat(self._real(path)).st_ino)
            self.accounting.dir_fsynced(path.lstrip("/"))
            self._collect_parked()
        return 0


def _dirent(st: os.stat_result) -> dict[str, int]:
    return {"st_mode": st.st_mode, "st_ino": st.st_ino}


class _Fuse(mfusepy.FUSE):  # type: ignore[misc]
    """mfusepy's FUSE with two gaps closed: rename's flags reach the operation (mfusepy drops
    them: RENAME_NOREPLACE would replace), and utimens understands UTIME_NOW and UTIME_OMIT."""

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        old_path = old.decode(self.encoding, self.errors)
        new_path = new.decode(self.encoding, self.errors)
        return int(self.operations.rename(old_path, new_path, flags))

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        if path is None:
            raise _fail(errno.ENOSYS)
        decoded = path.decode(self.encoding, self.errors)
        if not buf:
            return int(self.operations.utimens(decoded, None))
        now_ns = time.time_ns()
        current = None
        chosen: list[int] = []
        for timespec in (buf.contents.actime, buf.contents.modtime):
            if timespec.tv_nsec == UTIME_NOW:
                chosen.append(now_ns)
            elif timespec.tv_nsec == UTIME_OMIT:
                if current is None:
                    current = self.operations.getattr(decoded)
                chosen.append(int(current["st_atime" if not chosen else "st_mtime"]))
            else:
                chosen.append(timespec.tv_sec * 10**9 + timespec.tv_nsec)
        return int(self.operations.utimens(decoded, (chosen[0], chosen[1])))


def serve(fs: LabDiskFs, mountpoint: Path, *, allow_other: bool = False) -> None:
    """Mount `fs` at `mountpoint` and serve until unmounted (fusermount3 -u) or SIGTERM."""
    options = dict(MOUNT_OPTIONS)
    if allow_other:
        options["allow_other"] = True
    os.umask(0)  # modes from the caller reach the backing file as given
    _Fuse(fs, str(mountpoint), **options)


def libfuse_version() -> str:
    return f"{mfusepy.fuse_version_major}.{mfusepy.fuse_version_minor}"
