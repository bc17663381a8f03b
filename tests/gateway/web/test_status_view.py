"""The status document (docs/webui.md 3): the pure builder from plain facts, and GET
/api/status on a real running box (card figures from statvfs, the catalog's upload queue, the
position only for the officer)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.status_facts import (
    GpsFacts,
    LinkBudget,
    RecordingFacts,
    StatusInputs,
    StorageFacts,
    UplinkFacts,
    UplinkIdle,
    storage_facts,
)
from gateway.web.status_view import build_status
from storage.models import FileRecord, FileState
from tests.gateway.web.feature_rig import LocalBox, feature_box_config, run_command, running_box

MVB = Path(sys.executable).with_name("mvb")
NOW_MS = 1_790_000_000_000
DAY_MS = 86_400_000


def record(file_id: str, state: FileState, **changes: Any) -> FileRecord:
    base = FileRecord(
        file_id=file_id,
        recording_id="r" + file_id,
        file_seq=0,
        created_at_ms=NOW_MS - DAY_MS,
        state=state,
        size_bytes=1000,
        sha256_hex="00" * 32,
    )
    return base.with_changes(**changes)


def facts(**changes: Any) -> StatusInputs:
    storage = StorageFacts(
        card_total_bytes=64_000, card_free_bytes=32_000, reserve_bytes=4_000, retention_days=28
    )
    inputs = {
        "at_ms": NOW_MS,
        "device_serial": "MVB-1",
        "vehicle_id": "veh-1",
        "uptime_s": 100.0,
        "service": {
            "state": "standby",
            "recording_for_s": 0.0,
            "cameras": {},
            "alarms": {},
        },
        "recording": RecordingFacts(None, None, None, 1800.0),
        "storage": storage,
        "uplink": UplinkIdle("not paired", "the box is not paired with a back office"),
        "gps": GpsFacts("no_gpsd"),
        "paired": False,
        "fleet": None,
        "shift": {"active": False},
        "reports": {"missing": 0, "filed": 0},
        "software_version": "0.1.0",
    }
    return StatusInputs(**{**inputs, **changes})


def link(name: str, *, uploads: int, goodput_mbit_s: float | None) -> dict[str, Any]:
    return {
        "name": name,
        "cost_class": "wifi",
        "state": "up",
        "usable": True,
        "pin_blocked": False,
        "udp_blocked": False,
        "rtt_ms": 20.0,
        "goodput_mbit_s": goodput_mbit_s,
        "budget_remaining_bytes": None,
        "uploads": uploads,
        "not_in_the_document": "dropped",
    }


def test_the_catalog_becomes_card_and_queue_figures() -> None:
    records = [
        record("a", FileState.SEALED, upload_class="P0", created_at_ms=NOW_MS - 20 * DAY_MS),
        record("b", FileState.UPLOADING, size_bytes=500),
        record("c", FileState.VERIFIED, attested_sha256_hex="00" * 32),
        record("d", FileState.DELETED),
        record("e", FileState.SEALED, interrupted_at_chunk=3),
        record("f", FileState.RECORDING, sha256_hex=None),
    ]
    storage = storage_facts(
        records,
        card_total_bytes=64_000,
        card_free_bytes=32_000,
        reserve_bytes=4_000,
        retention_days=28,
    )
    assert (storage.files_on_card, storage.bytes_on_card, storage.interrupted_files) == (
        5,
        4500,
        1,
    )
    assert storage.waiting_files == {"P0": 1, "P1": 2}
    assert storage.waiting_bytes == {"P0": 1000, "P1": 1500}
    assert storage.flagged_recordings == frozenset({"ra"})
    document = build_status(facts(storage=storage))
    assert document["storage"]["oldest_waiting_age_s"] == 20 * 86_400.0
    assert document["storage"]["waiting_by_class"] == {
        "P0": {"files": 1, "bytes": 1000},
        "P1": {"files": 2, "bytes": 1500},
        "P2": {"files": 0, "bytes": 0},
    }
    assert document["storage"]["retention_s"] == 28 * 86_400


def test_the_uplink_summary_with_an_eta_from_the_links_that_upload() -> None:
    storage = StorageFacts(
        card_total_bytes=1,
        card_free_bytes=1,
        reserve_bytes=0,
        retention_days=28,
        waiting_files={"P1": 2},
        waiting_bytes={"P1": 2_000_000},
    )
    status = {
        "links": [
            link("wifi", uploads=1, goodput_mbit_s=8.0),
            link("lte", uploads=0, goodput_mbit_s=2.0),
        ],
        "uploading": [
            {
                "file_id": "f" * 32,
                "link": "wifi",
                "transport": "https",
                "offset_bytes": 5,
                "size_bytes": 9,
            }
        ],
        "waiting": [
            {"file_id": "x", "class": "P1", "reason": "link busy", "code": "waiting_for_slot"}
        ]
        * 3
        + [
            {
                "file_id": "y",
                "class": "P1",
                "reason": "lte budget used up",
                "code": "budget_used_up",
                "link": "lte",
            }
        ],
        "uploaded_unattested": {"files": 0, "note": "..."},
        "uploaded_files": 4,
    }
    budgets = {"wifi": LinkBudget(None, 0), "lte": LinkBudget(5_000_000, 1_234)}
    uplink = build_status(facts(storage=storage, uplink=UplinkFacts(status, budgets)))["uplink"]
    assert (uplink["state"], uplink["active_link"], uplink["transport"]) == (
        "uploading",
        "wifi",
        "https",
    )
    assert uplink["throughput_bytes_per_s"] == 1_000_000
    assert uplink["eta_s"] == 2.0
    assert uplink["queue"]["P1"] == {"files": 2, "bytes": 2_000_000}
    assert uplink["waiting_reasons"] == {"link busy": 3, "lte budget used up": 1}
    assert uplink["waiting_codes"] == [
        {"code": "waiting_for_slot", "link": None, "count": 3},
        {"code": "budget_used_up", "link": "lte", "count": 1},
    ]
    lte = uplink["links"][1]
    assert (lte["monthly_cap_bytes"], lte["budget_used_bytes"]) == (5_000_000, 1_234)
    assert "not_in_the_document" not in lte
    assert uplink["uploaded_files"] == 4

    idle = {**status, "uploading": [], "links": [link("wifi", uploads=0, goodput_mbit_s=8.0)]}
    calm = build_status(facts(storage=storage, uplink=UplinkFacts(idle, budgets)))["uplink"]
    assert (calm["state"], calm["eta_s"], calm["active_link"]) == ("up", None, None)


def test_no_uplink_says_why() -> None:
    document = build_status(facts())
    assert document["uplink"] == {
        "state": "not paired",
        "reason": "the box is not paired with a back office",
    }
    assert document["pairing"] == {"paired": False, "box_id": None}
    paired = build_status(facts(paired=True, uplink=UplinkIdle("off", "off in the file")))
    assert paired["pairing"] == {"paired": True, "box_id": "MVB-1"}


def test_the_position_is_rounded_to_about_a_metre() -> None:
    gps = GpsFacts("fix", mode=3, speed_mps=12.5, fix_age_s=0.42, lat=52.123456789, lon=6.0000049)
    document = build_status(facts(gps=gps))
    assert document["gps"] == {
        "status": "fix",
        "fix": True,
        "fix_age_s": 0.4,
        "mode": 3,
        "speed_mps": 12.5,
        "clock_offset_ms": None,
        "position": {"lat": 52.12346, "lon": 6.0},
    }


def test_the_running_recording() -> None:
    service = {"state": "recording", "recording_for_s": 12.5, "cameras": {}, "alarms": {}}
    running = RecordingFacts("a" * 32, "lights", "P1", 1800.0)
    flagged_storage = StorageFacts(1, 1, 0, 28, flagged_recordings=frozenset({"a" * 32}))
    document = build_status(facts(service=service, recording=running, storage=flagged_storage))
    assert document["recording"] == {
        "state": "recording",
        "elapsed_s": 12.5,
        "trigger_source": "lights",
        "flagged": True,
        "max_continuous_s": 1800.0,
        "hold_to_stop_ms": 1500,
    }
    assert (document["state"], document["recording_for_s"]) == ("recording", 12.5)


# -- on a running box ------------------------------------------------------------------------------


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[LocalBox]:
    async with running_box(feature_box_config(tmp_path)) as running:
        yield running


async def test_get_status_on_a_running_box(box: LocalBox) -> None:
    gps = box.running.gps
    gps.set_connected(True)
    report = {"class": "TPV", "mode": 3, "lat": 52.473512345, "lon": 6.058912345, "speed": 3.5}
    gps.handle_report(report, time.monotonic_ns(), time.time_ns() // 1_000_000)
    async with box.client() as client:
        reply = await client.get("/api/status")
        assert reply.status == 200
        document = await reply.json()
        metrics = await (await client.get("/metrics")).text()

    for member in ("state", "recording_for_s", "cameras", "alarms", "fleet"):
        assert member in document  # what `mvb status` users and the demo read
    for member in ("files_on_card", "bytes_on_card", "interrupted_files"):
        assert document["storage"][member] == 0
    assert document["gps"]["status"] == "fix"
    assert document["gps"]["mode"] == 3
    assert document["gps"]["speed_mps"] == 3.5
    assert document["gps"]["position"] == {"lat": 52.47351, "lon": 6.05891}
    card = os.statvfs(box.config.card_dir)
    assert document["storage"]["card_total_bytes"] == card.f_blocks * card.f_frsize
    assert document["storage"]["reserve_bytes"] == 4 * 1024 * 1024
    assert document["box"]["device_serial"] == "MVB-TEST-0001"
    assert document["uplink"]["state"] == "not paired"
    assert document["shift"]["active"] is False
    assert "not_paired" in [a["code"] for a in document["alerts"]]
    for digits in ("52.47", "6.058", "6.059"):
        assert digits not in metrics  # the position stays with the officer


async def test_mvb_status_prints_a_summary_or_the_document(box: LocalBox) -> None:
    mvb = [str(MVB), "--config", str(box.config_path), "status"]
    summary = await run_command(*mvb, "--text")
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    assert lines[0].startswith("box MVB-TEST-0001 (vehicle veh-test-1), software ")
    assert "recorder: standby" in lines
    assert "shift: none (recordings carry no officer); reports missing: 0" in lines
    assert "pairing: not paired" in lines
    assert any(line.startswith("uplink: not paired") for line in lines)
    assert "ALERT warning not_paired: no pairing: recordings stay on the card" in lines
    piped = await run_command(*mvb)  # not a terminal: the JSON document, for scripts
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["state"] == "standby"
    forced = await run_command(*mvb, "--json")
    assert json.loads(forced.stdout)["box"]["device_serial"] == "MVB-TEST-0001"
