"""Benchmark of the capture path: N replayed 4 Mbit/s cameras into the recorder and the store.

Baseline in the same run: the ffmpeg CLI remuxing the same stream with `-c copy` into 1 s segments,
one process per camera (what a user would script instead of the box). ffmpeg does no encryption,
no fsync and no hashing; the box does all three (RULES S6) plus its pre-record ring.

The camera: a 1280x720 25 fps H.264 clip at 4 Mbit/s CBR, GOP 1 s, made once with
`demo.synthetic` (its first second, where x264's rate control ramps up, is cut off), replayed in
real time by `ReplaySource` (stream copy, no encoder in the measured process).

Every measurement of the box runs in a fresh child process (`--child`), so its CPU and resident
memory are the box's own:
- standby: the capture service with N cameras filling their pre-record rings;
- trigger: `service.trigger("officer")`; the latency to the first durable byte is the time until
  the camera's first `StreamWriter.end_segment` returned (the store's fsync: the bytes survive a
  power cut), and "trigger moment durable" the time until the segment holding the packets that
  arrived at the trigger was durable (the bench wraps `end_segment` in the child to time it);
- recording: steady state, once every camera has caught up with its pre-record.
CPU is `time.process_time()` of the child (all threads); ffmpeg's is utime+stime from
/proc/<pid>/stat summed over its processes. RSS is VmRSS from /proc; the box's own memory is its
RSS less the ring's packet bytes and the replayed clips (which a real camera does not leave in
the box); ffmpeg's memory is its PSS (shared library pages split among its processes).

A number of cameras is *sustained* when no packet was dropped (bridge queue overflow, muxer skips
or rejects), no camera fell behind (the muxers took at least 98 % of what the cameras delivered in
the window, no bridge queue held a second of packets at its end, the replay delivered at least
97 % of real time), every camera's trigger moment became durable and nothing raised an alarm.
After the table (each count against ffmpeg), the most cameras sustained is searched for, box
only, within a time budget: from where the table's fitted CPU reaches one core, up in steps of
25 % until a count fails, then by bisection.

Run: `python -m bench.capture [--quick] [--audio] [--cameras 1,4,8,16] [--search-budget-s 300]
[--prerecord-s 10] [--out DIR]`. Full: about 9 minutes; `--quick`: under one minute.

Where the parts are: this module is the command and the report (tables, fits, verdict); the run
and the search are bench/capture_runner.py, the box's child bench/capture_box.py, the ffmpeg
and import-memory baselines bench/capture_ffmpeg.py, the clip bench/capture_clip.py and the /proc
readings bench/procfs.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.capture_box import SEGMENT_MIN_S, MiB, child_main
from bench.capture_clip import HEIGHT, WIDTH, make_clip
from bench.capture_ffmpeg import FFMPEG, measure_imports
from bench.capture_runner import FULL, QUICK, Row, Runner, fit_cpu, least_squares, progress
from bench.procfs import wait_for_idle

CPU_RATIO_TARGET = 1.5  # issue 18: box / ffmpeg CPU per camera at 1 and 4 cameras
SWITCHES_TARGET = 2.0  # issue 18: context switches per packet (video and audio)
MEMORY_TARGET_BYTES = 60e6  # issue 18: the box's own memory at one camera


def _mib(n: float) -> str:
    return f"{n / MiB:.1f}"


def _median_max(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.0f} / {max(values):.0f}"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    ffmpeg_version = subprocess.run(
        [FFMPEG, "-version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split(" Copyright", 1)[0]
    import av

    libavformat = ".".join(map(str, av.library_versions["libavformat"]))
    return (
        f"{os.cpu_count()} x {cpu}, {memory / 2**30:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}, PyAV {av.__version__} (libavformat {libavformat}), "
        f"{ffmpeg_version}"
    )


def print_header(runner: Runner, elapsed_s: float, idle: float) -> None:
    p, clip = runner.params, runner.clip
    print(
        f"# bench/capture.py: {datetime.date.today().isoformat()}, {elapsed_s:.0f} s\n\n"
        f"- machine: {machine()}; CPU idle just before the run: {100 * idle:.0f} %\n"
        f"- camera: {WIDTH}x{HEIGHT} {clip.fps:.0f} fps H.264, GOP 1 s, "
        f"{clip.bitrate_bps / 1e6:.2f} Mbit/s measured over the {clip.seconds:.0f} s clip, "
        f"replayed in real time (stream copy)"
        + (
            f", with {clip.audio_codec} sound at "
            f"{clip.audio_bytes * 8 / clip.seconds / 1e3:.0f} kbit/s (recorded: record_audio on)"
            if clip.audio_codec
            else ", no sound"
        )
        + "\n"
        f"- box: pre-record {p.prerecord_s:.0f} s (rings full before the trigger), segments "
        f">= {SEGMENT_MIN_S:.0f} s, recording window {p.record_s:.0f} s once every camera has "
        f"caught up ({p.search_record_s:.0f} s in the search rows, no ffmpeg there)\n"
        f"- ffmpeg: one process per camera, `-re -stream_loop -1 -i clip.ts -map 0 -c copy "
        f"-f segment -segment_time 1 -reset_timestamps 0`, the same window after {p.warmup_s:.0f} s"
    )


def print_cpu(rows: list[Row]) -> None:
    print(
        "\n| cameras | box standby, % of one core per camera | box recording, per camera "
        "| of it kernel | box context switches per packet | ffmpeg, per camera | of it kernel "
        "| box / ffmpeg |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        box, ff = row.box, row.ffmpeg
        rec = box.cpu_pct_per_camera("recording")
        ff_cells = (
            f"{ff.cpu_pct_per_camera():.2f} | {100 * ff.sys_s / ff.cpu_s:.0f} % "
            f"| **{rec / ff.cpu_pct_per_camera():.2f}**"
            if ff
            else "- | - | -"
        )
        print(
            f"| {box.cameras} | {box.cpu_pct_per_camera('standby'):.2f} | **{rec:.2f}** "
            f"| {100 * box.record_sys_s / box.record_cpu_s:.0f} % "
            f"| {box.switches_per_packet():.2f} | {ff_cells} |"
        )
    print_switches(rows)
    table = [r for r in rows if r.ffmpeg is not None]
    box_fit = fit_cpu([r.box for r in table if r.box.sustained()])
    ff_points = [(f.cameras, f.cpu_s / f.wall_s) for f in (r.ffmpeg for r in table) if f]
    fits = [
        _describe_fit(box_fit, "box recording", table),
        _describe_fit(least_squares(ff_points), "ffmpeg, one process per camera", table),
    ]
    if any(fits):
        print("\n" + "; ".join(f for f in fits if f) + ".")
    print(
        "\n| cameras | box total, % of one core | dropped | backlog max / end (packets) "
        "| delivered by the replay | muxed / delivered | sustained |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        box = row.box
        print(
            f"| {box.cameras} | {100 * box.record_cpu_s / box.record_wall_s:.0f} | {box.dropped} "
            f"| {box.backlog_max} / {box.backlog_end} | {100 * box.delivered:.1f} % "
            f"| {100 * box.kept_up:.1f} % | {'yes' if box.sustained() else '**no**'} |"
        )


def print_switches(rows: list[Row]) -> None:
    """Where the context switches and the CPU of the recording window are, per thread role;
    switches per packet (video and audio)."""
    roles = ["sources", "event loop", "card workers", "other"]
    print(
        "\n| cameras | packets per second per camera (video + audio) | packets per hand-over "
        "| context switches per packet: all threads | ffmpeg's, for scale | "
        + " | ".join(roles)
        + " | CPU share: "
        + " | ".join(roles)
        + " |"
    )
    print("|---:|---:|---:|---:|---:|" + "---:|" * 2 * len(roles))
    for row in rows:
        box = row.box
        packets = max(1, box.record_all_packets)
        by_role = box.record_switches_by_role
        cpu = box.record_cpu_by_role
        cpu_total = max(1e-9, sum(cpu.values()))
        print(
            f"| {box.cameras} | {packets / box.record_wall_s / box.cameras:.0f} "
            f"| {f'{packets / box.record_batches:.1f}' if box.record_batches else '-'} "
            f"| {box.switches_per_packet():.2f} "
            f"| {f'{row.ffmpeg.switches_per_packet:.2f}' if row.ffmpeg else '-'} | "
            + " | ".join(f"{by_role.get(role, 0) / packets:.2f}" for role in roles)
            + " | "
            + " | ".join(f"{100 * cpu.get(role, 0.0) / cpu_total:.0f} %" for role in roles)
            + " |"
        )


def _describe_fit(fit: tuple[float, float] | None, name: str, rows: list[Row]) -> str:
    if fit is None:
        return ""
    counts = [r.box.cameras for r in rows]
    return (
        f"{name}, fitted over {min(counts)}..{max(counts)} cameras: {100 * fit[0]:.2f} % of "
        f"one core per camera plus {100 * fit[1]:.2f} % fixed"
    )


def print_memory(rows: list[Row], imports: list[tuple[str, int, int]]) -> None:
    print(
        "\n| cameras | ring MiB | replay clips MiB | RSS standby MiB "
        "| RSS recording, start / end of the window MiB | box's own standby MiB "
        "| box's own recording, max MiB "
        "| of it anonymous (end) MiB "
        "| ffmpeg PSS per camera MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        box, ff = row.box, row.ffmpeg
        print(
            f"| {box.cameras} | {_mib(box.ring_standby)} | {_mib(box.clip_bytes)} "
            f"| {_mib(box.rss_standby)} | {_mib(box.rss_record_start)} / {_mib(box.rss_record)} "
            f"| {_mib(box.own_memory(box.rss_standby, box.ring_standby))} "
            f"| **{_mib(box.own_memory(box.rss_record_max, box.ring_record))}** "
            f"| {_mib(box.own_memory(box.anon_record, box.ring_record))} "
            f"| {_mib(ff.pss_total / ff.cameras) if ff else '-'} |"
        )
    idle = statistics.median(r.box.rss_idle for r in rows)
    idle_anon = statistics.median(r.box.anon_idle for r in rows)
    print(
        f"\nThe box's child after its imports and the store's open, before any camera: "
        f"{_mib(idle)} MiB RSS, {_mib(idle_anon)} MiB of it anonymous. Where it goes "
        f"(a fresh interpreter, cumulative):\n"
    )
    print("| loaded | RSS MiB | anonymous MiB |")
    print("|---|---:|---:|")
    for label, rss, anon in imports:
        print(f"| {label} | {_mib(rss)} | {_mib(anon)} |")


def print_latency(rows: list[Row]) -> None:
    print(
        "\n| cameras | trigger -> first durable byte, ms (median / max over cameras) "
        "| trigger -> trigger moment durable, ms | mean segment, s | CPU s to write the pre-record "
        "| media durable at the end, MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        box = row.box
        print(
            f"| {box.cameras} | {_median_max(box.first_durable_ms)} "
            f"| {_median_max(box.trigger_durable_ms)} | {box.segment_s:.2f} "
            f"| {box.catch_up_cpu_s:.2f} "
            f"| {box.media_mb:.0f} |"
        )


def print_verdict(runner: Runner) -> None:
    rows = [runner.rows[n] for n in sorted(runner.rows)]
    compared = [(r.box, r.ffmpeg) for r in rows if r.ffmpeg is not None and r.box.sustained()]
    if compared:
        ratios = [b.cpu_pct_per_camera("recording") / f.cpu_pct_per_camera() for b, f in compared]
        worst = max(b.cpu_pct_per_camera("recording") for b, _ in compared)
        own = [b.own_memory(b.rss_record_max, b.ring_record) for b, _ in compared]
        switches = [b.switches_per_packet() for b, _ in compared]
        one = [m for (b, _), m in zip(compared, own, strict=True) if b.cameras == 1]
        print(
            f"\nAgainst the targets, {compared[0][0].cameras}..{compared[-1][0].cameras} cameras: "
            f"box / ffmpeg CPU per camera {min(ratios):.2f}..{max(ratios):.2f} (issue 18's target "
            f"<= {CPU_RATIO_TARGET}: {_met(max(ratios) <= CPU_RATIO_TARGET)}); context switches "
            f"per packet {min(switches):.2f}..{max(switches):.2f} "
            f"(target <= {SWITCHES_TARGET:.0f}: {_met(max(switches) <= SWITCHES_TARGET)}); "
            f"box CPU per camera at most "
            f"{worst:.2f} % of one core (target < 3 %: {_met(worst < 3)}); "
            f"box's own memory {_mib(min(own))}..{_mib(max(own))} MiB"
            + (
                f", at one camera {_mib(one[0])} MiB (target < 60 MB = 57.2 MiB: "
                f"{_met(one[0] < MEMORY_TARGET_BYTES)}; this child is capture and store only: "
                f"`python -m bench.memory` measures the whole box)"
                if one
                else ""
            )
            + "."
        )
    failed = runner.min_failed()
    print(
        f"Most cameras sustained with zero dropped packets: **{runner.max_sustained()}**"
        + (f" ({failed} were not)" if failed else " (no count tried failed)")
        + (f"; the child failed or overran at {runner.crashed}" if runner.crashed else "")
        + "."
    )


def _met(met: bool) -> str:
    return "met" if met else "**not met**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    parser.add_argument("--cameras", help="comma-separated camera counts measured against ffmpeg")
    parser.add_argument("--search-budget-s", type=float, help="seconds for the most-cameras search")
    parser.add_argument("--prerecord-s", type=float, help="pre-record window (box default 30)")
    parser.add_argument(
        "--audio", action="store_true", help="the cameras send AAC sound too (issue 15)"
    )
    parser.add_argument("--out", type=Path, default=None, help="work dir (default: tmp in cwd)")
    parser.add_argument(
        "--idle-wait-s",
        type=float,
        default=60.0,
        help="how long to wait for an idle machine first (a shared machine never is)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return
    params = QUICK if args.quick else FULL
    if args.cameras:
        params = dataclasses.replace(
            params, table_cameras=[int(n) for n in args.cameras.split(",")], max_cameras=256
        )
    if args.search_budget_s is not None:
        params = dataclasses.replace(params, search_budget_s=args.search_budget_s)
    if args.prerecord_s is not None:
        params = dataclasses.replace(params, prerecord_s=args.prerecord_s)
    started = time.monotonic()
    idle = wait_for_idle(args.idle_wait_s)
    workdir = Path(tempfile.mkdtemp(prefix="mvb-bench-capture-", dir=args.out or Path.cwd()))
    try:
        clip = make_clip(workdir, audio=args.audio)
        progress(f"clip: {clip.seconds:.0f} s at {clip.bitrate_bps / 1e6:.3f} Mbit/s")
        imports = measure_imports()
        runner = Runner(params, clip, workdir)
        runner.table()
        if params.search_budget_s > 0:
            runner.search()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = [runner.rows[n] for n in sorted(runner.rows)]
    print_header(runner, time.monotonic() - started, idle)
    print_cpu(rows)
    print_memory(rows, imports)
    print_latency(rows)
    print_verdict(runner)


if __name__ == "__main__":
    main()
