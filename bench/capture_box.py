"""The capture benchmark's box, measured in a child process of its own (`--child`).

`measure_box` starts `python -m bench.capture --child CONFIG` and reads its `BoxResult`;
`run_box` is what the child runs: the capture service with N replayed cameras into a real
evidence store, through standby, a trigger and a steady recording window. `DurableProbe` times
each camera's durable points (it wraps `StreamWriter.end_segment` in the child only).

Invariant: the child measures only itself (CPU is its `process_time`, memory its /proc tables), so
no cost of the parent (clip generation, ffmpeg, printing) is counted as the box's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.capture_clip import FPS
from bench.procfs import anon_self, rss_self, thread_switches_cpu

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
RING_MAX_BYTES = 96 * MiB  # the box's default per camera (config.local)
SEGMENT_MIN_S = 1.0
MIN_DELIVERED = 0.97
MIN_KEPT_UP = 0.98
SAMPLE_S = 0.5  # the sampler runs in the measured process: its wake-ups count too
CATCH_UP_MAX_S = 30.0  # a camera not caught up with its pre-record by then is not sustained
SEAL_MAX_S = 30.0
CHILD_SLACK_S = 30.0
THREAD_ROLES = {"MainThread": "event loop", "camera-": "sources", "record-": "card workers"}
"""Thread name prefixes -> the role their context switches are counted under ("other": the
store's hashing threads, asyncio.to_thread's pool)."""


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
    record_packets: int  # video frames the cameras delivered in the recording window
    record_all_packets: int  # video and audio packets delivered in the recording window
    record_batches: int  # hand-overs from the source threads to the event loop in the window
    record_switches_by_role: dict[str, int]  # THREAD_ROLES, of threads alive over the window
    record_cpu_by_role: dict[str, float]  # CPU seconds, the same threads
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

    def switches_per_packet(self) -> float:
        """Context switches (all threads) per packet the cameras delivered, video and audio."""
        return self.record_switches / max(1, self.record_all_packets)

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


def thread_role(name: str) -> str:
    return next((role for prefix, role in THREAD_ROLES.items() if name.startswith(prefix)), "other")


ThreadReadings = dict[int, tuple[str, int, float]]


def switches_by_thread() -> ThreadReadings:
    """native thread id -> (role, context switches, CPU s so far), for every live Python
    thread."""
    return {
        t.native_id: (thread_role(t.name), *thread_switches_cpu(t.native_id))
        for t in threading.enumerate()
        if t.native_id is not None
    }


def switches_in_window(
    before: ThreadReadings, after: ThreadReadings
) -> tuple[dict[str, int], dict[str, float]]:
    """Per role, the switches and CPU seconds of the threads alive at both ends of the window."""
    switches: dict[str, int] = {}
    cpu: dict[str, float] = {}
    for native_id, (role, count, cpu_s) in after.items():
        if native_id in before:
            switches[role] = switches.get(role, 0) + count - before[native_id][1]
            cpu[role] = cpu.get(role, 0.0) + cpu_s - before[native_id][2]
    return switches, cpu


async def _wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def run_box(cfg: BoxConfig) -> BoxResult:
    """One measurement of the box with `cfg.cameras` cameras (runs in the child process)."""
    from demo.replay_source import ReplaySource
    from gateway.capture.camera import Camera, CameraRecording
    from gateway.capture.service import CaptureService
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

    def all_packets() -> int:
        return sum(s.health.packets + s.health.audio_packets for s in sources)

    def batches() -> int:
        return sum(getattr(s.bridge, "batches", 0) for s in sources)

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
        all2, batches2, threads2 = all_packets(), batches(), switches_by_thread()
        usage2 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(cfg.record_s)
        muxed3, packets3, segments3 = muxed_packets(), source_packets(), segments()
        cpu3, t3 = time.process_time(), time.monotonic()
        usage3 = resource.getrusage(resource.RUSAGE_SELF)
        all3, batches3, threads3 = all_packets(), batches(), switches_by_thread()
        switches_by_role, cpu_by_role = switches_in_window(threads2, threads3)
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
        record_all_packets=all3 - all2,
        record_batches=batches3 - batches2,
        record_switches_by_role=switches_by_role,
        record_cpu_by_role=cpu_by_role,
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
