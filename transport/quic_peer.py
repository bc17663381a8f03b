"""The one place that reaches into aioquic's private attributes (aioquic 1.7).

aioquic has no public API for three things the uplink needs:
- the peer's leaf certificate after the handshake (pin check on the box, client identity on the
  back office): `QuicConnection.tls._peer_certificate`;
- a server asking for a client certificate: `tls.Context._request_client_certificate` (documented
  in aioquic as "for test purposes only"). With it set, aioquic sends a CertificateRequest and
  checks the client's CertificateVerify signature (proof that the client holds the key) but it does
  NOT verify the client's chain and it accepts an empty Certificate: the caller must verify
  `peer_certificate_der()` against its CA after the handshake and before serving anything;
- how many bytes of a stream are written but not yet acknowledged (to bound what a sender queues):
  `QuicConnection._streams[id].sender._buffer_start/_buffer_stop`.

Invariant: every access goes through `_private()`, which raises RuntimeError("aioquic changed: ...")
when an attribute is gone, so an aioquic upgrade fails loudly (and `check_private_api()` lets a
server fail at start-up) instead of silently weakening pinning or mutual TLS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.stream import QuicStreamSender
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

_MISSING = object()
_INITIALIZE = "_initialize"
_REQUEST_CLIENT_CERTIFICATE = "_request_client_certificate"


def _private(owner: object, attribute: str) -> Any:
    """`owner.<attribute>`, or RuntimeError naming what aioquic no longer has."""
    value = getattr(owner, attribute, _MISSING)
    if value is _MISSING:
        raise RuntimeError(
            f"aioquic changed: {type(owner).__name__} has no attribute {attribute!r}; "
            "transport/quic_peer.py must be adapted before pinning or mutual TLS can work"
        )
    return value


def peer_certificate_der(quic: QuicConnection) -> bytes | None:
    """The DER of the peer's leaf certificate once the handshake is done; None if it sent none."""
    certificate = _private(_private(quic, "tls"), "_peer_certificate")
    if certificate is None:
        return None
    if not isinstance(certificate, x509.Certificate):
        raise RuntimeError(
            f"aioquic changed: the peer certificate is a {type(certificate).__name__}, "
            "not a cryptography x509.Certificate"
        )
    return certificate.public_bytes(Encoding.DER)


def request_client_certificate(quic: QuicConnection) -> None:
    """Make a server-side connection ask the client for its certificate during the handshake.

    The TLS context only exists once the first datagram arrives (aioquic creates it in
    `_initialize` and answers the ClientHello in the same call), so the flag is set by wrapping
    `_initialize` on this one connection object. Call before the connection receives anything.
    """
    initialize: Callable[[bytes], None] = _private(quic, _INITIALIZE)

    def initialize_then_request_certificate(peer_cid: bytes) -> None:
        initialize(peer_cid)
        context = _private(quic, "tls")
        _private(context, _REQUEST_CLIENT_CERTIFICATE)
        setattr(context, _REQUEST_CLIENT_CERTIFICATE, True)

    setattr(quic, _INITIALIZE, initialize_then_request_certificate)


def stream_send_backlog_bytes(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to `stream_id` that the peer has not acknowledged yet (0 once discarded)."""
    streams: dict[int, Any] = _private(quic, "_streams")
    stream = streams.get(stream_id)
    if stream is None:
        return 0
    sender = _private(stream, "sender")
    backlog: int = _private(sender, "_buffer_stop") - _private(sender, "_buffer_start")
    return backlog


def check_private_api() -> None:
    """Raise RuntimeError now if any private attribute used above is gone (call at start-up)."""
    probe = QuicConnection(configuration=QuicConfiguration(is_client=True))
    _private(probe, _INITIALIZE)
    _private(probe, "_streams")
    context = tls.Context(is_client=False)
    _private(context, _REQUEST_CLIENT_CERTIFICATE)
    _private(context, "_peer_certificate")
    sender = QuicStreamSender(stream_id=0, writable=True)
    _private(sender, "_buffer_start")
    _private(sender, "_buffer_stop")
