"""labdisk's FUSE file system, its core: the state every operation shares (the durability
model, the fault plan, the open handles, the parked inodes) and the plumbing the operations run
through (labdisk/fs_io.py's module docstring states the design).

Every operation starts with `_begin` (its injected fault or stall, outside the lock) and runs
under `_locked` (one lock; a pulled card or a cut since `_begin` fails it). A name taken away
while a record still names its inode is parked by `_remove` until `_collect_parked` finds no
record naming it (after a sync or a commit).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from labdisk.cut_io import PARKING, move
from labdisk.durability import PAGE_BYTES, DurabilityModel, Mode
from labdisk.faults import WRITE_OPS, Accounting, FaultPlan

# mfusepy picks libfuse 2 when both are installed; labdisk is built and tested on libfuse 3.
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy


def _fail(code: int, why: str = "") -> OSError:
    return OSError(code, f"{os.strerror(code)}{f' (labdisk: {why})' if why else ''}")


@dataclass
class Handle:
    fd: int
    ino: int
    path: str
    generation: int
    sync: bool  # O_SYNC / O_DSYNC: every write is durable when it returns


class FsCore:
    """The shared state and plumbing of LabDiskFs (labdisk/fs_io.py), which mfusepy and the
    control socket call."""

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

    def _fsynced_locked(self, ino: int, rel: str) -> None:
        self.model.fsync_file(ino)
        self.accounting.fsynced(rel)
        self._collect_parked()
