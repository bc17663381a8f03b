"""`rtsp_pull` over RTSPS: the box connects to the camera and checks it is the configured one.

The box makes the TLS connection itself instead of letting PyAV's FFmpeg do it. Measured with
PyAV 18's FFmpeg (docs/capture.md): its RTSPS client verifies nothing unless told; told
(`tls_verify`, `ca_file`) it checks the chain and the host name, but not which camera the
certificate names (a certificate the camera CA issued to another camera passes), and a refusal
comes back as an I/O error, indistinguishable from a camera that is down, so there would be no
reason to audit. Here `connect_tls` (gateway/capture/camera_tls.py) requires the camera's
certificate to be the pinned one or issued by the camera CA, and to name the camera's serial.
Only then does PyAV connect, over loopback, to a one-connection listener of the box whose relay
(gateway/capture/relay.py) carries the RTSP session (interleaved over TCP: UDP would bypass TLS,
and config/cameras.py refuses it) through the checked TLS connection. Digest credentials, when
configured, go in PyAV's loopback URL, in memory.

Invariants:
- A peer at the camera's address that is not the camera is refused before any RTSP byte is
  exchanged, reported (audit, alarm) as a refused sender, and the source retries with backoff.
- The loopback listener accepts one connection, from anybody: whoever takes it first talks to
  the checked camera, so another local process could watch or deny the stream but never put
  its own bytes into the recording (they would have to come from the camera's TLS connection).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import av

from gateway.capture.camera_tls import connect_tls
from gateway.capture.camera_trust import CameraRefused, CameraTrust
from gateway.capture.credentials import Credentials
from gateway.capture.ingest_report import IngestReport
from gateway.capture.packet import CapturedPacket
from gateway.capture.relay import Relay, shut
from gateway.capture.source import SourceSpec, ThreadedSource, demux_camera, pyav_open_args

LOOPBACK = "127.0.0.1"
RTSPS_DEFAULT_PORT = 322  # RFC 7826 (RTSP 2.0) registers 322 for rtsps


class RtspsPullSource(ThreadedSource):
    """An RTSPS camera whose certificate the box checks itself."""

    def __init__(
        self,
        spec: SourceSpec,
        context: ssl.SSLContext,
        trust: CameraTrust,
        credentials: Credentials | None = None,
        report: IngestReport | None = None,
        opener: Callable[..., Any] = av.open,
    ) -> None:
        super().__init__(spec)
        self.context = context
        self.trust = trust
        self.credentials = credentials
        self.report = report or IngestReport(spec.name)
        self._opener = opener
        url = urlsplit(spec.url)
        assert url.hostname is not None, "config/cameras.py checked the URL"
        self.host = url.hostname
        self.port = url.port or RTSPS_DEFAULT_PORT
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._live: ssl.SSLSocket | None = None
        self._live_lock = threading.Lock()

    def produce(self, generation: int) -> Iterator[CapturedPacket]:
        self.report.tick()
        camera = self._connect()
        with self._live_lock:
            self._live = camera
        listener = _loopback_listener(self.spec.open_timeout_s)
        relay = Relay(camera, lambda: _accept_one(listener))
        relay.start(f"rtsps-relay-{self.spec.name}")
        userinfo = self.credentials.userinfo() if self.credentials is not None else ""
        port = listener.getsockname()[1]
        url, kwargs = pyav_open_args(self.spec, f"rtsp://{userinfo}{LOOPBACK}:{port}{self.path}")
        try:
            container = self._opener(url, **kwargs)
            try:
                for captured in demux_camera(container, generation, self.stopping):
                    self.report.tick()
                    yield captured
            finally:
                container.close()
        finally:
            with self._live_lock:
                self._live = None
            shut(camera)
            shut(listener)  # wakes the relay's accept if PyAV never connected
            listener.close()
            relay.stop()
            camera.close()

    def _connect(self) -> ssl.SSLSocket:
        try:
            camera = connect_tls(
                self.host, self.port, self.context, self.trust, self.spec.open_timeout_s
            )
        except CameraRefused as refused:
            self.health.refused += 1
            self.report.refused(refused.reason, self.host)
            raise
        self.report.admitted(self.spec.auth, self.host)
        return camera

    def interrupt(self) -> None:
        with self._live_lock:
            live = self._live
        if live is not None:
            shut(live)

    def finish(self) -> None:
        self.report.flush()


def _loopback_listener(timeout_s: float) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        listener.settimeout(timeout_s)
    except BaseException:
        listener.close()
        raise
    return listener


def _accept_one(listener: socket.socket) -> socket.socket:
    """PyAV's connection; the listener closes at once, so nobody else gets one."""
    try:
        conn, _ = listener.accept()
    finally:
        listener.close()
    return conn
