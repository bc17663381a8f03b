"""The whole report book (RULES R7, R8; docs/webui.md 4) on a real running box over its loopback
API: a warning without a recording is sealed with the box's time and a position from a real gpsd
(gpsfake); a correction is a later sealed file linked to the first, which stays byte for byte;
the municipality's [reports] settings decide which members are required. Read back with the
back office's key; no text the officer typed is anywhere in plaintext."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.local import load_config
from tests.gateway.web.feature_rig import (
    LocalBox,
    feature_box_config,
    features,
    files_containing,
    record_once,
    running_box,
    wait_for,
)
from tests.gpsfake import Gpsfake, read_route

WHAT = "Warned a man kicking the parking meter at the harbour (marker 9d41)."
REPORT = "Verbal threat at the harbour office (marker 9d41)."
CORRECTED = "Verbal threat at the harbour office, in its yard (marker 9d41)."
WHY = "The yard is private premises: I first wrote public (marker 9d41)."
FIRST = {"what": REPORT, "warned_beforehand": True, "premises": "public"}


def metadata_of(box: LocalBox, recording_id: str) -> list[dict[str, Any]]:
    """The sealed report-book files of one entry, read with the back office's key, by filing."""
    found = [
        m
        for report in box.decrypt_all()
        if report.header.recording_id.hex() == recording_id
        for m in report.metadata
        if m["type"] == "report"
    ]
    return sorted(found, key=lambda m: m["filed_at_ms"])


@pytest.fixture
def gpsd_config(tmp_path: Path) -> Iterator[Path]:
    """A box configuration whose gpsd is a real one replaying the shipped track (looping)."""
    config_path = feature_box_config(tmp_path)
    gpsfake = Gpsfake(load_config(config_path).gps.port, tmp_path, singleshot=False)
    try:
        yield config_path
    finally:
        gpsfake.stop()


async def test_a_warning_is_sealed_with_the_time_and_the_gps_position(gpsd_config: Path) -> None:
    route = read_route().values()
    async with running_box(gpsd_config) as box, box.client() as client:
        await wait_for(lambda: box.running.gps.fix is not None, "a fix from gpsd")
        before_ms = time.time_ns() // 1_000_000
        reply = await client.post("/api/warnings", json={"what": WHAT, "premises": "public"})
        assert reply.status == 200, await reply.text()
        answer = await reply.json()
        assert answer["position_known"] is True
        warning_id = answer["recording_id"]
        listed = await (await client.get("/api/reports")).json()
        (entry,) = [e for e in listed["filed"] if e["recording_id"] == warning_id]
        assert (entry["kind"], entry["report_file_id"]) == ("warning", answer["file_id"])
        assert listed["missing"] == [], "a warning is its own report"
        refused = await client.post("/api/warnings", json={"what": WHAT})
        assert (refused.status, (await refused.json())["field"]) == (422, "premises")

    (sealed,) = metadata_of(box, warning_id)
    assert sealed["entry_kind"] == "warning"
    assert before_ms <= sealed["warned_at_ms"] == answer["at_ms"]
    assert sealed["gps_status"] in ("fix", "stale")
    position = sealed["position"]
    assert any(
        abs(f.lat - position["lat"]) < 1e-5 and abs(f.lon - position["lon"]) < 1e-5 for f in route
    ), "the position is one of the track's"
    assert (sealed["what"], sealed["premises"], sealed["premises_ground"]) == (WHAT, "public", None)
    roots = [box.config.card_dir, box.config.state_dir]
    assert files_containing(roots, b"marker 9d41") == []
    assert (
        "report.filed",
        {
            "kind": "warning",
            "recording_id": warning_id,
            "file_id": answer["file_id"],
            "channel": "local",
            "by": "local",
        },
    ) in box.audit_events("report.filed")


async def test_a_correction_is_a_later_sealed_report_and_the_first_stays(tmp_path: Path) -> None:
    async with running_box(feature_box_config(tmp_path)) as box, box.client() as client:
        recording_id = await record_once(box, client)
        path = f"/api/reports/{recording_id}/corrections"
        correction = {
            "correction_reason": WHY,
            "what": CORRECTED,
            "warned_beforehand": True,
            "premises": "private_premises",
            "premises_ground": "consent",
        }
        early = await client.post(path, json=correction)
        assert (early.status, (await early.json())["error"]) == (409, "not_filed")

        filed = await client.put(f"/api/reports/{recording_id}", json=FIRST)
        assert filed.status == 200, await filed.text()
        first_file_id = (await filed.json())["file_id"]
        first_path = box.running.box.store.layout.sealed_files()
        first_bytes = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in first_path}

        cases: list[tuple[str, Any, int, str]] = [
            (
                path,
                {k: v for k, v in correction.items() if k != "correction_reason"},
                422,
                "invalid",
            ),
            (path, {**correction, "premises_ground": None}, 422, "invalid"),
            (f"/api/reports/{'0' * 32}/corrections", correction, 404, "unknown_recording"),
        ]
        for url, body, status, error in cases:
            reply = await client.post(url, json=body)
            assert (reply.status, (await reply.json())["error"]) == (status, error), body
        for number in (1, 2):
            reply = await client.post(path, json=correction)
            assert reply.status == 200, await reply.text()
            answer = await reply.json()
            assert (answer["corrects_file_id"], answer["correction_no"]) == (first_file_id, number)
        listed = await (await client.get("/api/reports")).json()
        (entry,) = listed["filed"]
        assert (entry["report_file_id"], entry["corrections"]) == (first_file_id, 2)
        again = await client.put(f"/api/reports/{recording_id}", json=FIRST)
        assert (await again.json())["error"] == "already_filed"

    for sealed_path, digest in first_bytes.items():
        assert hashlib.sha256(sealed_path.read_bytes()).hexdigest() == digest, "never altered"
    first, *later = metadata_of(box, recording_id)
    assert (first["what"], first["premises"], first["corrects_file_id"]) == (
        REPORT,
        "public",
        None,
    )
    assert [m["correction_no"] for m in later] == [1, 2]
    for m in later:
        assert (m["what"], m["correction_reason"]) == (CORRECTED, WHY)
        assert (m["premises"], m["premises_ground"]) == ("private_premises", "consent")
        assert m["corrects_file_id"] == first_file_id
    sealed_events = [f for e, f in box.audit_events("storage.report_sealed")]
    assert len([f for f in sealed_events if f["recording_id"] == recording_id]) == 3
    filed_events = [f for e, f in box.audit_events("report.filed")]
    assert [(f["kind"], f["file_id"] == first_file_id) for f in filed_events] == [
        ("report", True),
        ("correction", False),
        ("correction", False),
    ]
    assert {(f["recording_id"], f["channel"], f["by"]) for f in filed_events} == {
        (recording_id, "local", "local")
    }
    assert files_containing([box.config.card_dir, box.config.state_dir], b"marker 9d41") == []


async def test_the_municipality_decides_which_members_are_required(tmp_path: Path) -> None:
    lenient = "[reports]\nrequire_informed_afterwards = false\nrequire_premises = false\n"
    bare = {"what": REPORT, "warned_beforehand": False, "not_warned_reason": WHY}
    async with running_box(feature_box_config(tmp_path, extra=lenient)) as box:
        async with box.client() as client:
            recording_id = await record_once(box, client)
            listed = await (await client.get("/api/reports")).json()
            assert listed["required"] == []
            reply = await client.put(f"/api/reports/{recording_id}", json=bare)
            assert reply.status == 200, await reply.text()
        (sealed,) = metadata_of(box, recording_id)
        assert (sealed["informed_afterwards"], sealed["premises"]) == (None, None)

    async with running_box(feature_box_config(tmp_path / "strict")) as box:
        async with box.client() as client:
            recording_id = await record_once(box, client)
            listed = await (await client.get("/api/reports")).json()
            assert listed["required"] == ["informed_afterwards", "premises"]
            reply = await client.put(f"/api/reports/{recording_id}", json=bare)
            assert (reply.status, (await reply.json())["field"]) == (422, "informed_afterwards")
        assert features(box).reports.missing_ids() == [recording_id]
