"""Where a push camera connects: a listening socket bound to an address and/or an interface.

The configuration (config/cameras.py) never lets a camera listen on every address by default:
it names `listen_address`, `listen_interface`, or both. An interface binds with SO_BINDTODEVICE
(no capability needed since Linux 5.7, as for the uplink: transport/binding.py), so only
connections that arrive on that interface are accepted, whatever the address.

Used from the camera's source thread only. `accept` polls so the thread notices a stop within
POLL_S; `close` from another thread (a stop) ends a blocked accept at once.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

POLL_S = 0.25
BACKLOG = 4


@dataclass(frozen=True, slots=True)
class ListenOn:
    """An address (IPv4 or IPv6 literal; empty with an interface: every address of that
    interface), an interface name (empty: none) and a port (0: any free one, for tests)."""

    address: str
    interface: str
    port: int

    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    def bind_address(self) -> str:
        if self.address:
            return self.address
        return "::" if self.family() == socket.AF_INET6 else "0.0.0.0"  # noqa: S104 (device-bound)


class CameraListener:
    """One push camera's listening socket (opened on first use, kept across connections)."""

    def __init__(self, where: ListenOn) -> None:
        self.where = where
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the kernel's choice for port 0)."""
        assert self._sock is not None, "not listening"
        port: int = self._sock.getsockname()[1]
        return port

    def open(self) -> None:
        """Listen (again, after a failure). OSError when the address is not the box's (yet: an
        interface coming up late) or the port is taken; the source retries with backoff."""
        if self._sock is not None:
            return
        sock = socket.socket(self.where.family(), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.where.interface:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.where.interface.encode()
                )
            sock.bind((self.where.bind_address(), self.where.port))
            sock.listen(BACKLOG)
            sock.settimeout(POLL_S)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def accept(
        self, stopping: Callable[[], bool], idle: Callable[[], None]
    ) -> tuple[socket.socket, str] | None:
        """The next connection and its peer's address, or None once `stopping()`; `idle` runs
        every poll while nobody connects."""
        self.open()
        while not stopping():
            sock = self._sock
            if sock is None:
                return None  # closed by a stop
            try:
                conn, peer = sock.accept()
            except TimeoutError:
                idle()
                continue
            except OSError:
                if stopping():
                    return None
                self.close()  # the listening socket broke: open it again on the next try
                raise
            conn.settimeout(None)
            return conn, str(peer[0])
        return None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
