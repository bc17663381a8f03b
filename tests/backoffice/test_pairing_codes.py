"""The pairing code and the back office's pairing core (docs/pairing.md), without a network.

Requests come from the box's real core (gateway/pairing.py) unless a test forges one on purpose.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from backoffice.pairing import (
    CODE_RECORD_KEEP_S,
    CODE_VALIDITY_S,
    MAX_OPEN_CODES_PER_BOX,
    REFUSALS,
    AdminInputError,
    AlreadyPaired,
    BackOfficeTrust,
    BoxIdMismatch,
    CertificateDenied,
    CodeExpired,
    CodeReused,
    CodeUnknown,
    CodeWithdrawn,
    CsrInvalid,
    MalformedRequest,
    NotPaired,
    PairingRefused,
    ProofInvalid,
    TooManyOpenCodes,
    check_client_serial,
    issue_code,
    redeem,
    refusal_json,
    unpair,
)
from backoffice.pairing_ledger import CodeState, LedgerFormatError, PairingLedger
from backoffice.pki import Issued, load_issued
from gateway.pairing import PairingAttempt, start_pairing
from protocol.pairing_code import (
    ALPHABET,
    NONCE_BYTES,
    CodeFormatError,
    CodeTypo,
    PairingCode,
    proof_key_of,
    proof_of,
)
from protocol.pairing_messages import (
    REFUSAL_STATUS,
    PairingGrant,
    PairingRequest,
    RefusalKind,
    ServiceEndpoint,
    parse_refusal,
)
from storage.devicekey import DeviceKey
from tests.tls_helpers import TestPki

DEVICE_KEY = DeviceKey.generate().public_key().raw()
"""The box's device public key its pairing requests enroll."""

ADDRESS = "bo.borsele.example:8443"
BOX = "MVB-0042"
OTHER_BOX = "MVB-0043"
T0_S = 1_750_000_000.0
TUF_ROOT = b'{"signed": {"_type": "root"}, "signatures": []}'
SAMPLE_NONCE = bytes.fromhex("2b7e151628aed2a6abf7")
SAMPLE_PIN = "sha256/" + "q" * 43 + "="
SERVICE = ServiceEndpoint.of("bo.borsele.example:8444", "bo.borsele.example", 8444)


def nonce(n: int) -> bytes:
    """A distinct nonce per test step (a real shell uses secrets.token_bytes)."""
    return n.to_bytes(NONCE_BYTES, "big")


@pytest.fixture(scope="module")
def ca(pki: TestPki) -> Issued:
    return load_issued(pki.ca_cert, pki.ca_key)


@pytest.fixture(scope="module")
def trust(pki: TestPki) -> BackOfficeTrust:
    return BackOfficeTrust((pki.server_pin, pki.backup_pin), TUF_ROOT, SERVICE)


def issue(
    trust: BackOfficeTrust,
    ledger: PairingLedger,
    n: int,
    box_id: str = BOX,
    now_s: float = T0_S,
    *,
    re_pair: bool = False,
) -> tuple[PairingLedger, PairingCode]:
    return issue_code(ledger, box_id, ADDRESS, trust.pins, now_s, nonce(n), re_pair=re_pair)


def attempt_for(code: PairingCode, box_id: str = BOX) -> PairingAttempt:
    return start_pairing(code.text(), box_id, DEVICE_KEY)


def serial_of(grant: PairingGrant) -> int:
    return x509.load_pem_x509_certificate(grant.certificate_pem).serial_number


def pair(
    ca: Issued, trust: BackOfficeTrust, ledger: PairingLedger, n: int, *, re_pair: bool = False
) -> tuple[PairingLedger, PairingGrant]:
    ledger, code = issue(trust, ledger, n, re_pair=re_pair)
    return redeem(ledger, attempt_for(code).request_json(), T0_S + 60, ca, trust)


def refused(
    kind: type[PairingRefused],
    ledger: PairingLedger,
    request: bytes,
    now_s: float,
    ca: Issued,
    trust: BackOfficeTrust,
) -> PairingRefused:
    with pytest.raises(kind) as caught:
        redeem(ledger, request, now_s, ca, trust)
    assert caught.value.ledger is not None, "every refusal carries the ledger to persist"
    return caught.value


# --- the typed code ---


def sample_code() -> PairingCode:
    return PairingCode.for_back_office(ADDRESS, SAMPLE_NONCE, SAMPLE_PIN)


def test_code_round_trips_through_its_typed_form() -> None:
    code = sample_code()
    assert PairingCode.parse(code.text()) == code


def test_typed_form_is_the_address_then_seven_groups_of_four() -> None:
    address, _, symbols = sample_code().text().partition("/")
    groups = symbols.split("-")
    assert address == ADDRESS
    assert [len(group) for group in groups] == [4] * 7
    assert set("".join(groups)) <= set(ALPHABET)


@pytest.mark.parametrize(
    "mangle",
    [
        str.lower,
        lambda text: text.replace("-", " "),
        lambda text: text.replace("-", ""),
        lambda text: "  " + text.replace("-", " - ") + "\t",
        lambda text: "HTTPS://" + text.upper(),
        lambda text: text.replace("0", "o").replace("1", "l"),
    ],
    ids=["lower-case", "spaces", "no-dashes", "extra-blanks", "https-prefix", "o-and-l"],
)
def test_typing_tolerates_case_blanks_dashes_and_confusable_letters(mangle: object) -> None:
    assert callable(mangle)
    code = sample_code()
    assert PairingCode.parse(mangle(code.text())) == code


def test_default_port_is_left_out_and_address_is_canonical() -> None:
    code = PairingCode.for_back_office("BO.Example.ORG:443", SAMPLE_NONCE, SAMPLE_PIN)
    assert code.address == "bo.example.org"
    assert code.endpoint_url == "https://bo.example.org/pair/v1"
    ipv6 = PairingCode.for_back_office("[::0:1]:8443", SAMPLE_NONCE, SAMPLE_PIN)
    assert PairingCode.parse(ipv6.text()).address == "[::1]:8443"


def test_repr_of_a_code_hides_its_nonce() -> None:
    code = sample_code()
    assert SAMPLE_NONCE.hex() not in repr(code)
    assert code.text().split("/")[1] not in repr(code)


@pytest.mark.parametrize(
    ("typed", "complaint"),
    [
        ("0000-0000-0000-0000-0000-0000-0000", "'/' is missing"),
        (f"{ADDRESS}/0000-0000", "has 8 characters"),
        (f"{ADDRESS}/U000-0000-0000-0000-0000-0000-0000", "'U' is not used"),
        (f"{ADDRESS}/é000-0000-0000-0000-0000-0000-0000", "is not used"),
        ("bo_borsele.example/0000-0000-0000-0000-0000-0000-0000", "not a host name"),
        ("bo.example:99999/0000-0000-0000-0000-0000-0000-0000", "port"),
        ("300.1.2.3/0000-0000-0000-0000-0000-0000-0000", "not an IPv4"),
        ("x" * 401, "at most 400"),
    ],
)
def test_malformed_codes_are_refused_with_a_reason(typed: str, complaint: str) -> None:
    with pytest.raises(CodeFormatError, match=complaint) as caught:
        PairingCode.parse(typed)
    assert not isinstance(caught.value, CodeTypo)


SAMPLE_SYMBOLS = sample_code().text().split("/")[1].replace("-", "")


@given(position=st.integers(0, 27), replacement=st.sampled_from(ALPHABET))
def test_every_single_symbol_typo_is_caught(position: int, replacement: str) -> None:
    original = SAMPLE_SYMBOLS[position]
    typo = SAMPLE_SYMBOLS[:position] + replacement + SAMPLE_SYMBOLS[position + 1 :]
    if replacement == original:
        assert PairingCode.parse(f"{ADDRESS}/{typo}") == sample_code()
    else:
        with pytest.raises(CodeTypo):
            PairingCode.parse(f"{ADDRESS}/{typo}")


@given(position=st.integers(0, 26))
def test_every_swap_of_adjacent_symbols_is_caught(position: int) -> None:
    first, second = SAMPLE_SYMBOLS[position], SAMPLE_SYMBOLS[position + 1]
    swapped = SAMPLE_SYMBOLS[:position] + second + first + SAMPLE_SYMBOLS[position + 2 :]
    if first == second:
        assert PairingCode.parse(f"{ADDRESS}/{swapped}") == sample_code()
    else:
        with pytest.raises(CodeTypo):
            PairingCode.parse(f"{ADDRESS}/{swapped}")


@given(
    position=st.integers(0, len(ADDRESS) - 1),
    replacement=st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789.-:"),
)
def test_every_single_address_typo_is_caught(position: int, replacement: str) -> None:
    typo = ADDRESS[:position] + replacement + ADDRESS[position + 1 :]
    typed = f"{typo}/{SAMPLE_SYMBOLS}"
    if typo == ADDRESS:
        assert PairingCode.parse(typed) == sample_code()
    else:
        with pytest.raises(CodeFormatError):  # CodeTypo, or an address that cannot be one
            PairingCode.parse(typed)


def test_pin_check_depends_on_the_nonce_and_on_the_key(pki: TestPki) -> None:
    code = PairingCode.for_back_office(ADDRESS, SAMPLE_NONCE, pki.server_pin)
    other_nonce = PairingCode.for_back_office(ADDRESS, nonce(1), pki.server_pin)
    other_key = PairingCode.for_back_office(ADDRESS, SAMPLE_NONCE, pki.backup_pin)
    assert code.pin_check != other_nonce.pin_check
    assert code.pin_check != other_key.pin_check


# --- the service endpoint of the grant ---


def test_service_endpoint_is_made_canonical_like_a_code_address() -> None:
    endpoint = ServiceEndpoint.of(" BO.Example.ORG:443 ", "BO.Example.ORG", 0)
    assert (endpoint.address, endpoint.server_name, endpoint.h3_port) == (
        "bo.example.org",
        "bo.example.org",
        0,
    )
    ipv6 = ServiceEndpoint.of("[::0:1]:8443", "0:0::1", 8443)
    assert (ipv6.address, ipv6.server_name) == ("[::1]:8443", "::1")
    assert ServiceEndpoint.from_json(ipv6.to_json()) == ipv6


@pytest.mark.parametrize(
    ("address", "server_name", "h3_port"),
    [
        ("BO.example.org", "bo.example.org", 0),
        ("bo.example.org:443", "bo.example.org", 0),
        ("bo.example.org", "BO.example.org", 0),
        ("bo_example", "bo.example.org", 0),
        ("bo.example.org", "bo.example.org:8443", 0),
        ("bo.example.org", "[::1]", 0),
        ("bo.example.org", "bo.example.org", 65536),
        ("bo.example.org", "bo.example.org", -1),
    ],
)
def test_service_endpoint_refuses_what_is_not_canonical(
    address: str, server_name: str, h3_port: int
) -> None:
    with pytest.raises(CodeFormatError):
        ServiceEndpoint(address, server_name, h3_port)


# --- issuing ---


@pytest.mark.parametrize(
    ("box_id", "address", "pins", "nonce_bytes"),
    [
        ("MVB 42", ADDRESS, (SAMPLE_PIN,), nonce(1)),
        (BOX, "bo/x", (SAMPLE_PIN,), nonce(1)),
        (BOX, ADDRESS, (), nonce(1)),
        (BOX, ADDRESS, ("md5/abc",), nonce(1)),
        (BOX, ADDRESS, (SAMPLE_PIN,), b"short"),
    ],
    ids=["box-id", "address", "no-pins", "bad-pin", "nonce-length"],
)
def test_issue_code_refuses_bad_admin_input(
    box_id: str, address: str, pins: tuple[str, ...], nonce_bytes: bytes
) -> None:
    with pytest.raises(AdminInputError):
        issue_code(PairingLedger(), box_id, address, pins, T0_S, nonce_bytes)


def test_issued_code_is_open_for_fifteen_minutes(trust: BackOfficeTrust) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    record = ledger.code(code.code_id)
    assert record is not None
    assert (record.box_id, record.state) == (BOX, CodeState.OPEN)
    assert record.expires_at_s - record.issued_at_s == CODE_VALIDITY_S == 900
    assert code.address == ADDRESS


def test_open_codes_per_box_are_bounded(trust: BackOfficeTrust) -> None:
    ledger = PairingLedger()
    for n in range(MAX_OPEN_CODES_PER_BOX):
        ledger, _ = issue(trust, ledger, n)
    with pytest.raises(TooManyOpenCodes):
        issue(trust, ledger, 99)
    issue(trust, ledger, 99, box_id=OTHER_BOX)  # another box is not affected
    issue(trust, ledger, 99, now_s=T0_S + CODE_VALIDITY_S)  # expired codes do not count


# --- redeeming ---


def test_redeem_certifies_the_box_key_and_records_the_pairing(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    attempt = attempt_for(code)
    ledger, grant = redeem(ledger, attempt.request_json(), T0_S + 60, ca, trust)
    certificate = x509.load_pem_x509_certificate(grant.certificate_pem)
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [name.value for name in common_names] == [BOX]
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki == attempt.public_key_der()
    certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    assert (grant.pins, grant.tuf_root, grant.ca_certificate_pem, grant.service) == (
        trust.pins,
        TUF_ROOT,
        ca.cert_pem,
        SERVICE,
    )
    assert PairingGrant.from_json(grant.to_json()) == grant
    pairing = ledger.pairing_of(BOX)
    assert pairing is not None
    assert pairing.serial == certificate.serial_number
    record = ledger.code(code.code_id)
    assert record is not None
    assert record.state is CodeState.USED
    check_client_serial(ledger, certificate.serial_number)


@pytest.mark.parametrize("age_s", [0, 60, 899, 899.999])
def test_code_is_valid_until_fifteen_minutes(
    ca: Issued, trust: BackOfficeTrust, age_s: float
) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    _, grant = redeem(ledger, attempt_for(code).request_json(), T0_S + age_s, ca, trust)
    assert grant.box_id == BOX


@pytest.mark.parametrize("age_s", [900, 901, 3600, -1])
def test_code_is_expired_from_fifteen_minutes_on_and_before_its_issue(
    ca: Issued, trust: BackOfficeTrust, age_s: float
) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    error = refused(CodeExpired, ledger, attempt_for(code).request_json(), T0_S + age_s, ca, trust)
    assert error.ledger == ledger
    assert CodeExpired.http_status == 410


def test_reused_code_is_refused(ca: Issued, trust: BackOfficeTrust) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    ledger, _ = redeem(ledger, attempt_for(code).request_json(), T0_S + 60, ca, trust)
    second = attempt_for(code)  # knows the code, but a different key
    error = refused(CodeReused, ledger, second.request_json(), T0_S + 61, ca, trust)
    assert "already used" in str(error)


def test_identical_request_gets_the_same_grant_again_within_the_window(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    request = attempt_for(code).request_json()
    ledger, first = redeem(ledger, request, T0_S + 60, ca, trust)
    again_ledger, again = redeem(ledger, request, T0_S + 120, ca, trust)
    assert again == first
    assert again_ledger == ledger
    refused(CodeReused, ledger, request, T0_S + CODE_VALIDITY_S, ca, trust)


def test_unknown_code_is_refused(ca: Issued, trust: BackOfficeTrust) -> None:
    ledger, _ = issue(trust, PairingLedger(), 1)
    never_issued = PairingCode.for_back_office(ADDRESS, nonce(2), trust.pins[0])
    error = refused(CodeUnknown, ledger, attempt_for(never_issued).request_json(), T0_S, ca, trust)
    assert error.http_status == 404


def test_tampered_csr_fails_the_proof_and_withdraws_the_code(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    genuine = attempt_for(code)
    intruder = attempt_for(code)  # a CSR for another key, under the genuine proof
    request = replace(genuine.request(), csr_der=intruder.csr_der)
    error = refused(ProofInvalid, ledger, request.to_json(), T0_S + 60, ca, trust)
    assert error.ledger is not None
    record = error.ledger.code(code.code_id)
    assert record is not None
    assert record.state is CodeState.WITHDRAWN
    refused(CodeWithdrawn, error.ledger, genuine.request_json(), T0_S + 61, ca, trust)


def test_proof_made_with_another_nonce_is_refused(ca: Issued, trust: BackOfficeTrust) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    attempt = attempt_for(code)
    forged = replace(
        attempt.request(), proof=proof_of(proof_key_of(nonce(2)), BOX, DEVICE_KEY, attempt.csr_der)
    )
    error = refused(ProofInvalid, ledger, forged.to_json(), T0_S + 60, ca, trust)
    assert error.http_status == 403


def test_box_id_mismatch_leaves_the_code_valid_for_its_box(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    wrong_box = attempt_for(code, OTHER_BOX)
    error = refused(BoxIdMismatch, ledger, wrong_box.request_json(), T0_S + 60, ca, trust)
    assert error.ledger == ledger
    _, grant = redeem(ledger, attempt_for(code).request_json(), T0_S + 61, ca, trust)
    assert grant.box_id == BOX


def signed_request(code: PairingCode, common_name: str, curve: ec.EllipticCurve) -> bytes:
    """A request whose proof is right but whose CSR breaks the rules of 3.1."""
    key = ec.generate_private_key(curve)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    proof = proof_of(code.proof_key, BOX, DEVICE_KEY, csr_der)
    return PairingRequest(BOX, code.code_id, DEVICE_KEY, csr_der, proof).to_json()


@pytest.mark.parametrize(
    ("common_name", "curve", "complaint"),
    [
        (OTHER_BOX, ec.SECP256R1(), "CN must be the box id"),
        (BOX, ec.SECP384R1(), "P-256"),
    ],
)
def test_csr_breaking_the_rules_is_refused(
    ca: Issued, trust: BackOfficeTrust, common_name: str, curve: ec.EllipticCurve, complaint: str
) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    request = signed_request(code, common_name, curve)
    error = refused(CsrInvalid, ledger, request, T0_S + 60, ca, trust)
    assert complaint in str(error)


def test_csr_that_is_not_der_is_refused(ca: Issued, trust: BackOfficeTrust) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    garbage = b"\x30\x03\x02\x01\x00"
    proof = proof_of(code.proof_key, BOX, DEVICE_KEY, garbage)
    request = PairingRequest(BOX, code.code_id, DEVICE_KEY, garbage, proof)
    refused(CsrInvalid, ledger, request.to_json(), T0_S + 60, ca, trust)


def good_request_document(code: PairingCode) -> dict[str, object]:
    document = json.loads(attempt_for(code).request_json())
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"not json",
        lambda d: b"\xff\xfe",
        lambda d: b"[1, 2]",
        lambda d: json.dumps({**d, "extra": 1}).encode(),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "proof"}).encode(),
        lambda d: json.dumps({**d, "version": 2}).encode(),
        lambda d: json.dumps({**d, "version": True}).encode(),
        lambda d: json.dumps({**d, "code_id": str(d["code_id"]).upper()}).encode(),
        lambda d: json.dumps({**d, "csr": "not base64!"}).encode(),
        lambda d: json.dumps({**d, "box_id": "MVB 42"}).encode(),
        lambda d: json.dumps(d).encode()[:-1] + b',"box_id":"MVB-0042"}',
        lambda d: json.dumps({**d, "csr": "A" * 10_000}).encode(),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "device_key"}).encode(),
        lambda d: json.dumps({**d, "device_key": "ab" * 31}).encode(),
        lambda d: json.dumps({**d, "device_key": "ff" * 32}).encode(),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "not-object",
        "extra-member",
        "missing-member",
        "version",
        "version-bool",
        "upper-hex",
        "bad-base64",
        "bad-box-id",
        "duplicate-member",
        "oversized",
        "no-device-key",
        "short-device-key",
        "device-key-not-on-the-curve",
    ],
)
def test_malformed_requests_are_refused(ca: Issued, trust: BackOfficeTrust, mangle: object) -> None:
    assert callable(mangle)
    ledger, code = issue(trust, PairingLedger(), 1)
    refused(MalformedRequest, ledger, mangle(good_request_document(code)), T0_S, ca, trust)


# --- already paired, re-pair, unpair ---


def test_paired_box_gets_a_code_only_as_a_re_pair(ca: Issued, trust: BackOfficeTrust) -> None:
    ledger, _ = pair(ca, trust, PairingLedger(), 1)
    with pytest.raises(AlreadyPaired, match="re-pair"):
        issue(trust, ledger, 2)
    ledger, _ = issue(trust, ledger, 2, re_pair=True)


def test_second_code_is_refused_once_the_box_is_paired(ca: Issued, trust: BackOfficeTrust) -> None:
    ledger, first = issue(trust, PairingLedger(), 1)
    ledger, second = issue(trust, ledger, 2)
    ledger, _ = redeem(ledger, attempt_for(first).request_json(), T0_S + 60, ca, trust)
    error = refused(AlreadyPaired, ledger, attempt_for(second).request_json(), T0_S + 61, ca, trust)
    assert error.http_status == 409


def test_re_pair_replaces_the_certificate_and_denies_the_old_one(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    ledger, old_grant = pair(ca, trust, PairingLedger(), 1)
    ledger, new_grant = pair(ca, trust, ledger, 2, re_pair=True)
    pairing = ledger.pairing_of(BOX)
    assert pairing is not None
    assert pairing.serial == serial_of(new_grant)
    check_client_serial(ledger, serial_of(new_grant))
    with pytest.raises(CertificateDenied, match="re-paired"):
        check_client_serial(ledger, serial_of(old_grant))


def test_re_pair_code_is_refused_after_the_box_was_paired_again(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    ledger, _ = pair(ca, trust, PairingLedger(), 1)
    ledger, first = issue(trust, ledger, 2, re_pair=True)
    ledger, second = issue(trust, ledger, 3, re_pair=True)
    ledger, _ = redeem(ledger, attempt_for(first).request_json(), T0_S + 60, ca, trust)
    refused(AlreadyPaired, ledger, attempt_for(second).request_json(), T0_S + 61, ca, trust)


def test_unpair_denies_the_certificate_at_once_and_withdraws_open_codes(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    ledger, grant = pair(ca, trust, PairingLedger(), 1)
    ledger, pending = issue(trust, ledger, 2, re_pair=True)
    check_client_serial(ledger, serial_of(grant))
    ledger = unpair(ledger, BOX, T0_S + 120)
    with pytest.raises(CertificateDenied, match="unpaired"):
        check_client_serial(ledger, serial_of(grant))
    assert ledger.pairing_of(BOX) is None
    refused(CodeWithdrawn, ledger, attempt_for(pending).request_json(), T0_S + 121, ca, trust)
    ledger, fresh = issue(trust, ledger, 3, now_s=T0_S + 130)  # a plain code pairs it again
    ledger, _ = redeem(ledger, attempt_for(fresh).request_json(), T0_S + 140, ca, trust)
    assert ledger.pairing_of(BOX) is not None


def test_unpair_of_a_box_that_is_not_paired_is_refused() -> None:
    with pytest.raises(NotPaired):
        unpair(PairingLedger(), BOX, T0_S)


def test_old_records_are_forgotten(ca: Issued, trust: BackOfficeTrust) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    ledger, grant = redeem(ledger, attempt_for(code).request_json(), T0_S + 60, ca, trust)
    ledger = unpair(ledger, BOX, T0_S + 120)
    forgotten_s = T0_S + CODE_VALIDITY_S + CODE_RECORD_KEEP_S
    request = attempt_for(code).request_json()
    refused(CodeReused, ledger, request, forgotten_s - 1, ca, trust)
    refused(CodeUnknown, ledger, request, forgotten_s, ca, trust)
    certificate = x509.load_pem_x509_certificate(grant.certificate_pem)
    after_expiry_s = certificate.not_valid_after_utc.timestamp()
    ledger, _ = issue(trust, ledger, 2, now_s=after_expiry_s)  # prunes
    check_client_serial(ledger, serial_of(grant))  # the TLS layer refuses it by its date now


# --- persistence and refusal messages ---


def busy_ledger(ca: Issued, trust: BackOfficeTrust) -> PairingLedger:
    ledger, _ = pair(ca, trust, PairingLedger(), 1)
    ledger, _ = pair(ca, trust, ledger, 2, re_pair=True)
    ledger, _ = issue(trust, ledger, 3, re_pair=True)
    ledger, _ = issue(trust, ledger, 4, box_id=OTHER_BOX)
    return unpair(ledger, BOX, T0_S + 120)


def test_ledger_round_trips_through_json(ca: Issued, trust: BackOfficeTrust) -> None:
    ledger = busy_ledger(ca, trust)
    assert {record.state for record in ledger.codes} == set(CodeState)
    assert {entry.reason for entry in ledger.denied} == {"unpaired", "re-paired"}
    assert PairingLedger.from_json(ledger.to_json()) == ledger


def test_repr_of_the_ledger_hides_proof_keys(ca: Issued, trust: BackOfficeTrust) -> None:
    ledger = busy_ledger(ca, trust)
    text = repr(ledger)
    assert all(record.proof_key.hex() not in text for record in ledger.codes)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: {**d, "extra": []},
        lambda d: {**d, "version": 0},
        lambda d: {**d, "codes": {}},
        lambda d: {**d, "codes": [{**d["codes"][0], "state": "lost"}]},
        lambda d: {**d, "codes": [{**d["codes"][0], "certificate": None}]},
        lambda d: {**d, "codes": [{**d["codes"][0], "issued_at_s": "noon"}]},
        lambda d: {**d, "paired": [{**d["paired"][0], "serial": "-1"}]},
        lambda d: {**d, "denied": [{**d["denied"][0], "reason": "bored"}]},
    ],
    ids=[
        "extra",
        "version",
        "codes-not-list",
        "state",
        "used-without-certificate",
        "time",
        "serial",
        "reason",
    ],
)
def test_ledger_json_is_read_strictly(ca: Issued, trust: BackOfficeTrust, mangle: object) -> None:
    assert callable(mangle)
    ledger, _ = pair(ca, trust, PairingLedger(), 1)
    ledger, _ = pair(ca, trust, ledger, 2, re_pair=True)
    document = json.loads(ledger.to_json())
    with pytest.raises(LedgerFormatError):
        PairingLedger.from_json(json.dumps(mangle(document)).encode())


def test_every_refusal_of_redeem_has_the_kind_and_status_of_the_spec() -> None:
    kinds = {refusal.kind: refusal.http_status for refusal in REFUSALS}
    assert kinds == {kind: REFUSAL_STATUS[kind] for kind in kinds}
    assert set(kinds) == set(RefusalKind) - {RefusalKind.RATE_LIMITED}  # the listener's own


def test_refusal_message_names_the_fault_and_nothing_secret(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    ledger, code = issue(trust, PairingLedger(), 1)
    request = attempt_for(code).request_json()
    error = refused(CodeExpired, ledger, request, T0_S + 901, ca, trust)
    body = refusal_json(error)
    message = parse_refusal(body)
    assert message.kind == "code-expired"
    assert "expired" in message.message
    for secret in (code.nonce.hex(), code.proof_key.hex(), code.text().split("/")[1]):
        assert secret not in body.decode()
