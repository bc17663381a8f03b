"""Signing a release into the fleet's repository: seal the bundle to the fleet's release key,
add it as a target of the `releases` role, sign a new releases version (docs/releases.md 7).

`mvb-admin release sign` runs `sign_release`; `config publish` then names the new releases
version in the snapshot (backoffice/fleet_release_meta.py), and boxes whose fleet document pins
that version fetch it.

Invariants: a release is signed only into the `releases` role, only on top of a releases
version that verified under the delegation of the targets the admin's trust vouches for, and
only with a key that meets the delegation's threshold (ThresholdNotMet: nothing written); its
custom fields are the bundle's own manifest's version and platform and the manifest's SHA-256;
every file is written once (tmp, fsync, rename, fsync dir).
"""

from __future__ import annotations

import copy
import hashlib
import io
import tarfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, TargetFile, Targets

from backoffice.fleet_metadata import HASH_ALGORITHMS, FleetRepoError, stored_target_name
from backoffice.fleet_release_meta import (
    check_releases_threshold,
    delegates_releases,
    releases_file,
    releases_versions,
    verified_releases,
)
from backoffice.fleet_repo import FleetRepository
from common.durable import atomic_create_bytes, make_dirs
from config.release_targets import ReleaseCustom, release_target_path
from protocol.release_manifest import MANIFEST, BundleError, Manifest
from storage.envelope import RecipientPublicKey
from storage.release_seal import seal_release

RELEASES_LIFETIME = timedelta(days=365)
"""Re-sign (`release sign` of any bundle again) within it: boxes refuse expired metadata."""


@dataclass(frozen=True, slots=True)
class SignedRelease:
    target_path: str
    custom: ReleaseCustom
    sealed_bytes: int
    releases_version: int


def bundle_custom(bundle: Path) -> ReleaseCustom:
    """The custom fields of a release bundle: its manifest's version and platform, and the
    manifest's SHA-256 (BundleError when it has none)."""
    try:
        with tarfile.open(bundle, mode="r:") as tar:
            member = tar.extractfile(MANIFEST)
            data = member.read() if member is not None else b""
    except (tarfile.TarError, KeyError, OSError) as error:
        raise BundleError(f"{bundle.name} is not a release bundle: {error}") from error
    manifest = Manifest.from_json(data)
    return ReleaseCustom(manifest.version, manifest.platform, hashlib.sha256(data).hexdigest())


def sign_release(
    repo: FleetRepository,
    bundle: Path,
    recipient: RecipientPublicKey,
    releases_signer: Signer,
    *,
    now: datetime,
) -> SignedRelease:
    """Seal `bundle` to `recipient`, store it, and sign a releases version that adds it (or
    replaces the release of the same version and platform). Not visible until `publish`."""
    custom = bundle_custom(bundle)
    sealed = io.BytesIO()
    with bundle.open("rb") as source:
        seal_release(source, sealed, recipient)
    return add_release_target(repo, sealed.getvalue(), custom, releases_signer, now=now)


def add_release_target(
    repo: FleetRepository,
    sealed: bytes,
    custom: ReleaseCustom,
    releases_signer: Signer,
    *,
    now: datetime,
) -> SignedRelease:
    """Store `sealed` as the release `custom` names and sign the next releases version."""
    targets = repo.verified_targets().signed
    if not delegates_releases(targets):
        raise FleetRepoError("the targets delegate no releases role: run `release delegate`")
    target_path = release_target_path(custom.version, custom.platform)
    target = TargetFile.from_data(target_path, sealed, HASH_ALGORITHMS)
    target.unrecognized_fields["custom"] = custom.to_custom()
    releases = _next_releases(repo.metadata_dir, targets, now)
    releases.targets[target_path] = target
    metadata = Metadata(releases)
    metadata.sign(releases_signer)
    check_releases_threshold(targets, metadata)
    stored = repo.targets_dir / stored_target_name(target)
    make_dirs(stored.parent)
    if not stored.exists():  # content-addressed: the same name holds the same bytes
        atomic_create_bytes(stored, sealed, mode=0o644)
    name = releases_file(releases.version)
    atomic_create_bytes(repo.metadata_dir / name, metadata.to_bytes(), mode=0o644)
    return SignedRelease(target_path, custom, len(sealed), releases.version)


def _next_releases(metadata_dir: Path, targets: Targets, now: datetime) -> Targets:
    """The next releases version: on the newest verified one, numbered above every file."""
    found = verified_releases(metadata_dir, targets)
    if found is None:
        releases = Targets(version=1, expires=now)
    else:
        releases = Targets.from_dict(copy.deepcopy(found[0].signed.to_dict()))
    releases.version = max([0, *releases_versions(metadata_dir)]) + 1
    releases.expires = now + RELEASES_LIFETIME
    return releases
