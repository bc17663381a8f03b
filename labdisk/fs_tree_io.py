"""labdisk's FUSE file system, its namespace operations: new names (mkdir, symlink, mknod,
link), names taken away (unlink, rmdir: parked while a record still names the inode), rename,
and the attributes (chmod, chown, utimens). A name change is recorded in the durability model
(what a cut must put back) before the backing directory changes; the attributes are not modelled.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from labdisk.cut_io import move
from labdisk.fs_core_io import FsCore, _fail


class TreeOps(FsCore):
    """The namespace operations of LabDiskFs (mfusepy calls them, paths start with "/")."""

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
