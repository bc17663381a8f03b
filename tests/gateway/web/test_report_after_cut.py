"""Issue 16 item 7 on a real box: a recording killed by a power cut reads as interrupted after
the restart, not as "still running" (the report list said "loopt nog" for ever).

The cut is played with what it leaves on disk: the report book as the box made it durable
while the recording ran (common/durable.py writes it with fsync before the rename), put back
after the box stopped. Left out here: the card's own recovery of the cut recording's `.part`
files (storage/recovery.py, tested with labdisk's power cuts) and a cut in the middle of the
book's own write (an atomic rename: the old or the new book, both readable).
"""

from __future__ import annotations

from pathlib import Path

from gateway.officer.reports_service import REPORTS_FILE
from tests.gateway.web.feature_rig import (
    feature_box_config,
    features,
    running_box,
    wait_for,
)


async def test_a_recording_cut_by_power_reads_as_interrupted_after_the_restart(
    tmp_path: Path,
) -> None:
    config_path = feature_box_config(tmp_path)
    async with running_box(config_path) as box:
        async with box.client() as client:
            reply = await client.post("/api/record/start")
            assert reply.status == 200, await reply.text()
            answer = await reply.json()
            assert answer["state"] == "recording"
            # The answer carries the document built after the start (the page shows it at once).
            assert answer["status"]["recording"]["state"] == "recording"
            recording_id = features(box).reports.book.missing()[0].recording_id
            status = await (await client.get("/api/status")).json()
            # While it runs, it is not asked for: no reminder above the recording state.
            assert status["reports"] == {"missing": 1, "filed": 0, "running": 1}
            assert "report_missing" not in [alert["code"] for alert in status["alerts"]]
        book_path = box.config.state_dir / REPORTS_FILE
        await wait_for(book_path.exists, "the report book to be written")
        at_the_cut = book_path.read_bytes()
        assert b'"duration_s": null' in at_the_cut

    book_path.write_bytes(at_the_cut)  # what the card held when the power went
    async with running_box(config_path) as box, box.client() as client:
        listed = await (await client.get("/api/reports")).json()
        (entry,) = listed["missing"]
        assert entry["recording_id"] == recording_id
        assert (entry["duration_s"], entry["interrupted"]) == (None, True)
        status = await (await client.get("/api/status")).json()
        assert status["recording"]["state"] == "standby"
        assert status["reports"] == {"missing": 1, "filed": 0, "running": 0}
        assert "report_missing" in [alert["code"] for alert in status["alerts"]]
