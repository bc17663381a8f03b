"""The replay camera (demo/replay_source.py; the benchmarks' and many tests' camera): the clip's
own packets, picture and sound, in presentation order, every loop shifted by the clip's span so
each stream's timestamps only grow, none delivered before it is due. Its schedule is worked out
once per connection (issue 18): this holds it to what the clip says, loop after loop.
"""

from __future__ import annotations

import itertools
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest

from demo.replay_source import ReplaySource
from gateway.capture.source import SourceSpec
from tests.capture_helpers import write_sound_clip

FPS = 25
CLIP_S = 1
LOOPS = 2


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sound_clip(tmp_path_factory.mktemp("clips") / "av.ts", seconds=CLIP_S, fps=FPS)


def clip_packets(clip: Path) -> list[tuple[bool, int, int, bytes]]:
    """(is_audio, pts, dts, bytes) of the clip, in presentation order."""
    with av.open(str(clip)) as container:
        audio_index = container.streams.audio[0].index
        packets = [
            (p.stream_index == audio_index, int(p.pts), int(p.dts), bytes(p), Fraction(p.time_base))
            for p in container.demux()
            if p.size and p.pts is not None and p.dts is not None
        ]
    packets.sort(key=lambda p: p[1] * p[4])
    return [(is_audio, pts, dts, data) for is_audio, pts, dts, data, _ in packets]


def test_replay_delivers_the_clip_loop_after_loop_in_time(clip: Path) -> None:
    source = ReplaySource(SourceSpec(name="cam", kind="replay", url=str(clip)), loops=LOOPS)
    started_ns = time.monotonic_ns()
    replayed = list(source.produce(generation=1))
    original = clip_packets(clip)

    video = [c for c in replayed if not c.is_audio]
    assert len(video) == LOOPS * CLIP_S * FPS
    assert [c.is_keyframe for c in video[:FPS]] == [True] + [False] * (FPS - 1)
    assert all(not c.is_keyframe for c in replayed if c.is_audio)
    first_loop = replayed[: len(original)]
    assert [(c.is_audio, bytes(c.packet)) for c in first_loop] == [
        (is_audio, data) for is_audio, _, _, data in original
    ]
    for is_audio in (False, True):  # each stream's own timestamps only grow, across the seam
        stream = [c.packet for c in replayed if c.is_audio == is_audio]
        assert all(a.dts < b.dts for a, b in itertools.pairwise(stream))
        assert all(a.pts < b.pts for a, b in itertools.pairwise(stream))
    # the second loop is the first shifted by the clip's span: a frame after its last picture
    time_base = Fraction(video[0].packet.time_base)
    span = round(Fraction(CLIP_S) / time_base)
    assert [c.packet.pts - span for c in video[FPS:]] == [c.packet.pts for c in video[:FPS]]
    # paced: nothing arrives before it is due (presentation time from the first packet)
    first_s = min(Fraction(c.packet.pts) * Fraction(c.packet.time_base) for c in replayed)
    for captured in replayed:
        due_s = Fraction(captured.packet.pts) * Fraction(captured.packet.time_base) - first_s
        assert captured.at_mono_ns - started_ns >= int(due_s * 1_000_000_000) - 1_000_000
