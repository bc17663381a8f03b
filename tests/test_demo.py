"""`make demo` (gateway/demo.py): it runs end to end without hardware and says what it proved."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import demo

DEMO_TIMEOUT_S = 120


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


def _summary(run: DemoRun) -> str:
    marker = f"[{demo.STEPS}/{demo.STEPS}] summary"
    assert marker in run.stdout, run.stdout + run.stderr
    return run.stdout.split(marker, 1)[1]


def test_demo_exits_zero(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
    assert "Demo OK: every check passed." in demo_run.stdout


def test_every_step_has_a_heading(demo_run: DemoRun) -> None:
    for number in range(1, demo.STEPS + 1):
        assert f"[{number}/{demo.STEPS}] " in demo_run.stdout


def test_summary_states_what_was_proved(demo_run: DemoRun) -> None:
    summary = _summary(demo_run)
    assert "dashcam.ts, bodycam.ts byte-identical with the originals" in summary
    assert "interrupted file recovered: interrupted at chunk" in summary
    assert "(power cut; device signature verified)" in summary
    assert "1 file deleted after attestation" in summary
    assert "audit OK" in summary
    assert "no plaintext on it" in summary


def test_demo_leaves_its_files_where_it_says(demo_run: DemoRun) -> None:
    out = demo_run.out
    assert (out / "box" / "box.toml").is_file()
    assert len(list((out / "card" / "evidence").glob("*/*.mvbe"))) == 2  # one deleted by retention
    assert len(list((out / "backoffice" / "decrypted").glob("*.ts"))) == 3
    assert not list((out / "card").rglob("*.part"))


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


def test_sample_windows_are_varied_and_from_the_data() -> None:
    data = bytes(range(256)) * 64
    windows = list(demo.sample_windows(data))
    assert len(windows) == demo.WINDOWS_PER_CLIP
    for offset, window in windows:
        assert data[offset : offset + demo.WINDOW_BYTES] == window
    assert not list(demo.sample_windows(b"\xff" * 10_000)), "padding proves nothing"
