"""`mvb-admin release build`: the offline release bundle from a commit (docs/releases.md 2).

I/O shell around pip and git; the rules of the bundle are protocol/release_manifest.py's.

Invariants:
- the bundle is built from the commit checked out (`git archive HEAD`), never from uncommitted
  files, and from `requirements/box.lock` of that commit: what is released is what was reviewed;
- every dependency wheel is downloaded with `--require-hashes` against the lock: a file whose
  hash the lock does not name is refused while building, not on the box;
- the same commit builds the same bytes (sorted members, owner 0, mode 0644, every mtime and the
  wheel's timestamps at the commit's time through SOURCE_DATE_EPOCH);
- the bundle file appears only complete (common/durable.py: tmp, fsync, rename, fsync dir).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Final

from common.durable import atomic_writer
from common.faults import ConfigurationFault
from protocol.release_manifest import (
    INSTALL,
    MANIFEST,
    NAME,
    PLATFORMS,
    PYTHON,
    ROOT,
    FileEntry,
    Manifest,
    is_version,
)

LOCK: Final = Path("requirements/box.lock")
GLIBC_MINORS: Final = range(17, 37)
"""manylinux_2_17 (CentOS 7's glibc) up to 2_36 (Debian 12's): the wheels a Debian 12 box runs."""
PIP_TIMEOUT_S: Final = 900.0
_PROJECT_VERSION: Final = re.compile(r'^version = "[^"\n]*"$', re.MULTILINE)


class ReleaseBuildError(RuntimeError, ConfigurationFault):
    """The bundle cannot be built as asked (not a checkout, pip refused a file, ...)."""


def platform_tags(platform: str) -> list[str]:
    """pip's --platform values for a Linux box of `platform` (x86_64 or aarch64)."""
    if platform not in PLATFORMS:
        raise ReleaseBuildError(f"platform must be one of {PLATFORMS}, not {platform!r}")
    return [f"manylinux_2_{minor}_{platform}" for minor in GLIBC_MINORS] + [
        f"manylinux2014_{platform}"
    ]


def build_release(
    repository: Path, out_dir: Path, platform: str, *, version: str | None = None
) -> tuple[Path, Manifest]:
    """Build `out_dir/mvb-<version>-<platform>.tar` from `repository`'s HEAD; its path and
    manifest. `version` overrides pyproject.toml's (a release candidate, or version N+1 of the
    same tree for a test of the A/B switch); the bundle says so only through its version."""
    commit, epoch_s = _commit(repository)
    with tempfile.TemporaryDirectory(prefix="mvb-release-") as work_text:
        work = Path(work_text)
        source = work / "source"
        _export(repository, source)
        if version is not None:
            _override_version(source / "pyproject.toml", version)
        wheels = work / ROOT / "wheels"
        wheels.mkdir(parents=True)
        environment = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch_s)}
        own_wheel = _build_own_wheel(source, wheels, environment)
        lock_text = (source / LOCK).read_text(encoding="utf-8")
        _download_dependencies(source / LOCK, wheels, platform, environment)
        version = own_wheel.name.split("-")[1]
        install = lock_text + f"{NAME}=={version} \\\n    --hash=sha256:{_sha256(own_wheel)}\n"
        (work / ROOT / INSTALL).write_text(install, encoding="utf-8")
        manifest = Manifest(
            version=version,
            platform=platform,
            source_commit=commit,
            lock_sha256=hashlib.sha256(lock_text.encode("utf-8")).hexdigest(),
            files={
                path.relative_to(work / ROOT).as_posix(): FileEntry(
                    _sha256(path), path.stat().st_size
                )
                for path in [work / ROOT / INSTALL, *sorted(wheels.iterdir())]
            },
        )
        manifest.check_paths()
        out_dir.mkdir(parents=True, exist_ok=True)
        bundle = out_dir / f"mvb-{version}-{platform}.tar"
        _write_tar(bundle, work, manifest, epoch_s)
    return bundle, manifest


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReleaseBuildError(f"{command[0]} {command[1]}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ReleaseBuildError(f"{' '.join(command[:4])} ... failed: " + " | ".join(tail))
    return done.stdout


def _commit(repository: Path) -> tuple[str, int]:
    """HEAD's id and commit time (the bundle's every timestamp)."""
    if not (repository / ".git").exists():
        raise ReleaseBuildError(f"{repository} is not a git checkout: a release names its commit")
    line = _run(["git", "-C", str(repository), "log", "-1", "--format=%H %ct"]).split()
    return line[0], int(line[1])


def _export(repository: Path, target: Path) -> None:
    """The files of HEAD (not the working tree) into `target`."""
    archive = subprocess.run(
        ["git", "-C", str(repository), "archive", "--format=tar", "HEAD"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise ReleaseBuildError(f"git archive failed: {archive.stderr.decode(errors='replace')}")
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")


def _override_version(pyproject: Path, version: str) -> None:
    """pyproject.toml's one `version = "..."` line of [project] set to `version`."""
    if not is_version(version):
        raise ReleaseBuildError(f"{version!r} is not a release version (docs/releases.md 2)")
    text = pyproject.read_text(encoding="utf-8")
    changed, count = _PROJECT_VERSION.subn(f'version = "{version}"', text, count=1)
    if count != 1:
        raise ReleaseBuildError("pyproject.toml has no `version = ...` line to override")
    pyproject.write_text(changed, encoding="utf-8")


def _build_own_wheel(source: Path, wheels: Path, environment: dict[str, str]) -> Path:
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)], env=environment)
    built = sorted(wheels.glob("mobile_video_box-*.whl"))
    if len(built) != 1:
        raise ReleaseBuildError(f"expected the project's one wheel, found {len(built)}")
    return built[0]


def _download_dependencies(
    lock: Path, wheels: Path, platform: str, environment: dict[str, str]
) -> None:
    command = [sys.executable, "-m", "pip", "download", "-q", "--require-hashes", "--no-deps"]
    command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON]
    command += ["--abi", f"cp{PYTHON.replace('.', '')}", "--abi", "abi3", "--abi", "none"]
    for tag in platform_tags(platform):
        command += ["--platform", tag]
    _run([*command, "-r", str(lock), "-d", str(wheels)], env=environment)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_tar(bundle: Path, work: Path, manifest: Manifest, epoch_s: int) -> None:
    """The bundle, reproducibly: manifest first, then the files in name order."""

    def member(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, epoch_s, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    manifest_bytes = manifest.to_json()
    with (
        atomic_writer(bundle) as handle,
        tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(member(MANIFEST, len(manifest_bytes)), io.BytesIO(manifest_bytes))
        for path in sorted(manifest.files):
            with (work / ROOT / path).open("rb") as content:
                entry = manifest.files[path]
                tar.addfile(member(f"{ROOT}/{path}", entry.size_bytes), content)
