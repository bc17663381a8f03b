"""Bytes between a camera's connection and PyAV's loopback connection, both ways, on one thread.

Used where PyAV must speak RTSP itself (it cannot take a file object for RTSP) while the box
authenticates the camera in Python: RTSPS pull (gateway/capture/pull_sources.py) and RTSP push
behind the digest front (gateway/capture/rtsp_push.py).

Invariants:
- One thread drives both directions, so a TLS connection is never read and written by two
  threads at once (an OpenSSL connection object is not safe for that).
- Data OpenSSL already decrypted and buffered (`pending()`) is relayed before waiting on select.
- A transform may raise FramingError (a protocol error): the relay ends, both sides are shut.
- When either side closes or fails, the relay shuts both down and ends; `stop` ends it from
  another thread within POLL_S.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Callable

from gateway.capture.rtsp_front import FramingError

POLL_S = 0.25
CHUNK_BYTES = 64 * 1024
SEND_TIMEOUT_S = 5.0

Transform = Callable[[bytes], bytes]


def identity(data: bytes) -> bytes:
    return data


class Relay:
    """Relays `camera` <-> the box side until one side ends. The box side is connected by
    `connect_box` on the relay's thread (PyAV may still be opening its listener), and
    `first_bytes` go to it before anything else. `box_spoke` is set once the box side (PyAV)
    sent its first byte: proof that PyAV's one accepted connection is this relay's."""

    def __init__(
        self,
        camera: socket.socket,
        connect_box: Callable[[], socket.socket],
        *,
        first_bytes: bytes = b"",
        camera_to_box: Transform = identity,
        box_to_camera: Transform = identity,
    ) -> None:
        self.camera = camera
        self._connect_box = connect_box
        self._first_bytes = first_bytes
        self._camera_to_box = camera_to_box
        self._box_to_camera = box_to_camera
        self.box: socket.socket | None = None
        self.box_spoke = threading.Event()
        self.failure: str | None = None  # why it ended abnormally, for the source's health
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the relay (within POLL_S) and wait for its thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            self.box = self._connect_box()
            for sock in (self.camera, self.box):
                sock.settimeout(SEND_TIMEOUT_S)
            if self._first_bytes:
                self.box.sendall(self._first_bytes)
            while not self._stop.is_set() and self._step(self.box):
                pass
        except (OSError, FramingError) as exc:
            self.failure = type(exc).__name__
        finally:
            shut(self.camera)
            if self.box is not None:
                shut(self.box)
                self.box.close()

    def _step(self, box: socket.socket) -> bool:
        """Relay what is ready; False once a side closed."""
        ready = [s for s in (self.camera, box) if _buffered(s)]
        if not ready:
            ready, _, _ = select.select([self.camera, box], [], [], POLL_S)
        for source in ready:
            data = source.recv(CHUNK_BYTES)
            if not data:
                return False
            if source is box:
                self.box_spoke.set()
                out, target = self._box_to_camera(data), self.camera
            else:
                out, target = self._camera_to_box(data), box
            if out:
                target.sendall(out)
        return True


def shut(sock: socket.socket) -> None:
    """Shut both directions of `sock` (a blocked read on another thread ends at once)."""
    with contextlib.suppress(OSError):  # already closed, or the peer went first
        sock.shutdown(socket.SHUT_RDWR)


def _buffered(sock: socket.socket) -> bool:
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
