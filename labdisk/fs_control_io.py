"""labdisk's FUSE file system, its control (the control socket calls it): the cut and the
pull, reinsert, read-only, error and stall rules, the durability mode, a journal commit, the
accounting and the status.

A cut (`cut`, `pull`): bump the generation (every open handle is stale from then on: EIO), then
labdisk/cut_io.py puts the durable content back into each changed file, keeps a torn write's
chosen pages and rebuilds the tree.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from labdisk.cut_io import rebuild, restore_data, tear, walk
from labdisk.durability import check_mode
from labdisk.faults import PULLED_ERRNOS, Delay, errno_from_name
from labdisk.fs_core_io import FsCore


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


class FsControl(FsCore):
    """The control of LabDiskFs: what the control socket (labdisk/control_io.py) calls."""

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
