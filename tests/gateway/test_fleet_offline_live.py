"""Fleet documents on a paired box with real parts (issue 12: holds, and USB push without a
link): the real back office (`mvb-admin serve`, stopped and served again on the same ports), the
real fleet repository and the admin's `mvb-admin config hold|release`, `mvb config push`, and the
box's own service (`start_box`, in this process so that its waits can be shortened).

- A hold signed by the fleet admin reaches a box whose every link is down, on a USB stick: the
  bundle applies although no back office is reachable, the recording is held, and the report of
  it waits on the box (across a restart) until the back office is back, which then has it in
  its fleet-reports.jsonl. The held file outlives retention until a later document, fetched over
  the link, releases it.
- A document that meets a camera already down is deferred, not refused: reported as deferred,
  and applied by itself as soon as the camera delivers.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from backoffice import cli as admin_cli
from config.local import load_config
from demo.synthetic import generate_clip
from gateway.run import RunningBox, start_box, stop_box
from storage.retention import Deletion
from storage.store import EvidenceStore
from tests.cameras import free_port
from tests.gateway.fleet_rig import (
    BOX,
    MVB,
    REPORTS_FILE,
    BackOffice,
    box_config,
    mvb_pair,
    publish_document,
    run_async,
    running_box_config,
    serve_again,
    start_back_office,
    write_recipient_pub,
)
from tests.tls_helpers import TestPki
from tests.trusted_time_helpers import trusted_time_later

PATH = f"boxes/{BOX}.toml"
BASE_DOCUMENT = b"[recording]\nprerecord_s = 60\n"
IMPORTED = re.compile(r"recording (?P<rec>[0-9a-f]{32}) file (?P<file>[0-9a-f]{32})")
WAIT_S = 30.0


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def reports(office_root: Path) -> list[dict[str, Any]]:
    path = office_root / "uploads" / REPORTS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def admin(office: BackOffice, command: str, recording_id: str, *extra: str) -> str:
    """`mvb-admin config hold|release` then `publish`, as the fleet admin runs them."""
    keys = office.keys
    repo = ["--repo", str(office.fleet.repo_dir), "--trust", str(office.trust)]
    edit = ["config", command, *repo, "--targets-key", str(keys / "targets.key"), "--path", PATH]
    assert admin_cli.main([*edit, "--recording", recording_id, *extra]) == 0
    online = ["--snapshot-key", str(keys / "snapshot.key")]
    online += ["--timestamp-key", str(keys / "timestamp.key")]
    assert admin_cli.main(["config", "publish", *repo, *online]) == 0
    return recording_id


async def retention_at(store: EvidenceStore, days_later: float) -> list[Deletion]:
    """One retention pass as if the box had run `days_later` more days (trusted time, the clock
    retention judges by: tests/trusted_time_helpers.py)."""
    trusted_time_later(store, days_later)
    return await asyncio.to_thread(store.apply_retention)


@asynccontextmanager
async def box_running(config: Path) -> AsyncIterator[RunningBox]:
    """The box's service in this process, its fleet waits shortened for the test."""
    running = await start_box(load_config(config))
    assert running.fleet is not None, "the box is paired"
    running.fleet.applier.settle_s = 0.3
    running.fleet.retry_s = 0.2
    try:
        yield running
    finally:
        await stop_box(running)


async def api(running: RunningBox, method: str, path: str) -> Any:
    api_config = running.box.config.api
    url = f"http://{api_config.host}:{api_config.port}{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url) as answer:
        return await answer.json()


async def test_a_pushed_hold_applies_with_every_link_down_and_is_reported_when_it_returns(
    pki: TestPki, tmp_path: Path
) -> None:
    recipient_pub = write_recipient_pub(tmp_path)
    office_root, ports = tmp_path / "office", {"mutual_port": free_port(), "pair_port": free_port()}
    clip = generate_clip(tmp_path / "clip.ts", seconds=2, keyframe_interval_frames=25)
    with start_back_office(pki, office_root, documents=(BASE_DOCUMENT,), **ports) as office:
        paired = mvb_pair(box_config(tmp_path / "box", recipient_pub), office.code())
        assert paired.returncode == 0, paired.stderr
        config = running_box_config(tmp_path / "box", recipient_pub, clip)
        imported = await run_async(MVB, "--config", config, "import", clip)
        assert imported.returncode == 0, imported.stderr
        match = IMPORTED.search(imported.stdout)
        assert match is not None, imported.stdout
        recording_id, file_id = match["rec"], match["file"]
        admin(office, "hold", recording_id, "--ground", "police_demand")  # serial 2
        (tmp_path / "stick.tar").write_bytes(office.fleet.export_bundle([PATH]))
    # The back office is stopped: every link of the box is down from its start.

    async with box_running(config) as running:
        pushed = await run_async(MVB, "--config", config, "config", "push", tmp_path / "stick.tar")
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.strip() == "applied configuration serial 2"
        fleet = (await api(running, "GET", "/api/status"))["fleet"]
        assert (fleet["applied_serial"], fleet["reported_serial"]) == (2, 0)
        assert fleet["reports_waiting"] == 1
        holds = (await api(running, "GET", "/api/holds"))["holds"]
        assert [(h["recording_id"], h["sources"], h["ground"]) for h in holds] == [
            (recording_id, ["fleet"], "police_demand")
        ]
    async with box_running(config) as running:  # a restart: the report still waits
        status = await api(running, "GET", "/api/status")
        assert status["fleet"]["reports_waiting"] == 1
        assert "report_not_sent" in [alert["code"] for alert in status["alerts"]]
        assert reports(office_root) == [], "nothing reached the stopped back office"
        # Retention 29 days on (in trusted time), the back office still away: held and never
        # attested, kept (S4). Checked before the link returns: once the back office attests the
        # upload, S3 deletes the held file whatever its hold (docs/retention.md).
        assert await retention_at(running.box.store, days_later=29) == []
        assert running.box.store.layout.sealed_path(recording_id, file_id).exists()

        with serve_again(pki, office_root, **ports) as office:
            await wait_for(
                lambda: any(r["config_serial"] == 2 for r in reports(office_root)),
                "the applied report in the back office's fleet-reports.jsonl",
            )
            (report,) = [r for r in reports(office_root) if r["config_serial"] == 2]
            assert (report["box_id"], report["outcome"], report["reason"]) == (BOX, "applied", "")
            assert report["at_ms"] < int(time.time() * 1000) - 100, "made when it was applied"
            status = await api(running, "GET", "/api/status")
            assert (status["fleet"]["reported_serial"], status["fleet"]["reports_waiting"]) == (
                2,
                0,
            )
            store = running.box.store
            admin(office, "release", recording_id)  # serial 3, over the link
            await wait_for(lambda: not store.holds.held(), "the fleet's release applied")
            # Released, the file goes: by this retention pass (29 days on, never attested) or,
            # if the returned link already uploaded it and the back office attested it, by the
            # box's own retention pass on the attestation (S3). Either way one audited deletion.
            await retention_at(store, days_later=29)
            assert not store.layout.sealed_path(recording_id, file_id).exists()
    audit = [json.loads(line) for line in (tmp_path / "box/state/audit.jsonl").open()]
    deletions = [
        e["fields"]["reason"]
        for e in audit
        if e["event"] == "storage.file_deleted" and e["fields"]["file_id"] == file_id
    ]
    assert len(deletions) == 1, deletions
    assert deletions[0] in {"retention expired", "attested by back office"}, deletions
    holds_audited = [
        (e["event"], e["fields"]["source"]) for e in audit if e["event"].startswith("hold.")
    ]
    assert holds_audited == [("hold.set", "fleet"), ("hold.released", "fleet")]


async def test_a_document_that_meets_a_camera_already_down_waits_for_it_then_applies(
    pki: TestPki, tmp_path: Path
) -> None:
    recipient_pub = write_recipient_pub(tmp_path)
    office_root = tmp_path / "office"
    clip = tmp_path / "camera" / "clip.ts"  # not there yet: the camera delivers nothing
    with start_back_office(pki, office_root, documents=()) as office:
        paired = mvb_pair(box_config(tmp_path / "box", recipient_pub), office.code())
        assert paired.returncode == 0, paired.stderr
        config = running_box_config(tmp_path / "box", recipient_pub, clip)
        async with box_running(config) as running:
            fleet = running.fleet
            assert fleet is not None
            serial = publish_document(office.fleet, office.signers(), BASE_DOCUMENT)
            await wait_for(lambda: fleet.status.pending_serial == serial, "the deferral")
            assert fleet.status.applied_serial == 0
            assert str(fleet.status.last_outcome).startswith(
                "deferred: camera(s) not delivering: dashcam"
            )
            await wait_for(
                lambda: [r["outcome"] for r in reports(office_root)] == ["deferred"],
                "the deferral's report",
            )
            await asyncio.sleep(1.5)  # several polls of the same document meanwhile

            # The camera is back: its clip appears whole (made beside, then renamed into place).
            made = generate_clip(tmp_path / "made.ts", seconds=2, keyframe_interval_frames=25)
            clip.parent.mkdir()
            made.rename(clip)
            await wait_for(lambda: fleet.status.applied_serial == serial, "the retry", 45.0)
            assert fleet.status.pending_serial is None
            camera = running.service.status()["cameras"]["dashcam"]
            assert camera["prerecord_s"] == 60.0
            await wait_for(
                lambda: [r["outcome"] for r in reports(office_root)] == ["deferred", "applied"],
                "the applied report",
            )
    audit = (tmp_path / "box/state/audit.jsonl").read_text()
    assert audit.count('"config.deferred"') == 1, "audited once, not at every poll"
    assert audit.count('"config.applied"') == 1
    assert '"config.refused"' not in audit
