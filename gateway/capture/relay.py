"""Bytes between a camera's connection and PyAV's loopback connection, both ways, on one thread.

Used where PyAV must speak RTSP itself (it cannot take a file object for RTSP) while the box
authenticates the camera in Python: RTSPS pull (gateway/capture/pull_sources.py) and RTSP push
behind the digest front (gateway/capture/rtsp_push.py).

Invariants:
- One thread drives both directions, so a TLS connection is never read and written by two
  threads at once (an OpenSSL connection object is not safe for that).
- Data OpenSSL already decrypted and buffered (`pending()`) is relayed before waiting on select.
- A transform may raise FramingError (a protocol error): the relay ends, both sides are shut.
- When one plain side ends, the other is half-closed (it still reads everything sent before the
  end, and may answer) and drained for at most DRAIN_S: the box never resets a connection with
  data unread, which would make the kernel drop the last of the stream. A TLS side cannot be
  half-closed: its end ends the relay. On a failure both are shut at once; `stop` ends the relay
  from another thread within POLL_S.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable

from gateway.capture.rtsp_front import FramingError

POLL_S = 0.25
CHUNK_BYTES = 64 * 1024
SEND_TIMEOUT_S = 5.0
DRAIN_S = 2.0  # after one side ended, how long the other may still finish

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
            box = self.box = self._connect_box()
            for sock in (self.camera, box):
                sock.settimeout(SEND_TIMEOUT_S)
            if self._first_bytes:
                box.sendall(self._first_bytes)
            open_sides = [self.camera, box]
            drain_until: float | None = None
            while open_sides and not self._stop.is_set():
                if drain_until is not None and time.monotonic() > drain_until:
                    break
                ended = self._step(open_sides, box)
                if ended is None:
                    continue
                open_sides.remove(ended)
                other = box if ended is self.camera else self.camera
                if isinstance(other, ssl.SSLSocket) or other not in open_sides:
                    break  # a TLS side cannot be half-closed (ssl drops its state on shutdown)
                # Half-close: the other side reads what was sent, then its end, and may answer.
                other.shutdown(socket.SHUT_WR)
                drain_until = time.monotonic() + DRAIN_S
        except (OSError, FramingError) as exc:
            self.failure = type(exc).__name__
        finally:
            shut(self.camera)
            if self.box is not None:
                shut(self.box)
                self.box.close()

    def _step(self, open_sides: list[socket.socket], box: socket.socket) -> socket.socket | None:
        """Relay what is ready; the side that reached its end, if one did."""
        ready = [s for s in open_sides if _buffered(s)]
        if not ready:
            ready, _, _ = select.select(open_sides, [], [], POLL_S)
        for source in ready:
            data = source.recv(CHUNK_BYTES)
            if not data:
                return source
            if source is box:
                self.box_spoke.set()
                out, target = self._box_to_camera(data), self.camera
            else:
                out, target = self._camera_to_box(data), box
            if out:
                target.sendall(out)
        return None


def shut(sock: socket.socket) -> None:
    """Shut both directions of `sock` (a blocked read on another thread ends at once)."""
    with contextlib.suppress(OSError):  # already closed, or the peer went first
        sock.shutdown(socket.SHUT_RDWR)


def _buffered(sock: socket.socket) -> bool:
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
