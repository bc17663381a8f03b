"""The install's privilege split, end to end (docs/releases.md 7.6): the box's release updater
verifies a pinned release and leaves it in its inbox (it never writes the release root); root's
`mvb release install-inbox`, a real process run as mvb-release-install.service runs it,
verifies it again from root's own anchor and installs it, or refuses and removes it; root's
verdict reaches the box's updater on its next round (gateway/release_verdict.py).

Real parts: a fleet repository with the releases role delegated (tests/release_target_helpers),
the box's ReleaseUpdater with the inbox hand-off that gateway/run.py builds, the `mvb` program.
The success case installs the real bundle of this tree (built once per session, pip offline).
Left out: the two users (everything runs as one user here: the unit's separation is
systemd's, checked by tests/test_systemd_units.py), and systemd starting the path unit.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Root, Timestamp

from backoffice.fleet_releases import sign_release
from common.alarms import Alarms
from gateway.release_handoff import InboxSwitch
from gateway.release_switch import Phase
from gateway.release_switch_io import ReleaseRoot, activate_first, state_from_json
from gateway.release_update import ReleaseOutcome, ReleaseUpdater, hand_to_inbox
from storage.audit_io import AuditLog
from storage.devicekey import DeviceKey
from tests.conftest import NEXT_RELEASE
from tests.gateway.fleet_rig import MVB
from tests.release_switch_helpers import fake_install
from tests.release_target_helpers import (
    PLATFORM,
    ReleaseFleet,
    paired_metadata,
    release_fleet,
    repo_fetch,
    synthetic_bundle,
)

RUNNING, OLDER = "1.0.0", "0.9.0"


class Rig:
    """A box (its updater, inbox and staging) and root's release root with 1.0.0 running."""

    def __init__(self, directory: Path, fleet: ReleaseFleet) -> None:
        self.fleet = fleet
        state = directory / "state"
        (state / "pairing").mkdir(parents=True)
        (state / "pairing" / "release.key").write_text(fleet.seal_key.pem())
        self.inbox, staging = state / "release-inbox", state / "release-staging"
        self.root = ReleaseRoot(directory / "opt-mvb")
        self.verdicts = directory / "release-verdicts"  # root's, 0755 (as the tmpfiles make it)
        self.verdicts.mkdir(mode=0o755)
        fake_install(self.root, RUNNING)
        activate_first(self.root, RUNNING)
        self.updater = ReleaseUpdater(
            metadata_dir=paired_metadata(state / "metadata", fleet.repo),
            work_dir=state / "release-incoming",
            pairing_dir=state / "pairing",
            running_version=RUNNING,
            platform=PLATFORM,
            hand_off=hand_to_inbox(self.inbox, staging),
            switch=InboxSwitch(self.root.path, self.inbox, staging),
            audit=AuditLog.open(state / "audit.jsonl", DeviceKey.generate()),
            alarms=Alarms(),
            verdicts=self.verdicts,
        )

    def sign(self, bundle: Path) -> None:
        sign_release(
            self.fleet.repo,
            bundle,
            self.fleet.seal_key.public(),
            self.fleet.releases_signer,
            now=datetime.now(UTC),
        )
        self.fleet.publish()

    async def follow(self, version: str) -> ReleaseOutcome:
        outcome = await self.updater.follow(version, repo_fetch(self.fleet.repo))
        assert outcome is not None
        return outcome

    def trust(self, root_json: bytes) -> None:
        anchor = self.root.path.parent / "root.json"
        anchor.write_bytes(root_json)
        mvb("release", "trust-fleet", "--root", self.root.path, anchor)

    def install_inbox(self) -> list[str]:
        """Root's installer, as the unit runs it; the lines it logged (one per item)."""
        done = mvb(
            "release", "install-inbox", "--root", self.root.path, "--inbox", self.inbox,
            "--verdicts", self.verdicts,
        )  # fmt: skip
        return done.stdout.splitlines()


def mvb(*args: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(MVB), *map(str, args)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr  # refusals too: the path unit keeps watching
    return done


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path, release_fleet(tmp_path / "office"))


def installed(rig: Rig) -> list[str]:
    return sorted(path.name for path in (rig.root.path / "releases").iterdir())


def rotate_root_and_timestamp_keys(fleet: ReleaseFleet) -> ReleaseFleet:
    """A root rotation to new root keys and a new timestamp key: metadata signed after it
    verifies only for a client that walked the root chain."""
    new_root = [CryptoSigner.generate_ecdsa() for _ in range(3)]
    new_timestamp = CryptoSigner.generate_ecdsa()
    fleet.repo.rotate_root(
        [*fleet.signers.root[:2], *new_root[:2]],
        role_keys={
            Root.type: [signer.public_key for signer in new_root],
            Timestamp.type: [new_timestamp.public_key],
        },
        now=datetime.now(UTC),
    )
    signers = replace(fleet.signers, root=tuple(new_root), timestamp=new_timestamp)
    return replace(fleet, signers=signers)


async def test_the_box_only_leaves_the_release_in_its_inbox_and_root_installs_it(
    rig: Rig, next_release_bundle: Path
) -> None:
    """Root's anchor is the fleet's first root; the fleet rotates its root (and timestamp) keys
    twice before the release: root follows the chain the item carries."""
    rig.trust(rig.fleet.repo.trust_root_bytes())
    rig.fleet = rotate_root_and_timestamp_keys(rotate_root_and_timestamp_keys(rig.fleet))
    rig.sign(next_release_bundle)
    outcome = await rig.follow(NEXT_RELEASE)
    assert (outcome.version, outcome.outcome) == (NEXT_RELEASE, "requested")
    item = rig.inbox / NEXT_RELEASE
    assert sorted(path.name for path in item.iterdir()) == [
        "item.json", "metadata", "release.key", "release.sealed",
    ]  # fmt: skip
    assert installed(rig) == [RUNNING]  # the box's service wrote nothing under the root
    assert "2.root.json" in {path.name for path in (item / "metadata").iterdir()}
    assert rig.install_inbox() == [f"release inbox {NEXT_RELEASE}: installed"]
    assert installed(rig) == [RUNNING, NEXT_RELEASE]
    assert (rig.root.release(NEXT_RELEASE) / "bin" / "mvb").exists()
    state = state_from_json(rig.root.state_file.read_bytes())
    assert (state.phase, state.target) == (Phase.PENDING, NEXT_RELEASE)
    assert list(rig.inbox.iterdir()) == []


async def test_tampered_unanchored_and_hostile_items_are_refused_removed_and_nothing_installed(
    rig: Rig, tmp_path: Path
) -> None:
    """Each bad item is refused with its code and removed; the installer carries on with the
    next (one run, several items) and installs nothing."""
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    rig.sign(synthetic_bundle(bundles, "1.0.1"))
    rig.sign(synthetic_bundle(bundles, "1.0.2"))
    rig.sign(synthetic_bundle(bundles, OLDER))
    for version in ("1.0.1", "1.0.2"):
        assert (await rig.follow(version)).outcome == "requested"
    sealed = rig.inbox / "1.0.1" / "release.sealed"
    data = bytearray(sealed.read_bytes())
    data[-100] ^= 1  # the mvb user alters the release after the box verified it
    sealed.write_bytes(bytes(data))
    # the mvb user forges an item: a lower, validly signed release
    (rig.inbox / "1.0.2").rename(rig.inbox / OLDER)
    item_json = rig.inbox / OLDER / "item.json"
    item_json.write_text(item_json.read_text().replace("1.0.2", OLDER))
    # hostile entries: a symlink to root's own files, a name that is not a version, a metadata
    # name that walks out
    (rig.inbox / "2.0.0").symlink_to(rig.root.path)
    (rig.inbox / "..x").mkdir()
    outcomes_before = installed(rig)
    rig.trust(rig.fleet.repo.trust_root_bytes())
    lines = rig.install_inbox()
    assert [line.split()[2:5] for line in lines] == [
        ["..x:", "refused", "inbox_item_invalid"],  # not a version's name
        [f"{OLDER}:", "refused", "release_downgrade"],  # root judges the version itself
        ["1.0.1:", "refused", "tampered"],  # ngclient: not the signed length and SHA-256
        ["2.0.0:", "refused", "inbox_item_invalid"],  # a symlink is not followed
    ], lines
    assert installed(rig) == outcomes_before == [RUNNING]
    assert list(rig.inbox.iterdir()) == []
    assert rig.root.path.is_dir()  # the symlink was removed, not what it pointed at
    assert state_from_json(rig.root.state_file.read_bytes()).phase is Phase.IDLE


async def test_metadata_that_does_not_chain_to_roots_anchor_is_refused(
    rig: Rig, tmp_path: Path
) -> None:
    """Root pinned another fleet's root.json: the box's fleet verifies for the box, not for
    root. And with no anchor at all, nothing is taken on first use."""
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    rig.sign(synthetic_bundle(bundles, "1.0.1"))
    assert (await rig.follow("1.0.1")).outcome == "requested"
    assert rig.install_inbox()[0].split()[3:5] == ["refused", "no_trust_anchor"]
    assert list(rig.inbox.iterdir()) == []
    rig.sign(synthetic_bundle(bundles, "1.0.2"))
    assert (await rig.follow("1.0.2")).outcome == "requested"
    rig.trust(release_fleet(tmp_path / "another-office").repo.trust_root_bytes())
    line = rig.install_inbox()[0]
    assert line.split()[3:5] == ["refused", "not_signed"], line
    assert installed(rig) == [RUNNING]
    assert list(rig.inbox.iterdir()) == []


async def test_without_the_root_chain_root_cannot_verify_the_rotated_fleet(
    rig: Rig, tmp_path: Path
) -> None:
    rig.trust(rig.fleet.repo.trust_root_bytes())
    rig.fleet = rotate_root_and_timestamp_keys(rotate_root_and_timestamp_keys(rig.fleet))
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    rig.sign(synthetic_bundle(bundles, "1.0.1"))
    assert (await rig.follow("1.0.1")).outcome == "requested"
    (rig.inbox / "1.0.1" / "metadata" / "2.root.json").unlink()  # the chain cut
    line = rig.install_inbox()[0]
    assert line.split()[3:5] == ["refused", "not_signed"], line
    assert installed(rig) == [RUNNING]


async def test_a_switch_back_through_the_inbox_only_to_the_previous_release(
    rig: Rig, tmp_path: Path
) -> None:
    """The fleet's rollback on a box with the split: the box asks through the inbox; root
    checks by its own reading that it is the previous release."""
    fake_install(rig.root, OLDER)
    rig.root.link("previous", OLDER)
    rig.trust(rig.fleet.repo.trust_root_bytes())
    outcome = await rig.follow(OLDER)
    assert (outcome.outcome, outcome.reason) == ("requested", "switch back to the previous release")
    assert rig.install_inbox() == [f"release inbox {OLDER}: switch_back"]
    state = state_from_json(rig.root.state_file.read_bytes())
    assert (state.phase, state.target) == (Phase.PENDING, OLDER)


async def test_roots_refusal_reaches_the_box_and_its_install_clears_it(
    rig: Rig, next_release_bundle: Path
) -> None:
    """Root refuses an item the mvb user altered: on its next round the box shows root's code
    as its own refusal (outcome, sticky alarm, audit `by: root`) and does not hand it over
    again; a new pin, then the same one again, hands it over anew (the old verdict is not this
    hand-over's) and root's `installed` clears the refusal."""
    rig.trust(rig.fleet.repo.trust_root_bytes())
    rig.sign(next_release_bundle)
    assert (await rig.follow(NEXT_RELEASE)).outcome == "requested"
    sealed = rig.inbox / NEXT_RELEASE / "release.sealed"
    data = bytearray(sealed.read_bytes())
    data[-100] ^= 1
    sealed.write_bytes(bytes(data))
    assert rig.install_inbox()[0].split()[3:5] == ["refused", "tampered"]
    refused = await rig.follow(NEXT_RELEASE)
    assert (refused.outcome, refused.code, refused.by) == ("refused", "tampered", "root")
    assert "release_refused" in rig.updater.alarms.codes()
    assert ("release.refused", NEXT_RELEASE, "tampered", "root") in audited(rig)
    assert (await rig.follow(NEXT_RELEASE)).outcome == "refused"
    assert list(rig.inbox.iterdir()) == []  # not handed over again for the same pin

    assert (await rig.follow(OLDER)).code == "release_downgrade"  # the pin changes
    assert (await rig.follow(NEXT_RELEASE)).outcome == "requested"  # handed over anew
    assert (await rig.follow(NEXT_RELEASE)).outcome == "requested"  # root has not judged yet
    assert rig.install_inbox() == [f"release inbox {NEXT_RELEASE}: installed"]
    done = await rig.follow(NEXT_RELEASE)
    assert (done.outcome, done.by) == ("installed", "root")
    assert "release_refused" not in rig.updater.alarms.codes()
    assert ("release.installed", NEXT_RELEASE, "", "root") in audited(rig)
    assert installed(rig) == [RUNNING, NEXT_RELEASE]


async def test_a_malformed_verdict_is_ignored_and_the_box_keeps_waiting(
    rig: Rig, tmp_path: Path
) -> None:
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    rig.sign(synthetic_bundle(bundles, "1.0.2"))
    assert (await rig.follow("1.0.2")).outcome == "requested"
    (rig.verdicts / "1.0.2.json").write_bytes(b'{"format": 1, "outcome": "installed"}')
    assert (await rig.follow("1.0.2")).outcome == "requested"
    assert "release_refused" not in rig.updater.alarms.codes()


def audited(rig: Rig) -> list[tuple[str, object, object, object]]:
    return [
        (entry.event, entry.fields.get("version"), entry.fields.get("code", ""),
         entry.fields.get("by"))
        for entry in rig.updater.audit.entries()
    ]  # fmt: skip
