"""The one place that reaches into aioquic's private attributes (aioquic 1.7).

aioquic has no public API for three things the uplink needs:
- the peer's leaf certificate after the handshake (pin check on the box, client identity on the
  back office): `QuicConnection.tls._peer_certificate`, and its intermediates
  (`_peer_certificate_chain`: the box verifies the chain itself when it judges dates by
  trusted time, transport/cert_validity.py);
- a server asking for a client certificate: `tls.Context._request_client_certificate` (documented
  in aioquic as "for test purposes only"). With it set, aioquic sends a CertificateRequest and
  checks the client's CertificateVerify signature (proof that the client holds the key) but it does
  NOT verify the client's chain and it accepts an empty Certificate: the caller must verify
  `peer_certificate_der()` against its CA after the handshake and before serving anything;
- how many bytes of a stream are written but not yet acknowledged (to bound what a sender queues):
  `QuicConnection._streams[id].sender._buffer_start/_buffer_stop`;
- a client checking the server's key inside the handshake, before its own certificate (which
  names the box) goes out: `tls.Context._client_handle_certificate_verify`, the step after which
  aioquic has verified the server's CertificateVerify signature, chain and host name and before
  the server's Finished, the client's Certificate and the client's Finished.

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
_CLIENT_HANDLE_CERTIFICATE_VERIFY = "_client_handle_certificate_verify"


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


def peer_intermediates_der(quic: QuicConnection) -> list[bytes]:
    """The DER of the certificates the peer sent after its leaf (its intermediates)."""
    chain = _private(_private(quic, "tls"), "_peer_certificate_chain")
    if not all(isinstance(c, x509.Certificate) for c in chain):
        raise RuntimeError("aioquic changed: the peer chain is not cryptography certificates")
    return [c.public_bytes(Encoding.DER) for c in chain]


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


def check_server_before_client_certificate(
    quic: QuicConnection, check: Callable[[bytes], None]
) -> None:
    """Make a client connection run `check(server leaf DER)` inside the TLS handshake.

    It runs once aioquic has verified the server's CertificateVerify (the server holds the key
    of the certificate it sent), the chain and the host name, and before the client sends
    anything of its own: its Certificate (the box's, whose subject is the device serial),
    CertificateVerify and Finished go out only after the server's Finished. If `check` raises,
    the handshake ends with a bad_certificate alert and the box's certificate is never sent.
    Like `request_client_certificate`, it wraps `_initialize` (which makes the TLS context, on
    connect and again after a Retry). Call before `connect()`.
    """
    initialize: Callable[[bytes], None] = _private(quic, _INITIALIZE)

    def initialize_then_hook_verify(peer_cid: bytes) -> None:
        initialize(peer_cid)
        context = _private(quic, "tls")
        verify: Callable[[Any], None] = _private(context, _CLIENT_HANDLE_CERTIFICATE_VERIFY)

        def verify_then_check(input_buf: Any) -> None:
            verify(input_buf)
            certificate = peer_certificate_der(quic)
            if certificate is None:  # aioquic refuses an empty server Certificate before this
                raise tls.AlertBadCertificate("the server sent no certificate")
            try:
                check(certificate)
            except Exception as exc:
                raise tls.AlertBadCertificate(str(exc)) from exc

        setattr(context, _CLIENT_HANDLE_CERTIFICATE_VERIFY, verify_then_check)

    setattr(quic, _INITIALIZE, initialize_then_hook_verify)


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
    _private(context, "_peer_certificate_chain")
    _private(tls.Context(is_client=True), _CLIENT_HANDLE_CERTIFICATE_VERIFY)
    sender = QuicStreamSender(stream_id=0, writable=True)
    _private(sender, "_buffer_start")
    _private(sender, "_buffer_stop")
