"""Which box may read which fleet document (docs/fleet-config.md 3.1).

The back office serves the fleet's TUF repository to every paired box, but a document is for the
boxes its signed custom fields name (`custom.boxes`): a group document names its member boxes
too (the repository refuses to sign one that does not: backoffice/fleet_metadata.py). So per
request, the client certificate's box id (the CN the mutual-TLS handshake proved) must be among
the readers the *published* targets name for the file asked for; metadata is served to every
paired box (a box cannot verify anything without it).

What the metadata still reveals to any paired box, by design of TUF (the targets role lists
every target; per-box delegations would list every role in the snapshot instead): the fleet's
box ids and group names, which boxes each document is for, its serial, length and SHA-256.
Never a document's bytes. A sealed release (`releases/...`, docs/releases.md 7) is served to
every paired box: it is encrypted to the fleet's release key, so its bytes say nothing.
A document's SHA-256 does not reveal its password hashes: each PBKDF2 hash carries a random
salt, so the document cannot be guessed from its digest.

`readers_by_file` is pure; `FleetAccess` is the shell the HTTPS listener calls (off the event
loop): it re-reads the published targets whenever `timestamp.json` changed (a publish replaces
it atomically), so a box can read a document from the moment it is published, and a document
dropped from the published targets from then on by nobody.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# python-tuf documents these names in tuf.api.metadata, which re-exports them without __all__.
from tuf.api.metadata import Metadata, Snapshot, Targets, Timestamp

from backoffice.fleet_metadata import stored_target_name
from backoffice.fleet_repo import TIMESTAMP_FILE, FleetRepository
from common.faults import RemoteFault
from config.fleet_targets import TARGETS_PREFIX, MalformedCustom, parse_custom
from config.release_targets import RELEASE_KEY_PATH, RELEASES_DIR

log = logging.getLogger(__name__)


class FleetFileDenied(RemoteFault):
    """A paired box asked for a fleet document that is not for it (403)."""


def readers_by_file(targets: Targets) -> dict[str, frozenset[str]]:
    """Stored file name (`boxes/<sha256>.<id>.toml`, as under /fleet/targets/) -> the box ids
    its signed custom fields name. A target whose custom fields are not the fleet's has none."""
    readers: dict[str, frozenset[str]] = {}
    for path, target in targets.targets.items():
        try:
            boxes = parse_custom(path, target.custom).boxes
        except MalformedCustom:
            boxes = ()
        readers[stored_target_name(target)] = frozenset(boxes)
    return readers


def may_read(relative: str, box_id: str, readers: Mapping[str, frozenset[str]]) -> bool:
    """Pure: may `box_id` read the target file `relative` (the path under /fleet/targets/)?"""
    return box_id in readers.get(relative, frozenset())


@dataclass(frozen=True, slots=True)
class _Published:
    key: tuple[int, int, int]  # timestamp.json's inode, size and mtime
    readers: dict[str, frozenset[str]]


class FleetAccess:
    """`fleet_files(url_path, box_id)` for the HTTPS listener (backoffice/server.py): the file
    that answers, None (404), or FleetFileDenied (403) for a document not for this box."""

    def __init__(self, repository: FleetRepository, release_key: Path | None = None) -> None:
        """`release_key`: the fleet's release sealing key (private PEM), served to every paired
        box at RELEASE_KEY_PATH (docs/releases.md 6.2); None: not served (404)."""
        self.repository = repository
        self.release_key = release_key
        self._published: _Published | None = None

    def __call__(self, url_path: str, box_id: str) -> Path | None:
        if url_path == RELEASE_KEY_PATH:
            log.info("fleet: box %s fetched the release key", box_id)
            return self.release_key
        path = self.repository.served_path(url_path)
        if path is None or not url_path.startswith(TARGETS_PREFIX):
            return path
        relative = url_path[len(TARGETS_PREFIX) :]
        if relative.startswith(RELEASES_DIR + "/"):
            return path  # a sealed release: every paired box may fetch it (docs/releases.md 7)
        if not may_read(relative, box_id, self._readers()):
            log.warning("fleet: box %s asked for a document not for it: %s", box_id, relative)
            raise FleetFileDenied(f"{relative} is not a document for box {box_id}")
        return path

    def _readers(self) -> dict[str, frozenset[str]]:
        """The readers of the published targets (timestamp -> snapshot -> targets), re-read
        when timestamp.json changed. Unreadable: no reader (fail closed)."""
        metadata = self.repository.metadata_dir
        try:
            info = (metadata / TIMESTAMP_FILE).stat()
        except FileNotFoundError:
            return {}
        key = (info.st_ino, info.st_size, info.st_mtime_ns)
        if self._published is not None and self._published.key == key:
            return self._published.readers
        try:
            readers = readers_by_file(_published_targets(metadata))
        except Exception as error:  # a repository mid-change or damaged: nobody reads, for now
            log.error("fleet: the published targets are unreadable: %s", error)
            return {}
        self._published = _Published(key, readers)
        return readers


def _published_targets(metadata: Path) -> Targets:
    timestamp = Metadata[Timestamp].from_bytes((metadata / TIMESTAMP_FILE).read_bytes())
    snapshot_version = timestamp.signed.snapshot_meta.version
    snapshot_bytes = (metadata / f"{snapshot_version}.snapshot.json").read_bytes()
    snapshot = Metadata[Snapshot].from_bytes(snapshot_bytes)
    targets_version = snapshot.signed.meta["targets.json"].version
    targets_bytes = (metadata / f"{targets_version}.targets.json").read_bytes()
    return Metadata[Targets].from_bytes(targets_bytes).signed
