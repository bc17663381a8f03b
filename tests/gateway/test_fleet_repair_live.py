"""A re-pair resets the applied fleet state of a running box (issue 13, item 4).

docs/fleet-config.md 8 says a re-pair resets what the box applied: it is the recovery of a box
whose serial a thief pushed up. On disk it did (gateway/pairing_client.py `install_credentials`
removes the fleet state files), but a running box kept its old fleet sync: the back office's old
address, its outbox and refusals in memory. Here a real `mvb run` box applies serial 2 of one
fleet, is re-paired while it runs (`mvb pair --re-pair`, another process) to a back office with
a new fleet whose only document has serial 1, and applies that document.
"""

from __future__ import annotations

import json
from pathlib import Path

from demo.synthetic import generate_clip
from tests.gateway.fleet_rig import (
    box_config,
    camera_prerecord_s,
    fleet_status,
    mvb_pair,
    mvb_run,
    running_box_config,
    start_back_office,
    wait_for,
    write_recipient_pub,
)
from tests.tls_helpers import TestPki

FIRST = (b"[recording]\nprerecord_s = 60\n", b"[recording]\nprerecord_s = 90\n")
SECOND = (b"[recording]\nprerecord_s = 45\n",)


def test_a_running_box_re_paired_to_a_new_fleet_takes_its_serial_1(
    pki: TestPki, tmp_path: Path
) -> None:
    recipient_pub = write_recipient_pub(tmp_path)
    clip = generate_clip(tmp_path / "clip.ts", seconds=3, keyframe_interval_frames=25)
    root = tmp_path / "box"
    with (
        start_back_office(pki, tmp_path / "first", FIRST) as first,
        start_back_office(pki, tmp_path / "second", SECOND) as second,
    ):
        paired = mvb_pair(box_config(root, recipient_pub), first.code())
        assert paired.returncode == 0, paired.stderr
        config = running_box_config(root, recipient_pub, clip)
        with mvb_run(config):
            wait_for(lambda: fleet_status(config)["applied_serial"] == 2, "serial 2 of the first")
            wait_for(lambda: fleet_status(config)["reported_serial"] == 2, "its report")
            assert camera_prerecord_s(config) == 90.0

            re_paired = mvb_pair(config, second.code("--re-pair"), "--re-pair")
            assert re_paired.returncode == 0, re_paired.stderr

            wait_for(lambda: fleet_status(config)["applied_serial"] == 1, "the new serial 1")
            assert camera_prerecord_s(config) == 45.0
            wait_for(lambda: fleet_status(config)["reported_serial"] == 1, "its report")
        state = json.loads((root / "state" / "fleet-state.json").read_text())
        assert state["config_serial"] == 1
        [report] = second.reports()
        assert (report.config_serial, report.outcome) == (1, "applied")
        assert [r.config_serial for r in first.reports()] == [2], "nothing old went to the new"
