"""Issue 15's "a camera back is recorded again within 2 s", measured (not asserted in a test).

A real RTSP camera (gst-rtsp-server, fixed loopback port, 0.5 s GOP, AAC sound) is recorded by
the box's capture service; each round kills the camera mid-recording, lets the box's failed
attempts pile up for `--outage-s`, starts the camera again on the same port, and times how long
after the camera served again its first packet reached the recording. The box's part is its
retry (at most `RECORDING_RETRY_S` while recording) and the RTSP setup; the camera's part is its
next keyframe (FFmpeg's probe waits for it).

    python -m bench.camera_reconnect [--rounds 5] [--outage-s 3]

Prints each round, then the median and the worst against the 2 s bound, and the load it ran
under (`os.getloadavg`): a loaded machine stretches the figure, so quote it with the load.
tests/gateway/test_capture_gaps.py proves the behaviour (the schedule, the return, the gap).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.capture.camera import Camera
from gateway.capture.service import CaptureService
from gateway.capture.source import RECORDING_RETRY_S, PyavSource, SourceHealth, SourceSpec
from gateway.recorder import RecorderPolicy, TriggerPolicy
from storage.envelope import RecipientPrivateKey
from tests.cameras import free_port, rtsp_camera
from tests.capture_helpers import store_on, wait_for

BOUND_S = 2.0  # issue 15
FPS = 25
GOP_FRAMES = FPS // 2
PRERECORD_S = 2.0
WAIT_S = 60.0  # a deadline on each step of a round, not a figure
NS_PER_S = 1_000_000_000


def packets_beyond(health: SourceHealth, count: int) -> Callable[[], bool]:
    """True once the camera delivered more than `count` video packets."""
    return lambda: health.packets > count


async def measure(workdir: Path, rounds: int, outage_s: float) -> list[float]:
    """Seconds from the camera serving again to its first packet in the recording, per round."""
    port = free_port()
    recipient = RecipientPrivateKey.generate()
    back_after_s: list[float] = []
    with store_on(workdir, recipient) as store:
        spec = SourceSpec(
            name="dashcam", kind="rtsp_pull", url=f"rtsp://127.0.0.1:{port}/cam", serial="DC-B"
        )
        camera = Camera(PyavSource(spec), prerecord_s=PRERECORD_S, ring_max_bytes=16 << 20)
        policy = RecorderPolicy(
            prerecord_s=PRERECORD_S, default_trigger=TriggerPolicy(postrecord_s=0.5)
        )
        service = CaptureService(store, [camera], policy, {"device_serial": "MVB-B"}, tick_s=0.1)
        health = camera.source.health
        with rtsp_camera(port=port, fps=FPS, gop=GOP_FRAMES, audio="aac"):
            await service.start()
            await wait_for(lambda: health.packets > (PRERECORD_S + 1) * FPS, "a ring", WAIT_S)
            await service.trigger("officer")
            await asyncio.sleep(1.0)
        try:
            for _ in range(rounds):
                await wait_for(lambda: not health.connected, "the loss", WAIT_S)
                await asyncio.sleep(outage_s)  # failed attempts pile up
                with rtsp_camera(port=port, fps=FPS, gop=GOP_FRAMES, audio="aac"):
                    served_ns = time.monotonic_ns()
                    await wait_for(packets_beyond(health, health.packets), "the return", WAIT_S)
                    back_after_s.append((time.monotonic_ns() - served_ns) / NS_PER_S)
                    print(f"  round {len(back_after_s)}: back after {back_after_s[-1]:.2f} s")
                    await asyncio.sleep(1.0)
        finally:
            await service.stop_recording()
            await wait_for(lambda: service.recording is None, "the recording's end", WAIT_S)
            await service.stop()
    return back_after_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--outage-s", type=float, default=3.0)
    args = parser.parse_args()
    print(
        f"camera reconnect while recording: {args.rounds} rounds, outages of {args.outage_s} s,"
        f" retry bound {RECORDING_RETRY_S} s, GOP {GOP_FRAMES / FPS} s"
    )
    with tempfile.TemporaryDirectory(prefix="mvb-reconnect-") as workdir:
        figures = asyncio.run(measure(Path(workdir), args.rounds, args.outage_s))
    median_s, worst_s = statistics.median(figures), max(figures)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"back in the recording: median {median_s:.2f} s, worst {worst_s:.2f} s against the"
        f" {BOUND_S} s bound (worst {worst_s / BOUND_S:.2f}x of it; load average {load})"
    )


if __name__ == "__main__":
    main()
