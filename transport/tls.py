"""TLS settings for the box as a client of the back office (mutual TLS, pinned).

The chain is verified against the back office CA the box was given at pairing (issue 5; a test CA
until then) and the host name is checked, and on top of that the SPKI pin is checked by the
transport after the handshake. The box authenticates with its client certificate.

The box's certificate names the box (its subject is the device serial). Mutual TLS is TLS 1.3
only (`MUTUAL_TLS_MINIMUM`): in TLS 1.2 the client's Certificate message travels in clear, so
anyone on the path (a hotspot, the mobile operator) would read the serial of every box on every
connection. In TLS 1.3 it is encrypted, and OpenSSL sends it only after it has verified the
server's CertificateVerify, chain and host name (verification fails inside the handshake, before
the client's flight). What OpenSSL through Python's ssl cannot do is check the SPKI pin at that
point: Python exposes no verify callback, so the pin is checked after the handshake, and a server
with a certificate our CA issued for the right name but an unpinned key sees the box's
certificate before the box drops it. HTTP/3 closes that gap (transport/quic_peer.py); see
docs/uplink.md, "What the box shows before the pin check".

With `validity_time` (the box's trusted clock) the validity window is judged by trusted time after
the handshake (transport/cert_validity.py), not by the wall clock during it: a box whose clock is
days wrong still talks to its pinned back office.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storage.trusted_time import TrustedNow
from transport.cert_validity import NO_CHECK_TIME
from transport.pinning import PinSet

MINIMUM_TLS = ssl.TLSVersion.TLSv1_2
"""Pairing (no client certificate: nothing of the box in the handshake)."""
MUTUAL_TLS_MINIMUM = ssl.TLSVersion.TLSv1_3
"""Every connection that presents the box's certificate: never in clear (module docstring)."""


@dataclass(frozen=True, slots=True)
class ClientTlsSettings:
    """Everything a transport needs to open one pinned, mutually authenticated connection.

    `server_name` is the host name checked in the back office certificate (SNI too); the connection
    itself may go to an IP address (`host` of the endpoint) chosen by the link.
    """

    ca_file: Path
    client_cert_file: Path
    client_key_file: Path
    pins: PinSet
    server_name: str
    validity_time: Callable[[], TrustedNow] | None = None
    """The clock certificates are judged by (the box's trusted time); None: the wall clock."""


def client_ssl_context(
    settings: ClientTlsSettings, alpn: tuple[str, ...] = ("http/1.1",)
) -> ssl.SSLContext:
    """An ssl context (TLS 1.3 only) that verifies the chain and host name and presents the
    box's certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.ca_file))
    context.minimum_version = MUTUAL_TLS_MINIMUM
    if settings.validity_time is not None:  # judged after the handshake, by trusted time
        context.verify_flags |= ssl.VerifyFlags(NO_CHECK_TIME)
    context.load_cert_chain(str(settings.client_cert_file), str(settings.client_key_file))
    context.set_alpn_protocols(list(alpn))
    return context
