"""Staging the attacks of issue 5 in a fleet TUF repository (the backoffice/fleet_repo.py layout).

Each helper writes into the repository's storage what an attacker could put there: with the
online keys (snapshot, timestamp) of a compromised back office, with the admin's targets key where
the attack is a careless or coerced admin, or with no key at all (a replayed or altered file).
They bypass the repository's own policy checks on purpose and never talk to a box.

Invariants:
- Every file is replaced atomically (`plant`): a box polling at that moment reads the old bytes
  or the new ones, never half a file, as from a real server's storage.
- An attack that needs several files writes `timestamp.json` last, as the repository publishes:
  until then a box sees nothing new.
- `recover` undoes an attack so that a box which trusted part of it (TUF stores each verified
  role before checking the next) verifies the repository again; see there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Timestamp

from backoffice.fleet_metadata import rotated_root, signed_by, stored_target_name
from backoffice.fleet_repo import TIMESTAMP_FILE, FleetRepository, FleetSigners
from backoffice.fleet_trust import KnownTargets
from config.fleet_targets import FleetCustom

SNAPSHOT_SUFFIX = ".snapshot.json"
TARGETS_SUFFIX = ".targets.json"
ONLINE_LIFETIME = timedelta(days=1)


def plant(path: Path, data: bytes) -> None:
    """Replace `path` atomically: a hidden file beside it, renamed over it (the back office never
    serves a name starting with '.', so the half-written file is never visible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hidden = path.with_name(f".{path.name}.planting")
    hidden.write_bytes(data)
    hidden.replace(path)


def extended_expiry(metadata_bytes: bytes, days: int = 30) -> bytes:
    """The same timestamp with a later expiry and its old signature: an altered file."""
    timestamp = Metadata[Timestamp].from_bytes(metadata_bytes)
    timestamp.signed.expires += timedelta(days=days)
    return timestamp.to_bytes()


def sign_targets_unchecked(
    repo: FleetRepository,
    documents: Mapping[str, tuple[bytes, FleetCustom]],
    signer: Signer,
) -> int:
    """A new targets version holding `documents`, signed by `signer` alone, without the
    repository's checks (serial, path/custom agreement, size, key). Not yet published: a box sees
    it only after a snapshot and timestamp name it. Returns the targets version."""
    targets = repo.targets().signed
    for target_path, (data, custom) in documents.items():
        target = TargetFile.from_data(target_path, data, ["sha256"])
        target.unrecognized_fields["custom"] = custom.to_custom()
        targets.targets[target_path] = target
        plant(repo.targets_dir / stored_target_name(target), data)
    targets.version += 1
    metadata = signed_by(targets, [signer])
    plant(repo.metadata_dir / f"{targets.version}{TARGETS_SUFFIX}", metadata.to_bytes())
    return targets.version


def publish_unchecked(
    repo: FleetRepository,
    snapshot_signer: Signer,
    timestamp_signer: Signer,
    *,
    now: datetime,
    served_snapshot: bytes | None = None,
) -> int:
    """Snapshot and timestamp signed with the online keys over whatever targets version is newest
    (the repository itself refuses to publish a badly signed targets): what a compromised back
    office can do. With `served_snapshot`, those bytes are stored under the new snapshot's name
    while the timestamp names the real one: mix-and-match. Returns the timestamp version."""
    targets_version = _newest(repo, TARGETS_SUFFIX)
    targets_bytes = (repo.metadata_dir / f"{targets_version}{TARGETS_SUFFIX}").read_bytes()
    old = Metadata[Timestamp].from_bytes((repo.metadata_dir / TIMESTAMP_FILE).read_bytes()).signed
    snapshot_version = max(old.snapshot_meta.version, _newest(repo, SNAPSHOT_SUFFIX)) + 1
    snapshot = Snapshot(
        version=snapshot_version,
        expires=now + ONLINE_LIFETIME,
        meta={"targets.json": MetaFile.from_data(targets_version, targets_bytes, ["sha256"])},
    )
    snapshot_bytes = signed_by(snapshot, [snapshot_signer]).to_bytes()
    snapshot_path = repo.metadata_dir / f"{snapshot_version}{SNAPSHOT_SUFFIX}"
    plant(snapshot_path, snapshot_bytes if served_snapshot is None else served_snapshot)
    timestamp = Timestamp(
        version=old.version + 1,
        expires=now + ONLINE_LIFETIME,
        snapshot_meta=MetaFile.from_data(snapshot_version, snapshot_bytes, ["sha256"]),
    )
    plant(repo.metadata_dir / TIMESTAMP_FILE, signed_by(timestamp, [timestamp_signer]).to_bytes())
    return timestamp.version


def plant_root(
    repo: FleetRepository,
    signers: Sequence[Signer],
    *,
    now: datetime,
    role_keys: Mapping[str, Sequence[Key]] | None = None,
    lifetime: timedelta = timedelta(days=1),
) -> int:
    """The next root version (renewed, or with new keys for the roles in `role_keys`) signed by
    exactly `signers`, whatever either threshold says. Returns its version."""
    root = rotated_root(
        repo.root().signed, role_keys=role_keys or {}, thresholds={}, now=now, lifetime=lifetime
    )
    plant(repo.metadata_dir / f"{root.version}.root.json", signed_by(root, signers).to_bytes())
    return root.version


def older_snapshot(repo: FleetRepository) -> bytes:
    """The snapshot before the one the current timestamp names (validly signed, outdated)."""
    timestamp = Metadata[Timestamp].from_bytes((repo.metadata_dir / TIMESTAMP_FILE).read_bytes())
    version = timestamp.signed.snapshot_meta.version - 1
    return (repo.metadata_dir / f"{version}{SNAPSHOT_SUFFIX}").read_bytes()


# ---------------------------------------------------------------------------- recovery


def repository_files(repo: FleetRepository) -> dict[Path, bytes]:
    """Every file the back office serves from `repo` (hidden files excluded), with its bytes."""
    return {
        path: path.read_bytes()
        for directory in (repo.metadata_dir, repo.targets_dir)
        for path in directory.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def recover(
    repo: FleetRepository, before: Mapping[Path, bytes], signers: FleetSigners, *, now: datetime
) -> int:
    """Undo an attack staged since `repository_files` gave `before`, then publish. Returns the
    timestamp version a box must reach to have verified the recovered repository.

    A box may have stored what the attacker published with valid keys (ngclient persists each
    role once verified: a timestamp, a snapshot, the targets version that snapshot names), and
    TUF refuses any of them going back. So:
    1. files the attack created are removed, except snapshot versions: a box may trust one, and
       the next snapshot must be numbered above it;
    2. files it changed get their bytes back, except a timestamp of a higher version (the next
       one must exceed it);
    3. the admin re-signs the legitimate targets until its version reaches the highest the
       attacker wrote (a trusted snapshot may name that version);
    4. the back office publishes: timestamp last, as always.
    """
    after = repository_files(repo)
    created = after.keys() - before.keys()
    attacker_targets = max(
        (_version(path) for path in created if _is_metadata(repo, path, TARGETS_SUFFIX)),
        default=0,
    )
    for path in created:
        if not _is_metadata(repo, path, SNAPSHOT_SUFFIX):
            path.unlink()
    for path, data in before.items():
        if after.get(path) != data and not _box_may_trust_newer(path, data, after[path]):
            plant(path, data)
    if repo.trust is not None:
        # The admin, having investigated, takes the restored targets as the ones to build on:
        # an attack may have made the admin's own tool sign a version that is gone now, which
        # the trust would otherwise (rightly) call a rollback.
        newest = _newest(repo, TARGETS_SUFFIX)
        data = (repo.metadata_dir / f"{newest}{TARGETS_SUFFIX}").read_bytes()
        repo.trust.targets = KnownTargets.of(newest, data)
    while repo.targets().signed.version < attacker_targets:
        repo.sign_targets(signers.targets, now=now)
    return repo.publish(signers.snapshot, signers.timestamp, now=now)


def _box_may_trust_newer(path: Path, legitimate: bytes, planted: bytes) -> bool:
    """A planted timestamp of a higher version: a box may have stored it (it verifies it before
    refusing what it names), so it stays and the next one is numbered above it."""
    return path.name == TIMESTAMP_FILE and _timestamp_version(planted) > _timestamp_version(
        legitimate
    )


def _is_metadata(repo: FleetRepository, path: Path, suffix: str) -> bool:
    return path.parent == repo.metadata_dir and path.name.endswith(suffix)


def _version(path: Path) -> int:
    return int(path.name.split(".")[0])


def _newest(repo: FleetRepository, suffix: str) -> int:
    return max(_version(path) for path in repo.metadata_dir.glob(f"*{suffix}"))


def _timestamp_version(data: bytes) -> int:
    return Metadata[Timestamp].from_bytes(data).signed.version
