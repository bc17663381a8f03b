"""TLS settings for the box as a client of the back office (mutual TLS, pinned).

The chain is verified against the back office CA the box was given at pairing (issue 5; a test CA
until then) and the host name is checked, and on top of that the SPKI pin is checked by the
transport after the handshake. The box authenticates with its client certificate.

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
    """An ssl context that verifies the chain and host name and presents the box's certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.ca_file))
    context.minimum_version = MINIMUM_TLS
    if settings.validity_time is not None:  # judged after the handshake, by trusted time
        context.verify_flags |= ssl.VerifyFlags(NO_CHECK_TIME)
    context.load_cert_chain(str(settings.client_cert_file), str(settings.client_key_file))
    context.set_alpn_protocols(list(alpn))
    return context
