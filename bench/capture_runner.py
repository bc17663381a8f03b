"""The capture benchmark's run: the table's camera counts against ffmpeg, then the search for
the most cameras the box sustains within a time budget.

A `Runner` holds the rows measured so far; each box measurement runs in a child process
(bench/capture_box.py), each ffmpeg one in its own processes (bench/capture_ffmpeg.py), in a
temporary directory removed afterwards.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.capture_box import BoxConfig, BoxResult, measure_box
from bench.capture_clip import Clip
from bench.capture_ffmpeg import FfmpegResult, measure_ffmpeg


@dataclass(frozen=True)
class Params:
    table_cameras: list[int]  # each measured against ffmpeg
    prerecord_s: float
    record_s: float
    warmup_s: float
    search_budget_s: float  # then the most cameras sustained, box only
    search_record_s: float
    max_cameras: int


QUICK = Params([1, 4], 5, 6, 1.5, search_budget_s=0, search_record_s=6, max_cameras=4)
FULL = Params([1, 4, 8, 16], 10, 20, 2, search_budget_s=300, search_record_s=10, max_cameras=256)


@dataclass
class Row:
    box: BoxResult
    ffmpeg: FfmpegResult | None


class Runner:
    def __init__(self, params: Params, clip: Clip, workdir: Path) -> None:
        self.params = params
        self.clip = clip
        self.workdir = workdir
        self.rows: dict[int, Row] = {}
        self.crashed: list[int] = []

    def box(self, cameras: int, record_s: float) -> BoxResult | None:
        """One box measurement; None (and noted in `crashed`) if the child failed or overran."""
        work = Path(tempfile.mkdtemp(prefix=f"box{cameras}-", dir=self.workdir))
        try:
            cfg = BoxConfig(
                cameras=cameras,
                clip=str(self.clip.path),
                workdir=str(work),
                prerecord_s=self.params.prerecord_s,
                record_s=record_s,
                warmup_s=self.params.warmup_s,
                fps=self.clip.fps,
                clip_bytes=self.clip.payload_bytes,
            )
            result = measure_box(cfg)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            progress(f"box {cameras:3d} cameras: FAILED: {exc}")
            self.crashed.append(cameras)
            return None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        progress(
            f"box {cameras:3d} cameras: {result.cpu_pct_per_camera('recording'):.2f} % per camera"
            f", dropped {result.dropped}, backlog end {result.backlog_end}"
            f", delivered {result.delivered:.3f}, kept up {result.kept_up:.3f}"
            f", sustained {result.sustained()}"
        )
        return result

    def ffmpeg(self, cameras: int) -> FfmpegResult:
        work = Path(tempfile.mkdtemp(prefix=f"ffmpeg{cameras}-", dir=self.workdir))
        try:
            p = self.params
            result = measure_ffmpeg(cameras, self.clip, work, p.warmup_s, p.record_s)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        progress(f"ffmpeg {cameras:3d} cameras: {result.cpu_pct_per_camera():.2f} % per camera")
        return result

    def table(self) -> None:
        """The table's camera counts, each with its ffmpeg baseline; stops at the first count
        the box does not sustain."""
        for cameras in self.params.table_cameras:
            box = self.box(cameras, self.params.record_s)
            if box is None:
                return
            self.rows[cameras] = Row(box, self.ffmpeg(cameras))
            if not box.sustained():
                return

    def search(self) -> None:
        """The most cameras sustained, within the budget: the first probe is where the table's
        fitted CPU reaches one core (the box's Python part is bound to one core by the GIL),
        then steps of 25 % up until a count fails, then bisection to 1/16."""
        p = self.params
        deadline = time.monotonic() + p.search_budget_s

        def probe(cameras: int) -> bool | None:
            """Sustained? None when the budget cannot pay for the run."""
            cost_s = p.prerecord_s + p.search_record_s + 15 + 0.2 * cameras
            if time.monotonic() + cost_s > deadline:
                return None
            result = self.box(cameras, p.search_record_s)
            if result is None:
                return False
            self.rows[cameras] = Row(result, None)
            return result.sustained()

        good = self.max_sustained()
        bad = self.min_failed() or 0
        cameras = min(p.max_cameras, max(2 * good, self.cameras_per_core()))
        while good and not bad and good < p.max_cameras:
            verdict = probe(cameras)
            if verdict is None:
                return
            good, bad = (cameras, bad) if verdict else (good, cameras)
            cameras = min(p.max_cameras, int(cameras * 1.25) + 1)
        while bad - good > max(1, good // 16):
            cameras = (good + bad) // 2
            verdict = probe(cameras)
            if verdict is None:
                return
            good, bad = (cameras, bad) if verdict else (good, cameras)

    def cameras_per_core(self) -> int:
        """Cameras at one core of CPU by the fit over the table's sustained rows (0: no fit)."""
        table = [r.box for r in self.rows.values() if r.ffmpeg is not None and r.box.sustained()]
        fit = fit_cpu(table)
        return 0 if fit is None or fit[0] <= 0 else int((1 - fit[1]) / fit[0])

    def max_sustained(self) -> int:
        return max((n for n, r in self.rows.items() if r.box.sustained()), default=0)

    def min_failed(self) -> int | None:
        failed = [n for n, r in self.rows.items() if not r.box.sustained()] + self.crashed
        return min(failed, default=None)


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def least_squares(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Total CPU (cores) over cameras: (cost per camera, fixed cost), or None below 2 counts."""
    if len({n for n, _ in points}) < 2:
        return None
    slope, intercept = statistics.linear_regression(
        [float(n) for n, _ in points], [cpu for _, cpu in points]
    )
    return slope, intercept


def fit_cpu(boxes: list[BoxResult]) -> tuple[float, float] | None:
    return least_squares([(b.cameras, b.record_cpu_s / b.record_wall_s) for b in boxes])
