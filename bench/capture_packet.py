"""What one packet costs the capture path in Python, stage by stage, single-threaded and hot.

`python -m bench.capture_packet [--packets 6000]`: the capture benchmark's clip with sound
(bench/capture_clip.py), replayed flat out (no pacing) through each stage in turn, in this
process: the replay camera with the box's stamping (`captured_now`), the source's health
counters, the bridge's hand-over (source side, then the event loop's side), the ring, and the
muxer (one packet a call, then a batch a call, into a stand-in for the store that only counts).
Prints microseconds per packet. Run it from another checkout (`cd OTHER && python -m
bench.capture_packet`, this file copied there) to compare the code before and after a change.

What it leaves out, on purpose: the wake-ups (a source thread woken per packet pays its wake-up
and a cold cache, 3-4 times these figures; `python -m bench.capture` measures that), the store's
encryption, hashing and fsync. It is a profile to find the Python steps, not a target.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from bench.capture_clip import make_clip
from demo.replay_source import ReplaySource
from gateway.capture.camera import Camera
from gateway.capture.muxer import SegmentMuxer
from gateway.capture.packet import CapturedPacket
from gateway.capture.source import PacketBridge, SourceHealth, SourceSpec
from storage.store import StreamWriter
from storage.writer import DurablePoint

ARRIVAL_STEP_NS = 1_000_000_000 // 72  # 25 frames and 47 AAC packets a second


class _FlatReplay(ReplaySource):
    """The replay without its pacing: every packet is due at once."""

    def _wait(self, seconds: float) -> bool:
        return False


class _CountingWriter:
    """The three calls the muxer makes of a `StreamWriter`, counted, nothing stored."""

    def __init__(self) -> None:
        self.media_calls = 0
        self.segments = 0

    def append_media(self, data: bytes) -> None:
        self.media_calls += 1

    def add_metadata(self, obj: dict[str, Any]) -> None:
        pass

    def end_segment(self, segment: dict[str, Any]) -> DurablePoint:
        self.segments += 1
        return DurablePoint(self.segments, 0, 0)


def _timed_us(count: int, run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1e6 / count


def _muxed(packets: list[CapturedPacket], batched: bool) -> int:
    """Mux `packets` (one call each, or one call per batch ending at a keyframe, as the bridge
    hands them over); the store calls it took."""
    writer = _CountingWriter()
    muxer = SegmentMuxer(cast(StreamWriter, writer), lambda _a, _b: [], 1.0)
    if batched:
        batch: list[CapturedPacket] = []
        for captured in packets:
            batch.append(captured)
            if captured.is_keyframe:
                muxer.feed_many(batch)
                batch = []
        muxer.feed_many(batch)
    else:
        for captured in packets:
            muxer.feed(captured)
    muxer.close()
    return writer.media_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=6000)
    count = parser.parse_args().packets
    with tempfile.TemporaryDirectory(prefix="mvb-bench-packet-") as work:
        clip = make_clip(Path(work), audio=True)
        source = _FlatReplay(SourceSpec(name="cam", kind="replay", url=str(clip.path)))
        produced: Iterator[CapturedPacket] = source.produce(1)
        next(produced)  # the clip is read and planned before the clock starts
        stamped: list[CapturedPacket] = []
        replay_us = _timed_us(count, lambda: stamped.extend(next(produced) for _ in range(count)))
    # arrival times as in real time, so segments end every second
    first_ns = stamped[0].at_mono_ns
    packets = [
        CapturedPacket(  # made anew: before issue 18 a frozen dataclass, now a NamedTuple
            p.packet,
            p.template,
            p.is_keyframe,
            p.size_bytes,
            first_ns + i * ARRIVAL_STEP_NS,
            p.at_wall_ms,
            p.is_audio,
        )
        for i, p in enumerate(stamped)
    ]
    health = SourceHealth()
    loop = asyncio.new_event_loop()
    bridge = PacketBridge(loop, len(packets) + 1, SourceHealth())
    camera = Camera(source, 5.0, 96 << 20)

    def count_health() -> None:
        for p in packets:
            health.note_packet(p.at_mono_ns, p.size_bytes, is_audio=p.is_audio)

    def offer() -> None:
        for p in packets:
            bridge.offer(p)

    def take() -> None:
        loop.run_until_complete(asyncio.sleep(0))  # the batches' callbacks run

    def push() -> None:
        for p in packets:
            camera.ring.push(p)

    rows = [
        ("replay camera + captured_now", replay_us),
        ("SourceHealth.note_packet", _timed_us(count, count_health)),
        ("PacketBridge.offer (source side)", _timed_us(count, offer)),
        ("bridge, event loop side", _timed_us(count, take)),
        ("ring.push", _timed_us(count, push)),
    ]
    calls: dict[bool, int] = {}
    # a checkout from before issue 18's batches has no feed_many (run from it to compare)
    for batched in (False, True) if hasattr(SegmentMuxer, "feed_many") else (False,):

        def mux(batched: bool = batched) -> None:
            calls[batched] = _muxed(packets, batched)

        label = "SegmentMuxer.feed_many (a batch a call)" if batched else "SegmentMuxer.feed"
        rows.append((label, _timed_us(count, mux)))
    loop.close()
    audio = sum(1 for p in packets if p.is_audio)
    print(f"{count} packets of the capture benchmark's clip, {audio} of them sound")
    for label, us in rows:
        print(f"  {label:42s} {us:6.2f} us a packet")
    print(f"  store calls: {calls[False]} one packet a call, {calls.get(True, '-')} a batch a call")


if __name__ == "__main__":
    main()
