"""`mvb-admin config check-now` with real parts (issue 17 item 6): the real `mvb-admin serve` and a
real box polling its fleet configuration only once an hour. The admin publishes a new document
and asks the box to check now; the box's next health report is answered with the instruction and
the box applies the document at once, not an hour later; the request is fulfilled (removed) by
the box's fetch of the timestamp. Only a report that verifies is answered with it: one signed by
another key is refused and carries no instruction.

Left out: a real carrier NAT (the box only ever calls out here too); the 5-minute bound itself
(the report interval, gateway/health_io.py INTERVAL_S: the test sends the report that a change
would send at once, instead of waiting for the interval)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from backoffice import cli as admin_cli
from backoffice.check_now import CHECK_NOW_DIR
from config.fleet_fetch import FleetLink
from config.local import load_config
from demo.synthetic import generate_clip
from gateway.run import start_box, stop_box
from protocol.health_report import CHECK_NOW_HEADER, HEALTH_PATH, signed_message, wire
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
POLL_S = 3600  # the box would not look again for an hour on its own


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def slow_polling_box(root: Path, recipient_pub: Path, clip: Path) -> Path:
    return running_box_config(root, recipient_pub, clip, config_poll_s=POLL_S)


async def test_check_now_reaches_a_box_in_the_answer_to_its_health_report(
    pki: TestPki, tmp_path: Path
) -> None:
    recipient_pub = write_recipient_pub(tmp_path)
    office_root = tmp_path / "office"
    uploads = office_root / "uploads"
    clip = generate_clip(tmp_path / "clip.ts", seconds=2, keyframe_interval_frames=25)
    with start_back_office(pki, office_root) as office:
        paired = mvb_pair(box_config(tmp_path / "box", recipient_pub), office.code())
        assert paired.returncode == 0, paired.stderr
        running = await start_box(
            load_config(slow_polling_box(tmp_path / "box", recipient_pub, clip))
        )
        try:
            fleet, reporter = running.fleet, running.health
            assert fleet is not None
            assert reporter is not None
            await wait_for(lambda: fleet.status.applied_serial == 1, "the first document")
            await wait_for(lambda: reporter.sent is not None, "the first health report")

            serial = office.publish_document(b"[recording]\nprerecord_s = 45\n")
            assert serial == 2
            assert admin_cli.main(["config", "check-now", "--dir", str(uploads), "--box", BOX]) == 0
            request = uploads / CHECK_NOW_DIR / f"{BOX}.json"
            assert request.exists()

            # Another key's report is refused and told nothing.
            office_link = fleet.back_office
            assert office_link is not None
            sent = reporter.sent
            assert sent is not None
            forged = wire(sent, DeviceKey.generate().sign(signed_message(BOX, sent.body())))
            link = await FleetLink.connect(
                office_link.host, office_link.https_port, office_link.tls
            )
            try:
                status, headers = await link.post_json_answer(HEALTH_PATH, forged)
            finally:
                await link.aclose()
            assert status == 400
            assert CHECK_NOW_HEADER.lower() not in headers
            assert fleet.status.applied_serial == 1

            # A change is reported at the next look; its answer carries the instruction.
            running.box.alarms.raise_("check_now_test", "a change to report")
            assert await reporter.round()
            await wait_for(lambda: fleet.status.applied_serial == 2, "the document checked now")
            await wait_for(lambda: not request.exists(), "the request fulfilled by the box's check")

            # Fulfilled: the next report's answer asks for nothing.
            running.box.alarms.clear("check_now_test")
            link = await FleetLink.connect(
                office_link.host, office_link.https_port, office_link.tls
            )
            try:
                again = wire(sent, running.box.device_key.sign(signed_message(BOX, sent.body())))
                status, headers = await link.post_json_answer(HEALTH_PATH, again)
            finally:
                await link.aclose()
            assert status == 204
            assert CHECK_NOW_HEADER.lower() not in headers
        finally:
            await stop_box(running)


def test_check_now_refuses_a_box_id_that_cannot_be_one(tmp_path: Path) -> None:
    code = admin_cli.main(["config", "check-now", "--dir", str(tmp_path), "--box", "../etc"])
    assert code == 2
    assert not (tmp_path / CHECK_NOW_DIR).exists()
