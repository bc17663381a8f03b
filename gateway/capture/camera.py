"""A camera of the vehicle with its pre-record ring, and its part of the current recording,
driven on a worker thread of its own (the capture service, gateway/capture/service.py, owns
both and decides when a part begins and ends).

Ordering without locks: a part's work reaches its worker through its one-thread executor's
`submit` (a batch of packets, a metadata object, the close), which runs jobs in submission
order; the event loop waits for a job only when it must (see the service's docstring).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway.capture.muxer import GpsWindow, SegmentMuxer
from gateway.capture.packet import CapturedPacket
from gateway.capture.ring import PrerecordRing
from gateway.capture.source import ThreadedSource
from storage.card_health import CardCondition
from storage.store import Recording

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
AUDIO_LEAD_NS = NS_PER_S // 2  # sound a camera sends ahead of its picture (its encoder's delay)


class CameraRecording:
    """One camera's part of the current recording, driven on the camera's own worker thread.

    Invariants: packets reach the card in the order they were submitted; the event loop never
    waits for the card unless `backlog_bytes` passed RECORD_BACKLOG_MAX_BYTES; any error of the
    card ends this part (`failed`) without raising into the event loop (the card watch resumes
    the recording in a new part once the card is back: gateway/card_watch.py)."""

    def __init__(
        self,
        recording: Recording,
        camera: Camera,
        gps_window: GpsWindow,
        observed: Mapping[str, Any] | None = None,
        *,
        record_audio: bool,
        since_ns: int = 0,
        on_fault: Callable[[BaseException], CardCondition | None] = lambda _exc: None,
        resume: bool = False,
    ) -> None:
        stream = recording.open_stream(
            camera.name,
            container="mpegts",
            **(observed or {}),
            resume=resume,
            camera_serial=camera.serial,
            camera_auth=camera.source.spec.auth,  # how the camera proved it is this one (L6)
            record_audio=record_audio,
        )
        self.muxer = SegmentMuxer(stream, gps_window, camera.segment_min_s, with_audio=record_audio)
        self._stream = stream
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"record-{camera.name}")
        self._on_fault = on_fault
        self.since_ns = since_ns  # the ring's packets from here on belong to this part
        self.failed: str | None = None
        self.card_fault: CardCondition | None = None  # why it failed, when the card's fault
        # the newest packet the muxer took (mono ns): the last of the last batch fed without fault
        self.last_fed_ns: int | None = None
        self.backlog_bytes = 0  # submitted, not yet taken by the worker
        self.backlog_max_bytes = 0
        self.backlog_max_packets = 0
        self._backlog_packets = 0
        self._backlog_lock = threading.Lock()

    def submit_packets(self, packets: list[CapturedPacket]) -> concurrent.futures.Future[None]:
        """Queue packets in order (synchronous call: the order of calls is the order on card).
        The job's end does not wake the event loop; wrap the future to wait for it."""
        size = sum(p.size_bytes for p in packets)
        with self._backlog_lock:
            self.backlog_bytes += size
            self._backlog_packets += len(packets)
            self.backlog_max_bytes = max(self.backlog_max_bytes, self.backlog_bytes)
            self.backlog_max_packets = max(self.backlog_max_packets, self._backlog_packets)
        return self._worker.submit(self._feed, packets, size)

    def submit_metadata(self, obj: dict[str, Any]) -> asyncio.Future[None]:
        return asyncio.get_running_loop().run_in_executor(self._worker, self._note, obj)

    async def close(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._worker, self._close)
        finally:
            self._worker.shutdown(wait=False)

    def _fail(self, exc: Exception) -> None:
        """Called on the worker: this part ends; the card alarm says why (a full card raised
        its own alarm already)."""
        self.failed = str(exc) or type(exc).__name__
        try:
            self.card_fault = self._on_fault(exc)
        except Exception:
            log.exception("the card fault could not be noted")

    def _feed(self, packets: list[CapturedPacket], size: int) -> None:
        try:
            if self.failed:
                return
            self.muxer.feed_many(packets)  # one call and one store write per batch
            if packets:
                self.last_fed_ns = packets[-1].at_mono_ns
        except Exception as exc:  # the card, or a bug: never into the camera's loop
            self._fail(exc)
        finally:
            with self._backlog_lock:
                self.backlog_bytes -= size
                self._backlog_packets -= len(packets)

    def _note(self, obj: dict[str, Any]) -> None:
        if self.failed or self.muxer.stats.packets == 0:
            return  # a camera that delivered nothing yet gets no file; the others carry the event
        try:
            self._stream.add_metadata(obj)
        except Exception as exc:
            self._fail(exc)

    def _close(self) -> None:
        if not self.failed:
            try:
                self.muxer.close()
            except Exception as exc:
                self._fail(exc)
        if self.card_fault is None:
            try:
                self._stream.close()  # seals (a full card seals from its reserve)
            except Exception as exc:
                self._fail(exc)
        if self.card_fault is not None:
            self._stream.abandon()  # recovery closes its `.part` once the card is back


@dataclass
class Camera:
    """A camera of the vehicle with its ring. Name and serial identify it in evidence (R5)."""

    source: ThreadedSource
    prerecord_s: float
    ring_max_bytes: int
    segment_min_s: float = 1.0
    ring: PrerecordRing[CapturedPacket] = field(init=False)
    recording: CameraRecording | None = None
    lost_at_mono_ns: int | None = None  # the last packet of a lost connection, until it is back

    def __post_init__(self) -> None:
        window_ns = int(self.prerecord_s * NS_PER_S)
        self.ring = PrerecordRing(
            window_ns, self.ring_max_bytes, lead_ns=AUDIO_LEAD_NS, is_lead=_is_audio
        )

    @property
    def name(self) -> str:
        return self.source.spec.name

    @property
    def serial(self) -> str:
        return self.source.spec.serial


def _is_audio(captured: CapturedPacket) -> bool:
    return captured.is_audio
