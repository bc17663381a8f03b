"""Durable file-system primitives: the litestream discipline (write tmp, fsync, rename, fsync dir).

Invariant: after `atomic_write_bytes` returns, a power cut leaves either the old file or the new one
at `path`, never a mix, and the rename itself is durable.
"""

from __future__ import annotations

import os
from pathlib import Path

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically and durably."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # a leftover tmp file keeps its old mode through O_CREAT
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


def durable_unlink(path: Path) -> None:
    """Delete `path` (missing is fine) and make the deletion durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def sweep_tmp_files(root: Path) -> list[Path]:
    """Delete leftover `*.tmp` files below `root` (interrupted atomic writes); return them."""
    swept = sorted(root.rglob("*" + TMP_SUFFIX)) if root.exists() else []
    for tmp in swept:
        durable_unlink(tmp)
    return swept
