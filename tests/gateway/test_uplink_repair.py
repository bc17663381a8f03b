"""A box the back office unpaired learns it, forgets the back office, keeps its evidence and
uploads it, without a restart, once it is paired again; a box whose certificate was only
withdrawn (replaced elsewhere) keeps its pairing and says so (docs/pairing.md 5.5, 5.6).

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


def audit_events(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "state" / "audit.jsonl").open()]


def test_an_unpaired_box_forgets_the_back_office_keeps_its_evidence_and_uploads_when_paired(
    pki: TestPki, tmp_path: Path
) -> None:
    """RULES L5: the admin unpairs the box; at its next contact the box learns it from the back
    office's answer over the pinned link, forgets its credentials and the back office's address,
    says so on the page, and keeps its evidence, which the next pairing uploads."""
    clip = generate_clip(tmp_path / "clip.ts", seconds=2, keyframe_interval_frames=25)
    root = tmp_path / "box"
    with start_back_office(pki, tmp_path / "office", documents=()) as office:
        config = box_config(root)
        assert run(MVB, "--config", config, "import", clip).returncode == 0
        assert mvb_pair(config, office.code()).returncode == 0
        unpaired = run(MVB_ADMIN, "unpair", "--state", office.state, "--box-id", BOX)
        assert unpaired.returncode == 0, unpaired.stderr

        with mvb_run(config):
            wait_for(
                lambda: "unpaired" in alert_codes(config),
                "the box to say it was unpaired",
                STEP_TIMEOUT_S,
            )
            assert not (root / "state" / "pairing").exists(), "credentials and address forgotten"
            assert not (root / "state" / "fleet-metadata").exists()
            codes = alert_codes(config)
            assert "credentials_withdrawn" not in codes
            assert "not_paired" not in codes
            queue = get(config, "/api/uploads")
            assert [row["state"] for row in queue["files"]] == ["waiting"]
            assert files_on_card(config) == 1  # the evidence stays
            sticky = json.loads((root / "state" / "alarms.json").read_text())["sticky"]
            assert "unpaired" in sticky, "still said after a restart"

            paired = mvb_pair(config, office.code())  # a fresh pairing: the box runs meanwhile

            assert paired.returncode == 0, paired.stderr
            wait_for(lambda: files_on_card(config) == 0, "the upload", STEP_TIMEOUT_S)
            assert "unpaired" not in alert_codes(config)
            assert get(config, "/api/uploads")["credentials_withdrawn"] is False
    stored = list((office.uploads / "complete").glob("*.mvbe"))
    assert len(stored) == 1
    events = [entry["event"] for entry in audit_events(root)]
    assert events.count("gateway.started") == 1  # no restart
    assert events.count("gateway.unpaired") == 1  # once, whoever heard it first
    [withdrawn] = [e for e in audit_events(root) if e["event"] == "uplink.credentials_withdrawn"]
    assert withdrawn["fields"]["unpaired"] is True
    unpaired_at = events.index("gateway.unpaired")
    assert (
        unpaired_at < events.index("uplink.credentials_renewed") < events.index("uplink.uploaded")
    )


def test_a_box_whose_certificate_was_replaced_is_withdrawn_and_keeps_its_pairing(
    pki: TestPki, tmp_path: Path
) -> None:
    """A refusal that does not say "unpaired" (here: a re-pair of the box id elsewhere replaced
    its certificate) only stops the box: it keeps its credentials and waits (issue 12)."""
    clip = generate_clip(tmp_path / "clip.ts", seconds=2, keyframe_interval_frames=25)
    root = tmp_path / "box"
    with start_back_office(pki, tmp_path / "office", documents=()) as office:
        config = box_config(root)
        assert run(MVB, "--config", config, "import", clip).returncode == 0
        assert mvb_pair(config, office.code()).returncode == 0
        elsewhere = box_config(tmp_path / "elsewhere")
        assert mvb_pair(elsewhere, office.code("--re-pair"), "--re-pair").returncode == 0

        with mvb_run(config):
            wait_for(
                lambda: "credentials_withdrawn" in alert_codes(config),
                "the box to say its certificate is refused",
                STEP_TIMEOUT_S,
            )
            assert "unpaired" not in alert_codes(config)
            assert (root / "state" / "pairing").is_dir(), "a withdrawal forgets nothing"
            assert files_on_card(config) == 1
    assert "gateway.unpaired" not in [entry["event"] for entry in audit_events(root)]
