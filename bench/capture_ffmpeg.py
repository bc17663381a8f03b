"""The capture benchmark's baselines: the ffmpeg CLI remuxing the same clip, and where the idle
memory of a Python process goes.

`measure_ffmpeg` runs one ffmpeg process per camera (`-re -c copy` into 1 s segments, what a user
would script instead of the box) and reads their CPU and PSS from /proc over the same window as
the box's. `measure_imports` measures a fresh interpreter's RSS after each import step. Every
process started here is stopped (SIGTERM, then SIGKILL) when its measurement ends.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.capture_clip import Clip
from bench.procfs import cpu_of, proc_kb, process_switches, scheduled_s

ROOT = Path(__file__).resolve().parent.parent
FFMPEG = "/usr/bin/ffmpeg"


@dataclass(frozen=True)
class FfmpegResult:
    cameras: int
    cpu_s: float
    sys_s: float
    wall_s: float
    pss_total: int  # proportional set size: shared library pages split among the processes
    written_ratio: float  # segment bytes written in the window / the clip's rate
    switches_per_packet: float  # context switches per packet it read (video and audio)

    def cpu_pct_per_camera(self) -> float:
        return 100 * self.cpu_s / self.wall_s / self.cameras


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


@contextlib.contextmanager
def _processes(commands: list[list[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start every command; on leaving, SIGTERM them all, then SIGKILL whoever is left."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            procs.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure_ffmpeg(
    cameras: int, clip: Clip, workdir: Path, warmup_s: float, window_s: float
) -> FfmpegResult:
    """`cameras` ffmpeg processes remuxing the clip in real time into 1 s segments."""
    outs = [workdir / f"ffmpeg{i:03d}" for i in range(cameras)]
    commands = []
    for out in outs:
        out.mkdir()
        commands.append(
            [
                FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin",
                "-re", "-stream_loop", "-1", "-i", str(clip.path),
                "-map", "0", "-c", "copy",
                "-f", "segment", "-segment_time", "1", "-reset_timestamps", "0",
                str(out / "out%05d.ts"),
            ]
        )  # fmt: skip
    with _processes(commands) as procs:
        time.sleep(warmup_s)
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("an ffmpeg process ended early")
        pids = [p.pid for p in procs]
        (_, sys0), t0, bytes0 = cpu_of(pids), time.monotonic(), sum(map(_dir_bytes, outs))
        cpu0, switches0 = scheduled_s(pids), process_switches(pids)
        time.sleep(window_s)
        cpu1, switches1 = scheduled_s(pids), process_switches(pids)
        (_, sys1), t1, bytes1 = cpu_of(pids), time.monotonic(), sum(map(_dir_bytes, outs))
        pss = sum(proc_kb(pid, "Pss", "smaps_rollup") for pid in pids)
    expected = clip.payload_bytes / clip.seconds * (t1 - t0) * cameras
    # CPU from the scheduler (ns); the kernel's share still from the 10 ms ticks
    # -re: read in real time, video and audio
    packets = (clip.packets + clip.audio_packets) / clip.seconds * (t1 - t0) * cameras
    return FfmpegResult(
        cameras,
        cpu1 - cpu0,
        sys1 - sys0,
        t1 - t0,
        pss,
        (bytes1 - bytes0) / expected,
        (switches1 - switches0) / packets,
    )


# -- where the idle memory goes ------------------------------------------------------------------

IMPORT_STEPS = [
    ("python, nothing imported", ""),
    ("+ asyncio, json, threading (asyncio loads ssl: OpenSSL)", "import asyncio, json, threading"),
    ("+ av (PyAV and the FFmpeg it bundles)", "import av"),
    (
        # The box's crypto is all `cryptography` since issue 18 (pycryptodome is not loaded).
        "+ cryptography (AES-GCM, X25519, Ed25519, HKDF)",
        "from cryptography.hazmat.primitives.ciphers.aead import AESGCM; "
        "from cryptography.hazmat.primitives.asymmetric import ed25519, x25519; "
        "from cryptography.hazmat.primitives.kdf.hkdf import HKDF",
    ),
    ("+ diskcache (sqlite3)", "import diskcache"),
    ("+ the box's storage and capture modules", "import storage.store, gateway.capture.service"),
]
IMPORT_PROBE = """
import json, sys
def kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
out = []
for statement in sys.argv[1:]:
    exec(statement)
    out.append((kb("VmRSS"), kb("RssAnon")))
print(json.dumps(out))
"""


def measure_imports() -> list[tuple[str, int, int]]:
    """RSS (and its anonymous part) of a fresh interpreter after each import step, in order."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *(statement for _, statement in IMPORT_STEPS)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    sizes = json.loads(done.stdout)
    return [(label, rss, anon) for (label, _), (rss, anon) in zip(IMPORT_STEPS, sizes, strict=True)]
