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

import contextlib
import errno
import os
import random
import shutil
import stat
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from labdisk.cut_io import PARKING, move, rebuild, restore_data, tear, walk
from labdisk.durability import PAGE_BYTES, DurabilityModel, Mode, check_mode
from labdisk.faults import PULLED_ERRNOS, WRITE_OPS, Accounting, Delay, FaultPlan, errno_from_name

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


def _fail(code: int, why: str = "") -> OSError:
    return OSError(code, f"{os.strerror(code)}{f' (labdisk: {why})' if why else ''}")


@dataclass
class Handle:
    fd: int
    ino: int
    path: str
    generation: int
    sync: bool  # O_SYNC / O_DSYNC: every write is durable when it returns


@dataclass(frozen=True)
class CutReport:
    """What a cut threw away."""

    generation: int
    files_restored: int
    bytes_lost: int
    entries_reverted: int
    torn_pages_kept: int
    torn_pages: int
    missing: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "files_restored": self.files_restored,
            "bytes_lost": self.bytes_lost,
            "entries_reverted": self.entries_reverted,
            "torn_pages_kept": self.torn_pages_kept,
            "torn_pages": self.torn_pages,
            "missing": list(self.missing),
        }


class LabDiskFs:
    """The file system's operations (mfusepy calls them, paths start with "/") and its control
    (the control socket calls them): cut, pull, reinsert, errors, stalls, stats."""

    use_ns = True  # mfusepy: times in nanoseconds

    def __init__(
        self,
        backing: Path,
        *,
        mode: Mode = "strict",
        seed: int = 0,
        classes: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.backing = str(backing.resolve())
        self.root_ino = os.lstat(self.backing).st_ino
        self.model = DurabilityModel(mode)
        self.plan = FaultPlan(seed)
        self.accounting = Accounting()
        self.accounting.set_classes(classes)
        self.torn_rng = random.Random(f"labdisk-torn-{seed}")
        self.generation = 0
        self.cuts = 0
        self.stalled = 0  # operations waiting in a stall now
        self._lock = threading.RLock()
        self._plan_lock = threading.Lock()
        self._wake = threading.Condition()
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._parked: dict[int, str] = {}
        self._parking = os.path.join(self.backing, PARKING)
        if os.path.lexists(self._parking):
            shutil.rmtree(self._parking)  # a previous daemon's: its records died with it

    # --- plumbing -----------------------------------------------------------------------------

    def _real(self, path: str) -> str:
        rel = path.lstrip("/")
        if rel == PARKING or rel.startswith(PARKING + "/"):
            raise _fail(errno.ENOENT)
        return os.path.join(self.backing, rel) if rel else self.backing

    def _parent(self, path: str) -> tuple[int, str]:
        real = self._real(path)
        return os.lstat(os.path.dirname(real)).st_ino, os.path.basename(real)

    def _begin(self, op: str, *paths: str | None, writes: bool = False) -> int:
        """Faults before an operation: raise its errno, or wait its stall. Returns the
        generation the operation belongs to."""
        generation = self.generation
        rels = tuple(path.lstrip("/") for path in paths if path is not None)
        with self._plan_lock:
            code = self.plan.check(op, rels, writes=writes or op in WRITE_OPS)
            delay_s = 0.0 if code is not None else self.plan.stall_s(op, rels)
        if code is not None:
            raise _fail(code, f"injected on {op}")
        if delay_s > 0:
            with self._plan_lock:
                self.stalled += 1
            try:
                with self._wake:  # a cut ends the wait: the operation then fails EIO
                    self._wake.wait_for(lambda: self.generation != generation, timeout=delay_s)
            finally:
                with self._plan_lock:
                    self.stalled -= 1
        return generation

    @contextlib.contextmanager
    def _locked(self, generation: int) -> Iterator[None]:
        with self._lock:
            if self.plan.pulled is not None:
                raise _fail(self.plan.pulled, "card pulled")
            if generation != self.generation:
                raise _fail(errno.EIO, "the card lost power during this operation")
            yield

    def _handle(self, fh: int) -> Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise _fail(errno.EBADF)
        if handle.generation != self.generation:
            raise _fail(errno.EIO, "handle opened before a power cut")
        return handle

    def _handle_path(self, path: str | None, fh: int | None) -> str:
        handle = None if fh is None else self._handles.get(fh)
        return path or (handle.path if handle else "")

    def _new_handle(self, fd: int, path: str, flags: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        sync = bool(flags & os.O_DSYNC)
        self._handles[fh] = Handle(fd, os.fstat(fd).st_ino, path.lstrip("/"), self.generation, sync)
        return fh

    def _give_to_caller(self, real: str) -> None:
        """A new file belongs to the caller, as on a real card (the daemon runs as root)."""
        uid, gid, _pid = mfusepy.fuse_get_context()
        if os.geteuid() == 0 and (uid, gid) != (0, 0):
            os.lchown(real, uid, gid)

    def _save_pages(self, fd: int, ino: int, start: int, end: int, size_now: int) -> None:
        for page in self.model.pages_to_save(ino, start, end, size_now):
            length = self.model.durable_page_length(ino, page, size_now)
            data = os.pread(fd, length, page * PAGE_BYTES)
            self.model.save_page(ino, page, data.ljust(length, b"\0"), size_now)

    def _remove(self, real: str, st: os.stat_result) -> None:
        """Take a name away: park its inode if a record still names it, else delete it."""
        ino = st.st_ino
        is_dir = stat.S_ISDIR(st.st_mode)
        if ino in self.model.referenced_inodes():
            if ino in self._parked:
                os.unlink(real)  # another name of a parked file: one parked link is enough
                return
            os.makedirs(self._parking, exist_ok=True)
            move(real, os.path.join(self._parking, str(ino)))
            self._parked[ino] = str(ino)
            return
        if is_dir:
            os.rmdir(real)
        else:
            os.unlink(real)
        if is_dir or st.st_nlink <= 1:
            self.model.forget_inode(ino)

    def _collect_parked(self) -> None:
        """Delete the parked inodes no record names any more (after a sync)."""
        changed = bool(self._parked)
        while changed:
            changed = False
            referenced = self.model.referenced_inodes()
            for ino, name in list(self._parked.items()):
                if ino in referenced:
                    continue
                parked = os.path.join(self._parking, name)
                st = os.lstat(parked)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(parked)
                else:
                    os.unlink(parked)
                del self._parked[ino]
                if stat.S_ISDIR(st.st_mode) or st.st_nlink <= 1:
                    self.model.forget_inode(ino)
                changed = True
        if not self._parked and os.path.isdir(self._parking):
            with contextlib.suppress(OSError):
                os.rmdir(self._parking)

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

    def _fsynced_locked(self, ino: int, rel: str) -> None:
        self.model.fsync_file(ino)
        self.accounting.fsynced(rel)
        self._collect_parked()

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        generation = self._begin("fsyncdir", path)
        with self._locked(generation):
            self.model.fsync_dir(os.lstat(self._real(path)).st_ino)
            self.accounting.dir_fsynced(path.lstrip("/"))
            self._collect_parked()
        return 0

    def _created(self, path: str, make: Any) -> int:
        """mkdir, symlink, mknod: a new inode under a new name."""
        real = self._real(path)
        parent_ino, name = self._parent(path)
        make(real)
        self._give_to_caller(real)
        st = os.lstat(real)
        self.model.created_inode(st.st_ino, regular=stat.S_ISREG(st.st_mode))
        self.model.entry_changed(parent_ino, name, None)
        self.accounting.metadata(path.lstrip("/"))
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        generation = self._begin("mkdir", path)
        with self._locked(generation):
            return self._created(path, lambda real: os.mkdir(real, mode))

    def symlink(self, target: str, source: str) -> int:
        """mfusepy: `target` is the new link's path, `source` what it points to."""
        generation = self._begin("symlink", target)
        with self._locked(generation):
            return self._created(target, lambda real: os.symlink(source, real))

    def mknod(self, path: str, mode: int, dev: int) -> int:
        generation = self._begin("mknod", path)
        with self._locked(generation):
            return self._created(path, lambda real: os.mknod(real, mode, dev))

    def link(self, target: str, source: str) -> int:
        """mfusepy: `target` is the new name, `source` the existing file."""
        generation = self._begin("link", target, source)
        with self._locked(generation):
            real = self._real(target)
            parent_ino, name = self._parent(target)
            if os.path.lexists(real):
                raise _fail(errno.EEXIST)
            self.model.entry_changed(parent_ino, name, None)
            os.link(self._real(source), real, follow_symlinks=False)
            self.accounting.metadata(target.lstrip("/"))
        return 0

    def unlink(self, path: str) -> int:
        generation = self._begin("unlink", path)
        with self._locked(generation):
            real = self._real(path)
            st = os.lstat(real)
            if stat.S_ISDIR(st.st_mode):
                raise _fail(errno.EISDIR)
            parent_ino, name = self._parent(path)
            self.model.entry_changed(parent_ino, name, st.st_ino)
            self._remove(real, st)
            self.accounting.metadata(path.lstrip("/"))
        return 0

    def rmdir(self, path: str) -> int:
        generation = self._begin("rmdir", path)
        with self._locked(generation):
            real = self._real(path)
            st = os.lstat(real)
            if not stat.S_ISDIR(st.st_mode):
                raise _fail(errno.ENOTDIR)
            if real == self.backing:
                raise _fail(errno.EBUSY)
            if os.listdir(real):
                raise _fail(errno.ENOTEMPTY)
            parent_ino, name = self._parent(path)
            self.model.entry_changed(parent_ino, name, st.st_ino)
            self._remove(real, st)
            self.accounting.metadata(path.lstrip("/"))
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags:
            raise _fail(errno.EINVAL, "rename flags (RENAME_NOREPLACE, EXCHANGE) not supported")
        generation = self._begin("rename", old, new)
        with self._locked(generation):
            self._rename_locked(old, new)
            self.accounting.metadata(new.lstrip("/"))
        return 0

    def _rename_locked(self, old: str, new: str) -> None:
        real_old, real_new = self._real(old), self._real(new)
        st_old = os.lstat(real_old)
        try:
            st_new: os.stat_result | None = os.lstat(real_new)
        except FileNotFoundError:
            st_new = None
        old_is_dir = stat.S_ISDIR(st_old.st_mode)
        if st_new is not None:
            if st_new.st_ino == st_old.st_ino:
                return  # two names of one file: rename(2) does nothing
            if stat.S_ISDIR(st_new.st_mode) != old_is_dir:
                raise _fail(errno.EISDIR if not old_is_dir else errno.ENOTDIR)
            if old_is_dir and os.listdir(real_new):
                raise _fail(errno.ENOTEMPTY)
        if old_is_dir and (real_new + "/").startswith(real_old + "/"):
            raise _fail(errno.EINVAL)
        old_parent, old_name = self._parent(old)
        new_parent, new_name = self._parent(new)
        self.model.entry_changed(old_parent, old_name, st_old.st_ino)
        self.model.entry_changed(new_parent, new_name, None if st_new is None else st_new.st_ino)
        parked = st_new is not None and st_new.st_ino in self.model.referenced_inodes()
        if parked and st_new is not None:
            self._remove(real_new, st_new)  # park the replaced inode, then take its name
        try:
            move(real_old, real_new)
        except OSError:
            if parked and st_new is not None and st_new.st_ino in self._parked:
                move(os.path.join(self._parking, self._parked.pop(st_new.st_ino)), real_new)
            raise
        gone = st_new is not None and st_new.st_ino not in self.model.referenced_inodes()
        if gone and st_new is not None and (stat.S_ISDIR(st_new.st_mode) or st_new.st_nlink <= 1):
            self.model.forget_inode(st_new.st_ino)

    def chmod(self, path: str, mode: int) -> int:
        generation = self._begin("chmod", path)
        with self._locked(generation):
            os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        generation = self._begin("chown", path)
        with self._locked(generation):
            os.lchown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        generation = self._begin("utimens", path)
        with self._locked(generation):
            real = self._real(path)
            if times is None:
                os.utime(real, follow_symlinks=False)
            else:
                os.utime(real, ns=times, follow_symlinks=False)
        return 0

    # --- control ------------------------------------------------------------------------------

    def cut(self, *, torn: bool = False) -> CutReport:
        """Power cut: only the durable state remains, in the backing directory and the mount."""
        with self._lock:
            return self._cut_locked(torn)

    def pull(self, error: int | str = errno.ENODEV, *, torn: bool = False) -> CutReport:
        """The card is pulled: a cut, then every operation fails with `error` until `reinsert`;
        handles open before stay stale after it."""
        code = errno_from_name(error)
        if code not in PULLED_ERRNOS:
            raise ValueError(f"a pulled card fails with ENODEV, ENOTCONN or EIO, not {error}")
        with self._lock:
            report = self._cut_locked(torn)
            with self._plan_lock:
                self.plan.pulled = code
        return report

    def reinsert(self) -> None:
        with self._lock, self._plan_lock:
            self.plan.pulled = None

    def set_read_only(self, read_only: bool = True) -> None:
        with self._plan_lock:
            self.plan.read_only = read_only

    def add_error(
        self,
        error: int | str,
        *,
        ops: Iterable[str],
        path: str = "*",
        after: int = 0,
        times: int | None = None,
    ) -> int:
        with self._plan_lock:
            return self.plan.add_error(error, ops=ops, path=path, after=after, times=times)

    def add_stall(
        self,
        delay: Delay,
        *,
        ops: Iterable[str],
        path: str = "*",
        after: int = 0,
        times: int | None = None,
    ) -> int:
        with self._plan_lock:
            return self.plan.add_stall(delay, ops=ops, path=path, after=after, times=times)

    def clear_faults(self, rule_id: int | None = None) -> None:
        with self._plan_lock:
            self.plan.clear(rule_id)

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self.model.set_mode(check_mode(mode))

    def commit(self) -> None:
        """A journal commit (ext4's 5 s timer): every directory entry is durable."""
        with self._lock:
            self.model.commit()
            self._collect_parked()

    def set_classes(self, classes: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            self.accounting.set_classes(classes)

    def stats(self, *, reset: bool = False) -> dict[str, Any]:
        with self._lock:
            shown = {
                "classes": self.accounting.snapshot(),
                "unsynced_bytes": self.model.unsynced_bytes(),
                "dirty_files": len(self.model.files),
                "pending_entries": self.model.pending_entries(),
                "cuts": self.cuts,
            }
            if reset:
                self.accounting.reset()
        return shown

    def status(self) -> dict[str, Any]:
        with self._lock, self._plan_lock:
            return {
                "backing": self.backing,
                "mode": self.model.mode,
                "generation": self.generation,
                "cuts": self.cuts,
                "open_handles": len(self._handles),
                "stalled": self.stalled,
                "parked": len(self._parked),
                **self.plan.to_json(),
            }

    # --- the cut ------------------------------------------------------------------------------

    def _cut_locked(self, torn: bool) -> CutReport:
        with self._wake:
            self.generation += 1
            self._wake.notify_all()
        self.cuts += 1
        for handle in self._handles.values():
            if handle.fd >= 0:
                os.close(handle.fd)
                handle.fd = -1
        parked = {ino: os.path.join(self._parking, name) for ino, name in self._parked.items()}
        live, paths, stats = walk(self.backing, self.root_ino, parked)
        restored = restore_data(self.model.data_restores(), paths, stats)
        write = self.model.last_write
        kept, pages = tear(write, self.torn_rng, paths, stats) if torn and write else (0, 0)
        tree, missing = self.model.durable_tree(live)
        report = CutReport(
            generation=self.generation,
            files_restored=restored,
            bytes_lost=self.model.unsynced_bytes(),
            entries_reverted=self.model.pending_entries(),
            torn_pages_kept=kept,
            torn_pages=pages,
            missing=missing,
        )
        rebuild(self.backing, self._parking, tree, paths, stats)
        self.model.reset()
        self._parked.clear()
        return report


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
