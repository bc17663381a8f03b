"""TLS with the cameras: the contexts and the handshakes, with refusals by reason.

A push camera connects to the box: the box is the TLS server, presents its own certificate
(`tls_cert_file`, which the camera checks) and requires the camera's client certificate. A pull
camera is an RTSPS server: the box is the TLS client and requires the camera's server
certificate. Either way OpenSSL checks the chain against the camera's trust anchors during the
handshake, and gateway/capture/camera_trust.py judges the certificate after it; no byte of the
stream is read before both passed.

Invariants:
- TLS 1.2 or newer; a certificate is always required of the camera (never optional).
- The certificate's validity dates are not checked (X509_V_FLAG_NO_CHECK_TIME): the box has no
  real-time clock, and a box booting with its clock behind must not refuse its own cameras and
  lose evidence. Trust ends by configuration: a pinned certificate replaced, a serial changed
  or the camera CA rotated (docs/capture.md).
- A pinned certificate that is not self-signed is still an anchor on its own
  (VERIFY_X509_PARTIAL_CHAIN); camera_trust then accepts exactly that certificate.
- Every failure is CameraRefused with a reason code; the socket is closed by the caller.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from gateway.capture.camera_trust import (
    HANDSHAKE_FAILED,
    NO_CERTIFICATE,
    NOT_TLS,
    TIMEOUT,
    UNTRUSTED_CERTIFICATE,
    CameraRefused,
    CameraTrust,
    judge_certificate,
)

X509_V_FLAG_NO_CHECK_TIME = 0x200000  # OpenSSL's x509_vfy.h; the ssl module has no name for it
HANDSHAKE_TIMEOUT_S = 5.0

# OpenSSL reasons for bytes that are not a TLS handshake at all (plain MPEG-TS starts with 'G',
# which OpenSSL takes for an HTTP request).
_NOT_TLS_REASONS = frozenset(
    {"HTTP_REQUEST", "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"}
)


def server_context(cert_path: Path, key_path: Path, trust: CameraTrust) -> ssl.SSLContext:
    """The box's side of a push camera's TLS. OSError/ssl.SSLError for unusable files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    # No session tickets: a TLS 1.3 server sends them after the handshake, a camera that only
    # writes never reads them, and when it closes with them unread its kernel answers with a
    # reset, which makes the box's kernel drop the camera's last unread bytes (measured: the
    # last 15 % of a fast push). Resumption buys nothing for one long stream.
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
    _require_camera_certificate(context, trust)
    return context


def client_context(trust: CameraTrust) -> ssl.SSLContext:
    """The box's side of a pull camera's RTSPS. The camera is known by its certificate and
    serial, not by a host name (it sits at an address on the vehicle network)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    _require_camera_certificate(context, trust)
    return context


def _require_camera_certificate(context: ssl.SSLContext, trust: CameraTrust) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=trust.anchors_pem.decode("ascii"))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.verify_flags |= X509_V_FLAG_NO_CHECK_TIME


def admit_tls(
    sock: socket.socket,
    context: ssl.SSLContext,
    trust: CameraTrust,
    timeout_s: float = HANDSHAKE_TIMEOUT_S,
) -> ssl.SSLSocket:
    """The TLS server handshake on an accepted connection, then the camera judged: the
    connection to read the stream from, or CameraRefused."""
    sock.settimeout(timeout_s)
    try:
        tls = context.wrap_socket(sock, server_side=True)
    except (OSError, ssl.SSLError) as exc:
        raise CameraRefused(refusal_reason(exc)) from exc
    return _judged(tls, trust)


def connect_tls(
    host: str,
    port: int,
    context: ssl.SSLContext,
    trust: CameraTrust,
    timeout_s: float = HANDSHAKE_TIMEOUT_S,
) -> ssl.SSLSocket:
    """Connect to a pull camera and check it is the configured one. OSError when nothing
    answers (a camera that is down); CameraRefused when what answers is not the camera."""
    sock = socket.create_connection((host, port), timeout=timeout_s)
    try:
        tls = context.wrap_socket(sock, server_side=False)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise CameraRefused(refusal_reason(exc)) from exc
    return _judged(tls, trust)


def _judged(tls: ssl.SSLSocket, trust: CameraTrust) -> ssl.SSLSocket:
    reason = judge_certificate(trust, tls.getpeercert(binary_form=True))
    if reason is not None:
        tls.close()
        raise CameraRefused(reason)
    return tls


def refusal_reason(exc: BaseException) -> str:
    """The refusal reason code for a failed handshake (pure)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UNTRUSTED_CERTIFICATE
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return NO_CERTIFICATE
        if reason in _NOT_TLS_REASONS:
            return NOT_TLS
    # Anything else, including alerts the peer sent because it did not trust the box's own
    # certificate (TLSV1_ALERT_UNKNOWN_CA): the handshake failed, nothing was read.
    return HANDSHAKE_FAILED
