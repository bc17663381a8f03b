"""The fleet repository's files as they lie on disk: the versions of each role, the newest,
what a URL path serves, and the versions the online roles and snapshots have reached. The
reading half of `FleetRepository` (backoffice/fleet_repo.py), its base class, kept apart so that
the repository's file stays readable in one sitting.

Invariants:
- Nothing here writes, signs or verifies: `root()` and `targets()` read the disk unverified, for
  serving and inspection only; every signing step verifies first (backoffice/fleet_repo.py).
- `served_path` never leaves the repository's metadata/ and targets/ folders: no empty, `.`,
  `..` or hidden path segment is followed.
- A version is known by its file name (`<N>.<role>.json`, N from 1, at most 18 digits); the
  online roles' versions also by what their newest file says (`online_version`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from backoffice.fleet_trust import online_version
from config.fleet_targets import METADATA_PREFIX, TARGETS_PREFIX

TIMESTAMP_FILE = "timestamp.json"
log = logging.getLogger("backoffice.fleet_repo")  # the repository's log name, kept when this moved
_VERSIONED = re.compile(r"([1-9][0-9]{0,17})\.(root|targets|snapshot|releases)\.json")


class FleetRepoFiles:
    """Needs of the repository it is the base of (set by FleetRepository.__init__)."""

    repo_dir: Path
    metadata_dir: Path
    targets_dir: Path

    # -- reading

    def root(self) -> Metadata[Root]:
        """The newest root version on disk, unverified (serving, inspection)."""
        return Metadata[Root].from_bytes(self._newest_bytes(Root.type))

    def targets(self) -> Metadata[Targets]:
        """The newest targets version on disk (it may not be published yet), unverified."""
        return Metadata[Targets].from_bytes(self._newest_bytes(Targets.type))

    def trust_root_bytes(self) -> bytes:
        """The newest root, as handed to a box at pairing (its trust anchor)."""
        return self._newest_bytes(Root.type)

    def served_path(self, url_path: str) -> Path | None:
        """The file that answers GET `url_path` (METADATA_PREFIX/... or TARGETS_PREFIX/...), or
        None: for the back office's HTTP handler and for tests. Never leaves `repo_dir`."""
        for prefix, directory in (
            (METADATA_PREFIX, self.metadata_dir),
            (TARGETS_PREFIX, self.targets_dir),
        ):
            if url_path.startswith(prefix):
                relative = url_path[len(prefix) :]
                segments = relative.split("/")
                if not relative or any(s in ("", ".", "..") or s.startswith(".") for s in segments):
                    return None
                path = directory.joinpath(*segments)
                return path if path.is_file() else None
        return None

    # -- private helpers

    def _published_targets_version(self) -> int:
        """The highest targets version any snapshot on disk names (0: none readable)."""
        named = [0]
        for version in self._versions(Snapshot.type):
            try:
                snapshot = Metadata[Snapshot].from_bytes(self._read(f"{version}.snapshot.json"))
                named.append(snapshot.signed.meta["targets.json"].version)
            except Exception as error:  # a damaged or foreign file names nothing we use
                log.warning("metadata/%d.snapshot.json unreadable: %s", version, error)
        return max(named)

    def _online_version(self, role: str) -> int:
        """The highest version of `role` (snapshot, timestamp) on disk, by file name and by what
        the newest file says (backoffice/fleet_trust.py `online_version`: why no more)."""
        if role == Timestamp.type:
            path = self.metadata_dir / TIMESTAMP_FILE
            if not path.exists():
                return 0
            return online_version(role, path.read_bytes(), TIMESTAMP_FILE)
        newest = self._newest_version(role)
        if newest == 0:
            return 0
        name = f"{newest}.{role}.json"
        return max(newest, online_version(role, self._read(name), name))

    def _versions(self, role: str) -> list[int]:
        versions = [
            int(match.group(1))
            for path in self.metadata_dir.iterdir()
            if (match := _VERSIONED.fullmatch(path.name)) and match.group(2) == role
        ]
        return sorted(versions)

    def _newest_version(self, role: str) -> int:
        versions = self._versions(role)
        return versions[-1] if versions else 0

    def _newest_bytes(self, role: str) -> bytes:
        return self._read(f"{self._newest_version(role)}.{role}.json")

    def _read(self, name: str) -> bytes:
        return (self.metadata_dir / name).read_bytes()
