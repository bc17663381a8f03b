"""The stand-in cameras of `tests.cameras` behave as the capture tests assume, proven with PyAV.

Each test consumes a fixture the way the box will: pull RTSP (TCP and UDP), listen for an MPEG-TS
push on TCP, listen for an RTSP push, and survive hostile peers (garbage, stall, mid-GOP drop).
The PyAV options used here are the ones the capture sources use.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import av
import pytest

from demo.synthetic import generate_clip
from tests.cameras import (
    LOOPBACK,
    ffmpeg_push_rtsp,
    ffmpeg_push_ts,
    free_port,
    garbage_stream_server,
    mid_gop_dropper,
    mid_gop_offset,
    push_garbage,
    push_mid_gop_drop,
    push_stalling_ts,
    require_loopback,
    rtsp_camera,
    stalling_ts_server,
)

FPS = 25
GOP = 10  # frames: 0.4 s, so a 2 s pull sees several keyframes
RTP_CLOCK_HZ = 90_000
CLIP_GOP = 20  # 2 s at 25 fps: keyframes at frames 0, 20, 40
CLIP_SECONDS = 2.0
CLIP_FRAMES = round(CLIP_SECONDS * FPS)
T = TypeVar("T")


@dataclass(frozen=True)
class Pkt:
    pts: int | None
    keyframe: bool
    size: int


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cameras") / "clip.ts"
    return generate_clip(path, seconds=CLIP_SECONDS, fps=FPS, keyframe_interval_frames=CLIP_GOP)


def _packets(container: Any, *, max_span_s: float | None = None) -> list[Pkt]:
    """Demux the video stream: every non-empty packet, until EOF or `max_span_s` of pts."""
    stream = container.streams.video[0]
    out: list[Pkt] = []
    first_pts: int | None = None
    for packet in container.demux(stream):
        if packet.size == 0:  # PyAV's flush packet at EOF
            continue
        pts = None if packet.pts is None else int(packet.pts)
        out.append(Pkt(pts, bool(packet.is_keyframe), int(packet.size)))
        if pts is not None and max_span_s is not None:
            first_pts = pts if first_pts is None else first_pts
            if (pts - first_pts) * stream.time_base >= max_span_s:
                break
    return out


def _keyframe_pts(packets: list[Pkt]) -> list[int]:
    """Distinct pts of keyframes (a multi-slice keyframe is several packets with one pts)."""
    return sorted({p.pts for p in packets if p.keyframe and p.pts is not None})


def _drain(container: Any, into: list[Pkt]) -> None:
    """Demux video packets into `into` (kept by the caller when demuxing raises)."""
    for packet in container.demux(video=0):
        into.append(Pkt(packet.pts, bool(packet.is_keyframe), int(packet.size)))


def _decodable_frames(container: Any) -> int:
    frames = 0
    for packet in container.demux(video=0):
        frames += len(container.streams.video[0].codec_context.decode(packet))
    return frames


# --- helpers ----------------------------------------------------------------------------------


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind((LOOPBACK, port))


def test_peers_refuse_anything_but_loopback(clip: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        require_loopback("tcp://10.0.0.5:9000")
    with pytest.raises(ValueError, match="loopback"), ffmpeg_push_ts("tcp://0.0.0.0:9000", clip):
        pass
    assert require_loopback("rtsp://127.0.0.1:8554/cam") == "rtsp://127.0.0.1:8554/cam"


def test_mid_gop_offset_lands_between_keyframes(clip: Path) -> None:
    offset = mid_gop_offset(clip)
    assert offset % 188 == 0
    assert 0 < offset < clip.stat().st_size


# --- RTSP pull ----------------------------------------------------------------------------------


def _pull(url: str, options: dict[str, str], results: dict[str, Any], key: str) -> None:
    try:
        with av.open(url, options=options, timeout=(5.0, 5.0)) as container:
            stream = container.streams.video[0]
            results[key] = (
                stream.codec_context.name,
                stream.codec_context.width,
                stream.codec_context.height,
                stream.time_base,
                _packets(container, max_span_s=2.0),
            )
    except Exception as exc:  # handed to the test thread, which fails with it
        results[key] = exc


def test_rtsp_camera_serves_live_h264_over_tcp_and_udp_to_several_clients() -> None:
    with rtsp_camera(fps=FPS, gop=GOP, width=320, height=240) as url:
        assert url.startswith(f"rtsp://{LOOPBACK}:")
        assert url.endswith("/cam")
        results: dict[str, Any] = {}
        transports = {
            "tcp": {"rtsp_transport": "tcp"},
            "udp": {"rtsp_transport": "udp", "rtsp_flags": "filter_src"},
        }
        threads = [
            threading.Thread(target=_pull, args=(url, options, results, name))
            for name, options in transports.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20.0)
    assert not any(thread.is_alive() for thread in threads)
    for name in transports:
        result = results[name]
        assert not isinstance(result, Exception), f"{name}: {result!r}"
        codec, width, height, time_base, packets = result
        assert (codec, width, height) == ("h264", 320, 240)
        assert time_base.denominator == RTP_CLOCK_HZ
        # FFmpeg's RTSP demuxer gives the very first packet no pts; all others have one.
        assert all(p.pts is not None for p in packets[1:])
        timed = [p.pts for p in packets if p.pts is not None]
        assert timed == sorted(set(timed)), "one slice per frame: strictly increasing pts"
        assert len(timed) >= 2 * FPS - 2
        keyframes = _keyframe_pts(packets)
        assert len(keyframes) >= 4
        steps = {b - a for a, b in itertools.pairwise(keyframes)}
        assert steps == {GOP * RTP_CLOCK_HZ // FPS}, f"{name}: keyframe steps {steps}"


def test_rtsp_camera_with_slices_splits_keyframes_into_packets_of_one_pts() -> None:
    with (
        rtsp_camera(fps=FPS, gop=GOP, slices=2) as url,
        av.open(url, options={"rtsp_transport": "tcp"}, timeout=(5.0, 5.0)) as container,
    ):
        packets = _packets(container, max_span_s=1.0)
    timed = [p.pts for p in packets if p.pts is not None]
    assert timed == sorted(timed), "pts never go back"
    repeated_keyframes = [
        a.pts for a, b in itertools.pairwise(packets) if a.pts == b.pts and b.keyframe
    ]
    assert repeated_keyframes, "a keyframe spans several packets with the same pts"


def test_rtsp_camera_is_gone_after_teardown() -> None:
    with rtsp_camera() as url:
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, port), timeout=1.0).close()


# --- pushes into a listening box ----------------------------------------------------------------


def test_ffmpeg_pushes_ts_into_a_pyav_tcp_listener(clip: Path) -> None:
    port = free_port()
    # The pusher starts first: it retries until the listener is up.
    with ffmpeg_push_ts(f"tcp://{LOOPBACK}:{port}", clip) as push:
        deadline = time.monotonic() + 10.0  # ffmpeg starts slowly on a loaded machine
        while push.refused == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        with av.open(
            f"tcp://{LOOPBACK}:{port}",
            format="mpegts",
            options={"listen": "1"},
            timeout=(10.0, 5.0),
        ) as container:
            packets = _packets(container)
        assert push.wait(5.0) == 0, push.stderr
    assert push.attempts >= 2, "the first connect was refused"
    assert len(packets) == CLIP_FRAMES
    assert all(p.pts is not None for p in packets)
    assert len(_keyframe_pts(packets)) == len(range(0, CLIP_FRAMES, CLIP_GOP))


def test_ffmpeg_pushes_rtsp_into_a_pyav_rtsp_listener(clip: Path) -> None:
    port = free_port()
    url = f"rtsp://{LOOPBACK}:{port}/live"
    with ffmpeg_push_rtsp(url, clip) as push:
        with av.open(
            url,
            options={"rtsp_flags": "listen", "listen_timeout": "10"},
            timeout=(10.0, 5.0),
        ) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            packets = _packets(container)
        assert push.wait(5.0) == 0, push.stderr
    assert len(packets) >= CLIP_FRAMES - 2
    timed = [p.pts for p in packets if p.pts is not None]
    assert timed == sorted(timed)
    assert len(_keyframe_pts(packets)) >= 1


# --- hostile peers ------------------------------------------------------------------------------


DEADLINE_S = 30.0
"""Bound on a blocking PyAV call that its own timeout (1-2 s here) must end: a deadline, not a
measurement. The call runs on a thread, so a timeout that never fires fails the test instead of
hanging it (the peer's context then closes the connection, which ends the call)."""


def _within_deadline(call: Callable[[], T], what: str) -> T:
    """`call()` on a daemon thread; its result (or its exception) once it returns, or a failure
    naming `what` if it has not returned within DEADLINE_S."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the test's thread, raised there
            failure.append(exc)

    thread = threading.Thread(target=run, name=what, daemon=True)
    thread.start()
    thread.join(DEADLINE_S)
    assert not thread.is_alive(), f"{what}: still blocked after {DEADLINE_S} s"
    if failure:
        raise failure[0]
    return outcome[0]


def _expect_nothing_decodable(url: str) -> None:
    """Garbage never opens as MPEG-TS: PyAV's open timeout fires (ExitError) while the demuxer
    hunts for sync bytes; should it open, not one frame decodes before an error or EOF. Either
    way the call returns: the garbage would flow for ever."""

    def open_and_decode() -> int | Exception:
        try:
            with av.open(url, format="mpegts", timeout=(1.5, 1.5)) as container:
                return _decodable_frames(container) if container.streams.video else 0
        except av.error.FFmpegError as exc:
            return exc

    outcome = _within_deadline(open_and_decode, "the garbage's open or decode")
    assert outcome == 0 or isinstance(outcome, av.error.FFmpegError)


def test_garbage_server_yields_nothing_decodable() -> None:
    with garbage_stream_server() as peer:
        _expect_nothing_decodable(peer.url)
    assert peer.connections == 1
    assert peer.bytes_sent > 0


def test_garbage_pushed_into_a_listener_yields_nothing_decodable() -> None:
    port = free_port()
    with push_garbage(port) as peer:
        _expect_nothing_decodable(f"tcp://{LOOPBACK}:{port}?listen=1")
    assert peer.connections == 1


def _expect_stall(url: str, read_timeout_s: float) -> list[Pkt]:
    """A stalled peer: the read blocks until PyAV's read timeout interrupts it (ExitError), not
    before (the stall is not taken for an end); the peer never hangs up, so only the timeout
    ends the read."""
    packets: list[Pkt] = []

    def read_until_interrupted() -> float:
        with av.open(url, format="mpegts", timeout=(5.0, read_timeout_s)) as container:
            started = time.monotonic()
            with pytest.raises(av.error.ExitError):  # PyAV's timeout interrupts the blocked read
                _drain(container, packets)
            return time.monotonic() - started

    blocked_s = _within_deadline(read_until_interrupted, "the stalled read")
    # a lower bound only: load makes the wait longer, never shorter
    assert blocked_s >= read_timeout_s
    return packets


def test_stalling_server_makes_a_read_with_timeout_raise(clip: Path) -> None:
    cut = mid_gop_offset(clip)
    with stalling_ts_server(0, clip, cut) as peer:
        packets = _expect_stall(peer.url, 1.0)
    assert peer.bytes_sent == cut
    assert packets
    assert packets[0].keyframe


def test_stalling_push_into_a_listener_makes_a_read_with_timeout_raise(clip: Path) -> None:
    cut = mid_gop_offset(clip)
    port = free_port()
    with push_stalling_ts(port, clip, cut) as peer:
        packets = _expect_stall(f"tcp://{LOOPBACK}:{port}?listen=1", 1.0)
    assert peer.bytes_sent == cut
    assert packets


def _expect_mid_gop_end(url: str, *, reset: bool) -> list[Pkt]:
    with av.open(url, format="mpegts", timeout=(5.0, 5.0)) as container:
        if reset:
            packets: list[Pkt] = []
            with pytest.raises(ConnectionResetError):
                _drain(container, packets)
        else:
            packets = _packets(container)  # an orderly close is a plain EOF
    keyframes = [i for i, p in enumerate(packets) if p.keyframe and p.size]
    assert len(keyframes) == 2, "the cut falls inside GOP 1"
    frames_in_last_gop = len([p for p in packets[keyframes[-1] :] if p.size])
    assert 0 < frames_in_last_gop < CLIP_GOP, "cut mid-GOP"
    return packets


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_mid_gop_dropper_ends_the_stream_after_some_packets(clip: Path, reset: bool) -> None:
    with mid_gop_dropper(0, clip, mid_gop_offset(clip), reset=reset) as peer:
        _expect_mid_gop_end(peer.url, reset=reset)
    assert peer.connections == 1


def test_mid_gop_drop_pushed_into_a_listener_ends_the_stream(clip: Path) -> None:
    port = free_port()
    with push_mid_gop_drop(port, clip, mid_gop_offset(clip)) as peer:
        _expect_mid_gop_end(f"tcp://{LOOPBACK}:{port}?listen=1", reset=False)
    assert peer.connections == 1
