"""The I/O of a power cut, in the backing directory (labdisk/fs_io.py calls it under its lock).

1. `walk`: the live tree (inodes, names, stats), parked inodes included.
2. `restore_data`: each changed file gets its durable content back (saved pages, then size).
3. `tear`: a torn cut keeps the chosen pages of the last write not yet durable.
4. `rebuild`: every entry of the durable tree is moved (a second name: hard-linked) into
   `<backing>/.labdisk/cut`; what is left of the old tree is deleted; the staging tree becomes the
   backing root's content, and `.labdisk` goes. The root directory itself stays (it is the
   mount's), directories are made anew with their mode, owner and times.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import stat
from collections.abc import Iterable, Iterator
from typing import Final

from labdisk.durability import (
    PAGE_BYTES,
    DataRestore,
    DurableDir,
    LastWrite,
    LiveTree,
    torn_pages,
    write_pages,
)

PARKING: Final = ".labdisk"
"""The hidden directory below the backing root: parked inodes, and a cut's staging tree."""

Stats = dict[int, os.stat_result]


def move(source: str, target: str) -> None:
    """Every rename labdisk makes in the backing directory: the file system's own renames, which
    the durability model (not an fsync) makes durable or not."""
    os.rename(source, target)


@contextlib.contextmanager
def opened(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        yield fd
    finally:
        os.close(fd)


def walk(
    backing: str, root_ino: int, parked: dict[int, str]
) -> tuple[LiveTree, dict[int, str], Stats]:
    """The live tree below `backing` (without PARKING), and the parked inodes (inode -> path):
    the tree, one path per inode, one stat per inode."""
    live = LiveTree(root_ino, {}, {root_ino})
    paths = {root_ino: backing}
    stats = {root_ino: os.lstat(backing)}
    stack = [(backing, root_ino)]
    while stack:
        directory, dir_ino = stack.pop()
        names: dict[str, int] = {}
        with os.scandir(directory) as entries:
            for entry in entries:
                if directory == backing and entry.name == PARKING:
                    continue
                st = entry.stat(follow_symlinks=False)
                names[entry.name] = st.st_ino
                paths.setdefault(st.st_ino, entry.path)
                stats.setdefault(st.st_ino, st)
                if stat.S_ISDIR(st.st_mode):
                    live.directories.add(st.st_ino)
                    stack.append((entry.path, st.st_ino))
        live.entries[dir_ino] = names
    for ino, path in parked.items():
        st = os.lstat(path)
        live.parked.add(ino)
        paths.setdefault(ino, path)
        stats.setdefault(ino, st)
        if stat.S_ISDIR(st.st_mode):
            live.directories.add(ino)
            live.entries[ino] = {}  # a parked directory is empty (rmdir, or replaced when empty)
    return live, paths, stats


def restore_data(restores: Iterable[DataRestore], paths: dict[int, str], stats: Stats) -> int:
    """Put the durable content back into each file that still has a name; how many did."""
    restored = 0
    for restore in restores:
        path = paths.get(restore.ino)
        if path is None or not stat.S_ISREG(stats[restore.ino].st_mode):
            continue  # no name left anywhere: nothing to put back
        with opened(path) as fd:
            for page, data in restore.pages.items():
                os.pwrite(fd, data, page * PAGE_BYTES)
            os.ftruncate(fd, restore.durable_size)
        restored += 1
    return restored


def tear(
    write: LastWrite, rng: random.Random, paths: dict[int, str], stats: Stats
) -> tuple[int, int]:
    """Keep each page of `write` with even odds: (pages kept, pages of the write)."""
    pages = write_pages(write)
    parts = torn_pages(write, {page: rng.random() < 0.5 for page in pages})
    path = paths.get(write.ino)
    if path is not None and stat.S_ISREG(stats[write.ino].st_mode) and parts:
        with opened(path) as fd:
            for offset, data in parts:
                os.pwrite(fd, data, offset)
    return len(parts), len(pages)


def rebuild(
    backing: str, parking: str, tree: DurableDir, paths: dict[int, str], stats: Stats
) -> None:
    """Make the backing directory hold exactly `tree` (see the module docstring)."""
    staging = os.path.join(parking, "cut")
    os.makedirs(staging)
    placed: dict[int, str] = {}

    def build(node: DurableDir, into: str) -> None:
        for name, child in node.entries.items():
            target = os.path.join(into, name)
            if isinstance(child, DurableDir):
                st = stats[child.ino]
                os.mkdir(target, stat.S_IMODE(st.st_mode))
                os.lchown(target, st.st_uid, st.st_gid)
                build(child, target)
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
            elif child in placed:
                os.link(placed[child], target, follow_symlinks=False)
            else:
                move(paths[child], target)
                placed[child] = target

    build(tree, staging)
    with os.scandir(backing) as entries:
        for entry in entries:
            if entry.name == PARKING:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    for name in os.listdir(staging):
        move(os.path.join(staging, name), os.path.join(backing, name))
    shutil.rmtree(parking)
