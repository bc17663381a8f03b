"""Synthetic camera: generated H.264 with the camera name and a running clock in the picture.

Used by `make demo` and the tests so nothing needs a real camera. Three layers:

- `FramePainter` draws one yuv420p picture: a gradient that shifts every frame with a bright bar
  sweeping across it (cheap to compress, yet every frame differs, so the encoder emits real
  P-frames), and three labels on dark boxes in the top-left corner: the camera name, the UTC wall
  clock ``YYYY-MM-DD HH:MM:SS.mmm`` and a frame counter, in the built-in font of
  `demo.font` (scaled with the frame height, so they stay readable).
- `SyntheticEncoder` paints and encodes one frame per `encode()` call with PyAV's libx264
  (ultrafast, zerolatency, fixed GOP, no B-frames), for a realtime source that calls it at `fps`.
- `generate_clip()` writes a whole clip to an MPEG-TS file using both.

Muxing packets elsewhere: the encoder's codec lives in a real `av.VideoStream` of an in-memory
MPEG-TS output that is never written to (`SyntheticEncoder.stream`). Its parameters are final once
the encoder is built, so a capture container makes its own stream with
``out.add_stream_from_template(encoder.stream)`` and muxes each packet after
``packet.stream = out_stream`` (packets are in `time_base` = 1/fps and PyAV rescales them).
Because MPEG-TS wants no global header, SPS/PPS are repeated in-band before every keyframe, so
any GOP can start a segment on its own.

Rate control: the encoder runs x264's CBR mode (``nal-hrd=cbr``, VBV max rate = bitrate, a one
second VBV buffer), so the stream is as big as configured, like a real dashcam's constant-bitrate
stream, and storage sizing can be tested with it. Measured over 4 s clips (elementary stream):
640x360 at 500 kbit/s -> 489, at 2 Mbit/s -> 1951; 1280x720 at 2 Mbit/s -> 1951; 320x240 at
500 kbit/s -> 489; each second within ~20 % even at 100 kbit/s. Plain ABR (with or without VBV)
undershoots on this easy picture: 424-465 kbit/s for 500 and ~1.5 Mbit/s for 2 Mbit/s.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from types import TracebackType

import av
from av.container import OutputContainer
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame
from av.video.plane import VideoPlane
from av.video.stream import VideoStream

from demo.font import draw_text, fill_rect, text_size

DEFAULT_CAMERA = "synthetic"

INK = 235
"""Luma of the label text (video white)."""
BOX = 16
"""Luma of the box behind a label (video black)."""
BAR = 235
"""Luma of the sweeping bar."""
BAR_WIDTH = 16
NEUTRAL_CHROMA = 128

Rect = tuple[int, int, int, int]
"""(x, y, width, height) in luma pixels."""


def clock_text(wall_ms: int) -> str:
    """`wall_ms` (milliseconds since the Unix epoch) as ``YYYY-MM-DD HH:MM:SS.mmm`` in UTC."""
    seconds, millis = divmod(wall_ms, 1000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC)
    return f"{stamp:%Y-%m-%d %H:%M:%S}.{millis:03d}"


def counter_text(frame_index: int) -> str:
    """The frame counter label."""
    return f"FRAME {frame_index:06d}"


@dataclass(frozen=True)
class Planes:
    """One yuv420p picture as tightly packed planes (row stride == plane width)."""

    y: bytes | bytearray
    u: bytes
    v: bytes


class FramePainter:
    """Draws the synthetic picture for (frame index, wall clock), as yuv420p planes.

    Everything that does not change between frames (the gradient row, the chroma planes, the
    label layout) is computed once here; a frame then costs one row translate, one row repeat
    and the label boxes and glyph runs.
    """

    def __init__(self, width: int, height: int, camera: str = DEFAULT_CAMERA) -> None:
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ValueError("yuv420p needs an even width and height of at least 2")
        self.width = width
        self.height = height
        self.camera = camera
        self.scale = max(1, min(height // 120, width // 144))
        """Font scale: about 1/17 of the frame height, and the clock fits the width."""
        self._gradient = bytes(x * 255 // (width - 1) for x in range(width))
        self._chroma = bytes([NEUTRAL_CHROMA]) * ((width // 2) * (height // 2))
        margin = 2 * self.scale
        line = self._box_height() + self.scale
        self.camera_box = self._box(margin, margin, camera)
        self.clock_box = self._box(margin, margin + line, clock_text(0))
        self.counter_top = margin + 2 * line

    def _box_height(self) -> int:
        """Height of a label box: the glyphs plus one font pixel of padding above and below."""
        return text_size("0", self.scale)[1] + 2 * self.scale

    def _box(self, x: int, y: int, text: str) -> Rect:
        """The dark box behind `text` with its top-left corner at (x, y)."""
        text_width, _ = text_size(text, self.scale)
        return x, y, text_width + 2 * self.scale, self._box_height()

    def luma(self, frame_index: int, wall_ms: int) -> bytearray:
        """The Y plane (stride == width) for this frame."""
        plane = self._background(frame_index)
        self._label(plane, self.camera_box, self.camera)
        self._label(plane, self.clock_box, clock_text(wall_ms))
        counter = counter_text(frame_index)
        margin = self.camera_box[0]
        self._label(plane, self._box(margin, self.counter_top, counter), counter)
        return plane

    def _background(self, frame_index: int) -> bytearray:
        """The gradient shifted by 3 levels per frame, with the bar moved 4 pixels per frame."""
        shift = frame_index * 3 % 256
        row = bytearray(self._gradient.translate(_shift_table(shift)))
        bar_x = frame_index * 4 % self.width
        bar_end = min(bar_x + BAR_WIDTH, self.width)
        row[bar_x:bar_end] = bytes([BAR]) * (bar_end - bar_x)
        return row * self.height

    def _label(self, plane: bytearray, box: Rect, text: str) -> None:
        """Draw `box` dark and `text` in it, one font pixel in from its corner."""
        fill_rect(plane, self.width, self.width, self.height, box, BOX)
        x, y = box[0] + self.scale, box[1] + self.scale
        draw_text(
            plane, self.width, self.width, self.height, x, y, text, scale=self.scale, luma=INK
        )

    def planes(self, frame_index: int, wall_ms: int) -> Planes:
        """All three planes for this frame (the chroma planes are shared, constant grey)."""
        return Planes(self.luma(frame_index, wall_ms), self._chroma, self._chroma)

    def frame(self, frame_index: int, wall_ms: int) -> VideoFrame:
        """A new yuv420p `av.VideoFrame` holding this picture (pts and time base unset)."""
        planes = self.planes(frame_index, wall_ms)
        frame = VideoFrame(self.width, self.height, "yuv420p")
        _copy_plane(frame.planes[0], planes.y, self.width, self.height)
        half_width, half_height = self.width // 2, self.height // 2
        _copy_plane(frame.planes[1], planes.u, half_width, half_height)
        _copy_plane(frame.planes[2], planes.v, half_width, half_height)
        return frame


@lru_cache(maxsize=256)
def _shift_table(shift: int) -> bytes:
    """A `bytes.translate` table adding `shift` modulo 256."""
    return bytes((value + shift) % 256 for value in range(256))


def _copy_plane(plane: VideoPlane, data: bytes | bytearray, width: int, height: int) -> None:
    """Copy tightly packed `data` into a frame plane, row by row if its rows are padded."""
    stride = plane.line_size
    view = memoryview(plane)
    if stride == width:
        view[: width * height] = data
        return
    for row in range(height):
        source = row * width
        view[row * stride : row * stride + width] = data[source : source + width]


@dataclass(frozen=True)
class FrameCost:
    """What one `SyntheticEncoder.encode()` call cost."""

    frame_index: int
    paint_ns: int
    """Wall time spent painting the picture (pure Python)."""
    encode_ns: int
    """Wall time spent in libx264."""
    cpu_ns: int
    """Process CPU time over paint + encode, all threads (libx264 may use worker threads)."""
    packet_bytes: int


@dataclass
class EncodeTotals:
    """Running sums of `FrameCost` over every frame an encoder has encoded."""

    frames: int = 0
    paint_ns: int = 0
    encode_ns: int = 0
    cpu_ns: int = 0
    packet_bytes: int = 0
    worst_cpu_ns: int = 0

    def add(self, cost: FrameCost) -> None:
        """Account one frame."""
        self.frames += 1
        self.paint_ns += cost.paint_ns
        self.encode_ns += cost.encode_ns
        self.cpu_ns += cost.cpu_ns
        self.packet_bytes += cost.packet_bytes
        self.worst_cpu_ns = max(self.worst_cpu_ns, cost.cpu_ns)

    def per_frame_ms(self) -> dict[str, float]:
        """Mean paint, encode (wall) and CPU milliseconds per frame."""
        frames = max(self.frames, 1)
        return {
            "paint_ms": self.paint_ns / frames / 1e6,
            "encode_ms": self.encode_ns / frames / 1e6,
            "cpu_ms": self.cpu_ns / frames / 1e6,
        }


def x264_options(gop_frames: int, bitrate_bps: int) -> dict[str, str]:
    """Codec options: fastest preset, no lookahead or B-frames, a fixed GOP, CBR at the bitrate.

    ``maxrate``/``bufsize`` are the generic codec options for x264's VBV (a one-second buffer).
    """
    params = f"keyint={gop_frames}:min-keyint={gop_frames}:scenecut=0:bframes=0:nal-hrd=cbr"
    return {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "maxrate": str(bitrate_bps),
        "bufsize": str(bitrate_bps),
        "x264-params": params,
    }


class SyntheticEncoder:
    """A synthetic camera's H.264 encoder: paints and encodes one frame per `encode()` call.

    `encode(i, wall_ms)` must be called with strictly increasing frame indices; the packets it
    returns have ``pts == dts == i`` in `time_base` (1/fps) and ``is_keyframe`` on every
    `gop_frames`-th frame, starting with frame 0 (zerolatency: one packet per frame, no delay).
    `measure`, if given, is called with a `FrameCost` after each frame; `totals` sums them.
    """

    def __init__(
        self,
        camera: str,
        width: int,
        height: int,
        fps: int,
        bitrate_bps: int,
        gop_frames: int,
        *,
        measure: Callable[[FrameCost], None] | None = None,
    ) -> None:
        if fps < 1 or bitrate_bps < 1 or gop_frames < 1:
            raise ValueError("fps, bitrate and GOP length must be positive")
        self.painter = FramePainter(width, height, camera)
        self.fps = fps
        self.gop_frames = gop_frames
        self.time_base = Fraction(1, fps)
        self.measure = measure
        self.totals = EncodeTotals()
        self._container: OutputContainer = av.open(io.BytesIO(), mode="w", format="mpegts")
        self.stream: VideoStream = self._add_stream(bitrate_bps)
        # Opens the codec and finalises the stream's parameters, so `stream` is a usable template.
        self._container.start_encoding()

    def _add_stream(self, bitrate_bps: int) -> VideoStream:
        """The libx264 stream, configured but not yet opened."""
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width = self.painter.width
        stream.height = self.painter.height
        stream.pix_fmt = "yuv420p"
        context = stream.codec_context
        context.bit_rate = bitrate_bps
        context.gop_size = self.gop_frames
        context.max_b_frames = 0
        context.options = x264_options(self.gop_frames, bitrate_bps)
        return stream

    @property
    def camera(self) -> str:
        """The camera name drawn in the picture."""
        return self.painter.camera

    @property
    def codec_context(self) -> VideoCodecContext:
        """The open libx264 codec context."""
        return self.stream.codec_context

    def encode(self, frame_index: int, wall_ms: int) -> list[Packet[VideoStream]]:
        """Paint frame `frame_index` showing `wall_ms` and encode it; return its packets."""
        cpu_start, start = time.process_time_ns(), time.perf_counter_ns()
        frame = self.painter.frame(frame_index, wall_ms)
        frame.pts = frame_index
        frame.time_base = self.time_base
        painted = time.perf_counter_ns()
        packets = self.stream.encode(frame)
        done, cpu_done = time.perf_counter_ns(), time.process_time_ns()
        size = sum(packet.size for packet in packets)
        cost = FrameCost(frame_index, painted - start, done - painted, cpu_done - cpu_start, size)
        self.totals.add(cost)
        if self.measure is not None:
            self.measure(cost)
        return packets

    def flush(self) -> list[Packet[VideoStream]]:
        """Drain the encoder (normally empty with zerolatency); no `encode()` after this."""
        return self.stream.encode(None)

    def close(self) -> None:
        """Release the codec and the in-memory container."""
        self._container.close()

    def __enter__(self) -> SyntheticEncoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def now_ms() -> int:
    """The current wall clock in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def generate_clip(
    path: Path,
    *,
    seconds: float = 6.0,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
    keyframe_interval_frames: int = 50,
    bitrate_bps: int = 500_000,
    camera: str = DEFAULT_CAMERA,
    start_wall_ms: int | None = None,
    measure: Callable[[FrameCost], None] | None = None,
) -> Path:
    """Write an MPEG-TS H.264 clip of `camera` to `path` and return it.

    The clock in the picture starts at `start_wall_ms` (default: now) and advances 1/fps per
    frame, so the clip looks as if it had been recorded in real time from then.
    """
    start = now_ms() if start_wall_ms is None else start_wall_ms
    frames = round(seconds * fps)
    with (
        SyntheticEncoder(
            camera, width, height, fps, bitrate_bps, keyframe_interval_frames, measure=measure
        ) as encoder,
        _ts_output(path, encoder.stream) as (container, stream),
    ):
        for index in range(frames):
            _mux(container, stream, encoder.encode(index, start + index * 1000 // fps))
        _mux(container, stream, encoder.flush())
    return path


@contextmanager
def _ts_output(path: Path, template: VideoStream) -> Iterator[tuple[OutputContainer, VideoStream]]:
    """An MPEG-TS file at `path` with one stream copied from `template`."""
    with av.open(str(path), mode="w", format="mpegts") as container:
        yield container, container.add_stream_from_template(template)


def _mux(
    container: OutputContainer, stream: VideoStream, packets: list[Packet[VideoStream]]
) -> None:
    """Mux encoder packets into `stream` of `container`."""
    for packet in packets:
        packet.stream = stream
        container.mux(packet)
