"""Issue 5's attack list against a running box, over the live pinned link.

One box (`mvb run`, module scope: started once) is paired with a code against the real back
office (`mvb-admin serve`, mutual TLS, pinned) and applies its first signed configuration
(pre-record 30 -> 60 s). Then, attack by attack, the repository the back office serves is made to
present the attack, as someone who owns the back office's storage and its online keys could (and,
where the attack needs it, the admin's targets key: a careless or coerced admin). The box polls
every second. For each attack it must refuse, naming the fault; keep running its last good
configuration (serial and pre-record unchanged); keep capturing; and the back office must never
receive a report of the attack's document. After each attack the repository is recovered
(tests/config/tuf_attacks.py `recover`) and the box is seen to verify it again, so no attack
leaves the client wedged. At the end a legitimate update is applied and reported, the box still
records, and a root rotation signed with the old threshold is followed by a document signed
under the new root, while the retired root keys have lost their power.

The tests of this module run in order on the one box; each attack fails on its own, with the
step it failed at.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, Root, Timestamp

from backoffice.fleet_repo import TIMESTAMP_FILE, FleetRepository, FleetSigners
from config.fleet_targets import FleetCustom, box_target_path
from demo.synthetic import generate_clip
from gateway.pairing_client import fleet_metadata_dir
from storage.audit import AuditEntry, parse_line
from tests.config.tuf_attacks import (
    extended_expiry,
    older_snapshot,
    plant,
    plant_root,
    publish_unchecked,
    recover,
    repository_files,
    sign_targets_unchecked,
)
from tests.gateway.fleet_rig import (
    BOX,
    BackOffice,
    api_post,
    api_status,
    box_config,
    mvb_pair,
    mvb_run,
    publish_document,
    running_box_config,
    start_back_office,
    wait_for,
    write_recipient_pub,
)
from tests.tls_helpers import TestPki

OTHER_BOX = "MVB-0043"
OLDER_DOCUMENT = b"[recording]\nprerecord_s = 45\npostrecord_s = 1\n"
FIRST_DOCUMENT = b"[recording]\nprerecord_s = 60\npostrecord_s = 1\n"
HOSTILE_DOCUMENT = b"[recording]\nprerecord_s = 5\n"
"""What an attack would make the box run: visible at once as the camera's pre-record."""
OUTSIDE_SCHEMA = b'[box]\ncard_dir = "/x"\n'
OVERSIZED = b"# " + b"x" * (300 * 1024) + b"\n"
WAIT_S = 30.0


def _now() -> datetime:
    # python-tuf's client checks expiry against the wall clock; the repository is given `now`.
    return datetime.now(UTC)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class LiveBox:
    """The running box, its back office, and what the test knows the box should be running.

    `good` maps each serial the box applied to its document's SHA-256; `prerecord_s` is what the
    last of them set. `serial_floor` is the highest serial any published document carried,
    attacks included: the admin never reuses one (the box remembers refused serials).
    """

    office: BackOffice
    signers: FleetSigners
    config: Path
    state_dir: Path
    replayed_timestamp: bytes
    prerecord_s: float
    good: dict[int, str] = field(default_factory=dict)
    serial_floor: int = 0

    @property
    def repo(self) -> FleetRepository:
        return self.office.fleet

    @property
    def applied_serial(self) -> int:
        return max(self.good)

    def status(self) -> dict[str, Any]:
        return api_status(self.config)

    def fleet(self) -> dict[str, Any]:
        fleet: dict[str, Any] = self.status()["fleet"]
        return fleet

    def camera(self) -> dict[str, Any]:
        camera: dict[str, Any] = self.status()["cameras"]["dashcam"]
        return camera

    def audit(self) -> list[AuditEntry]:
        lines = (self.state_dir / "audit.jsonl").read_bytes().splitlines()
        return [parse_line(line) for line in lines]

    def trusted(self, name: str) -> bytes:
        """A metadata file the box stored once it had verified it."""
        return (fleet_metadata_dir(self.state_dir) / name).read_bytes()

    def burn_serial(self) -> int:
        self.serial_floor += 1
        return self.serial_floor

    def publish_good(self, document: bytes, prerecord_s: float) -> int:
        """The admin signs a legitimate document and the back office publishes it; the box must
        apply it (then `good` and `prerecord_s` say so)."""
        serial = max(self.repo.next_config_serial(), self.serial_floor + 1)
        publish_document(self.repo, self.signers, document, config_serial=serial)
        self.serial_floor = serial
        self.wait_applied(serial, _sha256(document), prerecord_s)
        return serial

    def wait_applied(self, serial: int, sha256: str, prerecord_s: float) -> None:
        wait_for(lambda: self.fleet()["applied_serial"] == serial, f"serial {serial} applied")
        wait_for(lambda: self.fleet()["reported_serial"] == serial, f"serial {serial} reported")
        self.good[serial] = sha256
        self.prerecord_s = prerecord_s
        camera = self.camera()
        assert camera["prerecord_s"] == prerecord_s, f"serial {serial} is not running: {camera}"
        latest = self.office.reports()[-1]
        assert (latest.box_id, latest.config_serial, latest.sha256) == (BOX, serial, sha256)
        assert latest.outcome == "applied"

    def assert_on_last_good(self) -> None:
        fleet, camera = self.fleet(), self.camera()
        serial, prerecord_s = self.applied_serial, self.prerecord_s
        assert fleet["applied_serial"] == serial, f"not on the last good serial {serial}: {fleet}"
        assert camera["prerecord_s"] == prerecord_s, f"not on the last good pre-record: {camera}"
        assert camera["connected"], f"the camera stopped: {camera}"

    def reported(self, outcome: str = "applied") -> set[tuple[int, str]]:
        """What the box reported to the back office with `outcome` (applied, refused)."""
        reports = self.office.reports()
        return {(r.config_serial, r.sha256) for r in reports if r.outcome == outcome}

    def wait_verified(self) -> None:
        """The box verified what the back office serves now: it stored the served timestamp and
        targets (ngclient stores each role only once verified) and its round ended well."""

        def verified() -> bool:
            fleet = self.fleet()
            return (
                self.trusted("timestamp.json") == self.served(TIMESTAMP_FILE)
                and self.trusted("targets.json") == self.served_targets()
                and fleet["last_check"] == "ok"
                and "fleet_config" not in self.status()["alarms"]
            )

        wait_for(verified, "the box to verify the recovered repository (not wedged)", WAIT_S)

    def served(self, name: str) -> bytes:
        return (self.repo.metadata_dir / name).read_bytes()

    def served_targets(self) -> bytes:
        return self.served(f"{self.repo.targets().signed.version}.targets.json")


@pytest.fixture(scope="module")
def live(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBox]:
    root = tmp_path_factory.mktemp("live")
    recipient_pub = write_recipient_pub(root)
    with start_back_office(pki, root / "office", documents=()) as office:
        # The first timestamp the back office served: older than any the box will see.
        replayed_timestamp = (office.fleet.metadata_dir / TIMESTAMP_FILE).read_bytes()
        signers = office.signers()
        assert publish_document(office.fleet, signers, OLDER_DOCUMENT) == 1
        assert publish_document(office.fleet, signers, FIRST_DOCUMENT) == 2
        box_root = root / "box"
        paired = mvb_pair(box_config(box_root, recipient_pub), office.code())
        assert paired.returncode == 0, paired.stderr
        clip = generate_clip(root / "clip.ts", seconds=3, keyframe_interval_frames=25)
        config = running_box_config(box_root, recipient_pub, clip)
        with mvb_run(config):
            box = LiveBox(office, signers, config, box_root / "state", replayed_timestamp, 30.0)
            # From its local file's 30 s to the highest serial published for it: 2, 60 s.
            box.wait_applied(2, _sha256(FIRST_DOCUMENT), 60.0)
            box.serial_floor = 2
            yield box


# --- the attacks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planted:
    """The document an attack carries."""

    config_serial: int
    sha256: str


@dataclass(frozen=True)
class Attack:
    """`stage` plants the attack in the served repository (returning its document, if it has
    one); the box must refuse it naming `fault` (the error class, or for a document refused when
    applied, "config.refused"), its reason matching the regular expression `detail`."""

    stage: Callable[[LiveBox], Planted | None]
    fault: str
    detail: str

    @property
    def at_apply(self) -> bool:
        return self.fault == "config.refused"


def _forge_targets(live: LiveBox, document: bytes, custom: FleetCustom, *, online: bool) -> Planted:
    """A new targets version with `document` at this box's path, signed by the admin's key or
    (`online`) by the back office's own snapshot key, published with the online keys."""
    signer = live.signers.snapshot if online else live.signers.targets
    sign_targets_unchecked(live.repo, {box_target_path(BOX): (document, custom)}, signer)
    publish_unchecked(live.repo, live.signers.snapshot, live.signers.timestamp, now=_now())
    return Planted(custom.config_serial, _sha256(document))


def _altered_timestamp(live: LiveBox) -> None:
    path = live.repo.metadata_dir / TIMESTAMP_FILE
    plant(path, extended_expiry(path.read_bytes()))  # the signature covers the old expiry


def _root_by_one_key(live: LiveBox) -> None:
    plant_root(live.repo, live.signers.root[:1], now=_now())  # the threshold is 2 of 3


def _targets_by_online_key(live: LiveBox) -> Planted:
    custom = FleetCustom((BOX,), (), live.burn_serial())
    return _forge_targets(live, HOSTILE_DOCUMENT, custom, online=True)


def _replayed_timestamp(live: LiveBox) -> None:
    plant(live.repo.metadata_dir / TIMESTAMP_FILE, live.replayed_timestamp)


def _lower_serial(live: LiveBox) -> Planted:
    # Serial 1, the document the box skipped for serial 2: correctly signed, older.
    return _forge_targets(live, OLDER_DOCUMENT, FleetCustom((BOX,), (), 1), online=False)


def _reused_serial(live: LiveBox) -> Planted:
    custom = FleetCustom((BOX,), (), live.applied_serial)
    return _forge_targets(live, HOSTILE_DOCUMENT, custom, online=False)


def _frozen(live: LiveBox) -> None:
    # The back office's clock stopped three days ago: its new timestamp lived one day.
    live.repo.publish(live.signers.snapshot, live.signers.timestamp, now=_now() - timedelta(days=3))


def _mixed_snapshot(live: LiveBox) -> None:
    # A fresh timestamp served with the snapshot before it, under the new snapshot's name.
    signers = live.signers
    stale = older_snapshot(live.repo)
    publish_unchecked(
        live.repo, signers.snapshot, signers.timestamp, now=_now(), served_snapshot=stale
    )


def _for_another_box(live: LiveBox) -> Planted:
    custom = FleetCustom((OTHER_BOX,), (), live.burn_serial())
    return _forge_targets(live, HOSTILE_DOCUMENT, custom, online=False)


def _oversized(live: LiveBox) -> Planted:
    # Signed through a repository that allows more than the box does.
    generous = FleetRepository(
        live.repo.repo_dir, trust=live.repo.trust, max_document_bytes=1024 * 1024
    )
    serial = live.burn_serial()
    publish_document(generous, live.signers, OVERSIZED, config_serial=serial)
    return Planted(serial, _sha256(OVERSIZED))


def _outside_schema(live: LiveBox) -> Planted:
    serial = live.burn_serial()
    publish_document(live.repo, live.signers, OUTSIDE_SCHEMA, config_serial=serial)
    return Planted(serial, _sha256(OUTSIDE_SCHEMA))


def _rotation_without_old_threshold(live: LiveBox) -> None:
    # Whoever made three new root keys signs with all of them, plus one stolen old root key.
    new_keys = [CryptoSigner.generate_ecdsa() for _ in range(3)]
    plant_root(
        live.repo,
        [*new_keys, live.signers.root[0]],
        role_keys={Root.type: [signer.public_key for signer in new_keys]},
        now=_now(),
        lifetime=timedelta(days=365),
    )


TOO_FEW = "UnsignedMetadataError"
ATTACKS = {
    "bad-signature": Attack(_altered_timestamp, TOO_FEW, "timestamp was signed by 0/1 keys"),
    "too-few-signatures": Attack(_root_by_one_key, TOO_FEW, "root was signed by 1/2 keys"),
    "targets-by-online-key": Attack(
        _targets_by_online_key, TOO_FEW, "targets was signed by 0/1 keys"
    ),
    "metadata-rollback": Attack(
        _replayed_timestamp, "BadVersionNumberError", "New timestamp version 1 must be >="
    ),
    "lower-serial": Attack(_lower_serial, "SerialRollback", "serial 1 is not above the applied 2"),
    "reused-serial": Attack(
        _reused_serial, "SerialRollback", "serial 2 is not above the applied 2"
    ),
    "freeze": Attack(_frozen, "ExpiredMetadataError", "timestamp.json is expired"),
    # The older snapshot is longer (stopped at the signed length), shorter, or as long.
    "mix-and-match": Attack(
        _mixed_snapshot,
        "LengthOrHashMismatchError",
        r"snapshot\.json: \d+ bytes declared|Observed (length|hash) .* does not match",
    ),
    "another-box": Attack(_for_another_box, "WrongBox", f"signed for other boxes, not {BOX}"),
    "oversized": Attack(_oversized, "DocumentTooLarge", "the box accepts at most 262144"),
    "schema-invalid": Attack(_outside_schema, "config.refused", "cannot be set"),
    "rotation-without-old-threshold": Attack(
        _rotation_without_old_threshold, TOO_FEW, "root was signed by 1/2 keys"
    ),
}


def refuses(live: LiveBox, attack: Attack) -> None:
    """Stage `attack`, see the box refuse it and stay as it was, recover, see the box go on."""
    live.assert_on_last_good()
    before = repository_files(live.repo)
    packets_before = live.camera()["packets"]
    audit_before = len(live.audit())
    try:
        planted = attack.stage(live)
        reason = wait_for_refusal(live, attack)
        live.assert_on_last_good()
        assert live.camera()["packets"] > packets_before, "the camera keeps delivering"
        new_audit = live.audit()[audit_before:]
        assert_audited(new_audit, attack, planted)
        if not attack.at_apply:
            assert reason in live.status()["alarms"]["fleet_config"], "the officer sees it"
        assert live.reported() <= set(live.good.items()), "only good serials reported applied"
        if planted is not None:
            assert (planted.config_serial, planted.sha256) not in live.reported()
        if attack.at_apply:
            # A signed document the box refuses to run is reported as refused, with its reason.
            assert planted is not None
            refused = (planted.config_serial, planted.sha256)
            wait_for(lambda: refused in live.reported("refused"), "the refusal's report", WAIT_S)
    finally:
        recover(live.repo, before, live.signers, now=_now())
    live.wait_verified()
    live.assert_on_last_good()


def wait_for_refusal(live: LiveBox, attack: Attack) -> str:
    """The reason the status gives: the last check's for a verification fault, the last
    outcome's for a document refused when applied."""
    key = "last_outcome" if attack.at_apply else "last_check"
    prefix = "refused: " if attack.at_apply else f"refused: {attack.fault}: "

    good_serial, good_prerecord_s = live.applied_serial, live.prerecord_s

    def named() -> bool:
        status = live.status()
        fleet, prerecord_s = status["fleet"], status["cameras"]["dashcam"]["prerecord_s"]
        applied = fleet["applied_serial"]
        assert applied == good_serial, f"the box applied serial {applied}: attack accepted"
        assert prerecord_s == good_prerecord_s, f"pre-record now {prerecord_s}: attack accepted"
        reason = str(fleet[key])
        return reason.startswith(prefix) and re.search(attack.detail, reason) is not None

    wait_for(named, f"the box to refuse, naming {attack.fault} ({attack.detail})", WAIT_S)
    reason: str = live.fleet()[key]
    return reason.removeprefix("refused: ")


def assert_audited(entries: list[AuditEntry], attack: Attack, planted: Planted | None) -> None:
    if attack.at_apply:
        assert planted is not None
        refused = [entry for entry in entries if entry.event == "config.refused"]
        assert [entry.fields["config_serial"] for entry in refused] == [planted.config_serial]
        assert refused[0].fields["sha256"] == planted.sha256
    else:
        rejected = [entry for entry in entries if entry.event == "config.rejected"]
        # Audited once, although the box polled the attack several times (no log growth).
        assert len(rejected) == 1, f"config.rejected {len(rejected)} times: {entries}"
        assert all(str(entry.fields["reason"]).startswith(attack.fault) for entry in rejected)
    assert not any(entry.event == "config.applied" for entry in entries)


@pytest.mark.parametrize("attack", list(ATTACKS.values()), ids=list(ATTACKS))
def test_the_box_refuses_the_attack_and_keeps_its_last_good_configuration(
    live: LiveBox, attack: Attack
) -> None:
    refuses(live, attack)


# --- after the attacks ----------------------------------------------------------------------------


def test_a_legitimate_update_after_the_attacks_is_applied_and_reported(live: LiveBox) -> None:
    live.assert_on_last_good()
    attack_serials = live.serial_floor

    serial = live.publish_good(b"[recording]\nprerecord_s = 90\npostrecord_s = 1\n", 90.0)

    assert serial > attack_serials
    assert live.reported() == set(live.good.items())
    assert live.fleet()["last_outcome"] == "applied"


def test_the_box_still_records_and_uploads(live: LiveBox) -> None:
    uploaded_before = live.status()["uplink"]["uploaded_files"]

    assert api_post(live.config, "/api/record/start") == 200
    wait_for(lambda: live.status()["state"] == "recording", "the recording")
    assert api_post(live.config, "/api/record/stop") == 200

    wait_for(lambda: live.status()["state"] == "standby", "post-record to end")
    wait_for(
        lambda: live.status()["uplink"]["uploaded_files"] > uploaded_before,
        "the recording to reach the back office",
        WAIT_S,
    )


def test_root_rotation_with_the_old_threshold_is_followed(live: LiveBox) -> None:
    old_root_keys, old_timestamp_key = live.signers.root, live.signers.timestamp
    new_root_keys = [CryptoSigner.generate_ecdsa() for _ in range(3)]
    new_timestamp_key = CryptoSigner.generate_ecdsa()
    version = live.repo.rotate_root(
        [*old_root_keys[:2], *new_root_keys[:2]],
        role_keys={
            Root.type: [signer.public_key for signer in new_root_keys],
            Timestamp.type: [new_timestamp_key.public_key],
        },
        now=_now(),
    )
    live.signers = dataclasses.replace(
        live.signers, root=tuple(new_root_keys), timestamp=new_timestamp_key
    )

    live.publish_good(b"[recording]\nprerecord_s = 40\npostrecord_s = 1\n", 40.0)

    assert Metadata[Root].from_bytes(live.trusted("root.json")).signed.version == version == 2
    # The retired keys lost their power: a root signed by the old root keys alone, a timestamp
    # signed by the old timestamp key.
    refuses(
        live,
        Attack(partial(_root_signed_by, old_root_keys), TOO_FEW, "root was signed by 0/2 keys"),
    )
    refuses(
        live,
        Attack(
            partial(_timestamp_signed_by, old_timestamp_key),
            TOO_FEW,
            "timestamp was signed by 0/1 keys",
        ),
    )


def _root_signed_by(signers: Sequence[Signer], live: LiveBox) -> None:
    plant_root(live.repo, signers, now=_now())


def _timestamp_signed_by(signer: Signer, live: LiveBox) -> None:
    publish_unchecked(live.repo, live.signers.snapshot, signer, now=_now())
