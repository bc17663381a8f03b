"""A real labdisk mount per test, unmounted even when the test fails.

Needs root, /dev/fuse and fusermount3 (Debian fuse3; `make test` installs it). Where they are
missing the tests FAIL: this suite runs as root, a missing tool is a broken machine.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labdisk import LabDisk, labdisk_mounts, unmount
from labdisk.durability import Mode

MakeDisk = Callable[..., LabDisk]


def fuse_ready() -> bool:
    return os.geteuid() == 0 and Path("/dev/fuse").exists() and bool(shutil.which("fusermount3"))


@pytest.fixture
def make_disk(tmp_path: Path) -> Iterator[MakeDisk]:
    """`make_disk(mode=..., **LabDisk options)` mounts `tmp_path/card` over `tmp_path/backing`."""
    if not fuse_ready():
        pytest.fail("labdisk needs root, /dev/fuse and fusermount3 (apt fuse3)")
    disks: list[LabDisk] = []

    def make(mode: Mode = "strict", **options: object) -> LabDisk:
        disk = LabDisk(tmp_path / "backing", tmp_path / "card", mode=mode, **options)  # type: ignore[arg-type]
        disks.append(disk)
        return disk.start()

    try:
        yield make
    finally:
        for disk in disks:
            disk.close()
        for mountpoint in labdisk_mounts():  # whatever a broken close left behind
            if mountpoint.is_relative_to(tmp_path):
                unmount(mountpoint)
