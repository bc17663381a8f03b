"""The status document's facts for the officer's plain words (issue 16; docs/webui.md 3): each
of the newest recordings' way to the back office, how long the card still records, the report
reminder that waits for the recording to end, and the shared build an action's answer updates.
Pure cores on plain facts; StatusSource on an in-memory port."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.status_facts import (
    RecordingFiles,
    StorageFacts,
    UplinkFacts,
    recent_recordings,
    storage_facts,
)
from gateway.web.status_source import StatusSource
from gateway.web.status_view import alerts, build_status, recordable_s
from storage.models import FileRecord, FileState
from tests.gateway.web.test_status_view import NOW_MS, facts

GIB = 1 << 30


def file(file_id: str, recording: str, state: FileState, **changes: Any) -> FileRecord:
    base = FileRecord(
        file_id=file_id,
        recording_id=recording,
        file_seq=0,
        created_at_ms=NOW_MS,
        state=state,
        size_bytes=1000,
        sha256_hex="00" * 32,
    )
    return base.with_changes(**changes)


ATTESTED = {"attested_sha256_hex": "00" * 32}


def uplink(uploading: list[dict[str, Any]], waiting: list[dict[str, Any]]) -> UplinkFacts:
    status = {
        "links": [],
        "uploading": uploading,
        "waiting": waiting,
        "uploaded_files": 0,
        "uploaded_unattested": {"files": 0},
    }
    return UplinkFacts(status=status, budgets={})


def test_the_newest_recordings_newest_first_and_summed_over_their_files() -> None:
    records = [
        file(f"f{n}", f"r{n}", FileState.SEALED, created_at_ms=NOW_MS + n) for n in range(7)
    ] + [
        file("g6", "r6", FileState.RECORDING, created_at_ms=NOW_MS + 100, size_bytes=500),
        file("gone", "r5", FileState.DELETED),  # deleted unattested: not counted
        file("safe", "r4", FileState.DELETED, created_at_ms=NOW_MS + 4, **ATTESTED),  # counted
    ]
    recent = recent_recordings(records)
    assert [r.recording_id for r in recent] == ["r6", "r5", "r4", "r3", "r2"]
    assert recent[0] == RecordingFiles(
        "r6", NOW_MS + 6, files=2, size_bytes=1500, recording_files=1, sealed_files=1
    )
    assert (recent[1].files, recent[2].files, recent[2].attested_files) == (1, 2, 1)
    assert recent_recordings(records, keep=0) == ()
    # storage_facts walks a one-shot iterator twice (counts, then the newest)
    counted = storage_facts(
        iter(records),
        card_total_bytes=1,
        card_free_bytes=1,
        reserve_bytes=0,
        retention_days=28,
    )
    assert counted.recent_recordings == recent
    assert counted.files_on_card == 8  # the deleted two are not on the card


def test_each_recording_says_how_far_it_got() -> None:
    records = [
        file("a", "ra", FileState.RECORDING, created_at_ms=NOW_MS + 5),
        file("b", "rb", FileState.SEALED, created_at_ms=NOW_MS + 4),
        file("c1", "rc", FileState.UPLOADING, created_at_ms=NOW_MS + 3),
        file("c2", "rc", FileState.VERIFIED, created_at_ms=NOW_MS + 3, **ATTESTED),
        file("d", "rd", FileState.UPLOADING, created_at_ms=NOW_MS + 2),
        file("e", "re", FileState.VERIFIED, created_at_ms=NOW_MS + 1, held=True, **ATTESTED),
        file("p", "rp", FileState.UPLOADING, created_at_ms=NOW_MS, upload_class="P0"),
    ]
    storage = StorageFacts(1, 1, 0, 28, recent_recordings=recent_recordings(records, keep=6))
    moving = [
        {
            "file_id": "c1",
            "link": "wifi",
            "transport": "https",
            "offset_bytes": 500,
            "size_bytes": 1000,
        }
    ]
    paused = [{"file_id": "p", "class": "P0", "reason": "waiting for WiFi"}]
    document = build_status(facts(storage=storage, uplink=uplink(moving, paused)))
    got = {r["recording_id"]: (r["delivery"], r["sent_percent"]) for r in document["recordings"]}
    assert got == {
        "ra": ("recording", 0),
        "rb": ("on_card", 0),
        "rc": ("uploading", 75),  # 1000 attested + 500 of 1000 moving, of 2000
        "rd": ("at_back_office", 0),  # sent, neither moving nor waiting: not confirmed yet
        "re": ("verified", 100),
        "rp": ("on_card", 0),  # left half sent and waiting: its offset is not known now
    }
    flags = {r["recording_id"]: (r["held"], r["flagged"]) for r in document["recordings"]}
    assert flags["re"] == (True, False)
    assert flags["rp"] == (False, True)
    assert build_status(facts(storage=storage))["recordings"][2]["delivery"] == "at_back_office"


def test_how_long_the_card_still_records_at_the_cameras_bitrate() -> None:
    storage = StorageFacts(64 * GIB, 9 * GIB, 1 * GIB, 28)
    cameras = {
        "dashcam": {"connected": True, "bitrate_bps": 3_000_000},
        "bodycam": {"connected": True, "bitrate_bps": 1_000_000},
        "spare": {"connected": False, "bitrate_bps": 8_000_000},  # not sending: not counted
    }
    assert recordable_s(storage, cameras) == round(8 * GIB * 8 / 4_000_000, 1)
    assert recordable_s(storage, {"dashcam": {"connected": True, "bitrate_bps": 0}}) is None
    assert recordable_s(storage, {}) is None
    full = StorageFacts(64 * GIB, GIB // 2, GIB, 28)
    assert recordable_s(full, cameras) == 0.0
    service = {"state": "standby", "recording_for_s": 0.0, "cameras": cameras, "alarms": {}}
    document = build_status(facts(storage=storage, service=service))
    assert document["storage"]["recordable_s"] == recordable_s(storage, cameras)
    assert document["recording"]["hold_to_stop_ms"] == 1500
    assert build_status(facts(hold_to_stop_ms=0))["recording"]["hold_to_stop_ms"] == 0


def test_the_report_reminder_waits_for_the_recording_to_end() -> None:
    def codes(reports: dict[str, int]) -> list[str]:
        document = build_status(facts(reports=reports))
        return [alert["code"] for alert in alerts(document, NOW_MS)]

    assert "report_missing" not in codes({"missing": 1, "filed": 0, "running": 1})
    assert "report_missing" in codes({"missing": 2, "filed": 0, "running": 1})
    assert "report_missing" in codes({"missing": 1, "filed": 0})  # an older box's document


class SlowPort:
    """A port whose first status read waits until the test lets it go."""

    def __init__(self) -> None:
        self.reads = 0
        self.release = asyncio.Event()

    async def status_inputs(self) -> Any:
        self.reads += 1
        serial = self.reads
        if serial == 1:
            await self.release.wait()
        return facts(uptime_s=float(serial))


async def test_an_older_build_finishing_late_does_not_replace_a_fresh_one() -> None:
    """An event stream's shared build started before an action; the action's answer builds a
    fresh document; the old build finishes last. Streams must go on with the fresh one."""
    port = SlowPort()
    clock = [10.0]
    source = StatusSource(port, clock_s=lambda: clock[0])  # type: ignore[arg-type]
    shared = asyncio.ensure_future(source.shared(0.5))
    while port.reads == 0:  # the shared build is under way (and waits in the port)
        await asyncio.sleep(0)
    clock[0] = 10.1
    fresh = await source.document()  # the action's answer
    assert fresh["box"]["uptime_s"] == 2.0
    port.release.set()
    older = await shared
    assert older["box"]["uptime_s"] == 1.0  # its own caller gets what it waited for
    clock[0] = 10.2
    assert (await source.shared(0.5))["box"]["uptime_s"] == 2.0
