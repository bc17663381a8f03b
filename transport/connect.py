"""Opening pinned transports to the configured back office, and reading a link's carrier.

HTTP/3 (transport/h3_io.py, aioquic) is imported only when a link asks for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transport.http import Transport
from transport.https import HttpsTransport
from transport.links import LinkConfig
from transport.progress import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_STALL_TIMEOUT_S,
)
from transport.tls import ClientTlsSettings

IDLE_TIMEOUT_MIN_S = 30.0
"""A QUIC connection idle this long closes (aioquic's idle timeout, as before the stall timeout
was a setting); a longer stall timeout lengthens it, so QUIC never cuts what the watch keeps."""


@dataclass(frozen=True, slots=True)
class BackOffice:
    """Where the back office listens. `h3_port` 0: it offers no HTTP/3. The timeouts bound each
    request by progress (transport/progress.py); a QUIC connection on which nothing arrives for
    `stall_timeout_s` is closed too (its idle timeout)."""

    host: str
    https_port: int
    h3_port: int
    tls: ClientTlsSettings
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S


class BackOfficeConnector:
    """The uplink's `Connector`: one pinned transport per (link, kind), bound to the link."""

    def __init__(self, back_office: BackOffice) -> None:
        self.back_office = back_office

    async def __call__(self, link: LinkConfig, kind: str) -> Transport:
        office = self.back_office
        if kind == "h3":
            if not office.h3_port:
                raise ValueError("HTTP/3 asked for, but the back office has no h3_port")
            # Imported here: aioquic and pylsqpack cost the box about 3 MiB of memory, and only
            # a link that prefers HTTP/3 ever uses them (issue 18: load what the box uses).
            from transport.h3_io import H3Transport

            return await H3Transport.connect(
                office.host,
                office.h3_port,
                office.tls,
                binding=link.binding,
                connect_timeout_s=office.connect_timeout_s,
                request_timeout_s=office.request_timeout_s,
                read_timeout_s=office.read_timeout_s,
                stall_timeout_s=office.stall_timeout_s,
                idle_timeout_s=max(office.stall_timeout_s, IDLE_TIMEOUT_MIN_S),
            )
        return await HttpsTransport.connect(
            office.host,
            office.https_port,
            office.tls,
            binding=link.binding,
            connect_timeout_s=office.connect_timeout_s,
            request_timeout_s=office.request_timeout_s,
            read_timeout_s=office.read_timeout_s,
            stall_timeout_s=office.stall_timeout_s,
        )


def carrier_up(link: LinkConfig, sys_class_net: Path = Path("/sys/class/net")) -> bool:
    """The OS's view of the link's interface (operstate); a link without interface is up.

    "unknown" counts as up: tun devices and some modems never report "up".
    """
    interface = link.binding.interface
    if interface is None:
        return True
    try:
        state = (sys_class_net / interface / "operstate").read_text().strip()
    except OSError:
        return False
    return state in ("up", "unknown")
