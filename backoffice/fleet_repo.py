"""The back office's TUF repository of fleet configuration, built with python-tuf's Metadata API.

Roles (docs/fleet-config.md): `root` is held by offline keys with a threshold (2 of 3 by
default); `targets` by the fleet admin, who signs configuration documents; `snapshot` and
`timestamp` by online keys at the back office, which publishes. A box trusts the root it got at
pairing and follows verified root rotations (config/fleet_client.py).

Layout of `repo_dir` (the back office serves it read-only at /fleet/metadata/ and /fleet/targets/):

    metadata/<N>.root.json       every root version, kept forever: boxes walk the chain
    metadata/<N>.targets.json    signed by the targets key
    metadata/<N>.snapshot.json   signed by the snapshot key
    metadata/timestamp.json      signed by the timestamp key; the only file ever replaced
    targets/boxes/<sha256>.<box_id>.toml, targets/groups/<sha256>.<group>.toml

Invariants:
- Nothing is written that a box would refuse for its signatures: every new version is checked
  against the current root's threshold before it is written (a new root: old and new thresholds).
- Versioned files are written once (never overwritten, and whole or not at all);
  `timestamp.json` is replaced atomically and last, so it never names a snapshot that is not on
  disk (consistent snapshots). Every write is durable, directory entry included, before the next
  (common/durable.py).
- `config_serial` grows fleet-wide: a new document's serial exceeds every serial in the current
  targets, so it also grows per target path and per box.
- A target's path and its custom fields agree: `boxes/<id>.toml` names box `id`,
  `groups/<g>.toml` names group `g`. No key serves two roles.
- Time comes in as `now`; only `FleetRepository` methods and the key helpers touch files.
- Nothing is signed on top of what the admin's trust does not vouch for: every method that
  signs (`add_config`, `sign_targets`, `publish`, `rotate_root`) and every read it builds on
  (`signed_document`, `next_config_serial`) first verifies the repository on disk against the
  admin's own trusted root (`AdminTrust`, backoffice/fleet_trust.py): the root chain, the
  targets (signature threshold, no rollback), the snapshot and timestamp it numbers after.
  `root()` and `targets()` read the disk unverified: for serving and inspection only. A
  repository opened without a trust can serve, never sign.

The rules each signed version must satisfy (roots, thresholds, target files) are pure, in
backoffice/fleet_metadata.py; this module holds the keys, the files and the order of writes
(reading the files on disk: its base class, backoffice/fleet_repo_files.py).
"""

from __future__ import annotations

import copy
import io
import logging
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

# python-tuf and securesystemslib document these names in the modules imported here, which
# re-export them without __all__; mypy --strict (no implicit re-export) needs the ignores.
from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import (
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from backoffice.fleet_keys import ROOT_KEY_COUNT as ROOT_KEY_COUNT
from backoffice.fleet_keys import FleetKeyLocked as FleetKeyLocked
from backoffice.fleet_keys import FleetSigners as FleetSigners
from backoffice.fleet_keys import generate_fleet_keys as generate_fleet_keys
from backoffice.fleet_keys import load_fleet_signers as load_fleet_signers
from backoffice.fleet_keys import load_signer as load_signer
from backoffice.fleet_metadata import (
    HASH_ALGORITHMS,
    FleetRepoError,
    Role,
    SerialNotIncreasing,
    check_threshold,
    config_target_file,
    highest_serial,
    new_root,
    rotated_root,
    signed_by,
    stored_target_name,
)
from backoffice.fleet_release_meta import releases_delegation, releases_meta
from backoffice.fleet_repo_files import TIMESTAMP_FILE as TIMESTAMP_FILE
from backoffice.fleet_repo_files import FleetRepoFiles
from backoffice.fleet_trust import (
    KnownTargets,
    UntrustedMetadata,
    verified_root_chain,
    verified_targets,
)
from backoffice.fleet_trust_io import AdminTrust
from common.durable import atomic_create_bytes, atomic_write_bytes, make_dir, make_dirs
from config.fleet_targets import (
    BUNDLE_METADATA_DIR,
    BUNDLE_TARGETS_DIR,
    MAX_DOCUMENT_BYTES,
    FleetCustom,
    parse_custom,
)
from config.release_targets import RELEASES_ROLE

ROOT_THRESHOLD = 2
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """How long each role's metadata stays valid after it is signed. A short timestamp bounds
    how long a frozen (replayed) repository can fool a box; the back office re-publishes well
    within it."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ConfigDocument:
    """One document to sign: where, its bytes, whom it is for, its serial."""

    target_path: str
    document: bytes
    boxes: tuple[str, ...]
    groups: tuple[str, ...]
    config_serial: int


# ---------------------------------------------------------------------------- the repository


class FleetRepository(FleetRepoFiles):
    """The repository in `repo_dir`. Methods write new versions; they never edit old ones.

    Not safe for concurrent writers: the admin tools run one at a time.
    """

    def __init__(
        self,
        repo_dir: Path,
        *,
        trust: AdminTrust | None = None,
        lifetimes: Lifetimes | None = None,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> None:
        """`trust`: the admin's trusted root (backoffice/fleet_trust_io.py); without it the
        repository can be served and read, never signed."""
        self.repo_dir = repo_dir
        self.trust = trust
        self.metadata_dir = repo_dir / BUNDLE_METADATA_DIR
        self.targets_dir = repo_dir / BUNDLE_TARGETS_DIR
        self.lifetimes = lifetimes or Lifetimes()
        self.max_document_bytes = max_document_bytes
        if not (self.metadata_dir / "1.root.json").exists():
            raise FileNotFoundError(f"{repo_dir} holds no fleet repository (no 1.root.json)")

    @classmethod
    def create(
        cls,
        repo_dir: Path,
        signers: FleetSigners,
        *,
        now: datetime,
        root_threshold: int = ROOT_THRESHOLD,
        lifetimes: Lifetimes | None = None,
        trust_dir: Path | None = None,
    ) -> FleetRepository:
        """Write root v1 (signed by all root keys), empty targets v1, and publish them. The
        repository trusts what it just signed: kept in `trust_dir` (the admin's trust, see
        AdminTrust) or in memory."""
        lifetimes = lifetimes or Lifetimes()
        metadata_dir = repo_dir / BUNDLE_METADATA_DIR
        if metadata_dir.exists() and any(metadata_dir.iterdir()):
            raise FileExistsError(f"{metadata_dir} is not empty; refusing to re-create a fleet")
        make_dirs(metadata_dir)
        make_dir(repo_dir / BUNDLE_TARGETS_DIR, exist_ok=True)
        role_keys = {
            Root.type: [signer.public_key for signer in signers.root],
            Targets.type: [signers.targets.public_key],
            Snapshot.type: [signers.snapshot.public_key],
            Timestamp.type: [signers.timestamp.public_key],
        }
        root = new_root(role_keys, {Root.type: root_threshold}, now=now, lifetime=lifetimes.root)
        root_metadata = signed_by(root, signers.root)
        check_threshold(root, Root.type, root_metadata)
        _write_once(metadata_dir / "1.root.json", root_metadata.to_bytes())
        targets = signed_by(Targets(version=1, expires=now + lifetimes.targets), [signers.targets])
        check_threshold(root, Targets.type, targets)
        targets_bytes = targets.to_bytes()
        _write_once(metadata_dir / "1.targets.json", targets_bytes)
        root_bytes = root_metadata.to_bytes()
        known = KnownTargets.of(1, targets_bytes)
        trust = (
            AdminTrust(root_bytes, known)
            if trust_dir is None
            else AdminTrust.start(trust_dir, root_bytes, known)
        )
        repository = cls(repo_dir, trust=trust, lifetimes=lifetimes)
        repository.publish(signers.snapshot, signers.timestamp, now=now)
        return repository

    # -- reading

    def verified_root(self) -> Metadata[Root]:
        """The newest root a chain from the admin's trusted root reaches (UntrustedMetadata
        otherwise); the trust moves to it."""
        return self._verified_chain()[-1]

    def verified_targets(self) -> Metadata[Targets]:
        """The newest targets, verified against the newest verified root (or exactly the
        targets the admin last signed, signed under a key rotated out since)."""
        return self._verified_targets(self._verified_chain())

    def signed_document(self, target_path: str) -> tuple[bytes, FleetCustom] | None:
        """The document the newest targets sign at `target_path` (published or not) with its
        custom fields, or None when there is none."""
        target = self.verified_targets().signed.targets.get(target_path)
        if target is None:
            return None
        return self._document_of(target_path, target)

    def signed_documents(self) -> dict[str, tuple[bytes, FleetCustom]]:
        """Every document the newest targets sign (published or not), by target path, with its
        custom fields: one verification for all (a rollout reads the whole fleet)."""
        targets = self.verified_targets().signed.targets
        return {path: self._document_of(path, target) for path, target in targets.items()}

    def _document_of(self, target_path: str, target: TargetFile) -> tuple[bytes, FleetCustom]:
        stored = stored_target_name(target)
        document = (self.targets_dir / stored).read_bytes()
        try:
            target.verify_length_and_hashes(document)
        except LengthOrHashMismatchError:
            raise UntrustedMetadata(
                f"targets/{stored} does not match the length and SHA-256 the targets sign"
            ) from None
        return document, parse_custom(target_path, target.custom)

    def next_config_serial(self) -> int:
        """The smallest serial `add_config` accepts now."""
        return highest_serial(self.verified_targets().signed) + 1

    # -- the admin's steps

    def add_config(
        self,
        target_path: str,
        document: bytes,
        *,
        boxes: Sequence[str] = (),
        groups: Sequence[str] = (),
        config_serial: int,
        targets_signer: Signer,
        now: datetime,
    ) -> TargetFile:
        """Add or replace the document at `target_path` and sign a new targets version.

        Not visible to boxes until `publish`. Raises FleetRepoError (bad path, names, size),
        SerialNotIncreasing, ThresholdNotMet (not the fleet's targets key).
        """
        (target,) = self.add_configs(
            [ConfigDocument(target_path, document, tuple(boxes), tuple(groups), config_serial)],
            targets_signer=targets_signer,
            now=now,
        )
        return target

    def add_configs(
        self, documents: Sequence[ConfigDocument], *, targets_signer: Signer, now: datetime
    ) -> list[TargetFile]:
        """Add or replace several documents in ONE new targets version: all of them or none
        reach the boxes (a rollout step, backoffice/rollout_io.py). Serials must exceed every
        serial signed so far and grow in the order given (a later one wins at a box that
        finds two); paths must differ. Raises as `add_config`."""
        if not documents:
            raise FleetRepoError("no document to sign")
        if len({d.target_path for d in documents}) != len(documents):
            raise FleetRepoError("a path is named twice in one signing")
        chain = self._verified_chain()
        current = self._verified_targets(chain).signed
        floor = highest_serial(current)
        made: dict[str, TargetFile] = {}
        for doc in documents:
            if len(doc.document) > self.max_document_bytes:
                raise FleetRepoError(
                    f"{doc.target_path}: {len(doc.document)} bytes; boxes accept at most "
                    f"{self.max_document_bytes}"
                )
            if doc.config_serial <= floor:
                raise SerialNotIncreasing(
                    f"{doc.target_path}: config_serial {doc.config_serial} must exceed "
                    f"{floor}, the highest signed so far"
                )
            floor = doc.config_serial
            custom = FleetCustom(doc.boxes, doc.groups, doc.config_serial)
            made[doc.target_path] = config_target_file(doc.target_path, doc.document, custom)
        for doc in documents:
            self._store_target(made[doc.target_path], doc.document)
        self._write_targets(chain[-1].signed, current, made, targets_signer, now)
        return list(made.values())

    def delegate_releases(
        self, keys: Sequence[Key], threshold: int, targets_signer: Signer, *, now: datetime
    ) -> int:
        """A new targets version delegating `releases/*` to the `releases` role with `keys`
        and `threshold` (replacing an earlier delegation: a new releases key). Returns it."""
        chain = self._verified_chain()
        current = self._verified_targets(chain).signed
        delegation = releases_delegation(keys, threshold)
        return self._write_targets(
            chain[-1].signed, current, {}, targets_signer, now, delegations=delegation
        )

    def sign_targets(self, targets_signer: Signer, *, now: datetime) -> int:
        """Re-sign the current targets as a new version (fresh expiry, or after the targets key
        was rotated). Returns the new version."""
        chain = self._verified_chain()
        current = self._verified_targets(chain).signed
        return self._write_targets(chain[-1].signed, current, {}, targets_signer, now)

    def publish(self, snapshot_signer: Signer, timestamp_signer: Signer, *, now: datetime) -> int:
        """New snapshot (naming the newest targets) and timestamp (naming that snapshot), signed
        by the online keys. Run it after every change and well within the timestamp lifetime.
        Returns the timestamp's version. Refuses, like the admin's steps, to name targets or go
        on from a root the trust does not vouch for; numbers its versions above every snapshot
        and timestamp on disk (a box may hold any of them)."""
        chain = self._verified_chain()
        root = chain[-1].signed
        targets = self._verified_targets(chain)
        targets_version = targets.signed.version
        targets_bytes = self._read(f"{targets_version}.{Targets.type}.json")
        check_threshold(root, Targets.type, targets)  # a retired key's targets: re-sign first
        snapshot_version = self._online_version(Snapshot.type) + 1
        snapshot = Snapshot(
            version=snapshot_version,
            expires=now + self.lifetimes.snapshot,
            meta={
                "targets.json": MetaFile.from_data(targets_version, targets_bytes, HASH_ALGORITHMS),
                # the delegated releases role, verified under these targets' delegation
                **releases_meta(self.metadata_dir, targets.signed),
            },
        )
        snapshot_bytes = self._sign_checked(root, snapshot, [snapshot_signer])
        timestamp = Timestamp(
            version=self._online_version(Timestamp.type) + 1,
            expires=now + self.lifetimes.timestamp,
            snapshot_meta=MetaFile.from_data(snapshot_version, snapshot_bytes, HASH_ALGORITHMS),
        )
        timestamp_bytes = self._sign_checked(root, timestamp, [timestamp_signer])
        _write_once(self.metadata_dir / f"{snapshot_version}.snapshot.json", snapshot_bytes)
        # Last, and atomically: boxes never see a timestamp naming a snapshot not yet on disk.
        _replace(self.metadata_dir / TIMESTAMP_FILE, timestamp_bytes)
        return timestamp.version

    def rotate_root(
        self,
        signers: Sequence[Signer],
        *,
        role_keys: Mapping[str, Sequence[Key]] | None = None,
        thresholds: Mapping[str, int] | None = None,
        now: datetime,
    ) -> int:
        """Write the next root version: new keys for the roles in `role_keys`, new thresholds.

        `signers` MUST meet the threshold of the current root AND of the new one (a box accepts
        nothing less); otherwise ThresholdNotMet and nothing is written. With no changes this
        just renews the root's expiry. After rotating the targets key, `sign_targets` with the
        new key; after rotating an online key, `publish` with it. Returns the new version.
        """
        current = self.verified_root().signed
        root = rotated_root(
            current,
            role_keys=role_keys or {},
            thresholds=thresholds or {},
            now=now,
            lifetime=self.lifetimes.root,
        )
        metadata = signed_by(root, signers)
        check_threshold(current, Root.type, metadata)
        check_threshold(root, Root.type, metadata)
        _write_once(self.metadata_dir / f"{root.version}.root.json", metadata.to_bytes())
        return root.version

    def export_bundle(self, target_paths: Sequence[str]) -> bytes:
        """A push bundle: an uncompressed POSIX tar of the published metadata (every root, the
        timestamp, its snapshot and targets) and the named documents, for a box without a link.
        Name only the documents the box needs: a bundle on a USB stick may get lost."""
        timestamp_bytes = self._read(TIMESTAMP_FILE)
        snapshot_meta = Metadata[Timestamp].from_bytes(timestamp_bytes).signed.snapshot_meta
        snapshot_name = f"{snapshot_meta.version}.snapshot.json"
        snapshot_bytes = self._read(snapshot_name)
        targets_meta = Metadata[Snapshot].from_bytes(snapshot_bytes).signed.meta["targets.json"]
        targets_name = f"{targets_meta.version}.targets.json"
        targets_bytes = self._read(targets_name)
        published = Metadata[Targets].from_bytes(targets_bytes).signed.targets
        members = {
            f"{BUNDLE_METADATA_DIR}/{name}": self._read(name)
            for name in (f"{v}.root.json" for v in self._versions(Root.type))
        }
        members[f"{BUNDLE_METADATA_DIR}/{TIMESTAMP_FILE}"] = timestamp_bytes
        members[f"{BUNDLE_METADATA_DIR}/{snapshot_name}"] = snapshot_bytes
        members[f"{BUNDLE_METADATA_DIR}/{targets_name}"] = targets_bytes
        releases_meta_file = (
            Metadata[Snapshot].from_bytes(snapshot_bytes).signed.meta.get(f"{RELEASES_ROLE}.json")
        )
        if releases_meta_file is not None:  # the published releases, and what they sign
            releases_name = f"{releases_meta_file.version}.{RELEASES_ROLE}.json"
            releases_bytes = self._read(releases_name)
            members[f"{BUNDLE_METADATA_DIR}/{releases_name}"] = releases_bytes
            published = {**published, **Metadata[Targets].from_bytes(releases_bytes).signed.targets}
        for target_path in target_paths:
            target = published.get(target_path)
            if target is None:
                raise FleetRepoError(f"{target_path} is not in the published targets")
            stored = stored_target_name(target)
            members[f"{BUNDLE_TARGETS_DIR}/{stored}"] = (self.targets_dir / stored).read_bytes()
        return _tar(members)

    # -- private helpers

    def _write_targets(
        self,
        root: Root,
        current: Targets,
        changes: Mapping[str, TargetFile],
        signer: Signer,
        now: datetime,
        delegations: Delegations | None = None,
    ) -> int:
        """The next targets version on `current` (verified) with `changes` (and `delegations`
        when given), signed and checked against `root` (the newest verified); the trust notes
        it."""
        targets = Targets.from_dict(copy.deepcopy(current.to_dict()))
        # Above every targets version a snapshot ever named: a box may have stored one that is
        # gone from disk since (a thief's, signed with a stolen key, moved out as evidence), and
        # ngclient refuses a snapshot naming a lower one.
        targets.version = max(current.version, self._published_targets_version()) + 1
        targets.expires = now + self.lifetimes.targets
        targets.targets.update(changes)
        if delegations is not None:
            targets.delegations = delegations
        data = self._sign_checked(root, targets, [signer])
        _write_once(self.metadata_dir / f"{targets.version}.targets.json", data)
        self._require_trust().note_targets(KnownTargets.of(targets.version, data))
        return targets.version

    def _require_trust(self) -> AdminTrust:
        if self.trust is None:
            raise FleetRepoError(
                f"{self.repo_dir} was opened without the admin's trusted root: it can be "
                "served, not signed (pass --trust)"
            )
        return self.trust

    def _verified_chain(self) -> list[Metadata[Root]]:
        """The verified root chain from the trust to the newest root on disk; the trust moves
        to its head."""
        trust = self._require_trust()
        on_disk = {
            version: self._read(f"{version}.root.json") for version in self._versions("root")
        }
        chain = verified_root_chain(trust.root_bytes, on_disk)
        newest = on_disk[chain[-1].signed.version]
        if newest != trust.root_bytes:
            trust.advance_root(newest)
        return chain

    def _verified_targets(self, chain: list[Metadata[Root]]) -> Metadata[Targets]:
        """The newest targets if the trust vouches for it (a targets key rotated out since may
        have signed it only if it is exactly the one the trust knows); the trust notes it."""
        trust = self._require_trust()
        version = self._newest_version(Targets.type)
        data = self._read(f"{version}.{Targets.type}.json")
        targets = verified_targets(chain, version, data, trust.targets, allow_retired_key=True)
        trust.note_targets(KnownTargets.of(version, data))
        return targets

    @staticmethod
    def _sign_checked(root: Root, signed: Role, signers: Sequence[Signer]) -> bytes:
        metadata = signed_by(signed, signers)
        check_threshold(root, signed.type, metadata)
        return metadata.to_bytes()

    def _store_target(self, target: TargetFile, document: bytes) -> None:
        path = self.targets_dir / stored_target_name(target)
        if path.exists():
            return  # content-addressed: the same name holds the same bytes
        make_dirs(path.parent)
        _write_once(path, document)


def init_repository(
    repo_dir: Path,
    keys_dir: Path,
    *,
    now: datetime,
    root_key_count: int = ROOT_KEY_COUNT,
    root_threshold: int = ROOT_THRESHOLD,
    lifetimes: Lifetimes | None = None,
    trust_dir: Path | None = None,
    passphrase: str | None = None,
) -> FleetRepository:
    """Generate the fleet's keys into `keys_dir` and create the repository in `repo_dir`; the
    admin's trust (root v1, targets v1) into `trust_dir` when given; the root and targets keys
    encrypted with `passphrase` when given.

    Do this on an offline machine, then move each root key to its own offline medium and the
    targets key, with the trust, to the fleet admin; only snapshot.key and timestamp.key go to
    the back office (with a trust of its own: `config trust --root`).
    """
    signers = generate_fleet_keys(keys_dir, root_key_count=root_key_count, passphrase=passphrase)
    return FleetRepository.create(
        repo_dir,
        signers,
        now=now,
        root_threshold=root_threshold,
        lifetimes=lifetimes,
        trust_dir=trust_dir,
    )


# ---------------------------------------------------------------------------- file helpers


def _write_once(path: Path, data: bytes) -> None:
    """Create `path` with `data`; a versioned file that exists is never overwritten."""
    atomic_create_bytes(path, data, mode=0o644)


def _replace(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, mode=0o644)


def _tar(members: Mapping[str, bytes]) -> bytes:
    """A reproducible uncompressed tar: sorted names, no owners, mtime 0."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            info.mode = 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(members[name]))
    return buffer.getvalue()
