"""Binding an uplink socket to one link (interface and/or source address).

A box has several uplinks (e.g. `wlan0`, `wwan0`). The routing table picks one by destination, so
to send over a chosen link a socket is bound to it before it connects: SO_BINDTODEVICE by interface
name and/or bind() to the link's source address. Since Linux 5.7 SO_BINDTODEVICE on a socket not
yet bound to a device needs no capability, so the unit grants none (docs/deploy-box.md).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LinkBinding:
    """How to pin a socket to one link. Both None: the default route (tests on loopback)."""

    interface: str | None = None
    source_address: str | None = None

    def apply(self, sock: socket.socket) -> None:
        """Bind `sock` (not yet connected) to the link. OSError says which step failed."""
        if self.interface is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
        if self.source_address is not None:
            sock.bind((self.source_address, 0))


def bound_socket(binding: LinkBinding, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A non-blocking socket bound to the link; closed again if binding fails."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        binding.apply(sock)
    except BaseException:
        sock.close()
        raise
    return sock
