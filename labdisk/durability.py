"""What survives a power cut: the pure model of labdisk (no I/O, no clock).

The FUSE shell (labdisk/fs_io.py) applies every operation to the backing directory at once, so
the backing directory always holds the *live* state, the one the mount serves. This model keeps
what is needed to turn that live state back into the *durable* state at a cut:

- **Data, per file (inode).** The first time a page (PAGE_BYTES) below the file's durable size is
  overwritten or truncated away after the file's last fsync, the shell hands the model that page's
  durable content (`pages_to_save`, `save_page`). The file's durable size is its size at that
  first change (0 for a file created since: `created_inode`). fsync/fdatasync of the file makes
  its live content durable and forgets the record. At a cut, writing the saved pages back and
  truncating to the durable size gives the durable content (`data_restores`).
- **Directory entries, per directory.** The first change of an entry (create, mkdir, symlink,
  link, rename from or to it, unlink, rmdir) after the directory's last sync records the entry's
  durable value: the inode it named, or None when it was absent (`entry_changed`). A later change
  of the same entry keeps the first record. A sync of the directory forgets its records:
  `strict` mode (POSIX) syncs a directory only by fsyncing it; `ext4` mode (journal) syncs every
  directory at any fsync, of a file or a directory, and at `commit` (the journal timer).
- **The torn write.** The last write not yet made durable (inode, offset, bytes), for a cut that
  keeps some of its pages (`torn_pages`).

`durable_tree` is the other half of a cut: from the live tree (walked by the shell) and the
records, the tree that is durable: a directory's durable entries are its live entries with the
records put back. An inode whose live names are all gone but that a record still names is
"parked" by the shell (kept under a hidden name) until no record names it (`referenced_inodes`).

What it does not model: inode attributes (mode, owner, times) are durable at once; an fsync that
fails (an injected fault) makes nothing durable, and a later fsync that succeeds makes it all
durable (Linux since 4.13 drops the pages a failed writeback held: a retried fsync succeeds and
the data is gone; see labdisk/__init__.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

PAGE_BYTES: Final = 4096
Mode = Literal["strict", "ext4"]
MODES: Final[tuple[Mode, ...]] = ("strict", "ext4")


@dataclass
class FileRecord:
    """A file changed since its last fsync: its durable size and the durable content of the
    pages changed since (each `min(PAGE_BYTES, durable_size - page * PAGE_BYTES)` long)."""

    durable_size: int
    saved: dict[int, bytes] = field(default_factory=dict)
    unsynced_bytes: int = 0  # bytes written or truncated away since the last fsync


@dataclass(frozen=True)
class LastWrite:
    ino: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class DataRestore:
    """Put a file's durable content back: write `pages` (index -> bytes), then truncate."""

    ino: int
    durable_size: int
    pages: Mapping[int, bytes]


@dataclass(frozen=True)
class DurableDir:
    """A directory of the durable tree: name -> DurableDir, or the inode of a non-directory."""

    ino: int
    entries: dict[str, DurableDir | int]

    def walk(self, prefix: str = "") -> Iterator[tuple[str, DurableDir | int]]:
        """Every entry below, depth first, as (relative path, node)."""
        for name, node in sorted(self.entries.items()):
            path = f"{prefix}{name}"
            yield path, node
            if isinstance(node, DurableDir):
                yield from node.walk(path + "/")


@dataclass
class LiveTree:
    """The live namespace as the shell walked it: directory inode -> {name: inode}, which inodes
    are directories, and the parked inodes (no live name; a directory among them is empty)."""

    root: int
    entries: dict[int, dict[str, int]]
    directories: set[int]
    parked: set[int] = field(default_factory=set)

    def inodes(self) -> set[int]:
        named = {ino for names in self.entries.values() for ino in names.values()}
        return named | self.parked | {self.root}


class DurabilityModel:
    """The records of what is not durable yet (see the module docstring). Not thread-safe: the
    shell serialises every operation and the cut under one lock."""

    def __init__(self, mode: Mode = "strict") -> None:
        self.mode: Mode = check_mode(mode)
        self.files: dict[int, FileRecord] = {}
        self.pending: dict[int, dict[str, int | None]] = {}
        self.last_write: LastWrite | None = None

    # --- data -------------------------------------------------------------------------------

    def pages_to_save(self, ino: int, start: int, end: int, size_now: int) -> list[int]:
        """Pages of [start, end) whose durable content must be saved before they change.
        `size_now` is the file's live size (its durable size if the file has no record)."""
        record = self.files.get(ino)
        durable_size = size_now if record is None else record.durable_size
        if end <= start or start >= durable_size:
            return []
        last = (min(end, durable_size) - 1) // PAGE_BYTES
        saved = {} if record is None else record.saved
        return [page for page in range(start // PAGE_BYTES, last + 1) if page not in saved]

    def durable_page_length(self, ino: int, page: int, size_now: int) -> int:
        """How many bytes of `page` are durable content (what the shell reads to save it)."""
        record = self.files.get(ino)
        durable_size = size_now if record is None else record.durable_size
        return max(0, min(PAGE_BYTES, durable_size - page * PAGE_BYTES))

    def save_page(self, ino: int, page: int, data: bytes, size_now: int) -> None:
        record = self._record(ino, size_now)
        if len(data) != max(0, min(PAGE_BYTES, record.durable_size - page * PAGE_BYTES)):
            raise ValueError(f"page {page} of inode {ino}: {len(data)} bytes is not its size")
        record.saved.setdefault(page, data)

    def wrote(self, ino: int, offset: int, data: bytes, size_before: int) -> None:
        """A write landed in the live file (after its pages were saved)."""
        record = self._record(ino, size_before)
        record.unsynced_bytes += len(data)
        self.last_write = LastWrite(ino, offset, bytes(data))

    def truncated(self, ino: int, size_before: int, new_size: int) -> None:
        record = self._record(ino, size_before)
        record.unsynced_bytes += abs(size_before - new_size)

    def created_inode(self, ino: int, *, regular: bool) -> None:
        """A new inode: a regular file's durable content is empty. Forgets what a freed inode
        of the same number left behind."""
        self.files.pop(ino, None)
        if regular:
            self.files[ino] = FileRecord(durable_size=0)
        self.pending.pop(ino, None)
        if self.last_write is not None and self.last_write.ino == ino:
            self.last_write = None

    def forget_inode(self, ino: int) -> None:
        """The inode is gone for good (no live name, no record names it)."""
        self.files.pop(ino, None)
        self.pending.pop(ino, None)
        if self.last_write is not None and self.last_write.ino == ino:
            self.last_write = None

    def _record(self, ino: int, size_now: int) -> FileRecord:
        record = self.files.get(ino)
        if record is None:
            record = self.files[ino] = FileRecord(durable_size=size_now)
        return record

    # --- directory entries -------------------------------------------------------------------

    def entry_changed(self, dir_ino: int, name: str, before: int | None) -> None:
        """The entry `name` of directory `dir_ino` is about to change; it named `before`."""
        self.pending.setdefault(dir_ino, {}).setdefault(name, before)

    def durable_entry(self, dir_ino: int, name: str, live: int | None) -> int | None:
        return self.pending.get(dir_ino, {}).get(name, live)

    # --- syncs --------------------------------------------------------------------------------

    def fsync_file(self, ino: int) -> None:
        """fsync/fdatasync of a file succeeded: its data is durable (ext4: the journal too)."""
        self.files.pop(ino, None)
        if self.last_write is not None and self.last_write.ino == ino:
            self.last_write = None
        if self.mode == "ext4":
            self.commit()

    def fsync_dir(self, dir_ino: int) -> None:
        """fsync of a directory succeeded: its entries are durable (ext4: every directory's)."""
        if self.mode == "ext4":
            self.commit()
        else:
            self.pending.pop(dir_ino, None)

    def commit(self) -> None:
        """A journal commit: every directory entry is durable (file data is not)."""
        self.pending.clear()

    def set_mode(self, mode: Mode) -> None:
        self.mode = check_mode(mode)

    def reset(self) -> None:
        """After a cut: the live state is the durable state."""
        self.files.clear()
        self.pending.clear()
        self.last_write = None

    # --- what a cut needs ---------------------------------------------------------------------

    def referenced_inodes(self) -> set[int]:
        """Inodes a record names: a parked inode must stay while it is in here."""
        return {ino for records in self.pending.values() for ino in records.values() if ino}

    def data_restores(self) -> list[DataRestore]:
        return [
            DataRestore(ino, record.durable_size, dict(record.saved))
            for ino, record in sorted(self.files.items())
        ]

    def unsynced_bytes(self) -> int:
        return sum(record.unsynced_bytes for record in self.files.values())

    def pending_entries(self) -> int:
        return sum(len(records) for records in self.pending.values())

    def durable_tree(self, live: LiveTree) -> tuple[DurableDir, list[str]]:
        """The durable namespace: live entries with the records put back. Also returns the
        paths of durable entries whose inode the live tree lacks, or that would close a cycle
        (neither should happen; they are left out and reported)."""
        missing: list[str] = []
        known = live.inodes()

        def build(ino: int, prefix: str, on_path: frozenset[int]) -> DurableDir:
            entries: dict[str, DurableDir | int] = {}
            names = dict(live.entries.get(ino, {}))
            for name, before in self.pending.get(ino, {}).items():
                if before is None:
                    names.pop(name, None)
                else:
                    names[name] = before
            for name, child in sorted(names.items()):
                path = f"{prefix}{name}"
                if child not in known or child in on_path:
                    missing.append(path)
                elif child in live.directories:
                    entries[name] = build(child, path + "/", on_path | {child})
                else:
                    entries[name] = child
            return DurableDir(ino, entries)

        return build(live.root, "", frozenset({live.root})), missing


def torn_pages(write: LastWrite, keep: Mapping[int, bool]) -> list[tuple[int, bytes]]:
    """The parts of `write` a torn cut keeps: (file offset, bytes) for each page of the write
    whose index `keep` maps to True. Pages are the file's PAGE_BYTES pages the write touches."""
    kept: list[tuple[int, bytes]] = []
    for page in write_pages(write):
        if keep.get(page):
            start = max(write.offset, page * PAGE_BYTES)
            end = min(write.offset + len(write.data), (page + 1) * PAGE_BYTES)
            kept.append((start, write.data[start - write.offset : end - write.offset]))
    return kept


def write_pages(write: LastWrite) -> range:
    if not write.data:
        return range(0)
    return range(write.offset // PAGE_BYTES, (write.offset + len(write.data) - 1) // PAGE_BYTES + 1)


def check_mode(mode: str) -> Mode:
    for known in MODES:
        if mode == known:
            return known
    raise ValueError(f"unknown labdisk mode {mode!r}: one of {', '.join(MODES)}")
