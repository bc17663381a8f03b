"""Synthetic footage: a generated H.264 clip, so the demo and tests need no camera.

The picture is a moving bar over a gradient that changes every frame, encoded with PyAV's libx264
at a fixed keyframe interval. (Camera name and clock in the picture arrive with the capture issue.)
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av


def _luma_plane(width: int, height: int, frame_index: int) -> bytes:
    """A gradient row shifted each frame, with a bright bar sweeping across: cheap to compress,
    yet every frame differs, so the encoder emits real P-frames."""
    row = bytes((x * 255 // max(width - 1, 1) + frame_index * 3) % 256 for x in range(width))
    bar_x = (frame_index * 4) % width
    bar = bytearray(row)
    bar[bar_x : bar_x + 16] = b"\xeb" * len(bar[bar_x : bar_x + 16])
    return bytes(bar) * height


def generate_clip(
    path: Path,
    *,
    seconds: float = 6.0,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
    keyframe_interval_frames: int = 50,
    bitrate_bps: int = 500_000,
) -> Path:
    """Write an MPEG-TS H.264 clip to `path` and return it."""
    with av.open(str(path), mode="w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bitrate_bps
        stream.codec_context.gop_size = keyframe_interval_frames
        stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency"}
        chroma = bytes([128]) * ((width // 2) * (height // 2))
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame(width, height, "yuv420p")
            frame.planes[0].update(_luma_plane(width, height, index))
            frame.planes[1].update(chroma)
            frame.planes[2].update(chroma)
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
