"""The sqlite files of the box's diskcaches on the card (catalog, upload ledger): small pages.

A commit in WAL mode appends every page it changed, whole, to the `-wal` file: one diskcache
`set` changes 3 to 5 pages (the row's table leaf, the key index, the expiry index, the
Settings row that counts entries). With sqlite's default 4096 B pages a catalog transition
writes about 8 KB and a new record 19 KB for some 600 B of JSON; with `PAGE_BYTES` = 1024 it is
3 KB and 8 KB (bench/wear.py, docs/benchmarks.md "Card wear"). A record still fits in one
page (sqlite keeps up to 989 B of a row in a 1024 B leaf before it overflows).

sqlite fixes a database's page size when the file is first written, and diskcache switches the
file to WAL before it could set one (its pragmas run in name order: `journal_mode` before
`page_size`). So `create_database` makes the empty file first, with the page size and WAL mode,
and diskcache opens it as it opens any existing cache. A database that already exists (a card
written before this) keeps its page size: changing it means rewriting the file (VACUUM outside
WAL mode), a risk the wear does not justify.

Durability: nothing changes for what diskcache commits (the caller's `sqlite_synchronous`
decides that). The new file's directory entry is made durable before this returns (sqlite
fsyncs the directory of a new WAL file, not of a new database file), so a power cut cannot
leave a WAL whose database is gone. A cut that loses the new file's first page (written, not
known to be fsynced) leaves an empty file, which sqlite reads as an empty database: diskcache
then makes it with sqlite's default pages, and nothing was in it yet.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Final

from common.durable import fsync_dir

PAGE_BYTES: Final = 1024
DATABASE_NAME: Final = "cache.db"  # diskcache.core.DBNAME: the file diskcache opens in its folder


def create_database(directory: Path, *, page_bytes: int = PAGE_BYTES) -> bool:
    """Create `directory/cache.db` empty, in WAL mode with `page_bytes` pages, unless the
    database or its WAL is there already (a WAL without its database is left for sqlite to
    judge, as before). True when it created the file. `directory` must exist."""
    path = directory / DATABASE_NAME
    if path.exists() or path.with_name(DATABASE_NAME + "-wal").exists():
        return False
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute(f"PRAGMA page_size = {int(page_bytes)}")
        # The first write of the file: it fixes the page size. Any later journal mode could not.
        connection.execute("PRAGMA journal_mode = wal")
    fsync_dir(directory)
    return True


def page_bytes_of(directory: Path) -> int:
    """The page size of `directory/cache.db`, from the file's header (bytes 16-17, big-endian;
    1 means 65536). Only for a database no connection of this process holds: closing any
    descriptor of a sqlite file drops the process's locks on it (storage/catalog.py)."""
    with (directory / DATABASE_NAME).open("rb") as handle:
        header = handle.read(18)
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size
