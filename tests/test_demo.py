"""`make demo` (gateway/demo.py): it runs the real box service end to end without hardware and
says what it proved."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from config.local import load_config
from gateway import demo, demo_steps

DEMO_TIMEOUT_S = 180
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class DemoRun:
    out: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One real run of the demo as `make demo` starts it, into a temporary folder."""
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    done = subprocess.run(
        [sys.executable, "-m", "gateway.demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    return DemoRun(out, done.returncode, done.stdout, done.stderr)


def _step(run: DemoRun, number: int) -> str:
    """The output of step `number` (from its heading to the next one)."""
    marker = f"[{number}/{demo.STEPS}] "
    assert marker in run.stdout, run.stdout + run.stderr
    text = run.stdout.split(marker, 1)[1]
    return text.split(f"[{number + 1}/{demo.STEPS}] ", 1)[0]


def _numbers(pattern: str, text: str) -> list[float]:
    """Every number the groups of `pattern` capture in `text`, in order."""
    return [float(n) for match in re.finditer(pattern, text) for n in match.groups()]


# -- one real run ---------------------------------------------------------------------------------


def test_demo_exits_zero(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
    assert "Demo OK: every check passed." in demo_run.stdout


def test_every_step_has_a_heading(demo_run: DemoRun) -> None:
    for number in range(1, demo.STEPS + 1):
        assert f"[{number}/{demo.STEPS}] " in demo_run.stdout


def test_the_box_reports_ready_through_its_api(demo_run: DemoRun) -> None:
    ready = _step(demo_run, 3)
    assert "GET /api/status:" in ready
    assert "pre-record dashcam 10.0 s, bodycam 10.0 s; GPS fix" in ready
    assert "gps: fix (mode 3), speed 13 m/s" in ready
    for camera in ("dashcam", "bodycam"):
        # measured over the last second: 25 fps give or take a frame under CI load
        match = re.search(rf"{camera}: connected, ([0-9.]+) fps", ready)
        assert match is not None
        assert 23.0 <= float(match[1]) <= 27.0


def test_the_incident_is_played_through_inputs_and_api(demo_run: DemoRun) -> None:
    incident = _step(demo_run, 4)
    assert "emergency lights ON (input 'lights'" in incident
    assert "recorder: recording, recording " in incident
    assert "POST /api/record/stop" in incident
    assert '{"state": "postrecord"}' in incident
    assert "post-record done" in incident
    assert "2 evidence files on the card" in incident


def test_what_was_recorded_is_shown_per_camera(demo_run: DemoRun) -> None:
    recorded = _step(demo_run, 8)
    for camera in ("dashcam", "bodycam"):
        assert f"{camera} (serial " in recorded
        assert f"frames/{camera}-at-trigger.png" in recorded
    assert recorded.count("starts on a keyframe: yes; trigger 'lights'") == 2
    assert recorded.count("stop by 'officer'") == 2
    assert recorded.count("all on the route") == 2
    durations = _numbers(r"(\d+\.\d+) s of h264 640x360 by PTS", recorded)
    pre = _numbers(
        r"pre-record (\d+\.\d+) s before the trigger \(monotonic (\d+\.\d+) s\)", recorded
    )
    post = _numbers(r"post-record (\d+\.\d+) s after the stop \(monotonic (\d+\.\d+) s\)", recorded)
    assert len(durations) == 2
    assert all(d >= 20.0 for d in durations)
    assert len(pre) == 4
    assert all(demo.PRERECORD_S - 0.05 <= p <= demo.PRERECORD_S + 2 for p in pre)
    assert len(post) == 4
    assert all(p >= demo.POSTRECORD_S - 0.3 for p in post)


def test_summary_states_what_was_proved(demo_run: DemoRun) -> None:
    summary = _step(demo_run, demo.STEPS)
    assert "in one incident" in summary
    assert "both starting on a keyframe" in summary
    assert "trigger:    lights; pre-record" in summary
    assert "stop:       officer via the local API; post-record" in summary
    assert "positions in the evidence, all on the route" in summary
    assert "dashcam-at-trigger.png, bodycam-at-trigger.png decoded by the back office" in summary
    assert "interrupted file recovered: interrupted at chunk" in summary
    assert "(power cut; device signature verified)" in summary
    assert "3 files uploaded, attested by the back office's SHA-256 and deleted" in summary
    assert "audit OK" in summary
    assert "no plaintext on it" in summary


def test_the_audit_log_holds_trigger_and_stop(demo_run: DemoRun) -> None:
    audit = _step(demo_run, 11)
    assert "audit log OK" in audit
    for event in ("gateway.started", "gateway.trigger", "gateway.stop", "gateway.stopped"):
        assert f"x {event}\n" in audit
    for event in ("uplink.uploaded", "storage.file_attested", "storage.file_deleted"):
        assert f"3 x {event}\n" in audit
    # the killed writer's RECORDING record reached the catalog: recovery adopts nothing
    assert "storage.catalog_rebuilt" not in audit


def test_demo_leaves_its_files_where_it_says(demo_run: DemoRun) -> None:
    out = demo_run.out
    config = load_config(out / "box" / "box.toml")
    assert [c.name for c in config.cameras] == ["dashcam", "bodycam"]
    assert config.recording.prerecord_s == demo.PRERECORD_S
    # one incident (dashcam + bodycam) and the power cut's file: all uploaded, none on the card
    assert config.uplink.enabled
    assert len(config.uplink.pins) == 2
    assert list((out / "card" / "evidence").glob("*/*.mvbe")) == []
    stored = list((out / "backoffice" / "store" / "complete").glob("*.mvbe"))
    assert len(stored) == 3
    assert len(list((out / "backoffice" / "decrypted").glob("*.ts"))) == 3
    frames = sorted((out / "backoffice" / "frames").glob("*.png"))
    assert [f.name for f in frames] == ["bodycam-at-trigger.png", "dashcam-at-trigger.png"]
    assert all(f.read_bytes().startswith(PNG_MAGIC) for f in frames)
    assert not list((out / "card").rglob("*.part"))


# -- the parts, without running the demo ---------------------------------------------------------


def test_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("not demo output")
    assert demo.main(["--out", str(tmp_path)]) == 1
    assert precious.read_text() == "not demo output"


def test_wipes_its_own_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    demo.prepare_out(out)
    (out / "old-run.txt").write_text("from the last run")
    demo.prepare_out(out)
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER]


def test_the_demo_configuration_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "box.toml"
    path.write_text(demo.box_toml(gps_port=2947, api_port=8088))
    config = load_config(path)
    assert [(c.name, c.kind, c.width, c.height, c.bitrate_bps) for c in config.cameras] == [
        ("dashcam", "synthetic", 640, 360, 1_000_000),
        ("bodycam", "synthetic", 640, 360, 800_000),
    ]
    assert (config.recording.prerecord_s, config.recording.postrecord_s) == (10.0, 5.0)
    assert (config.gps.port, config.api.port) == (2947, 8088)
    assert config.triggers["lights"].may_stop
    assert config.triggers["lights"].postrecord_s == 5.0


def _ts_packets(count: int) -> bytes:
    return b"".join(bytes([0x47]) + bytes([i % 251]) * 187 for i in range(count))


def test_ts_sync_search_finds_plaintext_mpeg_ts() -> None:
    noise = bytes((i * 7919 + 13) % 251 for i in range(5000))
    assert demo.ts_sync_run(noise) is None
    assert demo.ts_sync_run(noise[:1234] + _ts_packets(10) + noise) == 1234
    assert demo.ts_sync_run(noise[:77] + _ts_packets(9) + noise) is None, "nine is too few"


def test_readiness_needs_every_ring_and_a_fix() -> None:
    def status(dash: float, body: float, gps: str) -> dict[str, object]:
        cameras = {"dashcam": {"prerecord_filled_s": dash}, "bodycam": {"prerecord_filled_s": body}}
        return {"cameras": cameras, "gps": {"status": gps}}

    assert demo_steps.is_ready(status(10.0, 10.2, "fix"), 10.0)
    assert not demo_steps.is_ready(status(10.0, 9.9, "fix"), 10.0)
    assert not demo_steps.is_ready(status(10.0, 10.0, "no_fix"), 10.0)
    assert not demo_steps.is_ready({"cameras": {}, "gps": {"status": "fix"}}, 10.0)
