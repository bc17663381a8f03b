"""Camera sources: a PyAV demux loop on a thread of its own, bridged to asyncio.

Each source reconnects by itself with bounded, jittered backoff; a garbage, stalled or vanished
stream shows in its health (connected, fps, bitrate, last-packet age, errors) and never touches
another camera: every camera has its own thread, its own bounded queue, and its own failures.
While the camera is being recorded (`set_recording`), a lost camera is retried about every
`recording_retry_s` instead (a second of evidence lost is a second the reviewer never sees); the
slow backoff is for standby. A loss of a connection that delivered, and the next connection's
first packet, reach the event loop as `LinkEvent`s in the packet queue, in order with the packets.

Audio: a camera's first audio stream, if it sends one, is demuxed beside the video (stream copy,
whatever codec it is); the recording decides whether it is kept (`record_audio`).

Kinds (all stream copy):
- `rtsp_pull`: an IP camera / ONVIF dashcam, RTSP over TCP or UDP (`PyavSource` here; RTSPS
  with the camera's certificate checked: gateway/capture/pull_sources.py);
- `ts_listen`: a bodycam pushing MPEG-TS over TLS (or TCP) to the box;
- `rtsp_listen`: a bodycam pushing RTSP (ANNOUNCE/RECORD) to the box, with digest.
The push kinds admit a sender only once it proved it is the camera
(gateway/capture/push_sources.py, docs/capture.md "Camera authentication").

Other kinds (`synthetic`, `replay`: the demo's and the benchmarks' cameras) live outside the
product, in demo/, and reach the box as plug-ins (gateway/capture/sources.py).
"""

from __future__ import annotations

import abc
import asyncio
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import av

from gateway.capture.camera_trust import CameraRefused
from gateway.capture.packet import CapturedPacket, StreamTemplate

# FFmpeg's probe of a new stream reads 20 frames to estimate the frame rate before it returns
# (`fpsprobesize`), then delivers them at once: measured on the RTSP camera, the open took 1.3 s
# instead of 0.5 s, and the first keyframe arrived 0.8 s late, so a reconnect's gap looked 0.8 s
# longer than it was. Stream copy needs no frame rate: the probe stops at the first decodable
# frame.
LIVE_PROBE_OPTIONS = {"fpsprobesize": "0"}
RECORDING_RETRY_S = 1.0  # issue 15: a camera lost while recording is retried about every second
# Packets reach the event loop in batches (issue 18): one wake-up of the loop, and one job for
# the camera's card worker, per batch instead of per packet. A batch is handed over at every
# video keyframe (with it: the keyframe ends a segment, so the durable points are not delayed),
# at a link event, at the end of a connection, once BATCH_MAX_ITEMS wait, or with the first
# packet that arrives BATCH_MAX_S or more after the batch's first. A recording's end takes what
# is held at once (`PacketBridge.flush`), so a stop loses nothing to the batching. What waits
# in a batch is not durable yet anyway (the durable point is the segment's end, at a keyframe),
# so the bound is a second: with a GOP of a second, one hand-over per GOP (0.25 s measured 2.4
# to 2.7 switches per packet at 1 and 4 cameras, over the target of 2).
BATCH_MAX_S = 1.0
BATCH_MAX_ITEMS = 64

NS_PER_S = 1_000_000_000
RATE_WINDOW_NS = 5 * NS_PER_S


def backoff_s(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter, bounded by `max_s` (pure)."""
    ceiling = min(max_s, min_s * (2 ** min(attempt, 30)))
    return rng.uniform(min_s, max(min_s, ceiling))


@dataclass(slots=True)
class SourceHealth:
    """What the officer's status page and /metrics show per camera. No content, only facts."""

    auth: str = "none"  # how the camera proved itself: tls-pinned, tls-ca, digest or none
    connected: bool = False
    refused: int = 0  # senders refused this boot (not the camera; docs/capture.md)
    packets: int = 0
    dropped: int = 0
    reconnects: int = 0
    errors: int = 0
    last_error: str | None = None
    last_packet_mono_ns: int | None = None
    _window: deque[tuple[int, int, int]] = field(default_factory=deque)  # at_ns, frames, bytes
    # written by the source thread, read by the event loop
    _lock: threading.Lock = field(default_factory=threading.Lock)

    audio_codec: str | None = None  # what the camera's current connection sends, if anything
    audio_packets: int = 0

    def note_packet(self, at_mono_ns: int, size_bytes: int, *, is_audio: bool = False) -> None:
        """Count a packet; an audio packet counts in the bitrate, not in the frame rate.
        Called per packet on the source thread: one lock, no call (the prune is inline)."""
        if is_audio:
            self.audio_packets += 1
        else:
            self.packets += 1
            self.last_packet_mono_ns = at_mono_ns
        window = self._window
        cutoff_ns = at_mono_ns - RATE_WINDOW_NS
        with self._lock:
            window.append((at_mono_ns, 0 if is_audio else 1, size_bytes))
            while window[0][0] < cutoff_ns:
                window.popleft()

    def _prune(self, now_mono_ns: int) -> None:
        with self._lock:
            while self._window and self._window[0][0] < now_mono_ns - RATE_WINDOW_NS:
                self._window.popleft()

    def fps(self, now_mono_ns: int) -> float:
        self._prune(now_mono_ns)
        with self._lock:
            frames = sum(n for _, n, _ in self._window)
        return frames / (RATE_WINDOW_NS / NS_PER_S)

    def bitrate_bps(self, now_mono_ns: int) -> float:
        self._prune(now_mono_ns)
        with self._lock:
            total_bytes = sum(size for _, _, size in self._window)
        return total_bytes * 8 / (RATE_WINDOW_NS / NS_PER_S)

    def last_packet_age_s(self, now_mono_ns: int) -> float | None:
        if self.last_packet_mono_ns is None:
            return None
        return (now_mono_ns - self.last_packet_mono_ns) / NS_PER_S

    def snapshot(self, now_mono_ns: int) -> dict[str, object]:
        age = self.last_packet_age_s(now_mono_ns)
        return {
            "auth": self.auth,
            "refused": self.refused,
            "connected": self.connected,
            "fps": round(self.fps(now_mono_ns), 1),
            "bitrate_bps": round(self.bitrate_bps(now_mono_ns)),
            "last_packet_age_s": None if age is None else round(age, 2),
            "packets": self.packets,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "last_error": self.last_error,
            "audio_codec": self.audio_codec,
        }


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """How to reach one camera. Units in names."""

    name: str
    kind: str  # rtsp_pull | ts_listen | rtsp_listen, or a plug-in's (synthetic, replay)
    url: str = ""  # rtsp_pull (never with credentials: they are added in memory)
    listen_address: str = ""  # push kinds: where the box listens (config/cameras.py)
    listen_interface: str = ""
    listen_port: int = 0  # 0: any free port (tests)
    auth: str = "none"  # tls-pinned | tls-ca | digest | none: what admitted the camera
    rtsp_transport: str = "tcp"
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    recording_retry_s: float = RECORDING_RETRY_S  # the bound on a retry while recording
    queue_packets: int = 512
    serial: str = ""


def pyav_open_args(spec: SourceSpec, url: str | None = None) -> tuple[str, dict[str, Any]]:
    """The PyAV `open` arguments for an RTSP pull (pure); `url` overrides the spec's (the
    credentials or the loopback relay are added in memory, never configured in a URL)."""
    if spec.kind != "rtsp_pull":
        raise ValueError(f"camera {spec.name}: {spec.kind!r} is not opened by URL")
    options = {"rtsp_transport": spec.rtsp_transport, **LIVE_PROBE_OPTIONS}
    if spec.rtsp_transport == "udp":
        options["rtsp_flags"] = "filter_src"  # accept RTP only from the negotiated peer
    return url or spec.url, {
        "options": options,
        "timeout": (spec.open_timeout_s, spec.read_timeout_s),
    }


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A camera's connection was lost (`lost`: `at_*` is its last packet's arrival, the start of
    the hole) or is back (`back`: `at_*` is the new connection's first packet)."""

    kind: str  # lost | back
    at_mono_ns: int
    at_wall_ms: int
    generation: int
    reason: str | None = None  # lost: why, as the health page says it (never a URL)


@dataclass(eq=False, slots=True)
class Flush:
    """A mark in a camera's queue behind everything the source had delivered or held when it was
    made (`PacketBridge.flush`); the camera's loop resolves `taken` once it has taken what came
    before the mark (a recording's end waits for that: nothing that arrived before a stop is
    left out)."""

    taken: asyncio.Future[None]


QueueItem = CapturedPacket | LinkEvent | Flush


def batch_is_due(held_items: int, first_at_ns: int, newest: CapturedPacket) -> bool:
    """Whether the held batch, `newest` its last packet, goes to the event loop now (pure): at a
    video keyframe, at BATCH_MAX_ITEMS, or once it spans BATCH_MAX_S."""
    return (
        newest.is_keyframe
        or held_items >= BATCH_MAX_ITEMS
        or newest.at_mono_ns - first_at_ns >= BATCH_MAX_S * NS_PER_S
    )


def _after_last_picture(items: list[QueueItem]) -> int:
    """The index after the last item that is not sound (0: only sound, or nothing)."""
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if not (isinstance(item, CapturedPacket) and item.is_audio):
            return index + 1
    return 0


def _arrival_ns(item: QueueItem) -> int:
    return item.at_mono_ns if isinstance(item, CapturedPacket | LinkEvent) else 0


class PacketBridge:
    """Thread -> event loop hand-over, in batches, with a bound. When `maxsize` packets wait, a
    packet is dropped and counted, and so is everything up to the next keyframe: what is stored
    stays decodable. A `LinkEvent` or a `Flush` is never dropped.

    Order: the source thread holds packets under `_lock` and hands a batch over under it; a
    flush (event loop) takes the held packets under the same lock. Both hand over through the
    loop's callback queue, so the camera's queue gets every item in arrival order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int, health: SourceHealth) -> None:
        self.queue: asyncio.Queue[QueueItem] = asyncio.Queue()  # bounded by hand, below
        self._maxsize = maxsize
        self._loop = loop
        self._health = health
        self._skip_until_keyframe = False
        self._lock = threading.Lock()
        self._held: list[QueueItem] = []
        self._held_since_ns = 0
        self.batches = 0  # handed over so far (the capture benchmark divides packets by it)

    def offer(self, captured: CapturedPacket) -> None:
        """Hold a packet; hand the batch over when it is due. Called from the source thread."""
        with self._lock:
            if not self._held:
                self._held_since_ns = captured.at_mono_ns
            self._held.append(captured)
            if batch_is_due(len(self._held), self._held_since_ns, captured):
                self._hand_over_locked()

    def deliver(self, item: LinkEvent) -> None:
        """A link event, behind what is held, at once. Called from the source thread."""
        with self._lock:
            self._held.append(item)
            self._hand_over_locked()

    def release(self) -> None:
        """Hand over what is held (a connection ends). Called from the source thread."""
        with self._lock:
            if self._held:
                self._hand_over_locked()

    def flush(self) -> asyncio.Future[None]:
        """Hand over what is held up to its last picture, with a `Flush` mark behind it; the
        future resolves once the camera's loop took everything before the mark. Called on the
        event loop. Sound held after the last picture stays held (it goes with the next
        batch): a recording that ends here ends with its picture, and its sound lasts as long
        as its picture within a frame, as before batching (docs/capture.md, Audio)."""
        mark = Flush(self._loop.create_future())
        with self._lock:
            cut = _after_last_picture(self._held)
            batch, self._held = [*self._held[:cut], mark], self._held[cut:]
            if self._held:
                self._held_since_ns = _arrival_ns(self._held[0])
            self._loop.call_soon(self._put_many, batch)  # behind batches handed over before
        return mark.taken

    def _hand_over_locked(self) -> None:
        batch, self._held = self._held, []
        self.batches += 1
        self._loop.call_soon_threadsafe(self._put_many, batch)

    def _put_many(self, items: list[QueueItem]) -> None:
        for item in items:
            self._put(item)

    def _put(self, item: QueueItem) -> None:
        if not isinstance(item, CapturedPacket):
            self.queue.put_nowait(item)
            return
        if self._skip_until_keyframe and not item.is_keyframe:
            self._health.dropped += 1
            return
        if self.queue.qsize() >= self._maxsize:
            self._health.dropped += 1
            self._skip_until_keyframe = True
            return
        self.queue.put_nowait(item)
        self._skip_until_keyframe = False


class ThreadedSource(abc.ABC):
    """Runs `produce` (a blocking loop) on a thread with reconnects; packets go to `bridge`."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.health = SourceHealth(auth=spec.auth)
        self._stop = threading.Event()
        self._wake = threading.Event()  # ends a backoff early: stop, or a recording started
        self._recording = False
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._rng = random.Random()
        self._lost = False  # a connection that delivered was lost; the next packet is "back"
        self.bridge: PacketBridge | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[QueueItem]:
        self.bridge = PacketBridge(loop, self.spec.queue_packets, self.health)
        self._thread = threading.Thread(
            target=self._run, name=f"camera-{self.spec.name}", daemon=True
        )
        self._thread.start()
        return self.bridge.queue

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.interrupt()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def set_recording(self, recording: bool) -> None:
        """While recording, a lost camera is retried every `recording_retry_s` at most; a
        recording that starts during a long standby backoff ends it at once."""
        self._recording = recording
        if recording:
            self._wake.set()

    def interrupt(self) -> None:  # noqa: B027 (a hook: most sources need nothing)
        """Called once `stop` is set, from the stopping thread: end a blocking wait of the
        source thread early (a listening or connected socket). Nothing by default."""

    def finish(self) -> None:  # noqa: B027 (a hook)
        """Called on the source thread when it ends: release what outlives one connection."""

    def retry_delay_s(self, attempt: int) -> float:
        """How long to wait before the next connection: jittered exponential backoff in
        standby, at most `recording_retry_s` while recording."""
        delay_s = backoff_s(attempt, self.spec.backoff_min_s, self.spec.backoff_max_s, self._rng)
        if self._recording:
            return min(delay_s, self.spec.recording_retry_s)
        return delay_s

    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                self._generation += 1
                delivered = self._connect_once()
                attempt = 0 if delivered else attempt + 1
                if not self._stop.is_set():
                    self.health.reconnects += 1
                    self._wake.clear()
                    self._wake.wait(self.retry_delay_s(attempt))
        finally:
            self.finish()

    def _connect_once(self) -> bool:
        """One connection's life; True if it delivered any packet (then backoff restarts)."""
        delivered: CapturedPacket | None = None
        last: CapturedPacket | None = None
        bridge = self.bridge
        assert bridge is not None
        # per packet: bound methods looked up once (this loop runs 70 times a second per camera
        # with sound, and every lookup is the box's CPU)
        stopping, note_packet, offer = self._stop.is_set, self.health.note_packet, bridge.offer
        try:
            for captured in self.produce(self._generation):
                if stopping():
                    break
                if delivered is None:
                    delivered = captured
                    self._connected(captured)
                last = captured
                note_packet(captured.at_mono_ns, captured.size_bytes, is_audio=captured.is_audio)
                offer(captured)
            else:
                if not self._stop.is_set():  # our own stop interrupts the read: not a fault
                    self._note_error("stream ended")
        except (av.error.FFmpegError, OSError, ValueError, IndexError, CameraRefused) as exc:
            if not self._stop.is_set():
                self._note_error(_describe(exc))
        finally:
            bridge.release()
            self.health.connected = False
            if last is not None and not self._stop.is_set():
                self._lost = True
                self._link("lost", last, self.health.last_error)
        return delivered is not None

    def _connected(self, first: CapturedPacket) -> None:
        self.health.connected = True
        self.health.audio_codec = first.template.audio_codec
        if self._lost:
            self._lost = False
            self._link("back", first, None)

    def _link(self, kind: str, at: CapturedPacket, reason: str | None) -> None:
        assert self.bridge is not None
        event = LinkEvent(kind, at.at_mono_ns, at.at_wall_ms, at.template.generation, reason)
        self.bridge.deliver(event)

    def _note_error(self, message: str) -> None:
        self.health.errors += 1
        self.health.last_error = message

    @abc.abstractmethod
    def produce(self, generation: int) -> Iterator[CapturedPacket]:
        """Yield CapturedPackets from one connection until it ends or fails (blocking)."""

    def stopping(self) -> bool:
        return self._stop.is_set()


class PyavSource(ThreadedSource):
    """An RTSP camera pulled with PyAV (rtsp_pull over plain RTSP, optionally with digest
    credentials handed in as `url`, in memory)."""

    def __init__(
        self, spec: SourceSpec, opener: Callable[..., Any] = av.open, url: str | None = None
    ) -> None:
        super().__init__(spec)
        self._url, self._kwargs = pyav_open_args(spec, url)
        self._opener = opener

    def produce(self, generation: int) -> Iterator[CapturedPacket]:
        container = self._opener(self._url, **self._kwargs)
        try:
            yield from demux_camera(container, generation, self.stopping)
        finally:
            container.close()


def demux_camera(
    container: Any, generation: int, stopping: Callable[[], bool]
) -> Iterator[CapturedPacket]:
    """The video packets of an open container, and those of its first audio stream if it has
    one, stamped on arrival in the order they arrive, until it ends or `stopping`."""
    if not container.streams.video:
        raise ValueError("no video stream")
    video = container.streams.video[0]
    audio = container.streams.audio[0] if container.streams.audio else None
    template = StreamTemplate(video, generation, audio)
    wanted = [video] if audio is None else [video, audio]
    for packet in container.demux(wanted):
        if packet.size == 0 or packet.dts is None:
            continue  # demuxer flush markers and packets without timing
        is_audio = audio is not None and packet.stream_index == audio.index
        yield captured_now(packet, template, is_audio=is_audio)
        if stopping():
            return


def captured_now(
    packet: Any, template: StreamTemplate, *, is_audio: bool = False
) -> CapturedPacket:
    # positional: per packet, on the source thread (CapturedPacket's field order)
    return CapturedPacket(
        packet,
        template,
        not is_audio and bool(packet.is_keyframe),
        int(packet.size),
        time.monotonic_ns(),
        time.time_ns() // 1_000_000,
        is_audio,
    )


def _describe(exc: BaseException) -> str:
    """One line for the health page: the fault, never a URL with credentials in it."""
    if isinstance(exc, av.error.FFmpegError):
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"
