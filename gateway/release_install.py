"""`mvb release install`: a release bundle into its own venv, offline (docs/releases.md 3).

I/O shell; the bundle's rules are protocol/release_manifest.py's.

Invariants:
- nothing of a bundle is unpacked before its manifest parsed and its member list matched the
  manifest exactly (`check_members`); nothing is installed before every file's SHA-256 matched;
- pip runs with `--no-index --require-hashes`: no network, no file whose hash differs;
- a release is installed iff `releases/<version>/release.json` (its manifest) exists: that file
  is written last, durably, after every file of the venv was fsynced. A venv is not
  relocatable (its scripts name their interpreter by path), so it is built where it stays; a
  `<version>` without `release.json` is a failed or cut install, removed and built again by the
  next install, and never switched to;
- an installed version is never overwritten (BundleError: install a new version instead).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Final

from common.durable import atomic_write_bytes, fsync_dir, make_dirs
from protocol.release_manifest import (
    INSTALL,
    MANIFEST,
    ROOT,
    BundleError,
    Manifest,
    Member,
    check_members,
)

TMP_PREFIX: Final = ".installing-"
COMPLETE: Final = "release.json"
"""The manifest, copied into an installed release as its last, durable file."""
PIP_TIMEOUT_S: Final = 900.0


def read_manifest(bundle: Path) -> Manifest:
    """The bundle's manifest, once its members match it (no byte of a file read yet)."""
    try:
        with tarfile.open(bundle, mode="r:") as tar:
            members = tar.getmembers()
            first = tar.extractfile(members[0]) if members else None
            if not members or members[0].name != MANIFEST or first is None:
                raise BundleError(f"{bundle.name}: the first member must be {MANIFEST}")
            manifest = Manifest.from_json(first.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{bundle.name} is not a readable release bundle: {exc}") from exc
    check_members(manifest, [Member(m.name, m.isfile(), m.size) for m in members])
    return manifest


def is_installed(release: Path) -> bool:
    """A release directory whose install completed (module invariants)."""
    return (release / COMPLETE).is_file()


def install_release(bundle: Path, releases: Path) -> Path:
    """Install `bundle` as `releases/<version>` (a venv) and return that path."""
    manifest = read_manifest(bundle)
    target = releases / manifest.version
    if is_installed(target):
        raise BundleError(f"release {manifest.version} is installed already: {target}")
    make_dirs(releases)
    for leftover in [*releases.glob(f"{TMP_PREFIX}*"), target]:
        shutil.rmtree(leftover, ignore_errors=True)  # cut or failed installs
    work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{manifest.version}-", dir=releases))
    try:
        unpacked = work / "bundle"
        _unpack_verified(bundle, manifest, unpacked)
        try:
            _make_venv(target, unpacked / ROOT)
            _fsync_tree(target)
            fsync_dir(releases)
            atomic_write_bytes(target / COMPLETE, manifest.to_json())
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _unpack_verified(bundle: Path, manifest: Manifest, target: Path) -> None:
    """Each file of the manifest, written under `target` only after its hash matched."""
    with tarfile.open(bundle, mode="r:") as tar:
        for relative, entry in sorted(manifest.files.items()):
            source = tar.extractfile(f"{ROOT}/{relative}")
            if source is None:
                raise BundleError(f"{relative} is not a regular file")
            data = source.read(entry.size_bytes + 1)
            if len(data) != entry.size_bytes or hashlib.sha256(data).hexdigest() != entry.sha256:
                raise BundleError(f"{relative} does not match the manifest's SHA-256")
            path = target / ROOT / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def _make_venv(venv: Path, unpacked: Path) -> None:
    """A venv with the bundle installed from its own wheels only, hashes required. The venv gets
    the interpreter's own pip (ensurepip, offline), so the release it becomes can install the
    next one."""
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index"]
    pip += ["--no-cache-dir", "--disable-pip-version-check", "--require-hashes"]
    pip += ["--only-binary=:all:", "--find-links", str(unpacked / "wheels")]
    _run([*pip, "-r", str(unpacked / INSTALL)])


def _run(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BundleError(f"install step {command[1:3]} did not run: {exc}") from exc
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        raise BundleError(f"install step {command[1:3]} failed: {tail}")


def _fsync_tree(root: Path) -> None:
    """Every file and directory of `root` on the card before its name is made durable: the
    rename publishes the release, so what it names must already be there after a power cut."""
    for directory, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_file(Path(directory) / name)
        fsync_dir(Path(directory))


def _fsync_file(path: Path) -> None:
    if path.is_symlink():  # the venv's python links to the system's interpreter
        return
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
