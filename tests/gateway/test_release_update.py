"""The box follows the release its fleet document pins (docs/releases.md 7), against a real
fleet repository on disk with the `releases` role delegated, served as the back office serves
it (tests/release_target_helpers.py; over real TLS in tests/test_release_fleet_live.py).

Each refusal has its case and its code: a downgrade, a release signed into the top-level
targets instead of the releases role, a releases role signed by a key the targets did not
delegate, a sealed bundle altered before it was signed, a stored one altered after, one sealed
to another fleet's key, one whose manifest is not the signed one. The hand-off here records
what it is given (the install and switch are tests/test_release_fleet_live.py's and
tests/test_release_switch_e2e.py's); the release root the updater reads (the switch's state,
the `previous` link) is a real one on disk, with release.json-only installs.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tuf.api.exceptions import DownloadError
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp

import backoffice.fleet_repo as fleet_repo_module
from backoffice.fleet_keys import generate_key, load_signer
from backoffice.fleet_metadata import HASH_ALGORITHMS, ThresholdNotMet
from backoffice.fleet_release_meta import releases_file, releases_versions
from backoffice.fleet_releases import add_release_target, bundle_custom, sign_release
from common.alarms import Alarms
from config.fleet_client import Fetch
from config.release_targets import RELEASE_KEY_PATH, ReleaseCustom, release_target_path
from gateway.release_handoff import RootSwitch
from gateway.release_switch import Outcome, Phase, SwitchState
from gateway.release_switch_io import ReleaseRoot, state_from_json
from gateway.release_update import ALARM, ReleaseOutcome, ReleaseUpdater
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.release_seal import seal_release
from tests.release_switch_helpers import fake_install
from tests.release_target_helpers import (
    PLATFORM,
    ReleaseFleet,
    paired_metadata,
    release_fleet,
    repo_fetch,
    synthetic_bundle,
)

RUNNING, NEXT, OLDER = "1.0.0", "1.0.1", "0.9.0"


class Box:
    """A ReleaseUpdater with its audit log and alarms, and the hand-offs it made."""

    def __init__(self, root: Path, fleet: ReleaseFleet, *, with_key: bool = True) -> None:
        self.handed: list[tuple[str, bytes]] = []
        root.mkdir(parents=True)
        self.release_root = ReleaseRoot(root / "opt-mvb")  # nothing installed: no history
        self.audit = AuditLog.open(root / "audit.jsonl", DeviceKey.generate())
        self.alarms = Alarms()
        pairing = root / "pairing"
        pairing.mkdir()
        if with_key:
            (pairing / "release.key").write_text(fleet.seal_key.pem())
        self.updater = ReleaseUpdater(
            metadata_dir=paired_metadata(root / "metadata", fleet.repo),
            work_dir=root / "incoming",
            pairing_dir=pairing,
            running_version=RUNNING,
            platform=PLATFORM,
            hand_off=lambda given: self.handed.append((given.version, given.bundle.read_bytes())),
            switch=RootSwitch(self.release_root.path),
            audit=self.audit,
            alarms=self.alarms,
        )
        self.fetch = repo_fetch(fleet.repo)

    async def follow(self, pinned: str, **kwargs: Fetch) -> ReleaseOutcome:
        outcome = await self.updater.follow(pinned, kwargs.pop("fetch", self.fetch), **kwargs)
        assert outcome is not None
        return outcome

    def events(self) -> list[tuple[str, dict[str, object]]]:
        return [(entry.event, dict(entry.fields)) for entry in self.audit.entries()]


def sign(fleet: ReleaseFleet, bundle: Path) -> None:
    sign_release(
        fleet.repo, bundle, fleet.seal_key.public(), fleet.releases_signer, now=datetime.now(UTC)
    )
    fleet.publish()


@pytest.fixture
def fleet(tmp_path: Path) -> ReleaseFleet:
    return release_fleet(tmp_path / "office")


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    directory = tmp_path / "bundles"
    directory.mkdir()
    return directory


def no_fetch(url_path: str, _max_bytes: int) -> bytes:
    raise AssertionError(f"nothing may be fetched for a pin the box refuses or runs: {url_path}")


async def test_a_higher_pinned_release_is_fetched_opened_and_handed_to_the_switch(
    fleet: ReleaseFleet, bundles: Path, tmp_path: Path
) -> None:
    bundle = synthetic_bundle(bundles, NEXT)
    sign(fleet, bundle)
    box = Box(tmp_path / "box", fleet)
    outcome = await box.follow(NEXT)
    assert outcome == ReleaseOutcome(NEXT, "requested")
    assert box.handed == [
        (NEXT, bundle.read_bytes())
    ]  # the opened seal is the bundle, byte for byte
    assert ("release.requested", {"version": NEXT}) in box.events()
    assert not (tmp_path / "box" / "incoming").exists()  # nothing of it stays in the state dir
    assert await box.follow(NEXT) == outcome  # settled: not fetched and handed again
    assert len(box.handed) == 1


async def test_the_running_version_is_nothing_to_do(fleet: ReleaseFleet, tmp_path: Path) -> None:
    box = Box(tmp_path / "box", fleet)
    assert await box.follow("1.0", fetch=no_fetch) == ReleaseOutcome("1.0", "current")
    assert box.handed == []
    assert box.events() == []


async def test_a_downgrade_is_refused_with_its_code_audited_once_and_alarmed(
    fleet: ReleaseFleet, bundles: Path, tmp_path: Path
) -> None:
    sign(fleet, synthetic_bundle(bundles, OLDER))  # correctly signed, and still refused
    box = Box(tmp_path / "box", fleet)
    for _ in range(2):
        outcome = await box.follow(OLDER, fetch=no_fetch)
        assert (outcome.outcome, outcome.code) == ("refused", "release_downgrade")
    assert box.handed == []
    refusals = [fields for event, fields in box.events() if event == "release.refused"]
    assert [(f["version"], f["code"]) for f in refusals] == [(OLDER, "release_downgrade")]
    assert ALARM in box.alarms.codes()
    assert (await box.follow("1.0.0", fetch=no_fetch)).outcome == "current"
    assert ALARM not in box.alarms.codes()  # the fleet pinned the running version again


def switched_from(root: ReleaseRoot, previous: str, state: SwitchState) -> None:
    """A release root after a switch from `previous` to `state.good` (both installed)."""
    for version in {previous, state.good}:
        fake_install(root, version)
    root.save(state)
    root.link("previous", previous)
    root.link("current", state.good)
    root.link("good", state.good)


async def test_a_fleet_rollback_to_the_previous_release_is_a_switch_back_with_no_fetch(
    fleet: ReleaseFleet, tmp_path: Path
) -> None:
    """The box ran 0.9.0, switched to 1.0.0; a rollout's rollback pins 0.9.0 again: the switch
    is asked to go back to the installed 0.9.0 (it waits for stand-by as any switch does);
    nothing is fetched or installed. Any other lower pin stays a downgrade."""
    box = Box(tmp_path / "box", fleet)
    after = SwitchState(Phase.IDLE, good=RUNNING, last=Outcome.SWITCHED, last_version=RUNNING)
    switched_from(box.release_root, OLDER, after)
    outcome = await box.follow(OLDER, fetch=no_fetch)
    assert (outcome.version, outcome.outcome) == (OLDER, "requested")
    state = state_from_json(box.release_root.state_file.read_bytes())
    assert (state.phase, state.target, state.good) == (Phase.PENDING, OLDER, RUNNING)
    assert box.handed == []  # not fetched, not installed: the installed release is switched to
    assert ("release.requested", {"version": OLDER}) in box.events()
    assert ALARM not in box.alarms.codes()
    older = await box.follow("0.8.0", fetch=no_fetch)  # not what this box ran before
    assert (older.outcome, older.code) == ("refused", "release_downgrade")


async def test_a_previous_release_no_longer_installed_is_a_downgrade(
    fleet: ReleaseFleet, tmp_path: Path
) -> None:
    box = Box(tmp_path / "box", fleet)
    switched_from(box.release_root, OLDER, SwitchState(Phase.IDLE, good=RUNNING))
    (box.release_root.release(OLDER) / "release.json").unlink()  # a cut or removed install
    outcome = await box.follow(OLDER, fetch=no_fetch)
    assert (outcome.outcome, outcome.code) == ("refused", "release_downgrade")
    assert state_from_json(box.release_root.state_file.read_bytes()).phase is Phase.IDLE


async def test_a_release_the_health_check_rolled_back_is_not_fetched_again_until_the_pin_moves(
    fleet: ReleaseFleet, bundles: Path, tmp_path: Path
) -> None:
    """1.0.1 was fetched, switched to and rolled back by the box's own health check; the pin
    still says 1.0.1: refused with its code (sticky alarm), nothing fetched, also by a box
    restarted (the switch's state is durable); a new pin is followed again."""
    sign(fleet, synthetic_bundle(bundles, NEXT))
    box = Box(tmp_path / "box", fleet)
    rolled_back = SwitchState(
        Phase.IDLE, good=RUNNING, last=Outcome.ROLLED_BACK, last_version=NEXT,
        last_reason="no_camera", serial=2,
    )  # fmt: skip
    switched_from(box.release_root, RUNNING, rolled_back)  # previous == good after a rollback
    fake_install(box.release_root, NEXT)
    for _ in range(2):
        outcome = await box.follow(NEXT, fetch=no_fetch)
        assert (outcome.outcome, outcome.code) == ("refused", "release_failed_health")
    assert box.handed == []
    refusals = [fields for event, fields in box.events() if event == "release.refused"]
    assert [(f["version"], f["code"]) for f in refusals] == [(NEXT, "release_failed_health")]
    assert ALARM in box.alarms.codes()
    restarted = Box(tmp_path / "box2", fleet)
    switched_from(restarted.release_root, RUNNING, rolled_back)
    again = await restarted.follow(NEXT, fetch=no_fetch)
    assert (again.outcome, again.code) == ("refused", "release_failed_health")
    newer = "1.0.2"
    sign(fleet, synthetic_bundle(bundles, newer))
    assert (await box.follow(newer)).outcome == "requested"
    assert [version for version, _ in box.handed] == [newer]


async def test_a_release_signed_into_the_targets_role_is_not_taken(
    fleet: ReleaseFleet, bundles: Path, tmp_path: Path
) -> None:
    """The targets key signs a release path itself (it may delegate releases, not sign them):
    ngclient would find it before the delegation; the box refuses it."""
    bundle = synthetic_bundle(bundles, NEXT)
    sealed = io.BytesIO()
    with bundle.open("rb") as source:
        seal_release(source, sealed, fleet.seal_key.public())
    path = release_target_path(NEXT, PLATFORM)
    target = TargetFile.from_data(path, sealed.getvalue(), HASH_ALGORITHMS)
    target.unrecognized_fields["custom"] = bundle_custom(bundle).to_custom()
    repo = fleet.repo
    chain = repo._verified_chain()
    current = repo._verified_targets(chain).signed
    now = datetime.now(UTC)
    repo._write_targets(chain[-1].signed, current, {path: target}, fleet.signers.targets, now)
    repo._store_target(target, sealed.getvalue())
    fleet.publish()
    box = Box(tmp_path / "box", fleet)
    outcome = await box.follow(NEXT)
    assert (outcome.outcome, outcome.code) == ("refused", "release_not_delegated")
    assert box.handed == []


async def test_a_releases_role_signed_by_an_undelegated_key_is_refused(
    fleet: ReleaseFleet, bundles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin's tool refuses to sign with another key; a hostile back office (it holds the
    online keys) publishes it anyway; ngclient refuses the releases role's signature."""
    thief_key = generate_key(tmp_path / "thief.key", None)
    thief = load_signer(tmp_path / "thief.key")
    bundle = synthetic_bundle(bundles, NEXT)
    with pytest.raises(ThresholdNotMet):
        sign_release(fleet.repo, bundle, fleet.seal_key.public(), thief, now=datetime.now(UTC))
    assert thief_key.keyid not in fleet.repo.targets().signed.delegations.keys  # type: ignore[union-attr]
    forge_releases(fleet, bundle, thief, monkeypatch)
    box = Box(tmp_path / "box", fleet)
    outcome = await box.follow(NEXT)
    assert (outcome.outcome, outcome.code) == ("refused", "not_signed")
    assert box.handed == []


def forge_releases(
    fleet: ReleaseFleet, bundle: Path, signer: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A releases version signed by `signer`, published with a snapshot naming it unchecked."""
    sealed = io.BytesIO()
    with bundle.open("rb") as source:
        seal_release(source, sealed, fleet.seal_key.public())
    path = release_target_path(NEXT, PLATFORM)
    target = TargetFile.from_data(path, sealed.getvalue(), HASH_ALGORITHMS)
    target.unrecognized_fields["custom"] = bundle_custom(bundle).to_custom()
    releases = Targets(version=1, expires=datetime.now(UTC).replace(year=2100))
    releases.targets[path] = target
    metadata = Metadata(releases)
    metadata.sign(signer)  # type: ignore[arg-type]
    data = metadata.to_bytes()
    (fleet.repo.metadata_dir / releases_file(1)).write_bytes(data)
    fleet.repo._store_target(target, sealed.getvalue())

    def unchecked(metadata_dir: Path, targets: Targets) -> dict[str, MetaFile]:
        return {"releases.json": MetaFile.from_data(1, data, HASH_ALGORITHMS)}

    monkeypatch.setattr(fleet_repo_module, "releases_meta", unchecked)
    fleet.publish()


def sealed_bytes(bundle: Path, key: RecipientPrivateKey) -> bytes:
    sealed = io.BytesIO()
    with bundle.open("rb") as source:
        seal_release(source, sealed, key.public())
    return sealed.getvalue()


def add_sealed(fleet: ReleaseFleet, sealed: bytes, custom: ReleaseCustom) -> None:
    add_release_target(fleet.repo, sealed, custom, fleet.releases_signer, now=datetime.now(UTC))
    fleet.publish()


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


async def test_a_sealed_bundle_altered_before_signing_does_not_open(
    fleet: ReleaseFleet, bundles: Path, tmp_path: Path
) -> None:
    """TUF vouches for the altered bytes (signed after the change); the seal does not open."""
    bundle = synthetic_bundle(bundles, NEXT)
    sealed = sealed_bytes(bundle, fleet.seal_key)
    add_sealed(fleet, flip(sealed, len(sealed) // 2), bundle_custom(bundle))
    box = Box(tmp_path / "box", fleet)
    outcome = await box.follow(NEXT)
    assert (outcome.outcome, outcome.code) == ("refused", "release_tampered")
    assert box.handed == []
    assert not (tmp_path / "box" / "incoming").exists()


async def test_a_stored_release_altered_after_signing_is_refused_by_its_hash(
    fleet: ReleaseFleet, bundles: Path, tmp_path: Path
) -> None:
    bundle = synthetic_bundle(bundles, NEXT)
    sign(fleet, bundle)
    (stored,) = (fleet.repo.targets_dir / "releases").iterdir()
    stored.write_bytes(flip(stored.read_bytes(), 200))
    box = Box(tmp_path / "box", fleet)
    outcome = await box.follow(NEXT)
    assert (outcome.outcome, outcome.code) == ("refused", "tampered")
    assert box.handed == []


async def test_a_release_sealed_to_another_fleets_key_is_refused(
    fleet: ReleaseFleet, bundles: Path, tmp_path: Path
) -> None:
    bundle = synthetic_bundle(bundles, NEXT)
    add_sealed(fleet, sealed_bytes(bundle, RecipientPrivateKey.generate()), bundle_custom(bundle))
    box = Box(tmp_path / "box", fleet)
    outcome = await box.follow(NEXT)
    assert (outcome.outcome, outcome.code) == ("refused", "release_wrong_seal_key")


async def test_a_bundle_that_is_not_the_signed_one_is_refused(
    fleet: ReleaseFleet, bundles: Path, tmp_path: Path
) -> None:
    """Sealed with the fleet's key and signed, but its manifest is another bundle's."""
    bundle = synthetic_bundle(bundles, NEXT)
    other = synthetic_bundle(tmp_path, NEXT, filler_bytes=5000)
    add_sealed(fleet, sealed_bytes(other, fleet.seal_key), bundle_custom(bundle))
    box = Box(tmp_path / "box", fleet)
    outcome = await box.follow(NEXT)
    assert (outcome.outcome, outcome.code) == ("refused", "release_mismatch")


async def test_a_pin_nobody_signed_waits_and_a_failed_link_waits(
    fleet: ReleaseFleet, tmp_path: Path
) -> None:
    box = Box(tmp_path / "box", fleet)
    outcome = await box.follow("2.0.0")
    assert (outcome.outcome, outcome.code) == ("waiting", "release_missing")

    def down(url_path: str, _max_bytes: int) -> bytes:
        raise DownloadError(f"{url_path}: the link is down")

    assert (await box.follow("2.0.0", fetch=down)).outcome == "waiting"
    assert ALARM not in box.alarms.codes()


async def test_the_release_key_is_fetched_once_over_the_link_and_kept(
    fleet: ReleaseFleet, bundles: Path, tmp_path: Path
) -> None:
    sign(fleet, synthetic_bundle(bundles, NEXT))
    box = Box(tmp_path / "box", fleet, with_key=False)
    outcome = await box.follow(NEXT)  # a pushed bundle: no link to fetch the key over
    assert (outcome.outcome, outcome.code) == ("waiting", "release_no_key")
    asked: list[str] = []

    def key_fetch(url_path: str, _max_bytes: int) -> bytes:
        asked.append(url_path)
        return fleet.seal_key.pem().encode()

    assert (await box.follow(NEXT, key_fetch=key_fetch)).outcome == "requested"
    assert asked == [RELEASE_KEY_PATH]
    kept = tmp_path / "box" / "pairing" / "release.key"
    assert kept.stat().st_mode & 0o777 == 0o600


async def test_a_release_key_that_is_no_key_is_not_kept(
    fleet: ReleaseFleet, tmp_path: Path
) -> None:
    box = Box(tmp_path / "box", fleet, with_key=False)

    def garbage(_url_path: str, _max_bytes: int) -> bytes:
        return b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"

    outcome = await box.follow(NEXT, key_fetch=garbage)
    assert (outcome.outcome, outcome.code) == ("waiting", "release_no_key")
    assert not (tmp_path / "box" / "pairing" / "release.key").exists()


def test_publish_names_the_newest_verified_releases_version(
    fleet: ReleaseFleet, bundles: Path
) -> None:
    for version in (NEXT, "1.0.2"):
        sign(fleet, synthetic_bundle(bundles, version))
    metadata_dir = fleet.repo.metadata_dir
    timestamp = Metadata[Timestamp].from_bytes((metadata_dir / "timestamp.json").read_bytes())
    snapshot_name = f"{timestamp.signed.snapshot_meta.version}.snapshot.json"
    snapshot = Metadata[Snapshot].from_bytes((metadata_dir / snapshot_name).read_bytes())
    assert releases_versions(fleet.repo.metadata_dir) == [1, 2]
    assert snapshot.signed.meta["releases.json"].version == 2
    releases = Metadata[Targets].from_bytes(
        (fleet.repo.metadata_dir / releases_file(2)).read_bytes()
    )
    assert sorted(releases.signed.targets) == [
        release_target_path(NEXT, PLATFORM),
        release_target_path("1.0.2", PLATFORM),
    ]
    custom = releases.signed.targets[release_target_path(NEXT, PLATFORM)].custom
    assert custom == bundle_custom(bundles / f"mvb-{NEXT}-{PLATFORM}.tar").to_custom()
