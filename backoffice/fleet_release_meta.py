"""The `releases` role's metadata in the back office's repository (docs/releases.md 7).

`targets` delegates `releases/*` to the role `releases` (its own keys and threshold,
terminating: no other role is asked for a release path). Its versions are files
`metadata/<N>.releases.json` beside the others, written once; the snapshot names the newest
(`releases_meta`), so a box's ngclient verifies it by the snapshot's version and hash and by
the delegation's keys.

Invariants: `releases_delegation` is the only delegation the fleet makes; a releases version on
disk is used only after it verified under the delegation of the targets that name it
(`verified_releases`), so nothing is published or signed on top of a releases file the targets
key did not delegate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from securesystemslib.signer import Key
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, MetaFile, Targets

from backoffice.fleet_metadata import HASH_ALGORITHMS, FleetRepoError, ThresholdNotMet
from config.release_targets import RELEASE_PATH_PATTERN, RELEASES_ROLE

_VERSIONED = re.compile(rf"([1-9][0-9]{{0,17}})\.{RELEASES_ROLE}\.json")


def releases_delegation(keys: Sequence[Key], threshold: int) -> Delegations:
    """The delegation of `releases/*` to the `releases` role (ValueError for a threshold the
    keys cannot meet)."""
    if not 1 <= threshold <= len(keys):
        raise FleetRepoError(f"a releases threshold of {threshold} with {len(keys)} key(s)")
    role = DelegatedRole(
        name=RELEASES_ROLE,
        keyids=sorted(key.keyid for key in keys),
        threshold=threshold,
        terminating=True,
        paths=[RELEASE_PATH_PATTERN],
    )
    return Delegations(keys={key.keyid: key for key in keys}, roles={RELEASES_ROLE: role})


def delegates_releases(targets: Targets) -> bool:
    delegations = targets.delegations
    return delegations is not None and RELEASES_ROLE in (delegations.roles or {})


def releases_versions(metadata_dir: Path) -> list[int]:
    return sorted(
        int(match.group(1))
        for path in metadata_dir.iterdir()
        if (match := _VERSIONED.fullmatch(path.name))
    )


def releases_file(version: int) -> str:
    return f"{version}.{RELEASES_ROLE}.json"


def verified_releases(
    metadata_dir: Path, targets: Targets
) -> tuple[Metadata[Targets], bytes] | None:
    """The newest releases metadata on disk and its bytes, verified under `targets`'s
    delegation (ThresholdNotMet otherwise); None when the role has no version yet."""
    versions = releases_versions(metadata_dir)
    if not versions:
        return None
    data = (metadata_dir / releases_file(versions[-1])).read_bytes()
    metadata = Metadata[Targets].from_bytes(data)
    check_releases_threshold(targets, metadata)
    return metadata, data


def check_releases_threshold(targets: Targets, metadata: Metadata[Targets]) -> None:
    if not delegates_releases(targets):
        raise ThresholdNotMet("the targets delegate no releases role: `release delegate` first")
    try:
        targets.verify_delegate(RELEASES_ROLE, metadata.signed_bytes, metadata.signatures)
    except UnsignedMetadataError as error:
        raise ThresholdNotMet(f"releases v{metadata.signed.version}: {error}") from error


def releases_meta(metadata_dir: Path, targets: Targets) -> dict[str, MetaFile]:
    """What the snapshot names of the releases role: its newest verified version, or nothing
    (no delegation, or no version yet)."""
    if not delegates_releases(targets):
        return {}
    found = verified_releases(metadata_dir, targets)
    if found is None:
        return {}
    metadata, data = found
    meta = MetaFile.from_data(metadata.signed.version, data, HASH_ALGORITHMS)
    return {f"{RELEASES_ROLE}.json": meta}
