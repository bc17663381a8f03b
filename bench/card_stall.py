"""A card that stalls on fsync under a recording camera: the pre-record ring's lag, the camera's
queue and its drops, with the capture loop waiting for every packet's write (the baseline:
the box before issue 14) and with the card worker's backlog (now). Same process, same card
(a labdisk with three fsync stalls of `--stall-s` on the evidence files), same camera.

    python -m bench.card_stall [--stall-s 2] [--stalls 3]    # root: labdisk mounts a FUSE card

Prints, per run: the ring's worst lag behind the camera (how stale the pre-record is at its
worst), the camera queue's deepest point, packets dropped, the backlog's peak; then the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gateway.capture.service as capture_service
from demo.synthetic import generate_clip
from labdisk import Delay
from storage.envelope import RecipientPrivateKey
from tests.capture_helpers import wait_for
from tests.gateway.dying_card_rig import DyingCardRig, dying_card_rig

SAMPLE_S = 0.01
NS_PER_S = 1_000_000_000


@dataclass
class Figures:
    ring_lag_max_s: float = 0.0
    queue_max_packets: int = 0
    dropped: int = 0
    backlog_max_packets: int = 0
    backlog_max_bytes: int = 0


async def measure(rig: DyingCardRig, stall_s: float, stalls: int) -> Figures:
    await wait_for(lambda: rig.camera.ring.span_ns() > NS_PER_S, "the ring")
    await rig.service.trigger("officer")
    await wait_for(lambda: len(rig.sealed_files()) >= 1, "a sealed file")
    dropped_before = rig.camera.source.health.dropped
    rule = rig.disk.stall(Delay.fixed(stall_s), ops=["fsync"], path="evidence/*", times=stalls)
    figures = Figures()
    bridge = rig.camera.source.bridge
    assert bridge is not None

    def stalls_left() -> int:
        return sum(int(r["times"]) for r in rig.disk.status()["rules"] if r["id"] == rule)

    checked_s = 0.0
    while True:
        now_ns = time.monotonic_ns()
        items = rig.camera.ring.snapshot(now_ns)
        if items:
            lag_s = (now_ns - items[-1].at_mono_ns) / NS_PER_S
            figures.ring_lag_max_s = max(figures.ring_lag_max_s, lag_s)
        figures.queue_max_packets = max(figures.queue_max_packets, bridge.queue.qsize())
        if time.monotonic() - checked_s > 0.2:
            checked_s = time.monotonic()
            part = rig.camera.recording
            if stalls_left() == 0 and (part is None or part.backlog_bytes == 0):
                break
        await asyncio.sleep(SAMPLE_S)
    part = rig.camera.recording
    assert part is not None
    figures.backlog_max_packets = part.backlog_max_packets
    figures.backlog_max_bytes = part.backlog_max_bytes
    figures.dropped = rig.camera.source.health.dropped - dropped_before
    await rig.service.stop_recording()
    await wait_for(lambda: rig.service.recording is None, "the recording to end", 60)
    return figures


async def run(stall_s: float, stalls: int) -> None:
    recipient = RecipientPrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="bench-card-stall-") as tmp:
        root = Path(tmp)
        clip = generate_clip(root / "clip.ts", seconds=4, fps=25, keyframe_interval_frames=12)
        results = {}
        bound = capture_service.RECORD_BACKLOG_MAX_BYTES
        for name, backlog_bound in (("baseline (await each write)", -1), ("now", bound)):
            capture_service.RECORD_BACKLOG_MAX_BYTES = backlog_bound
            try:
                async with dying_card_rig(root / name.split()[0], clip, recipient) as rig:
                    results[name] = await measure(rig, stall_s, stalls)
            finally:
                capture_service.RECORD_BACKLOG_MAX_BYTES = bound
        print(f"{stalls} fsync stalls of {stall_s} s, one 25 fps camera on labdisk")
        for name, f in results.items():
            print(
                f"  {name:28} ring lag at worst {f.ring_lag_max_s:6.2f} s; camera queue at most "
                f"{f.queue_max_packets} packets; dropped {f.dropped}; card backlog at most "
                f"{f.backlog_max_packets} packets ({f.backlog_max_bytes} bytes)"
            )
        base, now = results["baseline (await each write)"], results["now"]
        ratio = now.ring_lag_max_s / base.ring_lag_max_s if base.ring_lag_max_s else float("nan")
        print(f"  ring lag now / baseline: {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stall-s", type=float, default=2.0)
    parser.add_argument("--stalls", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.stall_s, args.stalls))


if __name__ == "__main__":
    main()
