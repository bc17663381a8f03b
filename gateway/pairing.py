"""The box's side of pairing (docs/pairing.md): typed code -> key pair and request -> checked grant.

A pure core: no sockets and no files. The shell:

1. `start_pairing(typed_code, box_id, device_key)` makes a PairingAttempt: a fresh P-256 key, a
   CSR with CN = box id, and the request (`attempt.request_json()`), which enrolls the box's
   device public key;
2. connects with TLS to `attempt.code.endpoint_url` without checking the chain or the name (the
   box has no CA yet), and calls `check_server_certificate` right after the handshake, before it
   sends a byte;
3. POSTs the request, and hands a 200 answer to `accept_grant`. Any other answer goes to
   `refusal_from_answer`;
4. on a lost connection it sends the same request again (docs/pairing.md 5.3), never a new key.

Invariants:
- The private key is made here and never leaves the attempt. Only the CSR and an HMAC proof are
  sent, and neither reveals the nonce. Key and nonce stay out of every repr and message.
- Every failure that involves the back office's identity (WrongServerKey, GrantRejected)
  withdraws the pairing (RULES L2): the shell MUST discard the attempt (code and key). The
  officer then needs a new code. No failure here is retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.faults import ConfigurationFault, RemoteFault
from protocol.pairing_code import CodeFormatError, CodeTypo, PairingCode, pin_check_of, proof_of
from protocol.pairing_messages import (
    BOX_ID_PATTERN,
    MessageFormatError,
    PairingGrant,
    PairingRequest,
    ServiceEndpoint,
    parse_refusal,
)
from transport.pinning import parse_pin, spki_sha256

__all__ = [
    "BoxIdInvalid",
    "CodeFormatError",
    "CodeTypo",
    "GrantChainInvalid",
    "GrantKeyMismatch",
    "GrantMalformed",
    "GrantPinMismatch",
    "GrantRejected",
    "GrantWrongBox",
    "PairedCredentials",
    "PairingAttempt",
    "PairingFailed",
    "RefusedByBackOffice",
    "WrongServerKey",
    "accept_grant",
    "check_server_certificate",
    "parse_code",
    "refusal_from_answer",
    "start_pairing",
]

_ORGANIZATION: Final = "Mobile Video Box"


class PairingFailed(Exception):
    """Base of the box's pairing errors, never raised itself; each kind below has its root in
    common/faults.py (the back office's answer: RemoteFault; unreachable: TransientFault; the box's
    own id: ConfigurationFault; already paired: MisuseFault). `withdraws` is true when the shell
    MUST discard the attempt and the officer needs a new code (RULES L2)."""

    withdraws: bool = True


class BoxIdInvalid(PairingFailed, ValueError, ConfigurationFault):
    """The box's own id (local configuration) cannot be a certificate CN."""

    withdraws = False


class WrongServerKey(PairingFailed, RemoteFault):
    """The server's key is not the one the code names: a wrong address or an interception.
    Nothing was sent; the code is withdrawn (docs/pairing.md 4.1)."""


class GrantRejected(PairingFailed, RemoteFault):
    """The grant fails a check of docs/pairing.md 4.3; the code is withdrawn."""


class GrantMalformed(GrantRejected):
    """The grant breaks the message format (3.2)."""


class GrantWrongBox(GrantRejected):
    """The grant or its certificate names another box."""


class GrantKeyMismatch(GrantRejected):
    """The certificate is not for the key this attempt made."""


class GrantChainInvalid(GrantRejected):
    """The certificate is not a client certificate signed by the CA in the grant."""


class GrantPinMismatch(GrantRejected):
    """No pin of the grant is the key the code names."""


class RefusedByBackOffice(PairingFailed, RemoteFault):
    """The back office refused the request. `kind` is a refusal of docs/pairing.md 3.3, or
    "unreadable" when the answer was not one; the message is the back office's, for the
    officer."""

    def __init__(self, kind: str, message: str, http_status: int) -> None:
        super().__init__(f"the back office refused pairing ({kind}): {message}")
        self.kind = kind
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class PairedCredentials:
    """What a paired box keeps: its client certificate and key, the back office CA, the pin set,
    the fleet's TUF root (opaque bytes here) and where the mutual-TLS listener is (`service`).
    `address` is the pairing endpoint the code named. The key stays out of repr."""

    box_id: str
    address: str
    certificate_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_certificate_pem: bytes
    pins: tuple[str, ...]
    tuf_root: bytes = field(repr=False)
    service: ServiceEndpoint


@dataclass(frozen=True, slots=True)
class PairingAttempt:
    """One try at pairing with one code. Invariants: `key_pem` is a fresh P-256 key made for
    this attempt only, and `csr_der` is signed by it with CN = `box_id`."""

    code: PairingCode
    box_id: str
    key_pem: bytes = field(repr=False)
    csr_der: bytes
    device_key: bytes
    """The box's device public key (32 bytes): the back office enrolls it with the pairing and
    verifies the box's signed reports against it."""

    def request(self) -> PairingRequest:
        proof = proof_of(self.code.proof_key, self.box_id, self.device_key, self.csr_der)
        return PairingRequest(self.box_id, self.code.code_id, self.device_key, self.csr_der, proof)

    def request_json(self) -> bytes:
        """The body of `POST /pair/v1` (docs/pairing.md 3.1). Identical on every call."""
        return self.request().to_json()

    def public_key_der(self) -> bytes:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        return key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def parse_code(typed: str) -> PairingCode:
    """The code as the officer typed it; CodeFormatError (CodeTypo for a typo) says what is
    wrong, before any connection is made."""
    return PairingCode.parse(typed)


def start_pairing(
    typed_code: str,
    box_id: str,
    device_key: bytes,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> PairingAttempt:
    """Parse the code and make a fresh key pair and CSR for `box_id`, whose device public key
    (32 bytes) the request enrolls. `key` is for tests only: a real box always lets this make
    its key."""
    if not BOX_ID_PATTERN.fullmatch(box_id):
        raise BoxIdInvalid(f"box id {box_id!r} must match {BOX_ID_PATTERN.pattern}")
    code = parse_code(typed_code)
    private_key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, box_id),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .sign(private_key, hashes.SHA256())
    )
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    return PairingAttempt(code, box_id, key_pem, csr_der, device_key)


def check_server_certificate(attempt: PairingAttempt, der_certificate: bytes | None) -> None:
    """WrongServerKey unless the TLS peer's key is the one the code names (docs/pairing.md 4.1).
    Call it right after the handshake, before sending anything."""
    if der_certificate is None:
        raise WrongServerKey("the server presented no certificate; pairing withdrawn")
    try:
        digest = spki_sha256(der_certificate)
    except ValueError:
        raise WrongServerKey("the server's certificate is unreadable; pairing withdrawn") from None
    if not attempt.code.matches_server_key(digest):
        raise WrongServerKey(
            f"the server at {attempt.code.address} is not the back office this code names "
            "(wrong address or an interception); pairing withdrawn, ask for a new code"
        )


def accept_grant(attempt: PairingAttempt, grant_json: bytes) -> PairedCredentials:
    """Check a grant (docs/pairing.md 4.3, in that order) and return what the box keeps.
    Raises a GrantRejected subclass by fault. The service endpoint is checked for its form only
    (step 1): it came over the connection whose key the code named, like the pins."""
    try:
        grant = PairingGrant.from_json(grant_json)
    except MessageFormatError as exc:
        raise GrantMalformed(str(exc)) from None
    certificate = _load_certificate(grant.certificate_pem, "certificate")
    _check_names(attempt, grant, certificate)
    _check_key(attempt, certificate)
    _check_chain(certificate, _load_certificate(grant.ca_certificate_pem, "CA certificate"))
    _check_pins(attempt, grant.pins)
    return PairedCredentials(
        box_id=attempt.box_id,
        address=attempt.code.address,
        certificate_pem=grant.certificate_pem,
        key_pem=attempt.key_pem,
        ca_certificate_pem=grant.ca_certificate_pem,
        pins=grant.pins,
        tuf_root=grant.tuf_root,
        service=grant.service,
    )


def _load_certificate(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise GrantMalformed(f"the grant's {what} is not a PEM certificate") from None


def _check_names(
    attempt: PairingAttempt, grant: PairingGrant, certificate: x509.Certificate
) -> None:
    if grant.box_id != attempt.box_id:
        raise GrantWrongBox(f"the grant is for box {grant.box_id}, this is {attempt.box_id}")
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or names[0].value != attempt.box_id:
        raise GrantWrongBox(f"the certificate's CN is not this box's id {attempt.box_id}")


def _check_key(attempt: PairingAttempt, certificate: x509.Certificate) -> None:
    certified = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if certified != attempt.public_key_der():
        raise GrantKeyMismatch("the certificate is not for the key this box made; withdrawn")


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _has_client_usage(certificate: x509.Certificate) -> bool:
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in usages


def _check_chain(certificate: x509.Certificate, ca: x509.Certificate) -> None:
    """Signature and roles only: the box's clock may be unset before its first link, so dates
    are the back office's to check (docs/pairing.md 4.3 step 4)."""
    if not _is_ca(ca):
        raise GrantChainInvalid("the grant's CA certificate is not a CA")
    try:
        ca.verify_directly_issued_by(ca)
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise GrantChainInvalid("the certificate is not signed by the grant's CA") from None
    if _is_ca(certificate) or not _has_client_usage(certificate):
        raise GrantChainInvalid("the certificate is not a client certificate")


def _check_pins(attempt: PairingAttempt, pins: tuple[str, ...]) -> None:
    code = attempt.code
    if not any(pin_check_of(code.nonce, parse_pin(pin)) == code.pin_check for pin in pins):
        raise GrantPinMismatch(
            "no pin of the grant is the back-office key this code names; pairing withdrawn"
        )


def refusal_from_answer(http_status: int, body: bytes) -> RefusedByBackOffice:
    """The error to raise for a non-200 answer to the request. A body that is not a refusal
    (docs/pairing.md 3.3) is reported as "unreadable", with the status only."""
    try:
        refusal = parse_refusal(body)
    except MessageFormatError:
        return RefusedByBackOffice(
            "unreadable", f"HTTP status {http_status} without a readable refusal", http_status
        )
    return RefusedByBackOffice(refusal.kind, refusal.message, http_status)
