"""Whether a TLS peer is the configured camera (pure: certificates in, a verdict out).

The box trusts a camera's certificate in one of two ways (docs/capture.md, "Camera
authentication"): *pinned*, the camera's own certificate is in the configuration
(`camera_cert_file`) and only that certificate is accepted; or *by CA*, a camera CA
(`camera_ca_file`) issued it. In both ways the certificate must name the camera's configured
serial, so a camera CA shared by a fleet of cameras never lets camera BC-2 stand in for BC-1.

The chain itself is checked by OpenSSL against `anchors_pem` during the handshake
(gateway/capture/camera_tls.py); `judge_certificate` runs after it, on the certificate the peer
presented. Invariants:
- no certificate, a certificate other than the pinned one, or one naming another serial is a
  refusal with a reason code (REFUSAL_REASONS), never an exception;
- a certificate's camera identity is its subject serialNumber attribute (where device
  certificates such as IEEE 802.1AR keep it) or, without one, its common name;
- a pinned certificate that does not itself name the configured serial is a configuration
  error at start (TrustError), not a refusal at every connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from common.faults import ConfigurationFault, RemoteFault

# Why a sender was refused: what the audit log and the alarm say (never a secret).
NO_CERTIFICATE = "no_certificate"  # TLS without a client certificate
UNTRUSTED_CERTIFICATE = "untrusted_certificate"  # not the pinned one, or no path to the CA
FOREIGN_CAMERA = "foreign_camera"  # a trusted certificate naming another camera
NOT_TLS = "not_tls"  # plaintext where TLS is required
HANDSHAKE_FAILED = "handshake_failed"  # any other TLS failure
TIMEOUT = "timeout"  # said nothing (or too little) within the bound
NO_CREDENTIALS = "no_credentials"  # RTSP without an Authorization header, given up
BAD_CREDENTIALS = "bad_credentials"  # RTSP digest with a wrong user or password
PROTOCOL_ERROR = "protocol_error"  # not RTSP, or an oversized or malformed message
LOOPBACK_TAKEN = "loopback_taken"  # the box's internal RTSP listener served someone else
REFUSAL_REASONS = frozenset(
    {
        NO_CERTIFICATE,
        UNTRUSTED_CERTIFICATE,
        FOREIGN_CAMERA,
        NOT_TLS,
        HANDSHAKE_FAILED,
        TIMEOUT,
        NO_CREDENTIALS,
        BAD_CREDENTIALS,
        PROTOCOL_ERROR,
        LOOPBACK_TAKEN,
    }
)

PINNED = "tls-pinned"
BY_CA = "tls-ca"


class TrustError(ValueError, ConfigurationFault):
    """A configured camera certificate or CA that cannot be used; the message says why."""


class CameraRefused(RemoteFault):
    """A sender (or, for a pull camera, the peer at the camera's address) did not prove it is
    the configured camera. `reason` is one of REFUSAL_REASONS."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"camera refused: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CameraTrust:
    """How one camera's certificate is judged. Invariant: `anchors_pem` holds at least one
    certificate; `pinned_der` is set exactly in the pinned way (then it is the only anchor)."""

    serial: str
    anchors_pem: bytes
    pinned_der: bytes | None

    @property
    def method(self) -> str:
        """`tls-pinned` or `tls-ca`: what the recording's metadata says admitted the camera."""
        return PINNED if self.pinned_der is not None else BY_CA


def pinned_trust(serial: str, camera_cert_pem: bytes) -> CameraTrust:
    """Trust exactly the camera certificate in `camera_cert_pem` (its first certificate)."""
    certificate = _first_certificate(camera_cert_pem, "camera_cert_file")
    named = identity_of(certificate)
    if named != serial:
        raise TrustError(
            f"the pinned certificate names {named!r}, not the camera's serial {serial!r}"
        )
    der = certificate.public_bytes(Encoding.DER)
    return CameraTrust(serial, certificate.public_bytes(Encoding.PEM), der)


def ca_trust(serial: str, camera_ca_pem: bytes) -> CameraTrust:
    """Trust certificates issued by the CA(s) in `camera_ca_pem` that name `serial`."""
    certificates = _certificates(camera_ca_pem, "camera_ca_file")
    for certificate in certificates:
        constraints = _basic_constraints(certificate)
        if constraints is None or not constraints.ca:
            raise TrustError("camera_ca_file holds a certificate that is not a CA")
    anchors = b"".join(c.public_bytes(Encoding.PEM) for c in certificates)
    return CameraTrust(serial, anchors, None)


def judge_certificate(trust: CameraTrust, der: bytes | None) -> str | None:
    """The refusal reason for the certificate a peer presented (after OpenSSL verified its
    chain), or None when it is the configured camera's."""
    if der is None:
        return NO_CERTIFICATE
    if trust.pinned_der is not None and der != trust.pinned_der:
        return UNTRUSTED_CERTIFICATE  # e.g. issued by a pinned certificate that is a CA
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        return UNTRUSTED_CERTIFICATE
    return None if identity_of(certificate) == trust.serial else FOREIGN_CAMERA


def identity_of(certificate: x509.Certificate) -> str | None:
    """The camera a certificate names: its subject serialNumber, else its common name."""
    for oid in (NameOID.SERIAL_NUMBER, NameOID.COMMON_NAME):
        attributes = certificate.subject.get_attributes_for_oid(oid)
        if attributes:
            value = attributes[0].value
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def _basic_constraints(certificate: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _first_certificate(pem: bytes, key: str) -> x509.Certificate:
    return _certificates(pem, key)[0]


def _certificates(pem: bytes, key: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TrustError(f"{key} holds no PEM certificate") from exc
    if not certificates:
        raise TrustError(f"{key} holds no PEM certificate")
    return certificates
