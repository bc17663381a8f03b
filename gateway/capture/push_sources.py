"""Push cameras: the box listens, and a sender becomes the camera only once it proved it.

`TsPushSource` (`ts_listen`): MPEG-TS over TLS with the camera's client certificate (or over
plain TCP when the configuration says `auth = "none"`). The box accepts a connection, completes
the TLS handshake, judges the certificate (gateway/capture/camera_tls.py, camera_trust.py) and
only then hands the connection to PyAV's MPEG-TS demuxer as a file object: no byte of a sender
that did not prove itself ever reaches the demuxer, the ring or the card.

`RtspPushSource` (`rtsp_listen`) is in gateway/capture/rtsp_push.py.

Invariants:
- One camera session at a time. Others wait in the listen backlog, unread, until it ends.
- Every refusal is reported (audit, alarm: gateway/capture/ingest_report.py) with its reason and
  the sender's address, and the connection is closed; the source goes on listening at once (a
  refusal is the sender's fault, not the camera's: no backoff, no error counted).
- A handshake is bounded (HANDSHAKE_TIMEOUT_S): a silent sender delays the camera by that much
  at most, per connection.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import av

from gateway.capture.camera_tls import HANDSHAKE_TIMEOUT_S, admit_tls
from gateway.capture.camera_trust import CameraRefused, CameraTrust
from gateway.capture.ingest_report import IngestReport
from gateway.capture.listener import CameraListener, ListenOn
from gateway.capture.packet import CapturedPacket
from gateway.capture.relay import shut
from gateway.capture.source import (
    LIVE_PROBE_OPTIONS,
    SourceSpec,
    ThreadedSource,
    demux_camera,
)


@dataclass(frozen=True, slots=True)
class TlsAdmission:
    """How a TLS push camera is admitted: the box's server context and the camera's trust."""

    context: ssl.SSLContext
    trust: CameraTrust


class SocketReader:
    """A connection as the file object PyAV's demuxer reads (no seek: a live stream).

    Bounded like PyAV's own network reads, and more: a read raises TimeoutError once the
    connection has been silent for `read_timeout_s`, and also once no packet came out of the
    demuxer for that long (`packet_arrived` moves that deadline; before the first packet,
    `open_timeout_s` bounds the open). Without the second bound, a sender streaming garbage
    would keep the MPEG-TS demuxer hunting for sync bytes for ever."""

    def __init__(self, sock: socket.socket, open_timeout_s: float, read_timeout_s: float) -> None:
        self._sock = sock
        self._read_timeout_s = read_timeout_s
        self._deadline = time.monotonic() + open_timeout_s

    def packet_arrived(self) -> None:
        self._deadline = time.monotonic() + self._read_timeout_s

    def read(self, n_bytes: int) -> bytes:
        remaining_s = self._deadline - time.monotonic()
        if remaining_s <= 0:
            raise TimeoutError("no packet within the bound")
        self._sock.settimeout(min(self._read_timeout_s, remaining_s))
        return self._sock.recv(n_bytes)


class PushSource(ThreadedSource):
    """What every push camera shares: its listener, its report, the one live connection."""

    def __init__(self, spec: SourceSpec, report: IngestReport | None = None) -> None:
        super().__init__(spec)
        self.report = report or IngestReport(spec.name)
        self.listener = CameraListener(
            ListenOn(spec.listen_address, spec.listen_interface, spec.listen_port)
        )
        self._live: socket.socket | None = None
        self._live_lock = threading.Lock()

    def next_sender(self) -> tuple[socket.socket, str] | None:
        """The next connection (None once stopping); ticks the report while waiting."""
        return self.listener.accept(self.stopping, self.report.tick)

    def refuse(self, conn: socket.socket, peer: str, reason: str) -> None:
        conn.close()
        self.health.refused += 1
        self.report.refused(reason, peer)

    def hold_live(self, sock: socket.socket | None) -> None:
        """The connection a stop must shut down to end a blocked read (None: none now)."""
        with self._live_lock:
            self._live = sock

    def interrupt(self) -> None:
        self.listener.close()
        with self._live_lock:
            live = self._live
        if live is not None:
            shut(live)

    def finish(self) -> None:
        self.listener.close()
        self.report.flush()

    def ticking(self, packets: Iterator[CapturedPacket]) -> Iterator[CapturedPacket]:
        """Pass `packets` on, letting the report age its alarm and folded entries meanwhile."""
        for captured in packets:
            self.report.tick()
            yield captured


class TsPushSource(PushSource):
    """`ts_listen`: MPEG-TS pushed over TLS (admission set) or plain TCP (`auth = "none"`)."""

    def __init__(
        self,
        spec: SourceSpec,
        admission: TlsAdmission | None,
        report: IngestReport | None = None,
        opener: Callable[..., Any] = av.open,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        super().__init__(spec, report)
        self.admission = admission
        self._opener = opener
        self._handshake_timeout_s = handshake_timeout_s

    def produce(self, generation: int) -> Iterator[CapturedPacket]:
        admitted = self._admit_one()
        if admitted is None:
            return
        stream, peer = admitted
        self.report.admitted(self.spec.auth, peer)
        self.hold_live(stream)
        try:
            reader = SocketReader(stream, self.spec.open_timeout_s, self.spec.read_timeout_s)
            container = self._opener(
                reader,
                format="mpegts",
                options=dict(LIVE_PROBE_OPTIONS),
                timeout=(self.spec.open_timeout_s, self.spec.read_timeout_s),
            )
            try:
                for captured in self.ticking(demux_camera(container, generation, self.stopping)):
                    reader.packet_arrived()
                    yield captured
            finally:
                container.close()
        finally:
            self.hold_live(None)
            stream.close()

    def _admit_one(self) -> tuple[socket.socket, str] | None:
        """The first sender that proves it is the camera; refused ones are reported."""
        while True:
            sender = self.next_sender()
            if sender is None:
                return None
            conn, peer = sender
            if self.admission is None:
                return conn, peer
            try:
                tls = admit_tls(
                    conn, self.admission.context, self.admission.trust, self._handshake_timeout_s
                )
            except CameraRefused as refused:
                self.refuse(conn, peer, refused.reason)
                continue
            return tls, peer
