"""The back office's pairing core (docs/pairing.md): the back office's operations on the ledger.

The code and the messages are the wire format shared with the box: protocol/pairing_code.py and
protocol/pairing_messages.py. This module is the back office's side: a set of pure functions over
an immutable `PairingLedger` (its records and document: backoffice/pairing_ledger.py):
`issue_code`, `redeem`, `unpair`, `check_client_serial`. They take `now_s` (Unix seconds on the
back office's clock) and return a new ledger. A thin shell (backoffice/pairing_service.py)
persists it (mode 0600, atomically) and serves `POST /pair/v1`.

Invariants:
- A code is redeemed at most once. The only answer a used code gives again is the same
  certificate, to the same public key, within its 15 minutes (docs/pairing.md 5.3).
- A refusal from `redeem` carries the ledger to persist (`PairingRefused.ledger`): a failed proof
  withdraws the code (RULES L2), so a refusal can change state too.
- The nonce and the keys derived from it never appear in a repr, an error message or a grant.
- A grant enrolls the request's device key (an Ed25519 public key, covered by the proof) with
  the box's pairing: the key the box's signed reports are verified against, never a key a
  report carries (backoffice/fleet_reports.py).
- Every collection is bounded: open codes per box and in all, code records (forgotten 7 days after
  expiry), denied serials (forgotten when the certificate expires).
- The only crypto with a side effect is the CA signature (`issue_client_cert_for_csr`), which
  needs randomness. Everything else is a function of its arguments.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from backoffice.pairing_ledger import (
    CodeRecord,
    CodeState,
    DeniedCertificate,
    PairedBox,
    PairingError,
    PairingLedger,
)
from backoffice.pki import LEAF_VALIDITY, Issued
from common.faults import MisuseFault, RemoteFault, TransientFault

# ALPHABET, NONCE_BYTES and PairingCode are re-exported (`X as X`): the admin's tools and tests
# reach the code through this module.
from protocol.pairing_code import ALPHABET as ALPHABET
from protocol.pairing_code import NONCE_BYTES as NONCE_BYTES
from protocol.pairing_code import CodeFormatError, proof_of
from protocol.pairing_code import PairingCode as PairingCode
from protocol.pairing_messages import (
    BOX_ID_PATTERN,
    MAX_PINS,
    MAX_TUF_ROOT_BYTES,
    REFUSAL_STATUS,
    MessageFormatError,
    PairingGrant,
    PairingRequest,
    RefusalKind,
    RefusalMessage,
    ServiceEndpoint,
)
from storage.devicekey import DeviceKeyError, DevicePublicKey
from transport.pinning import PinFormatError, parse_pin

CODE_VALIDITY_S: Final = 15 * 60
MAX_OPEN_CODES_PER_BOX: Final = 3
MAX_OPEN_CODES: Final = 1024
CODE_RECORD_KEEP_S: Final = 7 * 24 * 3600
"""A used or expired code is remembered this long, so that it is refused as reused or expired
rather than unknown."""
_ORGANIZATION: Final = "Mobile Video Box"
_BACKDATE: Final = datetime.timedelta(minutes=5)


# --- errors, by fault ----------------------------------------------------------------------------


class AdminInputError(PairingError, ValueError, MisuseFault):
    """The admin asked for something impossible: a bad box id, address, pin set or nonce."""


class TooManyOpenCodes(PairingError, TransientFault):
    """The bound on open codes (per box or in all) is reached; wait for codes to expire."""


class NotPaired(PairingError, MisuseFault):
    """`unpair` of a box that is not paired."""


class CertificateDenied(PairingError, RemoteFault):
    """A client certificate whose serial is on the deny list; `reason` is why ("unpaired": an
    admin removed the box; "re-paired": a newer certificate replaced it)."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class PairingRefused(PairingError, RemoteFault):
    """`redeem` (or the listener) refuses a request. `kind` and `http_status` are the refusal of
    docs/pairing.md 3.3; `ledger` is the ledger to persist (it may differ from the input: see
    ProofInvalid)."""

    kind: ClassVar[RefusalKind]
    http_status: ClassVar[int]

    def __init__(self, message: str, ledger: PairingLedger | None = None) -> None:
        super().__init__(message)
        self.ledger = ledger

    def message(self) -> RefusalMessage:
        """The refusal as it goes on the wire (3.3)."""
        return RefusalMessage(self.kind, str(self))


class MalformedRequest(PairingRefused):
    kind = RefusalKind.MALFORMED_REQUEST
    http_status = REFUSAL_STATUS[kind]


class CodeUnknown(PairingRefused):
    kind = RefusalKind.CODE_UNKNOWN
    http_status = REFUSAL_STATUS[kind]


class CodeExpired(PairingRefused):
    kind = RefusalKind.CODE_EXPIRED
    http_status = REFUSAL_STATUS[kind]


class CodeReused(PairingRefused):
    kind = RefusalKind.CODE_REUSED
    http_status = REFUSAL_STATUS[kind]


class CodeWithdrawn(PairingRefused):
    kind = RefusalKind.CODE_WITHDRAWN
    http_status = REFUSAL_STATUS[kind]


class ProofInvalid(PairingRefused):
    """The proof does not match: whoever sent it does not know the nonce. The code is withdrawn."""

    kind = RefusalKind.PROOF_INVALID
    http_status = REFUSAL_STATUS[kind]


class BoxIdMismatch(PairingRefused):
    kind = RefusalKind.BOX_ID_MISMATCH
    http_status = REFUSAL_STATUS[kind]


class CsrInvalid(PairingRefused):
    kind = RefusalKind.CSR_INVALID
    http_status = REFUSAL_STATUS[kind]


class AlreadyPaired(PairingRefused):
    kind = RefusalKind.ALREADY_PAIRED
    http_status = REFUSAL_STATUS[kind]


class RateLimited(PairingRefused):
    """Too many requests from one address or in all: refused by the listener before the body is
    read, so the code is untouched (docs/pairing.md 4.4). Never raised by `redeem`."""

    kind = RefusalKind.RATE_LIMITED
    http_status = REFUSAL_STATUS[kind]


REFUSALS: Final[tuple[type[PairingRefused], ...]] = (  # what `redeem` raises
    MalformedRequest,
    CodeUnknown,
    CodeExpired,
    CodeReused,
    CodeWithdrawn,
    ProofInvalid,
    BoxIdMismatch,
    CsrInvalid,
    AlreadyPaired,
)


def refusal_json(refusal: PairingRefused) -> bytes:
    """The body of the answer to a refused request; its status is `refusal.http_status`."""
    return refusal.message().to_json()


# --- the back office's operations -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackOfficeTrust:
    """What every grant hands out. Invariants: 1 to MAX_PINS valid pins, the serving pin first
    (codes check it); a TUF root of 1 to MAX_TUF_ROOT_BYTES bytes (opaque here); the endpoint of
    the mutual-TLS listener that paired boxes use (canonical by its own invariant)."""

    pins: tuple[str, ...]
    tuf_root: bytes = field(repr=False)
    service: ServiceEndpoint

    def __post_init__(self) -> None:
        _check_pins(self.pins)
        if not 1 <= len(self.tuf_root) <= MAX_TUF_ROOT_BYTES:
            raise AdminInputError(f"the TUF root must be 1 to {MAX_TUF_ROOT_BYTES} bytes")


def _check_pins(pins: Sequence[str]) -> None:
    if not 1 <= len(pins) <= MAX_PINS:
        raise AdminInputError(f"the back office needs 1 to {MAX_PINS} pins, not {len(pins)}")
    try:
        for pin in pins:
            parse_pin(pin)
    except PinFormatError as exc:
        raise AdminInputError(str(exc)) from None


def _check_box_id(box_id: str) -> None:
    if not BOX_ID_PATTERN.fullmatch(box_id):
        raise AdminInputError(f"box id {box_id!r} must match {BOX_ID_PATTERN.pattern}")


def prune_ledger(ledger: PairingLedger, now_s: float) -> PairingLedger:
    """Forget code records 7 days after their expiry and denied serials whose certificate has
    expired. Every operation below prunes first, which keeps the ledger bounded."""
    return replace(
        ledger,
        codes=tuple(r for r in ledger.codes if now_s < r.expires_at_s + CODE_RECORD_KEEP_S),
        denied=tuple(d for d in ledger.denied if now_s < d.not_after_s),
    )


def issue_code(
    ledger: PairingLedger,
    box_id: str,
    address: str,
    pins: Sequence[str],
    now_s: float,
    nonce_bytes: bytes,
    *,
    re_pair: bool = False,
) -> tuple[PairingLedger, PairingCode]:
    """A new one-time code for `box_id` (`mvb-admin pair-code`). `pins[0]` is the pin of the key
    the pairing endpoint presents; `nonce_bytes` are NONCE_BYTES from a CSPRNG. A paired box gets
    a code only with `re_pair`, and that code replaces exactly the box's current certificate."""
    _check_box_id(box_id)
    _check_pins(pins)
    if len(nonce_bytes) != NONCE_BYTES:
        raise AdminInputError(f"a nonce is {NONCE_BYTES} bytes, not {len(nonce_bytes)}")
    try:
        code = PairingCode.for_back_office(address, nonce_bytes, pins[0])
    except CodeFormatError as exc:
        raise AdminInputError(str(exc)) from None
    ledger = prune_ledger(ledger, now_s)
    current = ledger.pairing_of(box_id)
    if current is not None and not re_pair:
        raise AlreadyPaired(
            f"box {box_id} is paired (certificate serial {current.serial:x}); "
            "make a re-pair code to pair it again",
            ledger,
        )
    _check_open_code_bounds(ledger, box_id, now_s)
    if ledger.code(code.code_id) is not None:
        raise AdminInputError("this nonce was used before: the random source is broken")
    record = CodeRecord(
        code_id=code.code_id,
        box_id=box_id,
        issued_at_s=now_s,
        expires_at_s=now_s + CODE_VALIDITY_S,
        state=CodeState.OPEN,
        proof_key=code.proof_key,
        replaces_serial=None if current is None else current.serial,
    )
    return replace(ledger, codes=(*ledger.codes, record)), code


def _check_open_code_bounds(ledger: PairingLedger, box_id: str, now_s: float) -> None:
    live = [record for record in ledger.codes if record.is_live(now_s)]
    if len(live) >= MAX_OPEN_CODES:
        raise TooManyOpenCodes(f"{len(live)} codes are open; wait until some expire")
    if sum(record.box_id == box_id for record in live) >= MAX_OPEN_CODES_PER_BOX:
        raise TooManyOpenCodes(
            f"box {box_id} has {MAX_OPEN_CODES_PER_BOX} open codes; use one or let them expire"
        )


def redeem(
    ledger: PairingLedger,
    request_json: bytes,
    now_s: float,
    ca: Issued,
    trust: BackOfficeTrust,
) -> tuple[PairingLedger, PairingGrant]:
    """Check a box's request (docs/pairing.md 4.2, in that order) and grant it a certificate.

    Raises a PairingRefused subclass by fault; its `ledger` is the ledger to persist.
    """
    ledger = prune_ledger(ledger, now_s)
    try:
        request = PairingRequest.from_json(request_json)
    except MessageFormatError as exc:
        raise MalformedRequest(str(exc), ledger) from None
    try:
        DevicePublicKey.from_raw(request.device_key, source="the request's device_key")
    except DeviceKeyError as exc:
        raise MalformedRequest(str(exc), ledger) from None
    record = ledger.code(request.code_id)
    if record is None:
        raise CodeUnknown(
            "the back office does not know this pairing code; ask the admin for a new one", ledger
        )
    if record.state is CodeState.WITHDRAWN:
        raise CodeWithdrawn("this pairing code was withdrawn; ask the admin for a new one", ledger)
    _check_proof(ledger, record, request)
    if record.state is CodeState.USED:
        return ledger, _grant_again(ledger, record, request, now_s, ca, trust)
    _check_window(ledger, record, now_s)
    if request.box_id != record.box_id:
        raise BoxIdMismatch(
            f"this pairing code is for another box than {request.box_id}; "
            "enter it on the box it was made for",
            ledger,
        )
    csr = _valid_csr(ledger, request)
    _check_pairing_state(ledger, record)
    return _grant(ledger, record, csr, request.device_key, now_s, ca, trust)


def _check_proof(ledger: PairingLedger, record: CodeRecord, request: PairingRequest) -> None:
    expected = proof_of(record.proof_key, request.box_id, request.device_key, request.csr_der)
    if hmac.compare_digest(expected, request.proof):
        return
    # Only someone without the nonce gets here: an attacker or a tampered request (RULES L2).
    withdrawn = ledger
    if record.state is CodeState.OPEN:
        withdrawn = _replace_code(ledger, replace(record, state=CodeState.WITHDRAWN))
    raise ProofInvalid(
        "the request does not prove knowledge of the pairing code; the code is withdrawn, "
        "ask the admin for a new one",
        withdrawn,
    )


def _check_window(ledger: PairingLedger, record: CodeRecord, now_s: float) -> None:
    if now_s < record.issued_at_s:
        raise CodeExpired(
            "the back office clock is before this code's issue time; ask for a new code", ledger
        )
    if now_s >= record.expires_at_s:
        minutes = CODE_VALIDITY_S // 60
        raise CodeExpired(
            f"this pairing code expired ({minutes} minutes after it was made); "
            "ask the admin for a new one",
            ledger,
        )


def _grant_again(
    ledger: PairingLedger,
    record: CodeRecord,
    request: PairingRequest,
    now_s: float,
    ca: Issued,
    trust: BackOfficeTrust,
) -> PairingGrant:
    """A used code answers again only a lost grant: same key, inside the window (5.3)."""
    assert record.certificate_pem is not None  # a USED record holds its certificate
    certificate = x509.load_pem_x509_certificate(record.certificate_pem)
    if record.issued_at_s <= now_s < record.expires_at_s and _spki_der(
        certificate.public_key()
    ) == _csr_spki_der(request.csr_der):
        return _grant_message(record.box_id, record.certificate_pem, ca, trust)
    raise CodeReused(
        "this pairing code was already used; ask the admin for a new one "
        "(if this box did not use it, tell the admin: someone else did)",
        ledger,
    )


def _spki_der(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _csr_spki_der(csr_der: bytes) -> bytes | None:
    try:
        return _spki_der(x509.load_der_x509_csr(csr_der).public_key())
    except (ValueError, UnsupportedAlgorithm):
        return None


def _valid_csr(ledger: PairingLedger, request: PairingRequest) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_der_x509_csr(request.csr_der)
        signature_ok = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm, InvalidSignature):
        raise CsrInvalid("the certificate request is not a PKCS#10 request", ledger) from None
    if not signature_ok:
        raise CsrInvalid("the certificate request's signature does not verify", ledger)
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or names[0].value != request.box_id:
        raise CsrInvalid(
            f"the certificate request's CN must be the box id {request.box_id}", ledger
        )
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CsrInvalid("the certificate request's key must be ECDSA P-256", ledger)
    return csr


def _check_pairing_state(ledger: PairingLedger, record: CodeRecord) -> None:
    current = ledger.pairing_of(record.box_id)
    current_serial = None if current is None else current.serial
    if current_serial == record.replaces_serial:
        return
    raise AlreadyPaired(
        f"box {record.box_id} was paired (again) after this code was made; "
        "the admin must make a re-pair code",
        ledger,
    )


def _grant(
    ledger: PairingLedger,
    record: CodeRecord,
    csr: x509.CertificateSigningRequest,
    device_key: bytes,
    now_s: float,
    ca: Issued,
    trust: BackOfficeTrust,
) -> tuple[PairingLedger, PairingGrant]:
    certificate = issue_client_cert_for_csr(ca, csr, record.box_id, now_s)
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    not_after_s = certificate.not_valid_after_utc.timestamp()
    denied = ledger.denied
    current = ledger.pairing_of(record.box_id)
    if current is not None:
        denied = (*denied, _denial(current, now_s, "re-paired"))
    pairing = PairedBox(record.box_id, certificate.serial_number, now_s, not_after_s, device_key)
    used = replace(record, state=CodeState.USED, certificate_pem=pem)
    new_ledger = replace(
        _replace_code(ledger, used),
        paired=(*(box for box in ledger.paired if box.box_id != record.box_id), pairing),
        denied=denied,
    )
    return new_ledger, _grant_message(record.box_id, pem, ca, trust)


def _grant_message(box_id: str, pem: bytes, ca: Issued, trust: BackOfficeTrust) -> PairingGrant:
    return PairingGrant(box_id, pem, ca.cert_pem, trust.pins, trust.tuf_root, trust.service)


def _denial(box: PairedBox, now_s: float, reason: str) -> DeniedCertificate:
    return DeniedCertificate(box.serial, box.box_id, now_s, box.not_after_s, reason)


def _replace_code(ledger: PairingLedger, record: CodeRecord) -> PairingLedger:
    codes = tuple(record if r.code_id == record.code_id else r for r in ledger.codes)
    return replace(ledger, codes=codes)


def unpair(ledger: PairingLedger, box_id: str, now_s: float) -> PairingLedger:
    """Withdraw a box (`mvb-admin unpair`): its serial goes on the deny list and its open codes
    are withdrawn. NotPaired if the box is not paired."""
    ledger = prune_ledger(ledger, now_s)
    current = ledger.pairing_of(box_id)
    if current is None:
        raise NotPaired(f"box {box_id} is not paired")
    codes = tuple(
        replace(r, state=CodeState.WITHDRAWN)
        if r.box_id == box_id and r.state is CodeState.OPEN
        else r
        for r in ledger.codes
    )
    return PairingLedger(
        codes=codes,
        paired=tuple(box for box in ledger.paired if box.box_id != box_id),
        denied=(*ledger.denied, _denial(current, now_s, "unpaired")),
    )


def check_client_serial(ledger: PairingLedger, serial: int) -> None:
    """The server's check on every request of a mutual-TLS client: CertificateDenied if the
    certificate was withdrawn."""
    entry = next((d for d in ledger.denied if d.serial == serial), None)
    if entry is not None:
        raise CertificateDenied(
            f"the certificate {serial:x} of box {entry.box_id} was withdrawn ({entry.reason})",
            reason=entry.reason,
        )


# --- the CA's signature ---------------------------------------------------------------------------


def issue_client_cert_for_csr(
    ca: Issued, csr: x509.CertificateSigningRequest, box_id: str, now_s: float
) -> x509.Certificate:
    """A box's client certificate for the CSR's public key, shaped like backoffice/pki.py's client
    certificates (docs/pairing.md 3.2). Only the key is taken from the CSR: its subject and
    extensions are ignored, so the box cannot ask for more than a client certificate."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise AdminInputError("the back office CA key must be ECDSA (backoffice/pki.py)")
    now = datetime.datetime.fromtimestamp(now_s, tz=datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, box_id),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
