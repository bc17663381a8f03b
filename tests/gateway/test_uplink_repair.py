"""A box whose certificate the back office withdrew says so, sends nothing more, and resumes by
itself, without a restart, once it is paired again.

Real processes throughout (tests/gateway/fleet_rig.py): `mvb-admin serve` with its pairing
listener and certificate gate, `mvb-admin pair-code` and `unpair`, `mvb import`, `mvb pair` and
`mvb run`, over real TLS on 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from demo.synthetic import generate_clip
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config
from tests.gateway.fleet_rig import (
    BOX,
    MVB,
    MVB_ADMIN,
    api_status,
    mvb_pair,
    mvb_run,
    run,
    start_back_office,
    wait_for,
    write_recipient_pub,
)
from tests.gateway.test_uploads_release import get
from tests.tls_helpers import TestPki

STEP_TIMEOUT_S = 30.0


def box_config(root: Path) -> Path:
    """A box without cameras (its evidence comes from `mvb import`) whose [uplink] names nothing
    but `enabled`: address and credentials come from its pairing."""
    return write_box_config(
        root,
        write_recipient_pub(root.parent),
        device_serial=BOX,
        storage_lines=f"""
[gps]
port = {free_port()}
[api]
port = {free_port()}
[uplink]
enabled = true
[[links]]
name = "wifi"
cost_class = "wifi"
""",
    )


def alert_codes(config: Path) -> list[str]:
    return [alert["code"] for alert in api_status(config)["alerts"]]


def files_on_card(config: Path) -> int:
    storage: dict[str, Any] = api_status(config)["storage"]
    return int(storage["files_on_card"])


def test_a_withdrawn_box_stops_and_resumes_when_paired_again(pki: TestPki, tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "clip.ts", seconds=2, keyframe_interval_frames=25)
    with start_back_office(pki, tmp_path / "office", documents=()) as office:
        config = box_config(tmp_path / "box")
        assert run(MVB, "--config", config, "import", clip).returncode == 0
        assert mvb_pair(config, office.code()).returncode == 0
        unpaired = run(MVB_ADMIN, "unpair", "--state", office.state, "--box-id", BOX)
        assert unpaired.returncode == 0, unpaired.stderr

        with mvb_run(config):
            wait_for(
                lambda: "credentials_withdrawn" in alert_codes(config),
                "the box to say its certificate is refused",
                STEP_TIMEOUT_S,
            )
            queue = get(config, "/api/uploads")
            assert queue["credentials_withdrawn"] is True
            assert [row["state"] for row in queue["files"]] == ["waiting"]
            assert files_on_card(config) == 1  # the evidence stays

            re_paired = mvb_pair(config, office.code(), "--re-pair")  # the box runs meanwhile

            assert re_paired.returncode == 0, re_paired.stderr
            wait_for(lambda: files_on_card(config) == 0, "the upload", STEP_TIMEOUT_S)
            assert "credentials_withdrawn" not in alert_codes(config)
            assert get(config, "/api/uploads")["credentials_withdrawn"] is False
    stored = list((office.uploads / "complete").glob("*.mvbe"))
    assert len(stored) == 1
    audit = [json.loads(line) for line in (tmp_path / "box" / "state" / "audit.jsonl").open()]
    events = [entry["event"] for entry in audit]
    assert events.count("gateway.started") == 1  # no restart
    assert events.count("uplink.credentials_withdrawn") == 1  # once, however long it lasted
    withdrawn = events.index("uplink.credentials_withdrawn")
    assert withdrawn < events.index("uplink.credentials_renewed") < events.index("uplink.uploaded")
