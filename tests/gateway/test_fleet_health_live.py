"""Fleet health with real parts (issue 17 item 5): a paired box's own service reports to the real
`mvb-admin serve` over its pinned mutual-TLS link, signed with its device key; an alarm reaches
the back office at the next look; `mvb-admin fleet status` shows the box with it; a report
signed by another key is refused and changes nothing; nothing personal or positional is kept."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from backoffice import cli as admin_cli
from backoffice.fleet_health import HEALTH_DIR
from config.fleet_fetch import FleetLink
from config.local import load_config
from demo.synthetic import generate_clip
from gateway.run import start_box, stop_box
from gateway.status_facts import software_version
from protocol.health_report import HEALTH_PATH, signed_message, wire
from storage.devicekey import DeviceKey
from tests.gateway.fleet_rig import (
    BOX,
    box_config,
    mvb_pair,
    running_box_config,
    start_back_office,
    write_recipient_pub,
)
from tests.tls_helpers import TestPki

WAIT_S = 30.0


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def kept(office_root: Path) -> dict[str, object] | None:
    path = office_root / "uploads" / HEALTH_DIR / f"{BOX}.json"
    return json.loads(path.read_text()) if path.exists() else None


async def test_a_box_reports_its_health_and_an_alarm_reaches_the_fleet_status(
    pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipient_pub = write_recipient_pub(tmp_path)
    office_root = tmp_path / "office"
    clip = generate_clip(tmp_path / "clip.ts", seconds=2, keyframe_interval_frames=25)
    with start_back_office(pki, office_root) as office:
        paired = mvb_pair(box_config(tmp_path / "box", recipient_pub), office.code())
        assert paired.returncode == 0, paired.stderr
        config = load_config(running_box_config(tmp_path / "box", recipient_pub, clip))
        running = await start_box(config)
        try:
            await wait_for(lambda: kept(office_root) is not None, "the box's first report")
            first = kept(office_root)
            assert first is not None
            health = first["health"]
            assert isinstance(health, dict)
            assert health["software_version"] == software_version()
            assert health["card_total_bytes"] > 0
            assert "lat" not in json.dumps(first)
            assert "officer" not in json.dumps(first)

            reporter = running.health
            assert reporter is not None
            running.box.alarms.raise_("card_readonly_test", "a test alarm with a detail")
            assert await reporter.round(), "a new alarm is sent at the next look"
            report = kept(office_root)
            assert report is not None
            assert "card_readonly_test" in report["health"]["alarms"]  # type: ignore[index]
            assert "a detail" not in json.dumps(report), "codes only, never messages"
            assert not await reporter.round(), "nothing changed: nothing sent before the interval"

            capsys.readouterr()
            uploads = office_root / "uploads"
            assert admin_cli.main(["fleet", "status", "--dir", str(uploads), "--json"]) == 0
            (row,) = json.loads(capsys.readouterr().out)
            assert (row["box_id"], row["stale"]) == (BOX, False)
            assert "card_readonly_test" in row["alarms"]
            assert admin_cli.main(["fleet", "metrics", "--dir", str(uploads)]) == 0
            metrics = capsys.readouterr().out
            assert f'mvb_fleet_box_alarms{{box="{BOX}",group=""}} 1' in metrics

            before = (uploads / HEALTH_DIR / f"{BOX}.json").read_bytes()
            thief = DeviceKey.generate()
            forged = reporter.sent
            assert forged is not None
            body = wire(forged, thief.sign(signed_message(BOX, forged.body())))
            fleet = running.fleet
            assert fleet is not None
            assert fleet.back_office is not None
            office_link = fleet.back_office
            link = await FleetLink.connect(
                office_link.host, office_link.https_port, office_link.tls
            )
            try:
                assert await link.post_json(HEALTH_PATH, body) == 400
                assert await link.post_json(HEALTH_PATH, b'{"health": {}}') == 400
            finally:
                await link.aclose()
            assert (uploads / HEALTH_DIR / f"{BOX}.json").read_bytes() == before
        finally:
            await stop_box(running)
