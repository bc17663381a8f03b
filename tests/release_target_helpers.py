"""Releases as TUF targets in tests (docs/releases.md 7): a fleet repository whose targets
delegate the `releases` role, small synthetic release bundles (a valid manifest, files that
match it: enough for everything but pip), and a `fetch` that serves the repository from disk as
the back office would (no network: the live tests use the real `mvb-admin serve`).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import DownloadHTTPError

from backoffice.fleet_keys import generate_key, load_signer
from backoffice.fleet_repo import FleetRepository, FleetSigners, init_repository, load_fleet_signers
from config.fleet_client import Fetch, install_trust_root
from protocol.release_manifest import INSTALL, MANIFEST, ROOT, FileEntry, Manifest
from storage.envelope import RecipientPrivateKey

PLATFORM = "x86_64"
WHEEL = "wheels/mobile_video_box-0-py3-none-any.whl"


def synthetic_bundle(directory: Path, version: str, *, filler_bytes: int = 3000) -> Path:
    """`directory/mvb-<version>-x86_64.tar`: a bundle whose manifest and files agree (it does
    not install: its wheel is filler)."""
    files = {INSTALL: f"mobile-video-box=={version}\n".encode(), WHEEL: bytes(filler_bytes)}
    manifest = Manifest(
        version=version,
        platform=PLATFORM,
        source_commit="",
        lock_sha256="0" * 64,
        files={
            path: FileEntry(hashlib.sha256(data).hexdigest(), len(data))
            for path, data in files.items()
        },
    )
    path = directory / f"mvb-{version}-{PLATFORM}.tar"
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(MANIFEST, manifest.to_json())] + [
            (f"{ROOT}/{relative}", data) for relative, data in sorted(files.items())
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@dataclass
class ReleaseFleet:
    """A fleet repository with the releases role delegated, and every key a test needs."""

    repo: FleetRepository
    signers: FleetSigners
    releases_signer: CryptoSigner
    seal_key: RecipientPrivateKey
    root: Path

    def publish(self) -> None:
        self.repo.publish(self.signers.snapshot, self.signers.timestamp, now=datetime.now(UTC))


def release_fleet(root: Path) -> ReleaseFleet:
    now = datetime.now(UTC)
    repo = init_repository(root / "repo", root / "keys", now=now, trust_dir=root / "trust")
    signers = load_fleet_signers(root / "keys")
    releases_pub = generate_key(root / "keys" / "releases.key", None)
    repo.delegate_releases([releases_pub], 1, signers.targets, now=now)
    fleet = ReleaseFleet(
        repo,
        signers,
        load_signer(root / "keys" / "releases.key"),
        RecipientPrivateKey.generate(),
        root,
    )
    fleet.publish()
    return fleet


def repo_fetch(repo: FleetRepository) -> Fetch:
    """What the back office serves of `repo` (its served_path), as the box's `fetch`."""

    def fetch(url_path: str, max_bytes: int) -> bytes:
        path = repo.served_path(url_path)
        if path is None:
            raise DownloadHTTPError(f"{url_path}: not found", 404)
        return path.read_bytes()[: max_bytes + 1]

    return fetch


def paired_metadata(directory: Path, repo: FleetRepository) -> Path:
    """A box's metadata directory with the fleet's root installed (as at pairing)."""
    install_trust_root(directory, repo.trust_root_bytes())
    return directory
