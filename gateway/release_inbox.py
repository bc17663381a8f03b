"""The release inbox between the box's service (user `mvb`) and root's installer
(docs/releases.md 7.6): the item's format, its writer (the box) and its bounded reader (root).

An item is a directory `<inbox>/<version>/` holding `item.json`, `release.key`,
`release.sealed` (an install) and `metadata/<name>` (every TUF metadata file the box's ngclient
fetched, plus the root chain). The box builds it in its work directory and moves it in with one
rename, so root never sees half an item.

Invariants (the reader: the inbox is the `mvb` user's, so everything in it is hostile input):
- nothing is followed: the item directory and every file are opened with O_NOFOLLOW relative to
  the directory already opened (no `..`, no symlink swapped in between), and must be a
  directory and regular files;
- every file is read whole into memory up to its bound before anything is judged: what the
  `mvb` user changes afterwards changes nothing root acts on;
- names are closed: the item's name is a release version, the metadata's names ngclient's
  (`[N.]role.json` of the fleet's five roles), at most MAX_METADATA_FILES of them; anything
  else refuses the item (InboxItemRefused, code `inbox_item_invalid`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from common.durable import atomic_write_bytes, durable_rename, fsync_dir, make_dirs
from common.faults import RemoteFault
from config.release_targets import MAX_RELEASE_BYTES
from protocol.release_manifest import is_version
from protocol.strict_json import Fields, dump_json, load_object

ITEM_FILE: Final = "item.json"
SEALED_FILE: Final = "release.sealed"
KEY_FILE: Final = "release.key"
METADATA_DIR: Final = "metadata"
ITEM_FORMAT: Final = 1
MAX_ITEM_JSON_BYTES: Final = 4096
MAX_KEY_BYTES: Final = 16 * 1024
MAX_METADATA_BYTES: Final = 4 * 1024 * 1024
"""Each metadata file (ngclient's largest bound: targets)."""
MAX_METADATA_FILES: Final = 256
METADATA_NAME: Final = re.compile(
    r"(?:[1-9][0-9]{0,8}\.)?(?:root|timestamp|snapshot|targets|releases)\.json"
)
Kind = Literal["install", "switch_back"]
KINDS: Final[tuple[Kind, ...]] = ("install", "switch_back")
_MEMBERS: Final = frozenset({"format", "kind", "version"})


class InboxItemRefused(ValueError, RemoteFault):
    """An inbox item that is not one: refused and removed, nothing installed. `code` is the
    code the installer logs."""

    code = "inbox_item_invalid"


@dataclass(frozen=True, slots=True)
class InboxItem:
    """An item as root read it (bounded, in memory) or as the box hands it over."""

    kind: Kind
    version: str
    key_pem: bytes = b""
    sealed: bytes = b""
    metadata: Mapping[str, bytes] | None = None


# -- the box's side ---------------------------------------------------------------------------


def put_item(
    inbox: Path,
    staging: Path,
    item: InboxItem,
    sealed_file: Path | None = None,
) -> Path:
    """Build `item` in `staging/<version>` (the sealed release moved in from `sealed_file`, not
    copied) and move it into the inbox with one rename, replacing an earlier item of that
    version (durable on return). Its path in the inbox."""
    if not is_version(item.version) or item.kind not in KINDS:
        raise ValueError(f"no inbox item for {item.kind} {item.version!r}")
    built = staging / item.version
    shutil.rmtree(built, ignore_errors=True)
    make_dirs(built / METADATA_DIR)
    body: dict[str, object] = {"format": ITEM_FORMAT, "kind": item.kind, "version": item.version}
    atomic_write_bytes(built / ITEM_FILE, dump_json(body), mode=0o600)
    if item.key_pem:
        atomic_write_bytes(built / KEY_FILE, item.key_pem, mode=0o600)
    for name, data in (item.metadata or {}).items():
        atomic_write_bytes(built / METADATA_DIR / name, data, mode=0o600)
    if sealed_file is not None:
        durable_rename(sealed_file, built / SEALED_FILE)
    make_dirs(inbox, mode=0o700)
    placed = inbox / item.version
    if placed.exists() or placed.is_symlink():
        _remove(placed)
        fsync_dir(inbox)
    durable_rename(built, placed)
    return placed


# -- root's side ------------------------------------------------------------------------------


def item_names(inbox: Path) -> list[str]:
    """The entries of the inbox, oldest name first (none when it does not exist)."""
    try:
        return sorted(entry.name for entry in inbox.iterdir())
    except FileNotFoundError:
        return []


def read_item(inbox: Path, name: str) -> InboxItem:
    """The item `inbox/name`, read whole within its bounds (module invariants);
    InboxItemRefused when it is not one."""
    if not is_version(name):
        raise InboxItemRefused(f"{name!r}: an inbox entry's name is a release version")
    inbox_fd = _open_dir(str(inbox), None)
    try:
        directory = _open_dir(name, inbox_fd)
    finally:
        os.close(inbox_fd)
    try:
        data = _read(ITEM_FILE, directory, MAX_ITEM_JSON_BYTES)
        head = load_object(data, MAX_ITEM_JSON_BYTES, ITEM_FILE, InboxItemRefused)
        kind, version = _head(Fields(head, _MEMBERS, ITEM_FILE, InboxItemRefused), name)
        if kind == "switch_back":
            return InboxItem(kind, version)
        key_pem = _read(KEY_FILE, directory, MAX_KEY_BYTES)
        sealed = _read(SEALED_FILE, directory, MAX_RELEASE_BYTES)
        metadata = _read_metadata(directory)
        return InboxItem(kind, version, key_pem, sealed, metadata)
    finally:
        os.close(directory)


def remove_item(inbox: Path, name: str) -> None:
    """Remove the entry `inbox/name` whatever it is (a symlink itself, never its target)."""
    _remove(inbox / name)
    with contextlib.suppress(OSError):
        fsync_dir(inbox)


def _head(head: Fields, name: str) -> tuple[Kind, str]:
    if head.integer("format", 0, 1 << 30) != ITEM_FORMAT:
        raise InboxItemRefused(f"{name}: item.json is not format {ITEM_FORMAT}")
    kind, version = head.text("kind", 20), head.text("version", 64)
    if version != name:
        raise InboxItemRefused(f"{name}: item.json names {version!r}")
    if kind == "install":
        return "install", name
    if kind == "switch_back":
        return "switch_back", name
    raise InboxItemRefused(f"{name}: unknown kind {kind!r}")


def _read_metadata(directory: int) -> dict[str, bytes]:
    folder = _open_dir(METADATA_DIR, directory)
    try:
        names = os.listdir(folder)  # noqa: PTH208 (a directory descriptor: no path to follow)
        if len(names) > MAX_METADATA_FILES:
            raise InboxItemRefused(f"{len(names)} metadata files; at most {MAX_METADATA_FILES}")
        files: dict[str, bytes] = {}
        for name in names:
            if not METADATA_NAME.fullmatch(name):
                raise InboxItemRefused(f"{name!r} is not a metadata file's name")
            files[name] = _read(name, folder, MAX_METADATA_BYTES)
        return files
    finally:
        os.close(folder)


def _open_dir(name: str, parent: int | None) -> int:
    # O_NOFOLLOW: a symlink fails here (ELOOP); fstat then says it is a directory (opened for
    # reading only: nothing here writes, so no O_DIRECTORY fsync dance of common/durable.py).
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, dir_fd=parent)
    except OSError as error:
        raise InboxItemRefused(f"{name!r}: not a directory of its own ({error.strerror})") from None
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise InboxItemRefused(f"{name!r}: not a directory")
    return fd


def _read(name: str, directory: int, max_bytes: int) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, dir_fd=directory)
    except OSError as error:
        raise InboxItemRefused(f"{name}: not readable as a file ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InboxItemRefused(f"{name}: not a regular file")
        if info.st_size > max_bytes:
            raise InboxItemRefused(f"{name}: {info.st_size} bytes; at most {max_bytes}")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # grew after fstat
                raise InboxItemRefused(f"{name}: more than {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
