"""Reports (RULES R4, docs/webui.md 4) on a real running box over its loopback API: the book
follows the recorder, a report is sealed as encrypted evidence of its recording and readable
only with the back office's key, never in plaintext on the card or in the state directory."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.gateway.web.feature_rig import (
    LocalBox,
    feature_box_config,
    files_containing,
    record_once,
    run_command,
    running_box,
)

MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
WHAT = "Verbal threat at the market square; subject calmed down after the recording started."
REASON = "No time: the subject approached the colleague at once."
CORRECTED = "Verbal threat at the fish market, not the market square."
CORRECTION_REASON = "I named the wrong square."
WARNING = "Warned a cyclist shouting at the officer on the ferry quay; he calmed down."
RID = "0123456789abcdef0123456789abcdef"
INFORMED_AT_MS = 1_780_000_000_000
GOOD = {"what": WHAT, "warned_beforehand": True, "premises": "public"}


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[LocalBox]:
    async with running_box(feature_box_config(tmp_path)) as running:
        yield running


async def put_report(
    box: LocalBox, client: aiohttp.ClientSession, recording_id: str, body: Any
) -> tuple[int, dict[str, Any]]:
    """PUT with the path sent exactly as written (no client-side normalisation of `..`)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    url = URL(f"{box.base}/api/reports/{recording_id}", encoded=True)
    reply = await client.put(url, data=data, headers={"Content-Type": "application/json"})
    return reply.status, await reply.json()


# -- over HTTP on a running box --------------------------------------------------------------------


async def test_a_report_is_sealed_as_evidence_of_its_recording(box: LocalBox) -> None:
    async with box.client() as client:
        recording_id = await record_once(box, client)
        listed = await (await client.get("/api/reports")).json()
        assert [e["recording_id"] for e in listed["missing"]] == [recording_id]
        assert listed["missing"][0]["trigger_source"] == "officer"
        assert listed["missing"][0]["duration_s"] is not None
        status = await (await client.get("/api/status")).json()
        assert status["reports"] == {"missing": 1, "filed": 0, "running": 0}
        assert "report_missing" in [a["code"] for a in status["alerts"]]

        body = {
            "what": WHAT,
            "warned_beforehand": False,
            "not_warned_reason": REASON,
            "informed_afterwards": True,
            "informed_at_ms": INFORMED_AT_MS,
            "premises": "home",
            "premises_ground": "consent",
        }
        code, answer = await put_report(box, client, recording_id, body)
        assert code == 200, answer
        assert answer["recording_id"] == recording_id

        code, again = await put_report(box, client, recording_id, body)
        assert (code, again["error"]) == (409, "already_filed")
        listed = await (await client.get("/api/reports")).json()
        assert listed["missing"] == []
        assert [e["recording_id"] for e in listed["filed"]] == [recording_id]
        status = await (await client.get("/api/status")).json()
        assert "report_missing" not in [a["code"] for a in status["alerts"]]

    records = box.running.box.store.catalog.by_recording(recording_id)
    assert answer["file_id"] in [r.file_id for r in records]
    (report,) = [r for r in box.decrypt_all() if r.header.recording_id.hex() == recording_id]
    filed = [m for m in report.metadata if m["type"] == "report"]
    assert filed[0]["what"] == WHAT
    assert filed[0]["not_warned_reason"] == REASON
    assert filed[0]["warned_beforehand"] is False
    assert (filed[0]["informed_afterwards"], filed[0]["informed_at_ms"]) == (True, INFORMED_AT_MS)
    assert (filed[0]["premises"], filed[0]["premises_ground"]) == ("home", "consent")
    assert (filed[0]["entry_kind"], filed[0]["corrects_file_id"]) == ("recording", None)
    recording_facts = next(m for m in report.metadata if m["type"] == "recording")
    assert (recording_facts["camera"], recording_facts["container"]) == ("report", "json")
    roots = [box.config.card_dir, box.config.state_dir]
    for needle in (WHAT.encode(), REASON.encode(), b"market square"):
        assert files_containing(roots, needle) == []
    assert (
        "storage.report_sealed",
        {"recording_id": recording_id, "file_id": answer["file_id"]},
    ) in (box.audit_events("storage.report"))


async def test_bad_report_requests_get_clear_errors_and_the_box_keeps_running(
    box: LocalBox,
) -> None:
    async with box.client() as client:
        recording_id = await record_once(box, client)
        good = GOOD
        cases: list[tuple[str, Any, int, str]] = [
            (RID, good, 404, "unknown_recording"),
            ("..%2F..%2Fstate%2Freports.json", good, 404, "unknown_recording"),
            ("%2e%2e", good, 404, "unknown_recording"),
            (recording_id.upper(), good, 404, "unknown_recording"),
            (recording_id, b"{not json", 400, "bad_json"),
            (recording_id, b"\xff\xfe", 400, "bad_json"),
            (recording_id, b'{"what": NaN}', 400, "bad_json"),
            (recording_id, [good], 422, "invalid"),
            (recording_id, {"what": 1, "warned_beforehand": True}, 422, "invalid"),
            (recording_id, {**GOOD, "what": "x" * 5000}, 422, "invalid"),
            (recording_id, {**GOOD, "premises": "home"}, 422, "invalid"),
            (recording_id, {"what": WHAT, "warned_beforehand": True}, 422, "invalid"),
            (recording_id, b'{"what": "' + b"x" * 70_000 + b'"}', 413, "too_large"),
        ]
        for path_id, body, status, error in cases:
            code, answer = await put_report(box, client, path_id, body)
            assert (code, answer["error"]) == (status, error), (path_id, answer)
            assert answer["message"]
        code, answer = await put_report(box, client, recording_id, good)
        assert code == 200, answer
        assert (await client.get("/api/status")).status == 200


async def test_the_book_survives_a_restart(tmp_path: Path) -> None:
    config = feature_box_config(tmp_path)
    async with running_box(config) as box, box.client() as client:
        recording_id = await record_once(box, client)
    book = json.loads((tmp_path / "box" / "state" / "reports.json").read_text())
    assert [e["recording_id"] for e in book["entries"]] == [recording_id]
    async with running_box(config) as box, box.client() as client:
        listed = await (await client.get("/api/reports")).json()
        assert [e["recording_id"] for e in listed["missing"]] == [recording_id]
        code, _ = await put_report(box, client, recording_id, GOOD)
        assert code == 200


async def test_mvb_report_files_over_the_loopback_channel(box: LocalBox) -> None:
    async with box.client() as client:
        recording_id = await record_once(box, client)
        command = [str(MVB), "--config", str(box.config_path), "report", recording_id]
        refused = await run_command(*command, "--what", WHAT, "--not-warned", "")
        assert refused.returncode == 1
        assert "not_warned_reason must not be empty" in refused.stderr
        unplaced = await run_command(*command, "--what", WHAT, "--not-warned", REASON)
        assert unplaced.returncode == 1
        assert "informed_afterwards must be true or false" in unplaced.stderr
        place = ["--premises", "private_premises", "--premises-ground", "warrant"]
        informed = ["--informed-at", "2026-05-28T14:30:00+02:00"]
        filed = await run_command(
            *command, "--what", WHAT, "--not-warned", REASON, *informed, *place
        )
        assert filed.returncode == 0, filed.stderr
        assert f"report filed for recording {recording_id}" in filed.stdout
        again = await run_command(*command, "--what", WHAT, "--warned", *place)
        assert again.returncode == 1
        assert "already has its report" in again.stderr
        correction = [*place, "--correction", CORRECTION_REASON]
        corrected = await run_command(*command, "--what", CORRECTED, "--warned", *correction)
        assert corrected.returncode == 0, corrected.stderr
        assert f"correction filed for recording {recording_id}" in corrected.stdout
        warning = [str(MVB), "--config", str(box.config_path), "warning", "--what", WARNING]
        registered = await run_command(*warning, "--premises", "public")
        assert registered.returncode == 0, registered.stderr
        assert "warning registered without a GPS position" in registered.stdout

    out = box.config.state_dir.parent / "decrypted"
    sealed = [str(p) for p in box.running.box.store.layout.sealed_files()]
    viewing_log = box.config.state_dir.parent / "viewing-log"
    made = await run_command(str(MVB_ADMIN), "viewing", "init", "--log", str(viewing_log))
    assert made.returncode == 0, made.stderr
    decrypted = await run_command(
        str(MVB_ADMIN),
        "decrypt",
        *sealed,
        "--key",
        str(box.recipient_key_path),
        "--out",
        str(out),
        "--log",
        str(viewing_log),
        "--reason",
        "test: the report reaches the back office",
    )
    assert decrypted.returncode == 0, decrypted.stderr
    documents = [json.loads(p.read_text()) for p in out.glob("*.json")]
    reports = [m for d in documents for m in d["metadata"] if m["type"] == "report"]
    by_text = {r["what"]: r for r in reports}
    assert sorted(by_text) == sorted([WHAT, CORRECTED, WARNING])
    first, later, warned = by_text[WHAT], by_text[CORRECTED], by_text[WARNING]
    assert (first["recording_id"], first["informed_at_ms"]) == (recording_id, 1_779_971_400_000)
    assert (first["premises"], first["premises_ground"]) == ("private_premises", "warrant")
    assert later["recording_id"] == recording_id
    assert later["correction_reason"] == CORRECTION_REASON
    assert later["corrects_file_id"] is not None
    assert warned["entry_kind"] == "warning"
    assert (warned["gps_status"], warned["position"]) == ("no_gpsd", None)
