"""A staged rollout end to end (issue 17 item 4): the real `mvb-admin serve`, boxes paired with
`mvb pair`, health reports signed with each box's device key and posted over its pinned
mutual-TLS link (the box's own report code, protocol/health_report.py; the boxes' services are
not run), and the admin's real commands (`mvb-admin release rollout|status|pause|resume|
promote|rollback`, `config sign|publish`). What each box would take is read with the box's own
TUF client (FleetConfigClient over its paired metadata and its pinned link) and checked with the
box's own schema (apply_fleet_document).

Left out here: the box installing the release it is pinned to (w4-rel's part, issue 17 item 2);
the reports of a box after "installing" are posted as such a box would send them."""

from __future__ import annotations

import asyncio
import json
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from backoffice import cli as admin_cli
from backoffice.rollout_docs import canary_boxes
from config.fleet_client import FleetConfigClient
from config.fleet_fetch import FleetLink, LinkFetch
from config.fleet_schema import apply_fleet_document
from config.fleet_targets import AppliedState
from config.local import load_config
from gateway.pairing_client import fleet_metadata_dir
from gateway.uplink_credentials import resolve_back_office
from protocol.health_report import HEALTH_PATH, Health, signed_message, wire
from storage.devicekey import DeviceKey
from tests.evidence_helpers import write_box_config
from tests.gateway.fleet_rig import BackOffice, mvb_pair, start_back_office, write_recipient_pub
from tests.tls_helpers import TestPki
from transport.connect import BackOffice as BackOfficeAddress

MEMBERS = ("MVB-0001", "MVB-0002", "MVB-0003", "MVB-0004")
ROLLOUT_ID = "1.4.0-h2o"
CANARY = canary_boxes(ROLLOUT_ID, MEMBERS, 25)  # one box: what the command must choose too
SILENT = next(box for box in MEMBERS if box not in CANARY)  # in the group, never reports
OWN = next(box for box in MEMBERS if box not in (*CANARY, SILENT))  # a document of its own
GROUP_DOC = '[fleet]\nname = "H2O"\n[recording]\nprerecord_s = 60.0\n[release]\nversion = "1.3.0"\n'
UPLINK_ON = '\n[uplink]\nenabled = true\n[[links]]\nname = "wifi"\ncost_class = "wifi"\n'
OWN_DOC = '[recording]\nprerecord_s = 30.0\n[release]\nversion = "1.3.0"\n'


class Fleet:
    """The admin's commands against the back office, and the boxes' side of it."""

    def __init__(self, office: BackOffice, root: Path, capsys: pytest.CaptureFixture[str]):
        self.office = office
        self.root = root
        self.capsys = capsys
        self.configs: dict[str, Path] = {}

    def admin(self, *args: str | Path) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = admin_cli.main([str(arg) for arg in args])
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def signing(self) -> list[str | Path]:
        return [
            "--repo", self.office.fleet.repo_dir, "--trust", self.office.trust,
            "--targets-key", self.office.keys / "targets.key",
        ]  # fmt: skip

    def release(self, command: str, *args: str | Path) -> tuple[int, str, str]:
        if command in ("rollout", "promote", "rollback"):
            return self.admin("release", command, *self.signing(), *args)
        trust: list[str | Path] = ["--trust", self.office.trust]
        return self.admin("release", command, "--repo", self.office.fleet.repo_dir, *trust, *args)

    def status(self) -> dict[str, Any]:
        code, out, err = self.release("status", "--dir", self.office.uploads, "--json")
        assert code == 0, err
        document: dict[str, Any] = json.loads(out)
        return document

    def sign(self, path: str, text: str, *names: str) -> None:
        document = self.root / "doc.toml"
        document.write_text(text)
        code, _, err = self.admin("config", "sign", *self.signing(), "--path", path,
                                  "--file", document, *names)  # fmt: skip
        assert code == 0, err

    def publish(self) -> None:
        keys = self.office.keys
        code, _, err = self.admin(
            "config", "publish", "--repo", self.office.fleet.repo_dir, "--trust",
            self.office.trust, "--snapshot-key", keys / "snapshot.key",
            "--timestamp-key", keys / "timestamp.key",
        )  # fmt: skip
        assert code == 0, err

    def targets_version(self) -> int:
        return self.office.fleet.targets().signed.version

    def pair(self, box: str, recipient_pub: Path) -> None:
        result = self.office.pair_code(box_id=box)
        assert result.returncode == 0, result.stderr
        config = write_box_config(self.root / box, recipient_pub, device_serial=box)
        paired = mvb_pair(config, result.stdout.strip().splitlines()[-1])
        assert paired.returncode == 0, paired.stderr
        # Now paired: its uplink on, the back office's address and pins from the pairing.
        config.write_text(config.read_text() + UPLINK_ON)
        self.configs[box] = config

    async def link(self, box: str) -> tuple[FleetLink, Path]:
        local = load_config(self.configs[box])
        office = resolve_back_office(local, local)
        assert isinstance(office, BackOfficeAddress), office
        link = await FleetLink.connect(office.host, office.https_port, office.tls)
        return link, local.state_dir

    async def report(self, box: str, version: str, serial: int, *alarms: str) -> None:
        """The box's signed health report, as its reporter sends it."""
        health = Health(
            at_ms=0, software_version=version, uptime_s=60, recording=False,
            config_applied_serial=serial, config_pending_serial=None,
            config_last_outcome="applied", config_reports_waiting=0,
            card_total_bytes=10**9, card_free_bytes=10**8, files_on_card=0,
            interrupted_files=0, alarms=alarms,
        )  # fmt: skip
        link, state_dir = await self.link(box)
        key = DeviceKey.load_or_create(state_dir)
        try:
            body = wire(health, key.sign(signed_message(box, health.body())))
            assert await link.post_json(HEALTH_PATH, body) == 204
        finally:
            await link.aclose()

    async def takes(self, box: str) -> tuple[str, int, dict[str, Any]]:
        """The document the box's own client takes now: its path, serial and TOML, checked
        with the box's own schema."""
        link, state_dir = await self.link(box)
        try:
            client = FleetConfigClient(
                fleet_metadata_dir(state_dir), box, ["h2o"],
                LinkFetch(link, asyncio.get_running_loop()), AppliedState(),
            )  # fmt: skip
            document = await asyncio.to_thread(client.check)
        finally:
            await link.aclose()
        assert document is not None
        text = document.document.decode()
        apply_fleet_document(load_config(self.configs[box]), text, document.target_path)
        return document.target_path, document.config_serial, tomllib.loads(text)


def pins(taken: tuple[str, int, dict[str, Any]]) -> tuple[str, float]:
    _, _, doc = taken
    return doc["release"]["version"], doc["recording"]["prerecord_s"]


async def test_a_canary_rollout_paused_promoted_and_rolled_back(
    pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipient_pub = write_recipient_pub(tmp_path)
    with start_back_office(pki, tmp_path / "office", documents=()) as office:
        fleet = Fleet(office, tmp_path, capsys)
        reporting = [box for box in MEMBERS if box != SILENT]
        for box in reporting:
            fleet.pair(box, recipient_pub)
        members = [arg for box in MEMBERS for arg in ("--box", box)]
        fleet.sign("groups/h2o.toml", GROUP_DOC, "--group", "h2o", *members)
        fleet.sign(f"boxes/{OWN}.toml", OWN_DOC, "--box", OWN)
        fleet.publish()
        for box in reporting:
            await fleet.report(box, "1.3.0", (await fleet.takes(box))[1])

        # --- the canary: one box of four, its own box document pinned
        code, out, err = fleet.release(
            "rollout", "--version", "1.4.0", "--group", "h2o", "--canary-percent", "25",
            "--dir", office.uploads,
        )  # fmt: skip
        assert code == 0, err
        assert f"canary (25%): {CANARY[0]}" in out
        record = office.fleet.repo_dir / "rollouts" / f"{ROLLOUT_ID}.json"
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        fleet.publish()
        (canary,) = CANARY
        assert pins(await fleet.takes(canary)) == ("1.4.0", 60.0)
        assert (await fleet.takes(canary))[0] == f"boxes/{canary}.toml"
        assert pins(await fleet.takes(OWN)) == ("1.3.0", 30.0), "not in the canary: as it was"
        status = fleet.status()
        assert (status["phase"], status["previous_version"]) == ("canary", "1.3.0")
        assert (status["targeted"], status["on_version"], status["waiting"]) == (4, 0, 4)
        assert status["stale"] == [SILENT]
        assert status["canary_healthy"] is False

        before = fleet.targets_version()
        code, _, err = fleet.release("promote", "--dir", office.uploads)
        assert code == 1
        assert "the canary is not healthy" in err
        assert f"{canary} has not reported since the rollout started" in err
        assert fleet.targets_version() == before, "nothing signed"

        # --- the canary box reports the new version: the gate opens
        await fleet.report(canary, "1.4.0", (await fleet.takes(canary))[1])
        status = fleet.status()
        assert (status["on_version"], status["canary_healthy"]) == (1, True)

        # --- a pause holds it; resume lifts it
        assert fleet.release("pause")[0] == 0
        code, _, err = fleet.release("promote", "--dir", office.uploads)
        assert code == 1
        assert "resume it first" in err
        assert fleet.release("resume")[0] == 0

        # --- promote: the group's document and OWN's own pin 1.4.0, OWN keeps its settings
        code, out, err = fleet.release("promote", "--dir", office.uploads)
        assert code == 0, err
        assert "signed groups/h2o.toml" in out
        assert f"signed boxes/{OWN}.toml" in out
        assert fleet.targets_version() == before + 1, "one targets version for the step"
        fleet.publish()
        for box in reporting:
            assert pins(await fleet.takes(box)) == ("1.4.0", 30.0 if box == OWN else 60.0)
        assert (await fleet.takes(canary))[0] == "groups/h2o.toml", "the canary's copy gave way"

        # --- OWN rolls the release back on the box; the status names it failed
        await fleet.report(OWN, "1.3.0", (await fleet.takes(OWN))[1], "release_rolled_back")
        status = fleet.status()
        assert status["phase"] == "promoted"
        assert (status["on_version"], status["failed"], status["waiting"]) == (1, 1, 2)
        failed = [b for b in status["boxes"] if b["bucket"] == "failed"]
        assert [(b["box_id"], b["reason"]) for b in failed] == [
            (OWN, "rolled back (release_rolled_back)")
        ]
        code, text, _ = fleet.release("status", "--dir", office.uploads)
        assert f"stale: {SILENT}" in text
        assert "failed 1" in text

        # --- rollback: every document pinning 1.4.0 pins 1.3.0 again, settings kept
        code, out, err = fleet.release("rollback")
        assert code == 0, err
        assert "rolled_back" in out
        fleet.publish()
        for box in reporting:
            assert pins(await fleet.takes(box)) == ("1.3.0", 30.0 if box == OWN else 60.0)
        assert fleet.status()["phase"] == "rolled_back"
        code, _, err = fleet.release("promote", "--dir", office.uploads, "--force")
        assert code == 1
        assert "is rolled_back: cannot promote" in err
