"""The box's TUF metadata directory, made durable around python-tuf's ngclient (issue 14).

ngclient (7.x) persists what it verified with a tmp file and a rename but no fsync, and replaces
`root.json` by a symlink to `root_history/N.root.json`. A power cut within seconds of a fleet
check then leaves 0-byte files (ext4's zero-length file: the rename committed by another fsync
before the data was written back), or loses them (a directory entry never fsynced), and a box
whose `root.json` is empty refuses fleet configuration at every start.

So ngclient never writes the durable directory. Each verification runs on a **working copy**
(`WorkingCopy`: a scratch directory outside the card and the state directory, filled with the
durable files), and what ngclient verified there is **committed** back file by file through
common/durable.py (tmp, fsync, rename, fsync dir), in an order that keeps every prefix usable:
`root_history/` (new versions, oldest first), then `root.json` (a regular file, never a link),
then timestamp, snapshot, targets, releases. A cut between two commits leaves older metadata
beside newer, which ngclient handles as it handles any stale local file (it verifies and
replaces it).

Invariants of the durable directory (`metadata_dir`):
- `root.json` is the newest root ngclient verified and this module committed, or the root
  installed at pairing; `paired-root.json` is the root installed at pairing and is never
  changed until the next pairing.
- Every file in it was written by common/durable.py: after a power cut each holds its old or
  its new content, never a mix, never nothing.

Recovery (`trusted_root`): a `root.json` that is not root metadata signed by its own threshold
(torn by a cut before this discipline, or damaged) is replaced by the durable trust root: the
root installed at pairing, else the oldest readable root in `root_history/`. ngclient then walks
the rotations again (from its local history or the back office), each one verified by the
previous root's threshold, so nothing is trusted that the chain does not vouch for. The caller
learns of it (`TrustRoot.repaired`) to raise an alarm. No usable root at all: `NoTrustRoot`.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tuf.api.exceptions import RepositoryError

from common.durable import atomic_write_bytes, make_dirs
from common.faults import StorageFault

ROOT_FILE: Final = "root.json"
PAIRED_ROOT_FILE: Final = "paired-root.json"
ROOT_HISTORY_DIR: Final = "root_history"
ROLE_FILES: Final = ("timestamp.json", "snapshot.json", "targets.json", "releases.json")
"""Committed after the root, in ngclient's own order of verification (`releases`: the role
targets delegates releases to, docs/releases.md 7)."""
METADATA_FILE_MODE: Final = 0o600
_HISTORY_NAME: Final = re.compile(r"([1-9][0-9]{0,8})\.root\.json")


class NoTrustRoot(RepositoryError, StorageFault):
    """Neither `root.json`, the paired root nor any root in the history is usable: the box
    must be paired again. A fault of the box's own storage (a RepositoryError, so that every
    caller keeps its configuration as for any refusal)."""


@dataclass(frozen=True, slots=True)
class TrustRoot:
    """The root a verification starts from. `repaired`: why `root.json` was not used (None when
    it was): the caller alarms, because the box lost metadata it had verified."""

    root_bytes: bytes
    repaired: str | None


def checked_root(data: bytes) -> int:
    """The version of `data` if it is root metadata signed by its own threshold; raises
    RepositoryError (DeserializationError for an empty or torn file) otherwise."""
    # tuf.api.metadata (1.3 MiB) loads with the first root the box checks (pairing, or its
    # first verification), not at the start of a box that may not be paired (issue 18).
    from tuf.api.metadata import Metadata, Root

    root = Metadata[Root].from_bytes(data)
    if not isinstance(root.signed, Root):
        raise RepositoryError("not root metadata")
    root.signed.verify_delegate(Root.type, root.signed_bytes, root.signatures)
    return root.signed.version


def has_trust_root(metadata_dir: Path) -> bool:
    """A root was installed here: `root.json`, the paired root or a root in the history (it may
    still prove unusable: `trusted_root` says)."""
    return any(
        (metadata_dir / name).exists() or (metadata_dir / name).is_symlink()
        for name in (ROOT_FILE, PAIRED_ROOT_FILE)
    ) or any(path.exists() for path in _fallback_roots(metadata_dir)[1:])


def trusted_root(metadata_dir: Path) -> TrustRoot:
    """The root to start from: `root.json` when usable, else the durable trust root (see the
    module docstring). Raises NoTrustRoot when there is none."""
    try:
        data = (metadata_dir / ROOT_FILE).read_bytes()
        checked_root(data)
        return TrustRoot(data, None)
    except (OSError, RepositoryError, ValueError) as error:
        why = f"root.json unusable ({type(error).__name__})"
    for candidate in _fallback_roots(metadata_dir):
        with contextlib.suppress(OSError, RepositoryError, ValueError):
            data = candidate.read_bytes()
            checked_root(data)
            return TrustRoot(data, f"{why}; started again from {candidate.name}")
    raise NoTrustRoot(f"{why}, and no usable root to fall back on: pair the box again")


def _fallback_roots(metadata_dir: Path) -> list[Path]:
    """The paired root, then the history's roots, oldest first (the chain is walked upwards)."""
    history = metadata_dir / ROOT_HISTORY_DIR
    numbered: list[tuple[int, Path]] = []
    with contextlib.suppress(OSError):
        for path in history.iterdir():
            match = _HISTORY_NAME.fullmatch(path.name)
            if match:
                numbered.append((int(match.group(1)), path))
    return [metadata_dir / PAIRED_ROOT_FILE, *(path for _, path in sorted(numbered))]


def install_root_files(metadata_dir: Path, root_json: bytes) -> None:
    """The pairing's root as both the paired root and the current one (durable on return)."""
    make_dirs(metadata_dir, mode=0o700)
    atomic_write_bytes(metadata_dir / PAIRED_ROOT_FILE, root_json, mode=METADATA_FILE_MODE)
    atomic_write_bytes(metadata_dir / ROOT_FILE, root_json, mode=METADATA_FILE_MODE)


class WorkingCopy:
    """A scratch copy of the durable metadata for one ngclient Updater (`path`), and the commit
    of what it verified back into the durable directory.

    Invariant: nothing in `durable` changes before `commit`, and `commit` changes only files
    whose bytes ngclient changed, each through common/durable.py.
    """

    def __init__(self, durable: Path, scratch: Path, root_bytes: bytes) -> None:
        self.durable = durable
        self.path = scratch
        files: dict[str, bytes] = {}
        for name in (ROOT_FILE, *ROLE_FILES):
            with contextlib.suppress(OSError):
                files[name] = (durable / name).read_bytes()
        if (durable / ROOT_FILE).is_symlink():
            files[ROOT_FILE] = b""  # ngclient's link of an earlier version: commit a real file
        history = durable / ROOT_HISTORY_DIR
        with contextlib.suppress(OSError):
            for item in history.iterdir():
                if _HISTORY_NAME.fullmatch(item.name):
                    files[f"{ROOT_HISTORY_DIR}/{item.name}"] = item.read_bytes()
        (scratch / ROOT_HISTORY_DIR).mkdir()
        for name, data in {**files, ROOT_FILE: root_bytes}.items():
            (scratch / name).write_bytes(data)  # scratch: nothing here needs to survive a cut
        self._before = files  # what the durable directory holds: a repaired root differs

    def commit(self) -> list[str]:
        """Write every file ngclient changed into the durable directory, in the order of the
        module docstring; return their names (relative). A file ngclient left unreadable
        (it raised in the middle of a write) is skipped: the durable one stays."""
        if not self.durable.is_dir():
            return []  # unpaired meanwhile: its metadata is gone and must not come back
        changed = [name for name in self._ordered_names() if self._changed(name)]
        if any(name.startswith(ROOT_HISTORY_DIR + "/") for name in changed):
            make_dirs(self.durable / ROOT_HISTORY_DIR, mode=0o700)
        for name in changed:
            # read_bytes follows ngclient's root.json symlink: the durable one is a file.
            atomic_write_bytes(
                self.durable / name, (self.path / name).read_bytes(), mode=METADATA_FILE_MODE
            )
        self._before.update({name: (self.path / name).read_bytes() for name in changed})
        return changed

    def _ordered_names(self) -> list[str]:
        numbered = []
        with contextlib.suppress(OSError):
            for item in (self.path / ROOT_HISTORY_DIR).iterdir():
                match = _HISTORY_NAME.fullmatch(item.name)
                if match:
                    numbered.append((int(match.group(1)), f"{ROOT_HISTORY_DIR}/{item.name}"))
        return [name for _, name in sorted(numbered)] + [ROOT_FILE, *ROLE_FILES]

    def _changed(self, name: str) -> bool:
        try:
            data = (self.path / name).read_bytes()
        except OSError:
            return False
        return bool(data) and data != self._before.get(name)


_DIRECTORY_LOCKS: dict[Path, threading.Lock] = {}
_DIRECTORY_LOCKS_GUARD = threading.Lock()


def directory_lock(metadata_dir: Path) -> threading.Lock:
    """One lock per metadata directory in this process: two verifications (a round's check and
    a pushed bundle, each with a client of its own) must not commit over each other, or the
    slower one could put back metadata older than the faster one committed."""
    key = metadata_dir.resolve()
    with _DIRECTORY_LOCKS_GUARD:
        return _DIRECTORY_LOCKS.setdefault(key, threading.Lock())


@contextlib.contextmanager
def working_copy(metadata_dir: Path, root_bytes: bytes) -> Iterator[WorkingCopy]:
    """A WorkingCopy in a fresh scratch directory of the system's temporary space (not the card,
    not the state directory: a cut leaves nothing of it there), deleted at the end. The caller
    commits: also after ngclient raised, since everything it persisted it had verified."""
    with tempfile.TemporaryDirectory(prefix="mvb-tuf-") as scratch:
        yield WorkingCopy(metadata_dir, Path(scratch), root_bytes)
