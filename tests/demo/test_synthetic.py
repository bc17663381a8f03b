"""The synthetic camera: the bitmap font, the painted picture, the encoder and generate_clip."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from demo.font import ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH, GLYPHS, draw_text, fill_rect
from demo.synthetic import (
    FrameCost,
    FramePainter,
    Rect,
    SyntheticEncoder,
    clock_text,
    generate_clip,
)

START_MS = 1_715_240_125_123  # 2024-05-09 07:35:25.123 UTC
FPS = 25
GOP = 50
BITRATE = 500_000
BG = 7


# --- the font ---------------------------------------------------------------------------------


def blank(width: int, height: int, stride: int) -> bytearray:
    return bytearray([BG]) * (stride * height)


def test_glyph_draws_expected_pixels() -> None:
    """'T' at (2, 3), scale 2: a 10 px top bar two rows high and a 2 px stem in the middle."""
    width, height, stride = 20, 20, 24
    plane = blank(width, height, stride)
    draw_text(plane, stride, width, height, 2, 3, "T", scale=2, luma=200)

    def at(x: int, y: int) -> int:
        return plane[y * stride + x]

    assert all(at(x, y) == 200 for x in range(2, 12) for y in (3, 4))  # the bar
    assert all(at(x, y) == 200 for x in (6, 7) for y in range(5, 17))  # the stem
    assert at(1, 3) == at(12, 3) == at(2, 2) == BG  # just outside the bar
    assert at(5, 10) == at(8, 10) == at(6, 17) == BG  # beside and below the stem
    assert at(2, 5) == at(11, 16) == BG  # the empty cells under the bar's ends
    assert sum(value == 200 for value in plane) == 10 * 2 + 2 * 12
    assert all(plane[row * stride + x] == BG for row in range(height) for x in range(20, 24))


def test_lower_case_is_upper_case_and_unknown_is_question_mark() -> None:
    def render(text: str) -> bytearray:
        plane = blank(40, 10, 40)
        draw_text(plane, 40, 40, 10, 1, 1, text)
        return plane

    assert render("abc") == render("ABC")
    assert render("é") == render("?")
    assert render("A") != render("B")


def test_every_glyph_fits_its_cell() -> None:
    for runs in GLYPHS.values():
        assert len(runs) == GLYPH_HEIGHT
        assert all(0 <= a < b <= GLYPH_WIDTH for row in runs for a, b in row)


@pytest.mark.parametrize(
    ("x", "y", "scale"),
    [(-7, -5, 1), (-30, 2, 3), (15, 8, 2), (39, 9, 1), (200, 0, 1), (0, 200, 1), (-3, -3, 40)],
)
def test_text_is_clipped_at_the_edges(x: int, y: int, scale: int) -> None:
    width, height, stride = 40, 12, 48
    plane = blank(width, height, stride)
    draw_text(plane, stride, width, height, x, y, "HELLO 09:59", scale=scale, luma=255)
    fill_rect(plane, stride, width, height, (x, y, 100, 100), 16)
    assert len(plane) == stride * height
    assert all(plane[row * stride + col] == BG for row in range(height) for col in range(40, 48))


def test_text_partly_off_the_left_edge_keeps_its_visible_part() -> None:
    plane = blank(10, 7, 10)
    draw_text(plane, 10, 10, 7, -3, 0, "T", luma=255)  # 'T' columns 3..4 land on x 0..1
    assert plane[0:3] == bytes([255, 255, BG])
    assert plane[10:13] == bytes([BG, BG, BG])  # column 2 (the stem) is off screen


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="stride"):
        draw_text(bytearray(10), 4, 5, 2, 0, 0, "A")
    with pytest.raises(ValueError, match="smaller"):
        fill_rect(bytearray(10), 5, 5, 3, (0, 0, 1, 1), 0)
    with pytest.raises(ValueError, match="scale"):
        draw_text(bytearray(25), 5, 5, 5, 0, 0, "A", scale=0)


# --- the picture ------------------------------------------------------------------------------


def test_clock_text_is_utc_with_milliseconds() -> None:
    assert clock_text(0) == "1970-01-01 00:00:00.000"
    assert clock_text(START_MS) == "2024-05-09 07:35:25.123"
    assert clock_text(-1) == "1969-12-31 23:59:59.999"


def crop(plane: bytes | bytearray, stride: int, rect: Rect) -> list[bytes]:
    x, y, w, h = rect
    return [bytes(plane[row * stride + x : row * stride + x + w]) for row in range(y, y + h)]


def test_painter_moves_clock_but_not_camera_name() -> None:
    painter = FramePainter(640, 360, "dashcam")
    first, second = painter.luma(10, START_MS), painter.luma(35, START_MS + 1000)
    assert len(first) == 640 * 360
    assert crop(first, 640, painter.camera_box) == crop(second, 640, painter.camera_box)
    assert crop(first, 640, painter.clock_box) != crop(second, 640, painter.clock_box)
    assert first != second


def test_painter_refuses_odd_sizes() -> None:
    with pytest.raises(ValueError, match="even"):
        FramePainter(641, 360, "dashcam")


def test_frame_handles_padded_rows() -> None:
    """330 px rows are padded to a longer line size; the picture must still land row by row."""
    painter = FramePainter(330, 240, "bodycam")
    frame = painter.frame(3, START_MS)
    planes = painter.planes(3, START_MS)
    for index, (data, width, height) in enumerate(
        [(planes.y, 330, 240), (planes.u, 165, 120), (planes.v, 165, 120)]
    ):
        plane = frame.planes[index]
        assert plane.line_size > width
        assert crop(bytes(plane), plane.line_size, (0, 0, width, height)) == crop(
            data, width, (0, 0, width, height)
        )


# --- reading text back out of a decoded picture ------------------------------------------------


def _bitmap_key(runs: tuple[tuple[tuple[int, int], ...], ...]) -> frozenset[tuple[int, int]]:
    return frozenset(
        (row, col) for row, spans in enumerate(runs) for a, b in spans for col in range(a, b)
    )


READER = {_bitmap_key(runs): char for char, runs in GLYPHS.items()}


def read_label(plane: bytes, stride: int, box: Rect, scale: int, length: int) -> str:
    """Read `length` characters from a label box by sampling the middle of each font pixel."""
    left, top = box[0] + scale, box[1] + scale
    text = ""
    for index in range(length):
        x0 = left + index * ADVANCE * scale + scale // 2
        ink = frozenset(
            (row, col)
            for row in range(GLYPH_HEIGHT)
            for col in range(GLYPH_WIDTH)
            if plane[(top + row * scale + scale // 2) * stride + x0 + col * scale] > 128
        )
        text += READER.get(ink, "~")
    return text


# --- generate_clip and the encoder -------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    frames: list[av.VideoFrame]
    stream_bytes: int


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Decoded:
    path = generate_clip(
        tmp_path_factory.mktemp("synthetic") / "dashcam.ts",
        seconds=4,
        fps=FPS,
        width=640,
        height=360,
        keyframe_interval_frames=GOP,
        bitrate_bps=BITRATE,
        camera="dashcam",
        start_wall_ms=START_MS,
    )
    with av.open(str(path)) as container:
        size = sum(packet.size for packet in container.demux(video=0))
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return Decoded(frames, size)


def test_clip_has_every_frame_at_the_size_asked(clip: Decoded) -> None:
    assert len(clip.frames) == 4 * FPS
    assert {(frame.width, frame.height) for frame in clip.frames} == {(640, 360)}


def test_clip_has_keyframes_every_two_seconds(clip: Decoded) -> None:
    start = clip.frames[0].time
    assert start is not None
    keyframe_times = [
        round(frame.time - start, 3)
        for frame in clip.frames
        if frame.key_frame and frame.time is not None
    ]
    assert keyframe_times == [0.0, 2.0]


def test_clip_bitrate_is_roughly_as_configured(clip: Decoded) -> None:
    """x264 CBR lands within a few percent (measured: 489 kbit/s for 500); assert a factor 2."""
    bitrate = clip.stream_bytes * 8 / 4
    assert BITRATE / 2 <= bitrate <= BITRATE * 2


def test_clip_clock_runs_and_camera_name_stays(clip: Decoded) -> None:
    """Two decoded frames 1 s apart: the clock reads 1 s later, the camera name is unchanged."""
    painter = FramePainter(640, 360, "dashcam")
    earlier, later = clip.frames[10], clip.frames[10 + FPS]
    y_earlier, y_later = bytes(earlier.planes[0]), bytes(later.planes[0])
    stride = earlier.planes[0].line_size

    def read(plane: bytes, box: Rect, length: int) -> str:
        return read_label(plane, stride, box, painter.scale, length)

    assert (
        read(y_earlier, painter.camera_box, 7) == read(y_later, painter.camera_box, 7) == "DASHCAM"
    )
    assert read(y_earlier, painter.clock_box, 23) == clock_text(START_MS + 10 * 40)
    assert read(y_later, painter.clock_box, 23) == clock_text(START_MS + 1000 + 10 * 40)
    # Lossy coding leaves a few levels of noise, but ink stays ink: the name's pixels thresholded
    # are identical, while the clock's raw pixels plainly differ.
    ink = [[value > 128 for value in row] for row in crop(y_earlier, stride, painter.camera_box)]
    assert ink == [
        [value > 128 for value in row] for row in crop(y_later, stride, painter.camera_box)
    ]
    assert crop(y_earlier, stride, painter.clock_box) != crop(y_later, stride, painter.clock_box)


def test_encoder_packets_have_rising_pts_and_a_fixed_gop() -> None:
    costs: list[FrameCost] = []
    with SyntheticEncoder("bodycam", 320, 240, FPS, 300_000, 10, measure=costs.append) as encoder:
        packets = [encoder.encode(index, START_MS + index * 40) for index in range(35)]
        assert encoder.flush() == []
        totals = encoder.totals
    assert all(len(per_frame) == 1 for per_frame in packets)  # zerolatency: no delay
    flat = [per_frame[0] for per_frame in packets]
    assert [packet.pts for packet in flat] == list(range(35))
    assert all(packet.dts == packet.pts for packet in flat)
    assert all(packet.time_base == encoder.time_base for packet in flat)
    assert [index for index, packet in enumerate(flat) if packet.is_keyframe] == [0, 10, 20, 30]
    assert [cost.frame_index for cost in costs] == list(range(35))
    assert all(cost.encode_ns > 0 and cost.packet_bytes > 0 for cost in costs)
    assert totals.frames == 35
    assert totals.packet_bytes == sum(packet.size for packet in flat)


def test_encoder_stream_is_a_template_for_muxing(tmp_path: Path) -> None:
    """The capture path: add_stream_from_template, re-point the packets, mux; it decodes."""
    path = tmp_path / "segment.ts"
    with (
        SyntheticEncoder("dashcam", 320, 240, FPS, 300_000, GOP) as encoder,
        av.open(str(path), mode="w", format="mpegts") as output,
    ):
        stream = output.add_stream_from_template(encoder.stream)
        for index in range(60, 90):  # a source that started earlier: pts need not start at 0
            for packet in encoder.encode(index, START_MS + index * 40):
                packet.stream = stream
                output.mux(packet)
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 30
    assert (frames[0].width, frames[0].height) == (320, 240)


def test_generate_clip_with_padded_rows_and_defaults(tmp_path: Path) -> None:
    path = generate_clip(tmp_path / "odd.ts", seconds=1, width=330, height=240)
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 25
    assert (frames[0].width, frames[0].height) == (330, 240)
