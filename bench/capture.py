"""Benchmark of the capture path: N replayed 4 Mbit/s cameras into the recorder and the store.

Baseline in the same run: the ffmpeg CLI remuxing the same stream with `-c copy` into 1 s segments,
one process per camera (what a user would script instead of the box). ffmpeg does no encryption,
no fsync and no hashing; the box does all three (RULES S6) plus its pre-record ring.

The camera: a 1280x720 25 fps H.264 clip at 4 Mbit/s CBR, GOP 1 s, made once with
`gateway.synthetic` (its first second, where x264's rate control ramps up, is cut off), replayed in
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

Run: `python -m bench.capture [--quick] [--cameras 1,4,8,16] [--search-budget-s 300]
[--prerecord-s 10] [--out DIR]`. Full: about 9 minutes; `--quick`: under one minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FFMPEG = "/usr/bin/ffmpeg"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024

WIDTH, HEIGHT, FPS = 1280, 720, 25
BITRATE_BPS = 4_000_000
CLIP_S = 6  # kept in memory by every ReplaySource: 3 MB per camera, reported and subtracted
RING_MAX_BYTES = 96 * MiB  # the box's default per camera (config.local)
SEGMENT_MIN_S = 1.0
MIN_DELIVERED = 0.97
MIN_KEPT_UP = 0.98
SAMPLE_S = 0.2
CATCH_UP_MAX_S = 30.0  # a camera not caught up with its pre-record by then is not sustained
SEAL_MAX_S = 30.0
CHILD_SLACK_S = 30.0


# -- /proc ----------------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> tuple[float, float]:
    """(utime + stime, stime) of a process (all its threads, dead ones included), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is field 3
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK, stime / CLK_TCK


def cpu_of(pids: list[int]) -> tuple[float, float]:
    times = [proc_cpu_s(pid) for pid in pids]
    return sum(t for t, _ in times), sum(s for _, s in times)


def proc_kb(pid: int | str, key: str, table: str = "status") -> int:
    """A `kB` line of /proc/<pid>/status (VmRSS, RssAnon) or smaps_rollup (Pss), in bytes."""
    for line in Path(f"/proc/{pid}/{table}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss_self() -> int:
    return proc_kb("self", "VmRSS")


def anon_self() -> int:
    """The anonymous part of RSS (heap, stacks): what is not a mapped library or file."""
    return proc_kb("self", "RssAnon")


# -- the clip -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    path: Path
    seconds: float
    packets: int
    payload_bytes: int

    @property
    def bitrate_bps(self) -> float:
        return self.payload_bytes * 8 / self.seconds

    @property
    def fps(self) -> float:
        return self.packets / self.seconds


def make_clip(workdir: Path) -> Clip:
    """CLIP_S seconds of 4 Mbit/s CBR video; generated one second longer, the first one cut off
    (the encoder's VBV fills during it, so it is ~10 % short), stream copied into the clip."""
    import av

    from gateway.synthetic import generate_clip

    raw = generate_clip(
        workdir / "raw.ts",
        seconds=CLIP_S + 1,
        fps=FPS,
        width=WIDTH,
        height=HEIGHT,
        bitrate_bps=BITRATE_BPS,
        keyframe_interval_frames=FPS,
        camera="bench",
    )
    path = workdir / "clip.ts"
    packets = payload = 0
    with av.open(str(raw)) as src, av.open(str(path), mode="w", format="mpegts") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        cut = None
        for packet in src.demux(stream):
            if not packet.size or packet.pts is None:
                continue
            if cut is None:
                assert stream.time_base is not None
                cut = packet.pts + int(1 / stream.time_base)  # one second later, a keyframe
            if packet.pts < cut:
                continue
            if packets == 0 and not packet.is_keyframe:
                raise ValueError("the clip must start on a keyframe: is the GOP one second?")
            packets += 1
            payload += packet.size
            packet.stream = out
            dst.mux(packet)
    raw.unlink()
    return Clip(path, packets / FPS, packets, payload)


# -- the box, in a child process ------------------------------------------------------------------


@dataclass(frozen=True)
class BoxConfig:
    cameras: int
    clip: str
    workdir: str
    prerecord_s: float
    record_s: float
    warmup_s: float
    fps: float
    clip_bytes: int


@dataclass
class BoxResult:
    cameras: int
    rss_idle: int  # after imports and store open, before any camera
    anon_idle: int
    standby_cpu_s: float
    standby_wall_s: float
    rss_standby: int
    ring_standby: int
    record_cpu_s: float
    record_wall_s: float
    record_sys_s: float  # the kernel's part of record_cpu_s
    record_switches: int  # context switches (all threads) in the recording window
    record_packets: int  # packets the cameras delivered in the recording window
    rss_record_start: int  # at the start of the steady recording window
    rss_record: int
    rss_record_max: int
    anon_record: int
    ring_record: int
    clip_bytes: int  # the replayed clips held in memory by the sources (a bench artefact)
    dropped: int
    errors: int
    backlog_max: int  # packets waiting in a camera's bridge queue, worst camera, recording window
    backlog_end: int
    delivered: float  # packets the replay delivered in the window / real time
    kept_up: float  # packets muxed in the window / packets delivered (< 1: falling behind)
    segment_s: float  # mean segment length in the window (a durable point ends each)
    first_durable_ms: list[float]
    trigger_durable_ms: list[float]
    catch_up_cpu_s: float  # CPU from the trigger until every camera had caught up
    media_mb: float  # media bytes durable on the card at the end

    def sustained(self) -> bool:
        return (
            self.dropped == 0
            and self.errors == 0
            and self.backlog_end < FPS
            and self.delivered >= MIN_DELIVERED
            and self.kept_up >= MIN_KEPT_UP
            and len(self.trigger_durable_ms) == self.cameras
        )

    def cpu_pct_per_camera(self, phase: str) -> float:
        if phase == "standby":
            return 100 * self.standby_cpu_s / self.standby_wall_s / self.cameras
        return 100 * self.record_cpu_s / self.record_wall_s / self.cameras

    def own_memory(self, rss: int, ring: int) -> int:
        """RSS less the ring's packet bytes and the replay clips'."""
        return rss - ring - self.clip_bytes


class DurableProbe:
    """Times each camera's durable points by wrapping `StreamWriter.end_segment` (child only)."""

    def __init__(self) -> None:
        self.trigger_ns = 0
        self.first_ns: dict[str, int] = {}
        self.trigger_moment_ns: dict[str, int] = {}

    def install(self) -> None:
        from storage.store import StreamWriter
        from storage.writer import DurablePoint

        original = StreamWriter.end_segment

        def end_segment(writer: StreamWriter, segment: dict[str, Any]) -> DurablePoint:
            durable = original(writer, segment)
            now = time.monotonic_ns()
            if self.trigger_ns:
                self.first_ns.setdefault(writer.camera, now)
                if int(segment.get("end_mono_ns", 0)) >= self.trigger_ns:
                    self.trigger_moment_ns.setdefault(writer.camera, now)
            return durable

        # a class attribute on purpose: the muxers call it on their own worker threads
        setattr(StreamWriter, "end_segment", end_segment)  # noqa: B010


class Sampler:
    """Samples RSS and the bridge queues every SAMPLE_S on the event loop."""

    def __init__(self, queue_sizes: Callable[[], list[int]]) -> None:
        self._queue_sizes = queue_sizes
        self.rss_max = 0
        self.backlog_max = 0

    def reset(self) -> None:
        self.rss_max = self.backlog_max = 0

    async def run(self) -> None:
        while True:
            self.rss_max = max(self.rss_max, rss_self())
            self.backlog_max = max(self.backlog_max, *self._queue_sizes(), 0)
            await asyncio.sleep(SAMPLE_S)


async def _wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def run_box(cfg: BoxConfig) -> BoxResult:
    """One measurement of the box with `cfg.cameras` cameras (runs in the child process)."""
    from gateway.capture.replay_source import ReplaySource
    from gateway.capture.service import Camera, CameraRecording, CaptureService
    from gateway.capture.source import SourceSpec
    from gateway.recorder import RecorderPolicy, TriggerPolicy
    from storage.audit_io import AuditLog
    from storage.devicekey import DeviceKey
    from storage.envelope import RecipientPrivateKey
    from storage.space import SpacePolicy
    from storage.store import EvidenceStore, StoreSettings

    work = Path(cfg.workdir)
    probe = DurableProbe()
    probe.install()
    device = DeviceKey.load_or_create(work / "state")
    audit = AuditLog.open(work / "state" / "audit.jsonl", device)
    settings = StoreSettings(card_dir=work / "card", space=SpacePolicy(1 * MiB, 2 * MiB))
    recipient = RecipientPrivateKey.generate().public()
    store, _ = EvidenceStore.open(settings, (recipient,), device, audit)
    rss_idle, anon_idle = rss_self(), anon_self()
    sources = [
        ReplaySource(SourceSpec(name=f"cam{i:03d}", kind="replay", url=cfg.clip, serial=f"B{i}"))
        for i in range(cfg.cameras)
    ]
    cameras = [
        Camera(s, cfg.prerecord_s, RING_MAX_BYTES, segment_min_s=SEGMENT_MIN_S) for s in sources
    ]
    policy = RecorderPolicy(
        prerecord_s=cfg.prerecord_s, default_trigger=TriggerPolicy(postrecord_s=0.0)
    )
    service = CaptureService(store, cameras, policy, {"device_serial": "BENCH"})

    def queue_sizes() -> list[int]:
        return [s.bridge.queue.qsize() for s in sources if s.bridge is not None]

    def ring_bytes() -> int:
        return sum(c.ring.bytes for c in cameras)

    def source_packets() -> int:
        return sum(s.health.packets for s in sources)

    def muxed_packets() -> int:
        return sum(p.muxer.stats.packets for p in parts)

    def segments() -> int:
        return sum(p.muxer.stats.segments for p in parts)

    parts: list[CameraRecording] = []
    sampler = Sampler(queue_sizes)
    sampler_task = asyncio.create_task(sampler.run())
    await service.start()
    try:
        started = time.monotonic()
        await asyncio.sleep(cfg.warmup_s)
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(max(0.0, started + cfg.prerecord_s + 1.5 - time.monotonic()))
        cpu1, t1 = time.process_time(), time.monotonic()
        rss_standby, ring_standby = rss_self(), ring_bytes()

        probe.trigger_ns = time.monotonic_ns()
        cpu_trigger = time.process_time()
        await service.trigger("officer", button="bench")
        parts[:] = [c.recording for c in cameras if c.recording is not None]
        await _wait_until(lambda: len(probe.trigger_moment_ns) == cfg.cameras, CATCH_UP_MAX_S)
        catch_up_cpu_s = time.process_time() - cpu_trigger
        await asyncio.sleep(1.0)

        sampler.reset()
        muxed2, packets2, segments2 = muxed_packets(), source_packets(), segments()
        cpu2, t2, rss_record_start = time.process_time(), time.monotonic(), rss_self()
        usage2 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(cfg.record_s)
        muxed3, packets3, segments3 = muxed_packets(), source_packets(), segments()
        cpu3, t3 = time.process_time(), time.monotonic()
        usage3 = resource.getrusage(resource.RUSAGE_SELF)
        rss_record, anon_record, ring_record = rss_self(), anon_self(), ring_bytes()
        backlog_end = max(queue_sizes(), default=0)
        dropped = sum(s.health.dropped for s in sources) + sum(
            p.muxer.stats.skipped_until_keyframe + p.muxer.stats.rejected_by_muxer for p in parts
        )
        errors = sum(s.health.errors for s in sources)
        await service.stop_recording()
        sealed = await _wait_until(lambda: service.recording is None, SEAL_MAX_S)
        media = sum(
            p.muxer.stats.last_durable.media_bytes for p in parts if p.muxer.stats.last_durable
        )
        errors += sum(1 for p in parts if p.failed) + len(service.alarms) + (not sealed)
    finally:
        sampler_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler_task
        await service.stop()
        store.close()
        audit.close()

    def ms_after_trigger(times: dict[str, int]) -> list[float]:
        return sorted((t - probe.trigger_ns) / 1e6 for t in times.values())

    return BoxResult(
        cameras=cfg.cameras,
        rss_idle=rss_idle,
        anon_idle=anon_idle,
        standby_cpu_s=cpu1 - cpu0,
        standby_wall_s=t1 - t0,
        rss_standby=rss_standby,
        ring_standby=ring_standby,
        record_cpu_s=cpu3 - cpu2,
        record_wall_s=t3 - t2,
        record_sys_s=usage3.ru_stime - usage2.ru_stime,
        record_switches=usage3.ru_nvcsw + usage3.ru_nivcsw - usage2.ru_nvcsw - usage2.ru_nivcsw,
        record_packets=packets3 - packets2,
        rss_record_start=rss_record_start,
        rss_record=rss_record,
        rss_record_max=sampler.rss_max,
        anon_record=anon_record,
        ring_record=ring_record,
        clip_bytes=cfg.cameras * cfg.clip_bytes,
        dropped=dropped,
        errors=errors,
        backlog_max=sampler.backlog_max,
        backlog_end=backlog_end,
        delivered=(packets3 - packets2) / ((t3 - t2) * cfg.fps * cfg.cameras),
        kept_up=(muxed3 - muxed2) / max(1, packets3 - packets2),
        segment_s=(t3 - t2) * cfg.cameras / max(1, segments3 - segments2),
        first_durable_ms=ms_after_trigger(probe.first_ns),
        trigger_durable_ms=ms_after_trigger(probe.trigger_moment_ns),
        catch_up_cpu_s=catch_up_cpu_s,
        media_mb=media / 1e6,
    )


def child_main(config_json: str) -> None:
    cfg = BoxConfig(**json.loads(config_json))
    result = asyncio.run(run_box(cfg))
    print(json.dumps(dataclasses.asdict(result)), flush=True)


def measure_box(cfg: BoxConfig) -> BoxResult:
    """Run one box measurement in a child process (killed if it overruns)."""
    timeout_s = cfg.prerecord_s + cfg.record_s + CATCH_UP_MAX_S + SEAL_MAX_S + CHILD_SLACK_S
    done = subprocess.run(
        [sys.executable, "-m", "bench.capture", "--child", json.dumps(dataclasses.asdict(cfg))],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"box child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return BoxResult(**json.loads(done.stdout.strip().splitlines()[-1]))


# -- the baseline: the ffmpeg CLI -----------------------------------------------------------------


@dataclass(frozen=True)
class FfmpegResult:
    cameras: int
    cpu_s: float
    sys_s: float
    wall_s: float
    pss_total: int  # proportional set size: shared library pages split among the processes
    written_ratio: float  # segment bytes written in the window / the clip's rate

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
        (cpu0, sys0), t0, bytes0 = cpu_of(pids), time.monotonic(), sum(map(_dir_bytes, outs))
        time.sleep(window_s)
        (cpu1, sys1), t1, bytes1 = cpu_of(pids), time.monotonic(), sum(map(_dir_bytes, outs))
        pss = sum(proc_kb(pid, "Pss", "smaps_rollup") for pid in pids)
    expected = clip.payload_bytes / clip.seconds * (t1 - t0) * cameras
    return FfmpegResult(
        cameras, cpu1 - cpu0, sys1 - sys0, t1 - t0, pss, (bytes1 - bytes0) / expected
    )


# -- where the idle memory goes ------------------------------------------------------------------

IMPORT_STEPS = [
    ("python, nothing imported", ""),
    ("+ asyncio, json, threading (asyncio loads ssl: OpenSSL)", "import asyncio, json, threading"),
    ("+ av (PyAV and the FFmpeg it bundles)", "import av"),
    (
        "+ cryptography (AES-GCM)",
        "from cryptography.hazmat.primitives.ciphers.aead import AESGCM",
    ),
    ("+ pycryptodome (X25519, Ed25519)", "import Crypto.Cipher.AES, Crypto.PublicKey.ECC"),
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


# -- the run --------------------------------------------------------------------------------------


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
            _progress(f"box {cameras:3d} cameras: FAILED: {exc}")
            self.crashed.append(cameras)
            return None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _progress(
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
        _progress(f"ffmpeg {cameras:3d} cameras: {result.cpu_pct_per_camera():.2f} % per camera")
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
        fit = _fit_cpu(table)
        return 0 if fit is None or fit[0] <= 0 else int((1 - fit[1]) / fit[0])

    def max_sustained(self) -> int:
        return max((n for n, r in self.rows.items() if r.box.sustained()), default=0)

    def min_failed(self) -> int | None:
        failed = [n for n, r in self.rows.items() if not r.box.sustained()] + self.crashed
        return min(failed, default=None)


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


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


def wait_for_idle(timeout_s: float = 60.0, wanted: float = 0.95) -> float:
    """Wait (bounded) until the machine is idle, e.g. done writing back the last run's files."""
    deadline = time.monotonic() + timeout_s
    idle = idle_share()
    while idle < wanted and time.monotonic() < deadline:
        idle = idle_share()
    return idle


def idle_share(seconds: float = 1.0) -> float:
    """The machine's idle CPU share over `seconds` (/proc/stat): is anything else running?"""

    def ticks() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, all

    idle0, all0 = ticks()
    time.sleep(seconds)
    idle1, all1 = ticks()
    return (idle1 - idle0) / max(1, all1 - all0)


def print_header(runner: Runner, elapsed_s: float, idle: float) -> None:
    p, clip = runner.params, runner.clip
    print(
        f"# bench/capture.py: {datetime.date.today().isoformat()}, {elapsed_s:.0f} s\n\n"
        f"- machine: {machine()}; CPU idle just before the run: {100 * idle:.0f} %\n"
        f"- camera: {WIDTH}x{HEIGHT} {clip.fps:.0f} fps H.264, GOP 1 s, "
        f"{clip.bitrate_bps / 1e6:.2f} Mbit/s measured over the {clip.seconds:.0f} s clip, "
        f"replayed in real time (stream copy)\n"
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
            f"| {box.record_switches / max(1, box.record_packets):.1f} | {ff_cells} |"
        )
    table = [r for r in rows if r.ffmpeg is not None]
    box_fit = _fit_cpu([r.box for r in table if r.box.sustained()])
    ff_points = [(f.cameras, f.cpu_s / f.wall_s) for f in (r.ffmpeg for r in table) if f]
    fits = [
        _describe_fit(box_fit, "box recording", table),
        _describe_fit(_least_squares(ff_points), "ffmpeg, one process per camera", table),
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


def _least_squares(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Total CPU (cores) over cameras: (cost per camera, fixed cost), or None below 2 counts."""
    if len({n for n, _ in points}) < 2:
        return None
    slope, intercept = statistics.linear_regression(
        [float(n) for n, _ in points], [cpu for _, cpu in points]
    )
    return slope, intercept


def _fit_cpu(boxes: list[BoxResult]) -> tuple[float, float] | None:
    return _least_squares([(b.cameras, b.record_cpu_s / b.record_wall_s) for b in boxes])


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
        print(
            f"\nAgainst the targets, {compared[0][0].cameras}..{compared[-1][0].cameras} cameras: "
            f"box / ffmpeg CPU per camera {min(ratios):.2f}..{max(ratios):.2f} (target <= 2: "
            f"{'met' if max(ratios) <= 2 else 'not met'}); box CPU per camera at most "
            f"{worst:.2f} % of one core (target < 3 %: {'met' if worst < 3 else 'not met'}); "
            f"box's own memory {_mib(min(own))}..{_mib(max(own))} MiB (target < 60 MB = 57.2 MiB: "
            f"{'met' if max(own) < 60e6 else 'not met'})."
        )
    failed = runner.min_failed()
    print(
        f"Most cameras sustained with zero dropped packets: **{runner.max_sustained()}**"
        + (f" ({failed} were not)" if failed else " (no count tried failed)")
        + (f"; the child failed or overran at {runner.crashed}" if runner.crashed else "")
        + "."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    parser.add_argument("--cameras", help="comma-separated camera counts measured against ffmpeg")
    parser.add_argument("--search-budget-s", type=float, help="seconds for the most-cameras search")
    parser.add_argument("--prerecord-s", type=float, help="pre-record window (box default 30)")
    parser.add_argument("--out", type=Path, default=None, help="work dir (default: tmp in cwd)")
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
    idle = wait_for_idle()
    workdir = Path(tempfile.mkdtemp(prefix="mvb-bench-capture-", dir=args.out or Path.cwd()))
    try:
        clip = make_clip(workdir)
        _progress(f"clip: {clip.seconds:.0f} s at {clip.bitrate_bps / 1e6:.3f} Mbit/s")
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
