"""Wall-clock steps against a real `mvb run` process (Debian's faketime moves its wall clock,
never its monotonic clock): a forward step in the middle of a run, and a recording made while
the clock stood 40 days behind, delete nothing unattested; the latter is kept with an alarm.
GPS comes from the simulated gpsd in this (unfaked) process: the true time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from demo.gps_sim import GpsdSimulator
from demo.synthetic import generate_clip
from storage.card import CardLayout
from storage.catalog import Catalog
from storage.models import FileRecord, FileState
from storage.trusted_time_io import STATE_FILE
from tests.cameras import free_port
from tests.clock_helpers import faked, stepped_by_file
from tests.evidence_helpers import write_box_config
from tests.test_run import MVB, MVB_ADMIN, mvb, status, wait_for

DAY_MS = 86_400_000


@contextlib.contextmanager
def simulated_gpsd() -> Iterator[int]:
    """The simulated gpsd on a loop of its own (the test itself blocks on subprocesses)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gpsd-sim", daemon=True)
    thread.start()
    simulator = GpsdSimulator(interval_s=0.5)
    port = asyncio.run_coroutine_threadsafe(simulator.start(), loop).result(10)
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(simulator.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def make_box(tmp_path: Path, gps_port: int, extra: str = "") -> tuple[Path, Path]:
    """A box without uplink that runs retention every second; and a clip to import."""
    keys = tmp_path / "backoffice"
    subprocess.run(
        [str(MVB_ADMIN), "keys", "create", "--dir", str(keys)], check=True, capture_output=True
    )
    clip = generate_clip(tmp_path / "clip.ts", seconds=1, keyframe_interval_frames=25)
    config = write_box_config(
        tmp_path / "box",
        keys / "recording.pub",
        storage_lines=f"retention_check_s = 1\n{extra}\n[gps]\nport = {gps_port}\n"
        f"[api]\nport = {free_port()}\n",
    )
    return config, clip


def import_clip(config: Path, clip: Path, prefix: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        [*prefix, str(MVB), "--config", str(config), "import", str(clip)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def records(config: Path) -> list[FileRecord]:
    with Catalog.open(CardLayout(config.parent / "card")) as catalog:
        return catalog.all()


def audit(config: Path) -> list[dict[str, object]]:
    lines = (config.parent / "state" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def events(config: Path, name: str) -> list[dict[str, object]]:
    return [e["fields"] for e in audit(config) if e["event"] == name]  # type: ignore[misc]


def floor_ms(config: Path) -> int:
    path = config.parent / "state" / STATE_FILE
    try:
        return int(json.loads(path.read_text())["floor_ms"])
    except (FileNotFoundError, ValueError):
        return 0


@contextlib.contextmanager
def running(
    config: Path, prefix: list[str] | None = None, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [*(prefix or []), str(MVB), "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_for(lambda: mvb(config, "status").returncode == 0, "the local API")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def true_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_forward_step_in_the_middle_of_a_run_deletes_nothing_unattested(
    tmp_path: Path,
) -> None:
    with simulated_gpsd() as gps_port:
        config, clip = make_box(tmp_path, gps_port)
        import_clip(config, clip, [], dict(os.environ))
        (made,) = records(config)
        step_file = tmp_path / "clock-step"
        with running(config, env=stepped_by_file(step_file)) as process:
            wait_for(lambda: bool(events(config, "time.anchored")), "GPS to anchor trusted time")
            step_file.write_text("+40d\n")  # the box's wall clock jumps 40 days, mid-run
            wait_for(
                lambda: int(str(status(config)["at_ms"])) - true_ms() > 39 * DAY_MS,
                "the box's wall clock to step 40 days forward",
            )
            stepped_at_ms = true_ms()
            box_wall_ms = int(str(status(config)["at_ms"]))
            # A wall-clock rule would now see a file 40 days old.
            assert box_wall_ms - made.created_at_ms > 40 * DAY_MS
            wait_for(lambda: floor_ms(config) >= stepped_at_ms, "a retention pass after the step")
            assert process.poll() is None
    (after,) = records(config)
    assert after.state is FileState.SEALED
    assert after.trusted_created_by == "same_boot"  # dated by GPS, in this boot
    assert events(config, "storage.file_deleted") == []
    (anchored,) = [f for f in events(config, "time.anchored") if f["source"] == "gps"]
    assert abs(int(str(anchored["wall_clock_off_s"]))) < 60  # anchored before the step


def test_a_recording_made_while_the_clock_stood_behind_is_kept_and_alarmed(
    tmp_path: Path,
) -> None:
    """The issue's case: recorded with the clock 40 days behind (no RTC battery, no fix yet),
    then the clock is set. Nothing tells the box the time: the file is kept, with an alarm."""
    config, clip = make_box(tmp_path, free_port(), extra="time_unknown_alarm_after_s = 0")
    prefix, env = faked("-40d")
    import_clip(config, clip, prefix, env)
    (made,) = records(config)
    assert true_ms() - made.created_at_ms > 40 * DAY_MS - 60_000  # 40 days old by its stamp
    assert made.trusted_created_high_ms is None  # recorded with the time unknown
    with running(config):
        wait_for(
            lambda: "retention_time_unknown" in dict(status(config)["alarms"]),  # type: ignore[call-overload]
            "the time-unknown alarm",
        )
        document = status(config)
        codes = [alert["code"] for alert in document["alerts"]]  # type: ignore[attr-defined]
        assert "retention_time_unknown" in codes
    (after,) = records(config)
    assert after.state is FileState.SEALED
    assert events(config, "storage.file_deleted") == []
    assert {"code": "retention_time_unknown"} in events(config, "alarm.raised")
    by_hand = mvb(config, "retention")
    assert by_hand.returncode == 0, by_hand.stderr
    assert "retention: 0 file(s) deleted" in by_hand.stdout
    assert "kept: 1 file(s) not uploaded whose age cannot be judged" in by_hand.stdout
