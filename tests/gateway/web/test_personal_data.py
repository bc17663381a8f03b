"""Personal data on the box (issue 13, item 5; docs/audit-custody.md 6): after a shift with
recordings, a report and a restart in the middle, the card and the state directory hold the
officer id and the bodycam serials nowhere in plaintext; the back office's key opens them (in
the evidence, in the audit log with `mvb-admin audit show`, in a sealed shift). A real box."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from storage.sealed import open_sealed
from tests.gateway.web.feature_rig import (
    LocalBox,
    feature_box_config,
    files_containing,
    record_once,
    replay_clip,
    running_box,
    wait_for,
)

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
# Long and distinct, so that no random byte run of an encrypted file can match them by chance.
OFFICER = "BOA-77123-ZULU"
BODYCAMS = ["BODYCAM-SN-558812", "BODYCAM-SN-558813"]


async def post(client: aiohttp.ClientSession, path: str, body: Any) -> dict[str, Any]:
    reply = await client.post(path, json=body)
    assert reply.status == 200, await reply.text()
    answer: dict[str, Any] = await reply.json()
    return answer


async def camera_ready(box: LocalBox) -> None:
    camera = box.running.service.cameras["dashcam"]
    await wait_for(lambda: camera.ring.span_ns() > 0, "the camera's first packets")


async def test_no_officer_id_or_bodycam_serial_in_plaintext_on_card_or_state(
    tmp_path: Path,
) -> None:
    config = feature_box_config(tmp_path, camera_clip=replay_clip(tmp_path))
    async with running_box(config) as box, box.client() as client:
        await camera_ready(box)
        await post(client, "/api/shift/start", {"officer_id": OFFICER, "bodycam_serials": BODYCAMS})
        first = await record_once(box, client)
        report = {"what": "A verbal threat.", "warned_beforehand": True, "premises": "public"}
        reply = await client.put(f"/api/reports/{first}", json=report)
        assert reply.status == 200, await reply.text()
    async with running_box(config) as box, box.client() as client:  # a restart mid-shift
        await camera_ready(box)
        after_restart = await record_once(box, client)
        await post(client, "/api/shift/start", {"officer_id": OFFICER, "bodycam_serials": BODYCAMS})
        resumed = await record_once(box, client)
        await post(client, "/api/shift/end", {"acknowledge_missing_reports": True})

    roots = [box.config.card_dir, box.config.state_dir]
    for needle in (OFFICER, *BODYCAMS):
        assert files_containing(roots, needle.encode()) == [], needle

    # The back office reads them all: in the evidence...
    facts: dict[str, dict[str, Any]] = {}
    filed = []
    for read in box.decrypt_all():
        for item in read.metadata:
            if item["type"] == "recording" and "device_serial" in item:  # a camera's file
                facts[item["recording_id"]] = item
            elif item["type"] == "report":
                filed.append(item)
    assert [(r["recording_id"], r["officer_id"]) for r in filed] == [(first, OFFICER)]
    for recording_id in (first, resumed):
        assert facts[recording_id]["officer_ids"] == [OFFICER]  # the dashcam: the shift's
        assert facts[recording_id]["shift_officers"] == [
            {"officer_id": OFFICER, "bodycam_serials": BODYCAMS}
        ]
    sealed_shift = facts[after_restart]["shift_sealed"]
    assert (facts[after_restart]["officer_ids"], facts[after_restart]["shift_officers"]) == ([], [])
    opened = json.loads(open_sealed(sealed_shift, box.recipient, "shift"))
    assert opened["officers"] == [{"officer_id": OFFICER, "bodycam_serials": BODYCAMS}]
    # ... and in the audit log, with its own tool.
    log = box.config.state_dir / "audit.jsonl"
    shown = subprocess.run(
        [str(MVB_ADMIN), "audit", "show", str(log), "--key", str(box.recipient_key_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    shift_lines = [line for line in shown if " shift." in line]
    assert [line.split()[2] for line in shift_lines] == [
        "shift.started",
        "shift.resumed",
        "shift.ended",
    ]
    assert all(f'officer_id="{OFFICER}"' in line for line in shift_lines), shift_lines
    hidden = subprocess.run(
        [str(MVB_ADMIN), "audit", "show", str(log)], capture_output=True, text=True, check=True
    ).stdout
    assert OFFICER not in hidden
    assert "officer_id=(sealed)" in hidden
    unsealed = subprocess.run(
        [str(MVB_ADMIN), "audit", "unseal", sealed_shift, "--key", str(box.recipient_key_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(unsealed)["officers"][0]["officer_id"] == OFFICER
