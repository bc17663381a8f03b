"""Root's verdict on a release inbox item, for the box (docs/releases.md 7.6): root's installer
writes one small JSON file per version it judged (`<verdicts>/<version>.json`, root-owned
0644 in a directory the `mvb` user may read, not write); the box's release updater reads the
verdict for the version it handed over, so that a refusal by root becomes the box's own.

The format (written down first):

    {"format": 1, "version": "1.0.1", "outcome": "refused", "code": "tampered",
     "judged_at_s": 1796000000, "judgement": "<16 lower-case hex>"}

`outcome` is `installed` (verified, installed, switch requested), `switch_back` (a switch
back requested) or `refused` (`code` says why; empty otherwise). `judgement` is random per
verdict: the box remembers the one it saw before its hand-over and takes only a newer one
(a verdict left from an earlier hand-over of the same version is not this one's).

Invariants:
- the parse is strict and bounded (protocol/strict_json.py): exactly these members, at most
  MAX_VERDICT_BYTES, a version's name, a code of CODE_PATTERN; anything else is
  VerdictMalformed, which the box logs and ignores (it is input to the box, never trusted);
- the box's read follows no symlink and reads no more than the bound;
- the directory holds at most KEEP_VERDICTS verdicts: root removes the oldest after each write;
- root writes only into a directory it owns, opened once without following a symlink
  (`write_verdict`): the `mvb` user, who owns the parent, cannot point root's writes elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from common.durable import atomic_write_bytes, fsync_dir
from common.faults import ConfigurationFault, RemoteFault
from protocol.release_manifest import is_version
from protocol.strict_json import Fields, dump_json, load_object

log = logging.getLogger(__name__)

DEFAULT_VERDICTS_DIR: Final = Path("/var/lib/mvb-release-verdicts")
"""Root's, 0755, made by systemd/mvb.tmpfiles.conf (beside the box's state directory, not in
it: its parent must not be the `mvb` user's)."""
VERDICT_FORMAT: Final = 1
MAX_VERDICT_BYTES: Final = 1024
KEEP_VERDICTS: Final = 8
CODE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,47}")
JUDGEMENT_PATTERN: Final = re.compile(r"[0-9a-f]{16}")
VerdictOutcome = Literal["installed", "switch_back", "refused"]
OUTCOMES: Final[tuple[VerdictOutcome, ...]] = ("installed", "switch_back", "refused")
_MEMBERS: Final = frozenset({"format", "version", "outcome", "code", "judged_at_s", "judgement"})
_MAX_TIME_S: Final = 1 << 40


class VerdictMalformed(ValueError, RemoteFault):
    """A verdict file that is not one (the box logs it and ignores it)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """Root's judgement of one inbox item. `judged_at_s`: root's clock (Unix seconds), shown,
    never compared; `judgement`: unique per verdict (module docstring)."""

    version: str
    outcome: VerdictOutcome
    code: str
    judged_at_s: int
    judgement: str


def new_verdict(version: str, outcome: VerdictOutcome, code: str, now_s: int) -> Verdict:
    return Verdict(version, outcome, code if outcome == "refused" else "", now_s, _judgement())


def _judgement() -> str:
    return secrets.token_hex(8)


def verdict_json(verdict: Verdict) -> bytes:
    return dump_json(
        {
            "format": VERDICT_FORMAT,
            "version": verdict.version,
            "outcome": verdict.outcome,
            "code": verdict.code,
            "judged_at_s": verdict.judged_at_s,
            "judgement": verdict.judgement,
        }
    )


def parse_verdict(data: bytes, version: str) -> Verdict:
    """The verdict in `data` for `version` (pure); VerdictMalformed for anything else."""
    what = f"the verdict for {version}"
    document = load_object(data, MAX_VERDICT_BYTES, what, VerdictMalformed)
    fields = Fields(document, _MEMBERS, what, VerdictMalformed)
    if fields.integer("format", 0, 1 << 30) != VERDICT_FORMAT:
        fields.fail("format", f"the integer {VERDICT_FORMAT}")
    if fields.text("version", 64) != version:
        fields.fail("version", f"{version!r} (the file's name)")
    outcome = _outcome(fields)
    code = fields.text("code", 48)
    if outcome == "refused" and not CODE_PATTERN.fullmatch(code):
        fields.fail("code", f"a refusal code matching {CODE_PATTERN.pattern}")
    if outcome != "refused" and code:
        fields.fail("code", "empty unless refused")
    judged_at_s = fields.integer("judged_at_s", 0, _MAX_TIME_S)
    judgement = fields.text("judgement", 16, JUDGEMENT_PATTERN)
    return Verdict(version, outcome, code, judged_at_s, judgement)


def _outcome(fields: Fields) -> VerdictOutcome:
    text = fields.text("outcome", 20)
    for outcome in OUTCOMES:
        if text == outcome:
            return outcome
    return fields.fail("outcome", f"one of {OUTCOMES}")


# -- root's side ------------------------------------------------------------------------------


class VerdictDirUnsafe(PermissionError, ConfigurationFault):
    """The verdict directory is not root's own (absent, a symlink, another owner, writable by
    others): root writes nothing there."""


def write_verdict(directory: Path, verdict: Verdict, *, keep: int = KEEP_VERDICTS) -> None:
    """Write `verdict` durably as `<directory>/<version>.json` (0644: the box reads it), then
    remove the oldest verdicts beyond `keep` (by modification time; never the one written).

    The directory's parent is the `mvb` user's (`/var/lib/mvb`): it could swap the directory
    for a symlink to root's own files. So the directory is opened once without following a
    symlink, must be a directory owned by this user and writable by nobody else
    (VerdictDirUnsafe otherwise, nothing written), and every write goes through that opened
    directory (`/proc/self/fd/N`), never through the path again."""
    if not is_version(verdict.version):
        raise ValueError(f"no verdict for {verdict.version!r}")
    fd = _open_own_dir(directory)
    try:
        opened = Path(f"/proc/self/fd/{fd}")
        written = f"{verdict.version}.json"
        atomic_write_bytes(opened / written, verdict_json(verdict), mode=0o644)
        _prune(opened, written, keep)
    finally:
        os.close(fd)


def _open_own_dir(directory: Path) -> int:
    # O_NOFOLLOW: a symlink fails (ELOOP); fstat then says it is a directory (read only here:
    # the writes go through common/durable.py under /proc/self/fd/N).
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(directory, flags)
    except OSError as error:
        raise VerdictDirUnsafe(f"{directory}: not a directory ({error.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISDIR(info.st_mode):
        os.close(fd)
        raise VerdictDirUnsafe(f"{directory}: not a directory")
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise VerdictDirUnsafe(f"{directory}: not this user's own (owner, mode)")
    return fd


def _prune(opened: Path, written: str, keep: int) -> None:
    others = [path for path in opened.iterdir() if path.name != written]
    others.sort(key=lambda path: path.lstat().st_mtime_ns, reverse=True)
    stale = others[max(0, keep - 1) :]
    for path in stale:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            path.unlink()
    if stale:
        fsync_dir(opened)


# -- the box's side ---------------------------------------------------------------------------


def read_verdict(directory: Path, version: str) -> Verdict | None:
    """Root's verdict for `version`, or None: none written yet, or one that is malformed or
    unreadable (logged: input to the box, ignored)."""
    if not is_version(version):
        return None
    path = directory / f"{version}.json"
    try:
        return parse_verdict(_read_bounded(path), version)
    except FileNotFoundError:
        return None
    except (OSError, VerdictMalformed) as error:
        log.warning("release verdict %s ignored: %s", version, error)
        return None


def _read_bounded(path: Path) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VerdictMalformed(f"{path.name}: not a regular file")
        data = os.read(fd, MAX_VERDICT_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_VERDICT_BYTES:
        raise VerdictMalformed(f"{path.name}: more than {MAX_VERDICT_BYTES} bytes")
    return data
