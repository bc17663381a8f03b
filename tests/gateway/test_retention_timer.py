"""Retention on its own timer and GPS time as trusted time, in-process with real parts: the
box's own store and catalog (`start_box`, no uplink), the real gpsd client fed by the simulated
gpsd, the supervisor's children as `mvb run` wires them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from config.local import load_config
from demo.gps_sim import GpsdSimulator
from demo.synthetic import generate_clip
from gateway.box import open_box
from gateway.gps import GpsdClient, GpsTracker
from gateway.importer import import_clip
from gateway.run import start_box, stop_box
from gateway.watchers import boottime_ms_of, watch_trusted_time
from storage.card import CardLayout
from storage.catalog import Catalog
from storage.models import FileState
from storage.trusted_time_io import STATE_FILE, TrustedClock
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config
from tests.test_run import MVB_ADMIN

DAY_MS = 86_400_000


def test_a_fix_gets_the_boot_clock_only_when_no_suspend_can_hide_between() -> None:
    before = (1_000_000_000, 5_000_000_000)  # (CLOCK_MONOTONIC, CLOCK_BOOTTIME) ns
    after = (3_000_000_000, 7_000_000_100)  # same offset, within the reads' jitter
    assert boottime_ms_of(2_000_000_000, before, after) == 6_000
    assert boottime_ms_of(999_999_999, before, after) is None  # before the window
    assert boottime_ms_of(3_000_000_001, before, after) is None  # after it
    suspended = (3_000_000_000, 7_000_000_000 + 60_000_000_000)  # a minute asleep
    assert boottime_ms_of(2_000_000_000, before, suspended) is None


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_gps_fixes_become_trusted_time_and_are_saved(tmp_path: Path) -> None:
    tracker = GpsTracker()
    trusted = TrustedClock.open(tmp_path)
    async with GpsdSimulator(interval_s=0.2) as sim:
        client = GpsdClient(tracker, "127.0.0.1", sim.port)
        tasks = [
            asyncio.create_task(client.run()),
            asyncio.create_task(watch_trusted_time(tracker, trusted, sample_s=0.1)),
        ]
        try:
            await wait_until(lambda: trusted.now().known, "a GPS anchor")
            await wait_until(lambda: (tmp_path / STATE_FILE).exists(), "trusted time saved")
        finally:
            client.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    now = trusted.now()
    assert now.source == "gps"
    true_ms = time.time_ns() // 1_000_000
    assert now.low_ms is not None
    assert now.high_ms is not None
    assert now.low_ms - 1000 <= true_ms <= now.high_ms + 1000
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert [a["source"] for a in saved["anchors"]] == ["gps"]


def box_with_an_old_and_a_young_file(tmp_path: Path, gps_port: int) -> tuple[Path, str, str]:
    """A box without an uplink whose card holds a file recorded 40 days ago in trusted time
    (as GPS told it then) and one recorded just now with the time unknown."""
    keys = tmp_path / "backoffice"
    subprocess.run(
        [str(MVB_ADMIN), "keys", "create", "--dir", str(keys)], check=True, capture_output=True
    )
    clip = generate_clip(tmp_path / "clip.ts", seconds=1, keyframe_interval_frames=25)
    config = write_box_config(
        tmp_path / "box",
        keys / "recording.pub",
        storage_lines=(
            f"retention_check_s = 1\n[gps]\nport = {gps_port}\n[api]\nport = {free_port()}\n"
        ),
    )
    box = open_box(load_config(config))
    try:
        (old,) = import_clip(box.store, clip, camera="bodycam", facts=box.facts)
        (young,) = import_clip(box.store, clip, camera="bodycam", facts=box.facts)
        forty_days_ago_ms = time.time_ns() // 1_000_000 - 40 * DAY_MS
        box.store.catalog.set_trusted_created(
            old.sidecar.file_id, forty_days_ago_ms - 2000, forty_days_ago_ms, "anchor"
        )
    finally:
        box.close()
    return config, old.sidecar.file_id, young.sidecar.file_id


async def test_a_box_without_uplink_deletes_an_expired_file_by_itself(tmp_path: Path) -> None:
    async with GpsdSimulator(interval_s=0.2) as sim:
        config_path, old, young = box_with_an_old_and_a_young_file(tmp_path, sim.port)
        config = load_config(config_path)
        assert not config.uplink.enabled
        running = await start_box(config)
        try:
            assert "retention" in running.supervisor.children
            catalog = running.box.store.catalog

            def deleted() -> bool:
                record = catalog.get(old)
                return record is not None and record.state is FileState.DELETED

            await wait_until(deleted, "retention to delete the expired file")
            young_record = catalog.get(young)
            assert young_record is not None
            assert young_record.state is FileState.SEALED
            assert young_record.trusted_created_by == "same_boot"  # dated by the first fix
        finally:
            await stop_box(running)
    events = [
        json.loads(line) for line in (config.state_dir / "audit.jsonl").read_text().splitlines()
    ]
    deletions = [e["fields"] for e in events if e["event"] == "storage.file_deleted"]
    assert [(d["file_id"], d["reason"], d["time_source"]) for d in deletions] == [
        (old, "retention expired", "gps")
    ]
    assert "time.anchored" in [e["event"] for e in events]
    with Catalog.open(CardLayout(config.card_dir)) as catalog:  # durable, seen from outside
        record = catalog.get(old)
        assert record is not None
        assert record.state is FileState.DELETED
