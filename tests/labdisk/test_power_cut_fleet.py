"""Fleet trust through a real power cut (issue 14): the TUF metadata python-tuf's ngclient
verified, and the trust root `mvb pair` installed, survive a labdisk cut in both modes; a box
whose metadata was torn anyway starts again from its durable trust root and says so.

The TUF repository lives outside the card (it is the back office's); the box's metadata
directory is on the labdisk mount. ext4's zero-length case needs another file's fsync after the
check (any recording box makes one within a second): `unrelated_fsync`.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root, Timestamp

from backoffice.fleet_repo import init_repository, load_fleet_signers
from common.alarms import Alarms
from common.durable import make_dirs
from config.fleet_client import FleetConfigClient, install_trust_root
from config.fleet_store import PAIRED_ROOT_FILE, NoTrustRoot, trusted_root
from config.fleet_targets import AppliedState, box_target_path
from config.local import parse_config
from gateway.fleet_apply import ConfigSlots, FleetApplier
from gateway.fleet_sync import FleetSync
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from tests.config.test_fleet_client import BOX, DOC, Fleet
from tests.labdisk.conftest import MakeDisk
from tests.labdisk.test_labdisk import wait_for_stall, write_file

pytestmark = pytest.mark.root

ROLE_FILES = ("root.json", "timestamp.json", "snapshot.json", "targets.json")


def make_fleet(tmp_path: Path) -> Fleet:
    repo = init_repository(tmp_path / "repo", tmp_path / "keys", now=datetime.now(UTC))
    return Fleet(repo, load_fleet_signers(tmp_path / "keys"), tmp_path)


def rotate_root(fleet: Fleet) -> None:
    """Root v2 (signed by the old threshold and the new), so ngclient writes root_history."""
    new_root_keys = [CryptoSigner.generate_ecdsa() for _ in range(3)]
    fleet.repo.rotate_root(
        [*fleet.signers.root[:2], *new_root_keys[:2]],
        role_keys={Root.type: [signer.public_key for signer in new_root_keys]},
        now=datetime.now(UTC),
    )
    fleet.publish()


def unrelated_fsync(card: Path) -> None:
    write_file(card / "unrelated", b"x", fsync=True)  # ext4: commits the whole journal


def root_version(metadata: Path) -> int:
    return Metadata[Root].from_bytes((metadata / "root.json").read_bytes()).signed.version


@pytest.mark.parametrize("mode", ["strict", "ext4"])
def test_the_metadata_of_a_fleet_check_survives_a_cut_right_after_it(
    make_disk: MakeDisk, tmp_path: Path, mode: str
) -> None:
    disk = make_disk(mode)
    card = tmp_path / "card"
    metadata = card / "state" / "fleet-metadata"
    make_dirs(metadata.parent)
    fleet = make_fleet(tmp_path)
    install_trust_root(metadata, fleet.repo.trust_root_bytes())
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    rotate_root(fleet)
    assert FleetConfigClient(metadata, BOX, (), fleet.link, AppliedState()).check() is not None
    unrelated_fsync(card)

    disk.cut()

    for name in ROLE_FILES:
        assert (metadata / name).stat().st_size > 0, f"{name} is empty after the cut"
    assert root_version(metadata) == 2, "the verified rotation was lost"
    timestamp = Metadata[Timestamp].from_bytes((metadata / "timestamp.json").read_bytes())
    assert timestamp.signed.version >= 1
    again = FleetConfigClient(metadata, BOX, (), fleet.link, AppliedState())
    document = again.check()  # the box after the restart: same trust, same document
    assert document is not None
    assert document.document == DOC
    assert again.repaired is None


@pytest.mark.parametrize("mode", ["strict", "ext4"])
def test_a_cut_right_after_pairing_keeps_the_trust_root(
    make_disk: MakeDisk, tmp_path: Path, mode: str
) -> None:
    """`mvb pair` installs the root in a fleet-metadata/ it creates: both the directory's entry
    in the state directory and the files in it must be durable when it returns."""
    disk = make_disk(mode)
    card = tmp_path / "card"
    make_dirs(card / "state")
    fleet = make_fleet(tmp_path)
    metadata = card / "state" / "fleet-metadata"

    assert install_trust_root(metadata, fleet.repo.trust_root_bytes()) == 1
    disk.cut()

    assert (metadata / "root.json").read_bytes() == fleet.repo.trust_root_bytes()
    assert (metadata / PAIRED_ROOT_FILE).read_bytes() == fleet.repo.trust_root_bytes()


def test_torn_metadata_falls_back_to_the_paired_root(make_disk: MakeDisk, tmp_path: Path) -> None:
    """A box torn before this discipline (0-byte root.json and timestamp.json) checks again from
    the root installed at pairing, walks the rotation again, and repairs its files."""
    make_disk("ext4")
    metadata = tmp_path / "card" / "state" / "fleet-metadata"
    make_dirs(metadata.parent)
    fleet = make_fleet(tmp_path)
    install_trust_root(metadata, fleet.repo.trust_root_bytes())
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    rotate_root(fleet)
    assert FleetConfigClient(metadata, BOX, (), fleet.link, AppliedState()).check() is not None
    for name in ("root.json", "timestamp.json", "root_history/2.root.json"):
        (metadata / name).write_bytes(b"")

    client = FleetConfigClient(metadata, BOX, (), fleet.link, AppliedState())
    document = client.check()

    assert document is not None
    assert document.document == DOC
    assert client.repaired is not None
    assert PAIRED_ROOT_FILE in client.repaired
    assert root_version(metadata) == 2  # the chain walked again, root.json written whole
    again = FleetConfigClient(metadata, BOX, (), fleet.link, AppliedState())
    assert again.check() is not None
    assert again.repaired is None


def test_no_usable_root_at_all_is_a_refusal_that_says_pair_again(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    metadata = tmp_path / "fleet-metadata"
    install_trust_root(metadata, fleet.repo.trust_root_bytes())
    (metadata / "root.json").write_bytes(b"")
    (metadata / PAIRED_ROOT_FILE).write_bytes(b"{}")
    client = FleetConfigClient(metadata, BOX, (), fleet.link, AppliedState())
    with pytest.raises(NoTrustRoot, match="pair the box again"):
        client.check()


async def test_the_fleet_sync_alarms_and_audits_a_repair(tmp_path: Path) -> None:
    """Through the sync's push (a bundle: no link needed): sticky alarm, audit entry."""
    fleet = make_fleet(tmp_path)
    state = tmp_path / "state"
    metadata = state / "fleet-metadata"
    install_trust_root(metadata, fleet.repo.trust_root_bytes())
    fleet.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    (metadata / "root.json").write_bytes(b"")  # torn by a cut
    device = DeviceKey.load_or_create(state)
    audit = AuditLog.open(state / "audit.jsonl", device)
    alarms = Alarms()
    config = parse_config({"box": {"recipient_keys": ["r.pub"], "device_serial": BOX}}, "b.toml")
    sync = FleetSync(
        state_dir=state,
        metadata_dir=metadata,
        box_id=BOX,
        groups=(),
        back_office=None,
        applier=FleetApplier(config, _NoTarget(), ConfigSlots(state), [], settle_s=0),
        audit=audit,
        alarms=alarms,
        sign=device.sign,
        device_public_pem=device.public_pem(),
    )
    try:
        await sync.push(fleet.repo.export_bundle([box_target_path(BOX)]))
        assert "root.json unusable" in (alarms.get("fleet_metadata") or "")
        events = (state / "audit.jsonl").read_text()
        assert events.count('"config.metadata_repaired"') == 1
        assert root_version(metadata) == 1
        assert (metadata / "root.json").stat().st_size > 0
    finally:
        alarms.close()
        audit.close()


class _NoTarget:
    def hand_out(self, effective: object) -> None:
        return None


@pytest.mark.parametrize("stalled_unlink", [0, 1, 2, 3])
def test_a_re_pair_cut_at_any_step_leaves_a_trust_root(
    make_disk: MakeDisk, tmp_path: Path, stalled_unlink: int
) -> None:
    """Found by the fleet torture: a re-pair dropped the old root before writing the new one,
    and a cut in between left no root.json and no paired root, only an old history: the box
    stayed paired and could verify nothing. Now the new root replaces the old in place first."""
    disk = make_disk("strict")
    metadata = tmp_path / "card" / "state" / "fleet-metadata"
    make_dirs(metadata.parent)
    old = make_fleet(tmp_path / "old")
    install_trust_root(metadata, old.repo.trust_root_bytes())
    old.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    assert FleetConfigClient(metadata, BOX, (), old.link, AppliedState()).check() is not None
    new = make_fleet(tmp_path / "new")
    disk.stall(5.0, ops=["unlink"], after=stalled_unlink, times=1)

    def re_pair() -> None:
        with contextlib.suppress(OSError):  # the cut fails the stalled unlink (EIO)
            install_trust_root(metadata, new.repo.trust_root_bytes(), replace=True)

    worker = threading.Thread(target=re_pair)
    worker.start()
    wait_for_stall(disk)
    disk.cut()  # the power goes while that unlink waits
    worker.join(10)

    assert not worker.is_alive()
    trust = trusted_root(metadata)
    assert trust.repaired is None
    assert trust.root_bytes in (old.repo.trust_root_bytes(), new.repo.trust_root_bytes())
    new.add(box_target_path(BOX), DOC, serial=1, boxes=(BOX,))
    fleet = new if trust.root_bytes == new.repo.trust_root_bytes() else old
    assert FleetConfigClient(metadata, BOX, (), fleet.link, AppliedState()).check() is not None
