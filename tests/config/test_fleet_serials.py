"""config_serial is bounded and leaves room for recovery (issue 13, item 4).

As found: a correctly signed `config_serial` of 2**63-1 wedged every box for good (no later serial
fits). Now a serial is at most 2**31-1 (the repository refuses to sign more, the box refuses to
take more), and serials are compared only among documents verified under the same targets keys:
a forged top serial signed with a stolen targets key holds only until the root holders rotate
the targets key, after which the box takes the admin's documents again. A real repository on
disk, a real ngclient box client served from it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Targets

from backoffice.fleet_metadata import FleetRepoError
from backoffice.fleet_repo import FleetRepository, FleetSigners, init_repository, load_fleet_signers
from config.fleet_client import FleetConfigClient, install_trust_root
from config.fleet_targets import (
    MAX_CONFIG_SERIAL,
    AppliedState,
    FleetCustom,
    FleetDocument,
    MalformedCustom,
    SerialRollback,
    box_target_path,
    parse_custom,
)
from tests.config.test_fleet_client import RepoLink
from tests.config.tuf_attacks import publish_unchecked, sign_targets_unchecked

BOX = "MVB-TEST-0001"
PATH = box_target_path(BOX)
GOOD = b"[recording]\nprerecord_s = 60\n"
NEWER = b"[recording]\nprerecord_s = 90\n"
WEDGE = b"[recording]\nprerecord_s = 5\n"


def _now() -> datetime:
    return datetime.now(UTC)


def test_the_bound_is_2_to_the_31_minus_1() -> None:
    assert MAX_CONFIG_SERIAL == 2**31 - 1
    assert parse_custom(PATH, {"boxes": [BOX], "config_serial": 2**31 - 1}).config_serial == (
        2**31 - 1
    )
    for serial in (2**31, 2**63 - 1):
        with pytest.raises(MalformedCustom, match="out of range"):
            parse_custom(PATH, {"boxes": [BOX], "config_serial": serial})


KEYS_A = ("a" * 64,)
KEYS_B = ("b" * 64,)


def _document(serial: int, keys: tuple[str, ...], data: bytes = GOOD) -> FleetDocument:
    return FleetDocument(PATH, serial, hashlib.sha256(data).hexdigest(), (BOX,), (), data, keys)


def test_serials_are_ordered_within_one_targets_key_and_start_over_with_a_new_one() -> None:
    wedged = AppliedState().after_applying(_document(MAX_CONFIG_SERIAL, KEYS_A, WEDGE))
    assert wedged.targets_keys == KEYS_A
    with pytest.raises(SerialRollback):
        wedged.after_applying(_document(7, KEYS_A))
    assert wedged.in_epoch(KEYS_A) is wedged
    assert wedged.in_epoch(KEYS_B) == AppliedState(targets_keys=KEYS_B)
    recovered = wedged.after_applying(_document(7, KEYS_B))
    assert (recovered.config_serial, recovered.targets_keys) == (7, KEYS_B)
    # A state from before keys were kept orders every document, whatever its keys.
    legacy = AppliedState(9, "0" * 64, PATH)
    with pytest.raises(SerialRollback):
        legacy.after_applying(_document(7, KEYS_B))


def test_the_applied_state_keeps_its_keys_and_reads_states_without_them() -> None:
    state = AppliedState(3, "1" * 64, PATH, KEYS_A)
    assert AppliedState.from_json(state.to_json()) == state
    old = '{"format": 1, "config_serial": 3, "sha256": "' + "1" * 64 + '", "target_path": "x"}'
    assert AppliedState.from_json(old) == AppliedState(3, "1" * 64, "x", ())


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[FleetRepository, FleetSigners]:
    repo = init_repository(tmp_path / "repo", tmp_path / "keys", now=_now())
    return repo, load_fleet_signers(tmp_path / "keys")


def _client(repo: FleetRepository, tmp_path: Path, state: AppliedState) -> FleetConfigClient:
    metadata = tmp_path / "box"
    if not (metadata / "root.json").exists():
        install_trust_root(metadata, (repo.metadata_dir / "1.root.json").read_bytes())
    return FleetConfigClient(metadata, BOX, (), RepoLink(repo), state)


def test_the_repository_refuses_to_sign_beyond_the_bound(
    fleet: tuple[FleetRepository, FleetSigners],
) -> None:
    repo, signers = fleet
    with pytest.raises(FleetRepoError, match="out of range"):
        repo.add_config(
            PATH, GOOD, boxes=(BOX,), config_serial=2**31, targets_signer=signers.targets,
            now=_now(),
        )  # fmt: skip


def test_a_box_refuses_a_correctly_signed_serial_beyond_the_bound(
    fleet: tuple[FleetRepository, FleetSigners], tmp_path: Path
) -> None:
    repo, signers = fleet
    sign_targets_unchecked(
        repo, {PATH: (WEDGE, FleetCustom((BOX,), (), 2**63 - 1))}, signers.targets
    )
    publish_unchecked(repo, signers.snapshot, signers.timestamp, now=_now())
    with pytest.raises(MalformedCustom, match="out of range"):
        _client(repo, tmp_path, AppliedState()).check()


def test_a_stolen_key_at_the_bound_wedges_the_box_only_until_the_targets_key_rotates(
    fleet: tuple[FleetRepository, FleetSigners], tmp_path: Path
) -> None:
    repo, signers = fleet
    repo.add_config(PATH, GOOD, boxes=(BOX,), config_serial=1, targets_signer=signers.targets,
                    now=_now())  # fmt: skip
    repo.publish(signers.snapshot, signers.timestamp, now=_now())
    client = _client(repo, tmp_path, AppliedState())
    state = client.record_applied(_applied(client))
    # The thief holds the targets key and the server: serial 2**31-1, correctly signed.
    thief = FleetRepository(repo.repo_dir)
    for serial in (MAX_CONFIG_SERIAL - 1, MAX_CONFIG_SERIAL):  # targets v3, v4, each published
        forged = {PATH: (WEDGE + str(serial).encode(), FleetCustom((BOX,), (), serial))}
        sign_targets_unchecked(thief, forged, signers.targets)
        publish_unchecked(thief, signers.snapshot, signers.timestamp, now=_now())
        client = _client(repo, tmp_path, state)
        state = client.record_applied(_applied(client))
    client = _client(repo, tmp_path, state)
    assert client.check() is None, "wedged: nothing above the bound"
    assert state.config_serial == MAX_CONFIG_SERIAL

    # Recovery: the forged targets go (the admin's tools would not build on them anyway), the
    # root holders rotate the targets key, the admin signs with it; the box follows.
    for version in (3, 4):
        (repo.metadata_dir / f"{version}.targets.json").unlink()
    new_key = CryptoSigner.generate_ecdsa()
    repo.rotate_root(signers.root[:2], role_keys={Targets.type: [new_key.public_key]}, now=_now())
    # Numbered above v4, which the box stored: a snapshot naming less would be a rollback.
    assert repo.sign_targets(new_key, now=_now()) == 5
    repo.add_config(PATH, NEWER, boxes=(BOX,), config_serial=repo.next_config_serial(),
                    targets_signer=new_key, now=_now())  # fmt: skip
    repo.publish(signers.snapshot, signers.timestamp, now=_now())
    client = _client(repo, tmp_path, state)
    taken = _applied(client)
    assert taken.document == NEWER
    assert taken.config_serial == 2
    assert client.record_applied(taken).targets_keys == (new_key.public_key.keyid,)


def _applied(client: FleetConfigClient) -> FleetDocument:
    document = client.check()
    assert document is not None
    return document
