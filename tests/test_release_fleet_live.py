"""A box updates from N to N+1 through the back office (issue 17 item 2; docs/releases.md 7),
with real parts: the real release bundle of this tree as 1.0.1 (`next_release_bundle`, built
once per session), the admin's real `mvb-admin release seal-keygen|keygen|delegate|sign` and
`config publish` (the releases key encrypted with the ceremony's passphrase), the real back
office (`mvb-admin serve --release-key`, real mutual TLS), a paired box's own service (in this
process, as tests/gateway/test_fleet_offline_live.py runs it) that fetches the release key
over its pinned link, the release through ngclient, opens the seal, installs the release with
pip offline beside the running one and asks for the switch; then a downgrade pinned by the
fleet is refused and reported.

The box here runs this tree but is told it runs 1.0.0 (its `running_version`): the release
root stands for /opt/mvb, its 1.0.0 a release.json only (tests/release_switch_helpers.py
`fake_install`). Left out here: the switch itself, which runs as root from `good`
(tests/test_release_switch_e2e.py switches real releases, waits for stand-by, rolls back).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from backoffice import cli as admin_cli
from config.local import load_config
from demo.synthetic import generate_clip
from gateway.release_handoff import RootSwitch
from gateway.release_install import is_installed
from gateway.release_switch_io import ReleaseRoot, activate_first
from gateway.release_update import install_and_request
from gateway.run import RunningBox, start_box, stop_box
from tests.conftest import NEXT_RELEASE
from tests.gateway.fleet_rig import (
    BOX,
    MVB,
    BackOffice,
    box_config,
    mvb_pair,
    publish_document,
    run_async,
    running_box_config,
    start_back_office_with,
    write_recipient_pub,
)
from tests.release_switch_helpers import fake_install
from tests.tls_helpers import TestPki

RUNNING = "1.0.0"
PLATFORM = os.uname().machine
WAIT_S = 240.0  # the offline pip install of 26 wheels, on a shared machine

pytestmark = pytest.mark.slow


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def admin(*args: str | Path) -> None:
    assert admin_cli.main([str(arg) for arg in args]) == 0, args


def sign_release(office: BackOffice, root: Path, bundle: Path) -> None:
    """The admin's ceremony for releases: a releases key (encrypted), its delegation by the
    targets key, the bundle sealed and signed, the back office's publish."""
    passphrase = root / "ceremony.pass"
    passphrase.write_text("a long ceremony passphrase\n")
    keys = office.keys
    repo: list[str | Path] = ["--repo", office.fleet.repo_dir, "--trust", office.trust]
    pass_file: list[str | Path] = ["--passphrase-file", passphrase]
    admin("release", "keygen", "--out", root / "releases.key", *pass_file)
    assert b"ENCRYPTED" in (root / "releases.key").read_bytes()
    admin("release", "delegate", *repo, "--targets-key", keys / "targets.key",
          "--releases-key", root / "releases.pub", *pass_file)  # fmt: skip
    admin("release", "sign", *repo, "--bundle", bundle, "--releases-key", root / "releases.key",
          "--seal-key", root / "release-seal.pub", *pass_file)  # fmt: skip
    admin("config", "publish", *repo, "--snapshot-key", keys / "snapshot.key",
          "--timestamp-key", keys / "timestamp.key")  # fmt: skip


@asynccontextmanager
async def box_running(config: Path, release_root: Path) -> AsyncIterator[RunningBox]:
    """The paired box's service, told it runs RUNNING and installing into `release_root`."""
    running = await start_box(load_config(config))
    assert running.fleet is not None
    assert running.fleet.releases is not None
    running.fleet.releases.running_version = RUNNING
    running.fleet.releases.hand_off = install_and_request(release_root)
    running.fleet.releases.switch = RootSwitch(release_root)
    try:
        yield running
    finally:
        await stop_box(running)


def switch_state(release_root: Path) -> dict[str, object]:
    try:
        document: dict[str, object] = json.loads((release_root / "switch.json").read_bytes())
    except FileNotFoundError:
        return {}
    return document


async def test_a_box_updates_to_the_release_its_fleet_pins_and_refuses_a_downgrade(
    pki: TestPki, tmp_path: Path, next_release_bundle: Path
) -> None:
    admin("release", "seal-keygen", "--out", tmp_path / "release-seal.key")
    release_root = tmp_path / "opt-mvb"
    fake_install(ReleaseRoot(release_root), RUNNING)
    activate_first(ReleaseRoot(release_root), RUNNING)
    recipient_pub = write_recipient_pub(tmp_path)
    clip = generate_clip(tmp_path / "clip.ts", seconds=2, keyframe_interval_frames=25)
    serve_args = ["--release-key", str(tmp_path / "release-seal.key")]
    with start_back_office_with(pki, tmp_path / "office", serve_args) as office:
        paired = mvb_pair(box_config(tmp_path / "box", recipient_pub), office.code())
        assert paired.returncode == 0, paired.stderr
        key_file = tmp_path / "box" / "state" / "pairing" / "release.key"
        assert key_file.stat().st_mode & 0o777 == 0o600  # fetched by `mvb pair` at once
        key_file.unlink()  # as a box paired before releases were sealed: its rounds fetch it
        config = running_box_config(tmp_path / "box", recipient_pub, clip)
        await asyncio.to_thread(sign_release, office, tmp_path, next_release_bundle)
        pin = f'[release]\nversion = "{NEXT_RELEASE}"\n'.encode()
        await asyncio.to_thread(publish_document, office.fleet, office.signers(), pin)
        async with box_running(config, release_root) as running:
            fleet = running.fleet
            assert fleet is not None
            await wait_for(
                lambda: fleet.status.release == f"{NEXT_RELEASE} requested",
                "the release handed to the switch",
            )
            state = switch_state(release_root)
            assert (state["phase"], state["target"]) == ("pending", NEXT_RELEASE)
            assert is_installed(release_root / "releases" / NEXT_RELEASE)
            python = release_root / "releases" / NEXT_RELEASE / "bin" / "mvb"
            assert python.exists()  # a real venv, installed offline from the opened bundle
            assert key_file.stat().st_mode & 0o777 == 0o600  # fetched again at a round
            assert not (tmp_path / "box" / "state" / "release-incoming").exists()

            lower = b'[release]\nversion = "0.9.0"\n'
            await asyncio.to_thread(publish_document, office.fleet, office.signers(), lower)
            await wait_for(
                lambda: fleet.status.release == "0.9.0 refused release_downgrade",
                "the downgrade refused",
                timeout_s=30.0,
            )
            assert fleet.status.last_refusal_code == "release_downgrade"
            assert "release_refused" in running.box.alarms.codes()
            assert switch_state(release_root)["target"] == NEXT_RELEASE  # nothing changed
            events = [
                (entry.event, dict(entry.fields))
                for entry in running.box.audit.entries()
                if entry.event.startswith("release.")
            ]
    assert ("release.requested", {"version": NEXT_RELEASE}) in events
    refused = [fields for event, fields in events if event == "release.refused"]
    assert [(f["version"], f["code"]) for f in refused] == [("0.9.0", "release_downgrade")]


async def test_a_box_with_every_link_down_updates_from_a_usb_stick(
    pki: TestPki, tmp_path: Path, next_release_bundle: Path
) -> None:
    """The release key arrived with `mvb pair`; then every link is down and the stick carries
    the signed document that pins N+1 with the sealed release: `mvb config push` applies the
    document, and the release is opened, installed and switched to."""
    admin("release", "seal-keygen", "--out", tmp_path / "release-seal.key")
    release_root = tmp_path / "opt-mvb"
    fake_install(ReleaseRoot(release_root), RUNNING)
    activate_first(ReleaseRoot(release_root), RUNNING)
    recipient_pub = write_recipient_pub(tmp_path)
    clip = generate_clip(tmp_path / "clip.ts", seconds=2, keyframe_interval_frames=25)
    serve_args = ["--release-key", str(tmp_path / "release-seal.key")]
    key_file = tmp_path / "box" / "state" / "pairing" / "release.key"
    with start_back_office_with(pki, tmp_path / "office", serve_args) as office:
        paired = mvb_pair(box_config(tmp_path / "box", recipient_pub), office.code())
        assert paired.returncode == 0, paired.stderr
        assert key_file.exists()
        config = running_box_config(tmp_path / "box", recipient_pub, clip)
        await asyncio.to_thread(sign_release, office, tmp_path, next_release_bundle)
        pin = f'[release]\nversion = "{NEXT_RELEASE}"\n'.encode()
        await asyncio.to_thread(publish_document, office.fleet, office.signers(), pin)
        stick = tmp_path / "stick.tar"
        admin("config", "bundle", "--repo", office.fleet.repo_dir, "--out", stick,
              f"boxes/{BOX}.toml", f"releases/mvb-{NEXT_RELEASE}-{PLATFORM}.sealed")  # fmt: skip
    assert next_release_bundle.read_bytes()[1024:2048] not in stick.read_bytes()  # sealed
    async with box_running(config, release_root) as running:  # the back office is gone
        fleet = running.fleet
        assert fleet is not None
        pushed = await run_async(MVB, "--config", config, "config", "push", stick)
        assert pushed.returncode == 0, pushed.stderr
        assert fleet.status.release == f"{NEXT_RELEASE} requested"
        state = switch_state(release_root)
        assert (state["phase"], state["target"]) == ("pending", NEXT_RELEASE)
        assert is_installed(release_root / "releases" / NEXT_RELEASE)
