"""A release built from this repository installs offline from its bundle into a clean venv
(issue 17 item 1; docs/releases.md): `mvb-admin release build` and `mvb release install`, real
pip, real git, the install in a network namespace with no network at all."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from backoffice.release_build import build_release
from gateway.release_install import COMPLETE, install_release
from protocol.release_manifest import MANIFEST, ROOT, BundleError, Manifest
from tests.release_fixtures import ReleaseBundles
from tests.test_locks import locked

REPOSITORY = Path(__file__).resolve().parents[1]
PLATFORM = platform.machine()

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(release_bundles: ReleaseBundles) -> tuple[Path, Manifest]:
    """HEAD's bundle at the project's own version (shared with the A/B switch's old release)."""
    return release_bundles.get()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=900)


def rewritten(source: Path, target: Path, change: str) -> Path:
    """A copy of the bundle `source` with one thing changed, as a thief or a bad stick would."""
    with tarfile.open(source) as tar, tarfile.open(target, "w") as out:
        members = tar.getmembers()
        for member in members:
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if change == "flip" and member.name.endswith(".whl"):
                data = bytes([data[0] ^ 1]) + data[1:]
                change = "done"
            out.addfile(member, io.BytesIO(data))
        if change == "extra":
            extra = tarfile.TarInfo(f"{ROOT}/wheels/evil-1.0-py3-none-any.whl")
            extra.size = 3
            out.addfile(extra, io.BytesIO(b"bad"))
    return target


def test_the_bundle_is_reproducible_and_holds_every_locked_wheel(
    bundle: tuple[Path, Manifest], tmp_path: Path
) -> None:
    path, manifest = bundle
    again, _ = build_release(REPOSITORY, tmp_path, PLATFORM)
    assert sha256(again) == sha256(path), "the same commit builds the same bytes"
    head = run("git", "-C", REPOSITORY, "rev-parse", "HEAD").stdout.strip()
    assert (manifest.source_commit, manifest.platform) == (head, PLATFORM)
    lock = (REPOSITORY / "requirements" / "box.lock").read_bytes()
    assert manifest.lock_sha256 == hashlib.sha256(lock).hexdigest()
    wheels = {name.split("/")[1].split("-")[0].lower() for name in manifest.files if "/" in name}
    expected = {name.replace("-", "_") for name in locked("box.lock")} | {"mobile_video_box"}
    assert wheels == expected
    with tarfile.open(path) as tar:
        assert tar.getmembers()[0].name == MANIFEST
        assert all(m.uid == 0 and m.mode == 0o644 and m.isfile() for m in tar.getmembers())


def test_a_release_installs_offline_into_a_clean_venv_and_runs(
    bundle: tuple[Path, Manifest], tmp_path: Path
) -> None:
    path, manifest = bundle
    releases = tmp_path / "releases"
    cut = releases / manifest.version / "bin"
    cut.mkdir(parents=True)  # what a power cut in a former install left: no release.json
    (cut / "leftover").write_text("half")
    installed = run(
        "unshare", "--net", "--", Path(sys.executable).parent / "mvb", "release", "install",
        path, "--releases", releases,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    release = releases / manifest.version
    assert installed.stdout.strip() == f"installed release {manifest.version} at {release}"
    assert (release / COMPLETE).read_bytes() == manifest.to_json()
    assert not (release / "bin" / "leftover").exists()
    for command in ("mvb", "mvb-admin"):
        helped = run(release / "bin" / command, "--help")
        assert helped.returncode == 0, helped.stderr
        assert "release" in helped.stdout
    versions = run(
        release / "bin" / "python", "-c",
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version "
        "for d in m.distributions()}))",
    )  # fmt: skip
    in_release = json.loads(versions.stdout)
    assert {n: v for n, (v, _) in locked("box.lock").items()} == {
        n: in_release[n] for n in locked("box.lock")
    }
    assert in_release["mobile-video-box"] == manifest.version
    with pytest.raises(BundleError, match="installed already"):
        install_release(path, releases)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [("flip", "does not match the manifest"), ("extra", "members differ")],
)
def test_a_tampered_bundle_installs_nothing(
    bundle: tuple[Path, Manifest], tmp_path: Path, change: str, refusal: str
) -> None:
    path, manifest = bundle
    bad = rewritten(path, tmp_path / "bad.tar", change)
    releases = tmp_path / "releases"
    with pytest.raises(BundleError, match=refusal):
        install_release(bad, releases)
    assert not (releases / manifest.version).exists()
    assert not releases.exists() or list(releases.iterdir()) == [], "no tmp directory left"


def test_a_truncated_or_foreign_file_is_refused(
    bundle: tuple[Path, Manifest], tmp_path: Path
) -> None:
    path, _ = bundle
    truncated = tmp_path / "cut.tar"
    truncated.write_bytes(path.read_bytes()[:20_000])
    foreign = tmp_path / "foreign.tar"
    with tarfile.open(foreign, "w") as tar:
        tar.add(REPOSITORY / "README.md", arcname=MANIFEST)
    for bad in (truncated, foreign, REPOSITORY / "README.md"):
        with pytest.raises(BundleError):
            install_release(bad, tmp_path / "releases")
    shutil.rmtree(tmp_path / "releases", ignore_errors=True)
