"""The source thread's hand-over to the event loop in batches (issue 18): when a batch goes, that
the order of packets survives batches and flushes, and that a flush takes what is held.

The packets here are stand-ins (no PyAV packet, no stream template): the bridge looks only at
`is_keyframe`, `at_mono_ns` and the item kinds. The service's use of the flush (a stop takes the
held packets) is tested with real cameras in test_capture_service.py.
"""

from __future__ import annotations

import asyncio
import threading
from typing import cast

import pytest

import gateway.capture.source as source_module
from gateway.capture.packet import CapturedPacket, StreamTemplate
from gateway.capture.source import (
    BATCH_MAX_ITEMS,
    BATCH_MAX_S,
    Flush,
    LinkEvent,
    PacketBridge,
    QueueItem,
    SourceHealth,
    batch_is_due,
)

MS = 1_000_000
FRAME_NS = 40 * MS  # 25 fps


def packet(at_ns: int, *, keyframe: bool = False, audio: bool = False) -> CapturedPacket:
    return CapturedPacket(
        packet=None,
        template=cast(StreamTemplate, None),
        is_keyframe=keyframe,
        size_bytes=1000,
        at_mono_ns=at_ns,
        at_wall_ms=at_ns // MS,
        is_audio=audio,
    )


def gops(count: int, frames: int = 25) -> list[CapturedPacket]:
    """`count` GOPs of `frames` video frames at 25 fps, a keyframe first."""
    return [packet(i * FRAME_NS, keyframe=i % frames == 0) for i in range(count * frames)]


def drain(queue: asyncio.Queue[QueueItem]) -> list[QueueItem]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_a_batch_is_due_at_a_keyframe_at_its_count_or_its_time() -> None:
    assert batch_is_due(1, 0, packet(0, keyframe=True))
    assert not batch_is_due(1, 0, packet(0))
    assert not batch_is_due(BATCH_MAX_ITEMS - 1, 0, packet(10 * MS, audio=True))
    assert batch_is_due(BATCH_MAX_ITEMS, 0, packet(10 * MS, audio=True))
    span_ns = int(BATCH_MAX_S * 1e9)
    assert not batch_is_due(2, 5 * MS, packet(5 * MS + span_ns - 1))
    assert batch_is_due(2, 5 * MS, packet(5 * MS + span_ns))


async def hand_over_from_a_thread(sent: list[CapturedPacket]) -> PacketBridge:
    """A bridge fed `sent` from a thread of its own (then released, as at a connection's end),
    after every hand-over reached the queue."""
    bridge = PacketBridge(asyncio.get_running_loop(), 1000, SourceHealth())

    def source() -> None:
        for captured in sent:
            bridge.offer(captured)
        bridge.release()

    thread = threading.Thread(target=source)
    thread.start()
    await asyncio.to_thread(thread.join)
    await asyncio.sleep(0)  # the last hand-over's callback
    return bridge


async def test_a_thread_hands_over_one_batch_per_gop_in_order() -> None:
    """The default bound (a second) and GOPs of a second: the first keyframe alone, then each
    GOP's frames with the next keyframe, the rest at the end."""
    assert BATCH_MAX_S >= 1.0
    sent = gops(3)
    bridge = await hand_over_from_a_thread(sent)
    assert drain(bridge.queue) == sent
    assert bridge.batches == 4


async def test_a_batch_that_spans_its_time_bound_goes_before_the_keyframe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bound of 0.25 s: each GOP's first keyframe goes at once, then its frames in batches
    that end with the first frame 0.25 s or more after the batch's first (8 frames: 40..320
    ms), in order."""
    monkeypatch.setattr(source_module, "BATCH_MAX_S", 0.25)
    sent = gops(3)
    bridge = await hand_over_from_a_thread(sent)
    assert drain(bridge.queue) == sent
    assert bridge.batches == 3 * (1 + 3)


async def test_a_flush_takes_what_is_held_behind_what_was_handed_over() -> None:
    """A batch handed over (its callback not run yet), then a packet held: the flush puts the
    held packet and its mark behind that batch, never before it."""
    bridge = PacketBridge(asyncio.get_running_loop(), 1000, SourceHealth())
    first, held = packet(0, keyframe=True), packet(FRAME_NS)
    bridge.offer(first)  # due: handed over
    bridge.offer(held)  # held
    taken = bridge.flush()
    await asyncio.sleep(0)
    items = drain(bridge.queue)
    assert items[:2] == [first, held]
    assert isinstance(items[2], Flush)
    assert items[2].taken is taken
    assert not taken.done()  # the camera's loop resolves it once it took what came before


async def test_a_flush_leaves_the_sound_after_the_last_picture_held() -> None:
    """A recording that ends at a flush ends with its picture: the sound that arrived after
    the last picture stays held and goes with the next batch (to the ring), in order."""
    bridge = PacketBridge(asyncio.get_running_loop(), 1000, SourceHealth())
    picture = [packet(0, keyframe=True), packet(5 * MS, audio=True), packet(FRAME_NS)]
    sound_after = [packet(FRAME_NS + 5 * MS, audio=True), packet(FRAME_NS + 26 * MS, audio=True)]
    for captured in picture + sound_after:
        bridge.offer(captured)
    bridge.flush()
    await asyncio.sleep(0)
    *taken, mark = drain(bridge.queue)
    assert taken == picture  # the keyframe at once, on its own; the rest with the flush
    assert isinstance(mark, Flush)
    bridge.release()
    await asyncio.sleep(0)
    assert drain(bridge.queue) == sound_after


async def test_a_link_event_goes_at_once_behind_the_held_packets() -> None:
    bridge = PacketBridge(asyncio.get_running_loop(), 1000, SourceHealth())
    held = [packet(0, keyframe=True), packet(FRAME_NS), packet(2 * FRAME_NS, audio=True)]
    for captured in held:
        bridge.offer(captured)
    lost = LinkEvent("lost", 2 * FRAME_NS, 0, 1, "stream ended")
    bridge.deliver(lost)
    await asyncio.sleep(0)
    assert drain(bridge.queue) == [*held, lost]


async def test_over_the_bound_a_batch_drops_until_the_next_keyframe() -> None:
    health = SourceHealth()
    bridge = PacketBridge(asyncio.get_running_loop(), 4, health)
    first, second = gops(1, frames=6), gops(1, frames=3)
    for captured in first:
        bridge.offer(captured)
    bridge.release()
    await asyncio.sleep(0)
    assert drain(bridge.queue) == first[:4]  # nobody took: the last two were dropped
    late = packet(7 * FRAME_NS)  # taken again, but not before a keyframe: not decodable
    for captured in [late, *second]:
        bridge.offer(captured)
    bridge.release()
    await asyncio.sleep(0)
    assert drain(bridge.queue) == second
    assert health.dropped == 3
