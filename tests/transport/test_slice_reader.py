"""SliceReader (transport/upload.py): a slice in the page cache is read on the loop, one that is
not (or not wholly) in a worker thread; either way the bytes are the file's. Real files on the
machine's disk; the page cache emptied with posix_fadvise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from transport.http import BodySlice
from transport.upload import SliceReader

SIZE_BYTES = 1024 * 1024


def evidence_file(directory: Path) -> tuple[Path, bytes]:
    data = os.urandom(SIZE_BYTES)
    path = directory / "sealed.bin"
    with path.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return path, data


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages (fsynced): dropped
    finally:
        os.close(fd)


async def test_a_cached_slice_is_read_on_the_loop(tmp_path: Path) -> None:
    path, data = evidence_file(tmp_path)
    path.read_bytes()  # in the page cache now
    reader = SliceReader(path)
    try:
        got = await reader.read(BodySlice(4096, 262144))
    finally:
        reader.close()
    assert bytes(got) == data[4096 : 4096 + 262144]
    assert reader.reads_on_loop == 1


async def test_a_slice_not_in_the_page_cache_is_read_in_a_thread(tmp_path: Path) -> None:
    path, data = evidence_file(tmp_path)
    drop_from_page_cache(path)
    reader = SliceReader(path)
    try:
        got = await reader.read(BodySlice(SIZE_BYTES - 262144, 262144))
    finally:
        reader.close()
    assert bytes(got) == data[-262144:]
    assert reader.reads_on_loop == 0


async def test_a_slice_past_the_end_is_an_error_either_way(tmp_path: Path) -> None:
    path, _ = evidence_file(tmp_path)
    path.read_bytes()
    reader = SliceReader(path)
    try:
        with pytest.raises(OSError, match="shorter than expected at offset 1044480"):
            await reader.read(BodySlice(SIZE_BYTES - 4096, 8192))
    finally:
        reader.close()
    assert reader.reads_on_loop == 0
