"""`rtsp_listen`: a camera pushing RTSP (ANNOUNCE/RECORD) to the box, admitted by digest.

The camera connects to the box's listener (bound to its configured address or interface,
gateway/capture/listener.py). The digest front (gateway/capture/rtsp_front.py) answers it until
a request proves the password of the camera's `credentials_file`. Only then does PyAV open an
RTSP listener on a loopback port, the relay (gateway/capture/relay.py) connects to it and
carries the admitted request and the rest of the session.

PyAV's loopback listener accepts exactly one connection. Another process of the box's host
could race the relay to it: then the relay's connection is refused or reset and PyAV never
answers the relay. Packets are yielded only once PyAV has answered the relay (`box_spoke`),
which proves PyAV's one connection is the relay's; otherwise the session is refused as
`loopback_taken` and nothing of it is recorded.

Weakest accepted form (docs/capture.md): digest proves the camera knows the password when it
connects; the stream itself is neither encrypted nor integrity-protected, so an attacker on the
vehicle network who can take over the TCP connection afterwards could inject. TLS is the form
to prefer where a camera can do it (`ts_listen` with `auth = "tls"`).
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import av

from gateway.capture.camera_trust import LOOPBACK_TAKEN, PROTOCOL_ERROR, TIMEOUT, CameraRefused
from gateway.capture.credentials import Credentials
from gateway.capture.ingest_report import IngestReport
from gateway.capture.packet import CapturedPacket
from gateway.capture.push_sources import PushSource
from gateway.capture.relay import Relay, shut
from gateway.capture.rtsp_front import FramingError, FrontStep, RtspFront
from gateway.capture.source import LIVE_PROBE_OPTIONS, SourceSpec, demux_camera

LOOPBACK = "127.0.0.1"
AUTH_TIMEOUT_S = 5.0  # from connecting to an admitted request
CHUNK_BYTES = 16 * 1024


class RtspPushSource(PushSource):
    """`rtsp_listen` behind the digest front (`credentials` None: `auth = "none"`)."""

    def __init__(
        self,
        spec: SourceSpec,
        credentials: Credentials | None,
        report: IngestReport | None = None,
        opener: Callable[..., Any] = av.open,
        auth_timeout_s: float = AUTH_TIMEOUT_S,
        *,
        loopback_port: Callable[[], int] | None = None,
        connect_loopback: Callable[[int, float], socket.socket] | None = None,
    ) -> None:
        """`loopback_port` and `connect_loopback` pick PyAV's internal port and connect the
        relay to it (tests make another process win that race)."""
        super().__init__(spec, report)
        self.credentials = credentials
        self._opener = opener
        self._auth_timeout_s = auth_timeout_s
        self._loopback_port = loopback_port or free_loopback_port
        self._connect_loopback = connect_loopback or connect_when_listening

    def produce(self, generation: int) -> Iterator[CapturedPacket]:
        admitted = self._admit_one()
        if admitted is None:
            return
        conn, peer, front, step = admitted
        self.report.admitted(self.spec.auth, peer)
        self.hold_live(conn)
        port = self._loopback_port()
        relay = Relay(
            conn,
            lambda: self._connect_loopback(port, self.spec.open_timeout_s),
            first_bytes=step.forward,
            camera_to_box=lambda data: _forward(front, data),
            box_to_camera=front.from_box,
        )
        relay.start(f"rtsp-relay-{self.spec.name}")
        try:
            container = self._opener(
                f"rtsp://{LOOPBACK}:{port}{step.path}",
                options={
                    "rtsp_flags": "listen",
                    "listen_timeout": str(_whole_s(self.spec)),
                    **LIVE_PROBE_OPTIONS,
                },
                timeout=(self.spec.open_timeout_s, self.spec.read_timeout_s),
            )
            try:
                for captured in self.ticking(demux_camera(container, generation, self.stopping)):
                    if not relay.box_spoke.is_set():
                        self.refuse(conn, peer, LOOPBACK_TAKEN)
                        return
                    yield captured
            finally:
                container.close()
        finally:
            self.hold_live(None)
            shut(conn)
            relay.stop()
            conn.close()

    def _admit_one(self) -> tuple[socket.socket, str, RtspFront, FrontStep] | None:
        """The first sender whose request proves the password; refused ones are reported."""
        while True:
            sender = self.next_sender()
            if sender is None:
                return None
            conn, peer = sender
            realm = f"MVB camera {self.spec.name}"
            front = RtspFront(self.credentials, realm, secrets.token_hex(16))
            try:
                step = self._authenticate(conn, front)
            except CameraRefused as refused:
                self.refuse(conn, peer, refused.reason)
                continue
            return conn, peer, front, step

    def _authenticate(self, conn: socket.socket, front: RtspFront) -> FrontStep:
        """Read and answer until the front admits or refuses, within the bound."""
        deadline = time.monotonic() + self._auth_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stopping():
                raise CameraRefused(TIMEOUT)
            conn.settimeout(remaining)
            try:
                data = conn.recv(CHUNK_BYTES)
            except TimeoutError as exc:
                raise CameraRefused(TIMEOUT) from exc
            except OSError as exc:
                raise CameraRefused(PROTOCOL_ERROR) from exc
            if not data:
                raise CameraRefused(front_refusal(front))
            step = front.from_camera(data)
            if step.reply:
                conn.sendall(step.reply)
            if step.refused is not None:
                raise CameraRefused(step.refused)
            if step.admitted:
                conn.settimeout(None)
                return step


def front_refusal(front: RtspFront) -> str:
    """Why a sender that hung up before being admitted is refused (it gave up after our 401)."""
    return front.refusal_so_far()


def _forward(front: RtspFront, data: bytes) -> bytes:
    step = front.from_camera(data)
    if step.refused is not None:
        raise FramingError(step.refused)
    return step.forward


def _whole_s(spec: SourceSpec) -> int:
    return max(1, int(spec.open_timeout_s))


def free_loopback_port() -> int:
    """A loopback port free a moment ago (PyAV binds it; a taken one fails the open)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def connect_when_listening(port: int, timeout_s: float) -> socket.socket:
    """Connect to PyAV's loopback listener, retrying while it is not listening yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return socket.create_connection((LOOPBACK, port), timeout=timeout_s)
        except ConnectionRefusedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
