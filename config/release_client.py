"""The box's TUF client for releases: the sealed release its fleet document pins, fetched
through ngclient with the `releases` role verified (docs/releases.md 7).

The shell around the pure rules of config/release_targets.py, sharing the metadata directory,
its lock, its working copy and its durable commit with config/fleet_client.py: a release check
cannot roll back what a configuration check has seen, nor the reverse.

Invariants:
- A sealed release is written to `out` only after ngclient verified root -> timestamp ->
  snapshot -> targets -> releases (signatures by the keys `targets` delegates to `releases`,
  their threshold, versions, expiry) and the file's signed length and SHA-256.
- The release comes from the `releases` role and no other: the top-level targets must delegate
  exactly that one role and must not list a release path themselves (ReleaseNotDelegated).
- Its signed custom fields are the fleet's and name the version and platform asked for
  (ReleaseMismatch); its signed length is at most `max_release_bytes`, checked before a byte of
  it is fetched.
- Blocking (ngclient): call from a worker thread, as FleetConfigClient.

Errors by fault, as config/fleet_client.py: RepositoryError subclasses for what fails
verification (ReleaseRefused and its subclasses for a release this box must refuse);
DownloadError for a link that failed; a pin mismatch stays the transport's.
"""

from __future__ import annotations

from pathlib import Path

from tuf.api.exceptions import DownloadLengthMismatchError, LengthOrHashMismatchError
from tuf.api.metadata import Metadata, Snapshot, TargetFile, Targets
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.updater import Updater

from config.fleet_client import Fetch
from config.fleet_store import directory_lock, has_trust_root, trusted_root, working_copy
from config.fleet_targets import METADATA_PREFIX, TARGETS_PREFIX
from config.fleet_updater import LinkFetcher
from config.release_targets import (
    MAX_RELEASE_BYTES,
    RELEASES_ROLE,
    ReleaseCustom,
    ReleaseMissing,
    ReleaseNotDelegated,
    ReleaseRefused,
    parse_release_custom,
    release_target_path,
)


def _updater_config() -> UpdaterConfig:
    return UpdaterConfig(
        max_root_rotations=64,
        max_delegations=1,  # targets, then the releases role it delegates to: nothing deeper
        root_max_length=64 * 1024,
        timestamp_max_length=16 * 1024,
        snapshot_max_length=64 * 1024,
        targets_max_length=4 * 1024 * 1024,
    )


class ReleaseClient:
    """Fetches the sealed release of one version for this box's platform."""

    def __init__(
        self,
        metadata_dir: Path,
        fetch: Fetch,
        *,
        platform: str,
        max_release_bytes: int = MAX_RELEASE_BYTES,
    ) -> None:
        if not has_trust_root(metadata_dir):
            raise FileNotFoundError(f"{metadata_dir}: no fleet trust root; pair the box first")
        self._metadata_dir = metadata_dir
        self._fetch = fetch
        self._platform = platform
        self._max_release_bytes = max_release_bytes
        self.repaired: str | None = None

    def fetch_release(self, version: str, out: Path) -> ReleaseCustom:
        """Verify and download the sealed release of `version` into `out` (module
        invariants); its signed custom fields."""
        try:
            with directory_lock(self._metadata_dir):
                trust = trusted_root(self._metadata_dir)
                self.repaired = trust.repaired
                with working_copy(self._metadata_dir, trust.root_bytes) as copy:
                    try:
                        return self._fetch_in(copy.path, version, out)
                    finally:
                        copy.commit()
        except DownloadLengthMismatchError as error:
            raise LengthOrHashMismatchError(str(error)) from error  # hostile, not flaky

    def _fetch_in(self, working_dir: Path, version: str, out: Path) -> ReleaseCustom:
        updater = Updater(
            metadata_dir=str(working_dir),
            metadata_base_url=METADATA_PREFIX,
            target_base_url=TARGETS_PREFIX,
            fetcher=LinkFetcher(self._fetch, self._max_release_bytes),
            config=_updater_config(),
            bootstrap=None,
        )
        updater.refresh()
        target_path = release_target_path(version, self._platform)
        top = Metadata[Targets].from_bytes((working_dir / "targets.json").read_bytes()).signed
        check_only_releases_role(top, target_path)
        snapshot = Metadata[Snapshot].from_bytes((working_dir / "snapshot.json").read_bytes())
        if f"{RELEASES_ROLE}.json" not in snapshot.signed.meta:
            raise ReleaseMissing("the fleet has signed no release yet")
        info = updater.get_targetinfo(target_path)
        if info is None:
            raise ReleaseMissing(f"no release {version} for {self._platform} is signed")
        custom = parse_release_custom(target_path, info.custom)
        if info.length > self._max_release_bytes:
            raise ReleaseRefused(
                f"{target_path}: {info.length} bytes; a box takes at most {self._max_release_bytes}"
            )
        _download(updater, info, out)
        return custom


def check_only_releases_role(top: Targets, target_path: str) -> None:
    """Pure: the verified top-level targets delegate releases to the `releases` role alone and
    sign no release themselves (ReleaseNotDelegated otherwise)."""
    if target_path in top.targets or any(
        path.startswith(target_path.partition("/")[0] + "/") for path in top.targets
    ):
        raise ReleaseNotDelegated(f"{target_path}: signed by the targets role, not by releases")
    roles = top.delegations.roles if top.delegations is not None else None
    if not roles or set(roles) != {RELEASES_ROLE}:
        raise ReleaseNotDelegated("the fleet's targets delegate no releases role (or others)")


def _download(updater: Updater, info: TargetFile, out: Path) -> None:
    # ngclient checks length and hashes before it writes a byte to `out` (scratch: the opened
    # release, not this file, is what the install keeps).
    updater.download_target(info, filepath=str(out))
