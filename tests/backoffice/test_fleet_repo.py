"""The back office's TUF repository of fleet configuration: keys, rules, publishing, bundles."""

from __future__ import annotations

import hashlib
import io
import re
import stat
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)

from backoffice.fleet_metadata import FleetRepoError, SerialNotIncreasing, ThresholdNotMet
from backoffice.fleet_repo import (
    FleetRepository,
    FleetSigners,
    generate_fleet_keys,
    init_repository,
    load_fleet_signers,
)
from config.fleet_targets import box_target_path, group_target_path

BOX = "MVB-TEST-0001"
GROUP = "h2o"
DOC = b"[recording]\nprerecord_s = 60\n"


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def repo(tmp_path: Path, keys_dir: Path) -> FleetRepository:
    return init_repository(tmp_path / "repo", keys_dir, now=_now())


@pytest.fixture
def signers(repo: FleetRepository, keys_dir: Path) -> FleetSigners:
    return load_fleet_signers(keys_dir)


def _add(
    repo: FleetRepository,
    signers: FleetSigners,
    target_path: str,
    serial: int,
    *,
    boxes: tuple[str, ...] = (),
    groups: tuple[str, ...] = (),
    document: bytes = DOC,
) -> None:
    repo.add_config(
        target_path,
        document,
        boxes=boxes,
        groups=groups,
        config_serial=serial,
        targets_signer=signers.targets,
        now=_now(),
    )


def _metadata_files(repo: FleetRepository) -> set[str]:
    return {path.name for path in repo.metadata_dir.iterdir()}


def test_private_keys_are_0600_in_a_0700_directory_and_never_overwritten(
    repo: FleetRepository, keys_dir: Path
) -> None:
    names = {path.name for path in keys_dir.iterdir()}

    assert names == {
        "root-1.key",
        "root-2.key",
        "root-3.key",
        "targets.key",
        "snapshot.key",
        "timestamp.key",
    }
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    for path in keys_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = (keys_dir / "targets.key").read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_fleet_keys(keys_dir)
    assert (keys_dir / "targets.key").read_bytes() == before


def test_root_holds_a_threshold_of_offline_keys_and_one_key_per_role(
    repo: FleetRepository, signers: FleetSigners
) -> None:
    root = repo.root().signed

    assert root.version == 1
    assert root.consistent_snapshot is True
    assert root.roles[Root.type].threshold == 2
    assert set(root.roles[Root.type].keyids) == {s.public_key.keyid for s in signers.root}
    assert root.roles[Targets.type].keyids == [signers.targets.public_key.keyid]
    assert root.roles[Snapshot.type].keyids == [signers.snapshot.public_key.keyid]
    assert root.roles[Timestamp.type].keyids == [signers.timestamp.public_key.keyid]
    assert repo.trust_root_bytes() == (repo.metadata_dir / "1.root.json").read_bytes()


def test_create_refuses_an_existing_repository(
    repo: FleetRepository, signers: FleetSigners
) -> None:
    with pytest.raises(FileExistsError, match="refusing to re-create"):
        FleetRepository.create(repo.repo_dir, signers, now=_now())


def test_serials_grow_fleet_wide(repo: FleetRepository, signers: FleetSigners) -> None:
    _add(repo, signers, box_target_path(BOX), 5, boxes=(BOX,))

    # Another path with the same or a lower serial would let a box roll back across paths.
    with pytest.raises(SerialNotIncreasing, match="must exceed 5"):
        _add(repo, signers, group_target_path(GROUP), 5, boxes=(BOX,), groups=(GROUP,))
    with pytest.raises(SerialNotIncreasing):
        _add(repo, signers, box_target_path(BOX), 4, boxes=(BOX,))
    assert repo.next_config_serial() == 6
    _add(repo, signers, group_target_path(GROUP), 6, boxes=(BOX,), groups=(GROUP,))
    assert repo.next_config_serial() == 7


@pytest.mark.parametrize(
    ("target_path", "boxes", "groups", "message"),
    [
        ("boxes/MVB-TEST-0001.toml", ("MVB-TEST-0002",), (), "must name 'MVB-TEST-0001'"),
        ("groups/h2o.toml", (BOX,), (), "must name 'h2o' in its groups"),
        ("boxes/../root.toml", ("..",), (), "must be boxes/<box_id>.toml"),
        ("config/MVB-TEST-0001.toml", (BOX,), (), "must be boxes/<box_id>.toml"),
        ("boxes/MVB-TEST-0001.json", (BOX,), (), "must be boxes/<box_id>.toml"),
        ("boxes/a b.toml", ("a b",), (), "must be boxes/<box_id>.toml"),
        ("boxes/MVB-TEST-0001.toml", (BOX, "bad name"), (), "invalid name"),
    ],
)
def test_path_and_custom_fields_must_agree(
    repo: FleetRepository,
    signers: FleetSigners,
    target_path: str,
    boxes: tuple[str, ...],
    groups: tuple[str, ...],
    message: str,
) -> None:
    before = _metadata_files(repo)

    with pytest.raises(FleetRepoError, match=re.escape(message)):
        _add(repo, signers, target_path, 1, boxes=boxes, groups=groups)
    assert _metadata_files(repo) == before


def test_oversized_document_is_refused(repo: FleetRepository, signers: FleetSigners) -> None:
    with pytest.raises(FleetRepoError, match="at most 262144"):
        _add(repo, signers, box_target_path(BOX), 1, boxes=(BOX,), document=b"x" * 262145)


def test_only_the_targets_key_signs_configuration(
    repo: FleetRepository, signers: FleetSigners
) -> None:
    before = _metadata_files(repo)

    with pytest.raises(ThresholdNotMet, match="targets v2"):
        repo.add_config(
            box_target_path(BOX),
            DOC,
            boxes=(BOX,),
            config_serial=1,
            targets_signer=signers.snapshot,
            now=_now(),
        )
    assert _metadata_files(repo) == before


def test_publish_writes_a_consistent_snapshot(repo: FleetRepository, signers: FleetSigners) -> None:
    _add(repo, signers, box_target_path(BOX), 1, boxes=(BOX,))
    assert repo.publish(signers.snapshot, signers.timestamp, now=_now()) == 2

    timestamp_bytes = (repo.metadata_dir / "timestamp.json").read_bytes()
    snapshot_meta = Metadata[Timestamp].from_bytes(timestamp_bytes).signed.snapshot_meta
    snapshot_bytes = (repo.metadata_dir / f"{snapshot_meta.version}.snapshot.json").read_bytes()
    assert snapshot_meta.hashes == {"sha256": hashlib.sha256(snapshot_bytes).hexdigest()}
    targets_meta = Metadata[Snapshot].from_bytes(snapshot_bytes).signed.meta["targets.json"]
    targets_bytes = (repo.metadata_dir / f"{targets_meta.version}.targets.json").read_bytes()
    assert targets_meta.hashes == {"sha256": hashlib.sha256(targets_bytes).hexdigest()}
    target = Metadata[Targets].from_bytes(targets_bytes).signed.targets[box_target_path(BOX)]
    assert target.custom == {"boxes": [BOX], "groups": [], "config_serial": 1}
    digest = hashlib.sha256(DOC).hexdigest()
    assert (repo.targets_dir / "boxes" / f"{digest}.{BOX}.toml").read_bytes() == DOC


def test_publish_needs_the_online_keys(repo: FleetRepository, signers: FleetSigners) -> None:
    with pytest.raises(ThresholdNotMet, match="timestamp"):
        repo.publish(signers.snapshot, signers.targets, now=_now())


def test_targets_key_rotation_needs_a_resign_before_publishing(
    repo: FleetRepository, signers: FleetSigners
) -> None:
    new_targets_key = CryptoSigner.generate_ecdsa()
    repo.rotate_root(
        signers.root[:2], role_keys={Targets.type: [new_targets_key.public_key]}, now=_now()
    )

    # The current targets carry the retired key's signature: boxes would refuse them.
    with pytest.raises(ThresholdNotMet, match="targets"):
        repo.publish(signers.snapshot, signers.timestamp, now=_now())
    with pytest.raises(ThresholdNotMet):
        repo.sign_targets(signers.targets, now=_now())
    repo.sign_targets(new_targets_key, now=_now())
    repo.publish(signers.snapshot, signers.timestamp, now=_now())


def test_root_rotation_needs_the_old_and_the_new_threshold(
    repo: FleetRepository, signers: FleetSigners
) -> None:
    new_root_keys = [CryptoSigner.generate_ecdsa() for _ in range(3)]
    role_keys = {Root.type: [signer.public_key for signer in new_root_keys]}
    before = _metadata_files(repo)

    with pytest.raises(ThresholdNotMet, match="1/2"):
        repo.rotate_root([*new_root_keys, signers.root[0]], role_keys=role_keys, now=_now())
    with pytest.raises(ThresholdNotMet, match="0/2"):
        repo.rotate_root(signers.root, role_keys=role_keys, now=_now())
    assert _metadata_files(repo) == before
    threshold_signers = [*signers.root[:2], *new_root_keys[1:]]
    assert repo.rotate_root(threshold_signers, role_keys=role_keys, now=_now()) == 2
    assert repo.root().signed.version == 2


def test_no_key_may_serve_two_roles(repo: FleetRepository, signers: FleetSigners) -> None:
    with pytest.raises(FleetRepoError, match="serves both"):
        repo.rotate_root(
            signers.root[:2],
            role_keys={Targets.type: [signers.timestamp.public_key]},
            now=_now(),
        )


def test_bundle_holds_the_published_metadata_and_only_the_named_documents(
    repo: FleetRepository, signers: FleetSigners
) -> None:
    _add(repo, signers, box_target_path(BOX), 1, boxes=(BOX,))
    _add(repo, signers, group_target_path(GROUP), 2, boxes=(BOX,), groups=(GROUP,))
    repo.publish(signers.snapshot, signers.timestamp, now=_now())
    _add(repo, signers, box_target_path(BOX), 3, boxes=(BOX,), document=b"staged = 1\n")

    bundle = repo.export_bundle([box_target_path(BOX)])

    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:") as archive:
        names = set(archive.getnames())
    digest = hashlib.sha256(DOC).hexdigest()
    assert names == {
        "metadata/1.root.json",
        "metadata/timestamp.json",
        "metadata/2.snapshot.json",
        "metadata/3.targets.json",  # the published one, not the staged 4.targets.json
        f"targets/boxes/{digest}.{BOX}.toml",
    }
    assert repo.export_bundle([box_target_path(BOX)]) == bundle  # reproducible
    with pytest.raises(FleetRepoError, match="not in the published targets"):
        repo.export_bundle([box_target_path("MVB-TEST-0009")])


@pytest.mark.parametrize(
    "url_path",
    [
        "/fleet/metadata/../../keys/targets.key",
        "/fleet/targets/boxes/../../metadata/1.root.json",
        "/fleet/metadata/",
        "/fleet/metadata/.hidden",
        "/elsewhere/1.root.json",
        "/fleet/metadata/9.root.json",
    ],
)
def test_served_path_stays_inside_the_repository(repo: FleetRepository, url_path: str) -> None:
    assert repo.served_path(url_path) is None


def test_served_path_finds_published_files(repo: FleetRepository) -> None:
    assert repo.served_path("/fleet/metadata/timestamp.json") == (
        repo.metadata_dir / "timestamp.json"
    )
