"""The box's pairing core (gateway/pairing.py) against the back office's (backoffice/pairing.py):
the whole exchange of docs/pairing.md without a network, and every grant the box must refuse."""

from __future__ import annotations

import json
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from backoffice.pairing import (
    BackOfficeTrust,
    CodeExpired,
    PairingRefused,
    RateLimited,
    check_client_serial,
    issue_client_cert_for_csr,
    issue_code,
    redeem,
    refusal_json,
)
from backoffice.pairing_ledger import PairingLedger
from backoffice.pki import Issued, create_ca, issue_client_cert, load_issued
from gateway.pairing import (
    BoxIdInvalid,
    CodeTypo,
    GrantChainInvalid,
    GrantKeyMismatch,
    GrantMalformed,
    GrantPinMismatch,
    GrantRejected,
    GrantWrongBox,
    PairingAttempt,
    WrongServerKey,
    accept_grant,
    check_server_certificate,
    refusal_from_answer,
    start_pairing,
)
from gateway.pairing_client import officer_message
from protocol.pairing_code import NONCE_BYTES, PairingCode
from protocol.pairing_messages import PairingGrant, ServiceEndpoint
from storage.devicekey import DeviceKey
from tests.tls_helpers import TestPki

DEVICE_KEY = DeviceKey.generate().public_key().raw()
"""The box's device public key its pairing requests enroll."""

ADDRESS = "127.0.0.1:8443"
BOX = "MVB-0042"
T0_S = 1_750_000_000.0
TUF_ROOT = b'{"signed": {"_type": "root", "version": 1}, "signatures": []}'
SERVICE = ServiceEndpoint.of("127.0.0.1:8444", "backoffice.test", 8445)


@pytest.fixture(scope="module")
def ca(pki: TestPki) -> Issued:
    return load_issued(pki.ca_cert, pki.ca_key)


@pytest.fixture(scope="module")
def trust(pki: TestPki) -> BackOfficeTrust:
    return BackOfficeTrust((pki.server_pin, pki.backup_pin), TUF_ROOT, SERVICE)


def der_of(pem_file: Path) -> bytes:
    return x509.load_pem_x509_certificate(pem_file.read_bytes()).public_bytes(Encoding.DER)


def issued(
    trust: BackOfficeTrust, n: int = 1, ledger: PairingLedger | None = None
) -> tuple[PairingLedger, PairingCode]:
    nonce = n.to_bytes(NONCE_BYTES, "big")
    return issue_code(ledger or PairingLedger(), BOX, ADDRESS, trust.pins, T0_S, nonce)


def granted(ca: Issued, trust: BackOfficeTrust) -> tuple[PairingAttempt, PairingGrant]:
    ledger, code = issued(trust)
    attempt = start_pairing(code.text(), BOX, DEVICE_KEY)
    _, grant = redeem(ledger, attempt.request_json(), T0_S + 30, ca, trust)
    return attempt, grant


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.PEM)


# --- the whole exchange ---


def test_box_pairs_with_the_back_office_end_to_end(
    pki: TestPki, ca: Issued, trust: BackOfficeTrust, tmp_path: Path
) -> None:
    ledger, code = issued(trust)
    typed = code.text().lower().replace("-", " ")  # as an officer might type it
    attempt = start_pairing(typed, BOX, DEVICE_KEY)
    check_server_certificate(attempt, der_of(pki.server_cert))
    ledger, grant = redeem(ledger, attempt.request_json(), T0_S + 120, ca, trust)
    credentials = accept_grant(attempt, grant.to_json())

    assert (credentials.box_id, credentials.address) == (BOX, ADDRESS)
    assert credentials.pins == (pki.server_pin, pki.backup_pin)
    assert credentials.tuf_root == TUF_ROOT
    assert credentials.ca_certificate_pem == pki.ca_cert.read_bytes()
    assert credentials.service == SERVICE
    certificate = x509.load_pem_x509_certificate(credentials.certificate_pem)
    check_client_serial(ledger, certificate.serial_number)
    # The credentials are what the uplink's mutual TLS loads: certificate and key form a pair.
    cert_file, key_file = Issued(credentials.certificate_pem, credentials.key_pem).write(
        tmp_path, "box"
    )
    ssl.create_default_context(ssl.Purpose.SERVER_AUTH).load_cert_chain(cert_file, key_file)


def test_request_carries_the_csr_and_proof_but_no_secret(trust: BackOfficeTrust) -> None:
    _, code = issued(trust)
    attempt = start_pairing(code.text(), BOX, DEVICE_KEY)
    body = attempt.request_json()
    document = json.loads(body)
    assert set(document) == {"version", "box_id", "code_id", "device_key", "csr", "proof"}
    assert document["device_key"] == DEVICE_KEY.hex()
    assert document["box_id"] == BOX
    for secret in (code.nonce.hex(), code.proof_key.hex(), code.text().split("/")[1]):
        assert secret not in body.decode()
    assert b"PRIVATE KEY" not in body
    assert attempt.request_json() == body, "a resent request must be identical (5.3)"


def test_attempt_repr_hides_the_private_key_and_the_nonce(trust: BackOfficeTrust) -> None:
    _, code = issued(trust)
    attempt = start_pairing(code.text(), BOX, DEVICE_KEY)
    text = repr(attempt)
    assert "PRIVATE" not in text
    assert code.nonce.hex() not in text


def test_every_attempt_makes_a_fresh_key(trust: BackOfficeTrust) -> None:
    _, code = issued(trust)
    first, second = (
        start_pairing(code.text(), BOX, DEVICE_KEY),
        start_pairing(code.text(), BOX, DEVICE_KEY),
    )
    assert first.public_key_der() != second.public_key_der()


def test_typo_is_caught_before_any_connection(trust: BackOfficeTrust) -> None:
    _, code = issued(trust)
    text = code.text()
    last = text[-1]
    typo = text[:-1] + ("0" if last != "0" else "1")
    with pytest.raises(CodeTypo):
        start_pairing(typo, BOX, DEVICE_KEY)


def test_box_id_that_cannot_be_a_cn_is_refused(trust: BackOfficeTrust) -> None:
    _, code = issued(trust)
    with pytest.raises(BoxIdInvalid):
        start_pairing(code.text(), "MVB/42", DEVICE_KEY)


# --- the server's key, before anything is sent (4.1) ---


@pytest.mark.parametrize(
    "certificate",
    ["rogue_server_cert", "impostor_server_cert", "client_cert", "ca_cert"],
)
def test_server_key_other_than_the_code_names_is_refused(
    pki: TestPki, trust: BackOfficeTrust, certificate: str
) -> None:
    _, code = issued(trust)
    attempt = start_pairing(code.text(), BOX, DEVICE_KEY)
    with pytest.raises(WrongServerKey, match="withdrawn") as caught:
        check_server_certificate(attempt, der_of(getattr(pki, certificate)))
    assert caught.value.withdraws


def test_missing_or_unreadable_server_certificate_is_refused(trust: BackOfficeTrust) -> None:
    _, code = issued(trust)
    attempt = start_pairing(code.text(), BOX, DEVICE_KEY)
    with pytest.raises(WrongServerKey):
        check_server_certificate(attempt, None)
    with pytest.raises(WrongServerKey):
        check_server_certificate(attempt, b"\x30\x00")


# --- the grant (4.3) ---


def test_grant_for_another_key_is_refused(ca: Issued, trust: BackOfficeTrust) -> None:
    ledger, code = issued(trust)
    ours, theirs = (
        start_pairing(code.text(), BOX, DEVICE_KEY),
        start_pairing(code.text(), BOX, DEVICE_KEY),
    )
    _, grant = redeem(ledger, theirs.request_json(), T0_S + 30, ca, trust)
    with pytest.raises(GrantKeyMismatch):
        accept_grant(ours, grant.to_json())


def test_grant_whose_pins_do_not_match_the_code_is_refused(
    ca: Issued, trust: BackOfficeTrust, pki: TestPki
) -> None:
    ledger, code = issued(trust)
    attempt = start_pairing(code.text(), BOX, DEVICE_KEY)
    moved = BackOfficeTrust((pki.backup_pin,), TUF_ROOT, SERVICE)  # the serving pin is missing
    _, grant = redeem(ledger, attempt.request_json(), T0_S + 30, ca, moved)
    with pytest.raises(GrantPinMismatch):
        accept_grant(attempt, grant.to_json())


@pytest.mark.parametrize(
    "rogue_name",
    ["MVB back office CA", "Rogue CA"],
    ids=["same-name-other-key", "other-name"],
)
def test_grant_whose_certificate_another_ca_signed_is_refused(
    ca: Issued, trust: BackOfficeTrust, rogue_name: str
) -> None:
    rogue_ca = create_ca(rogue_name)
    attempt, grant = granted(ca, trust)
    csr = x509.load_der_x509_csr(attempt.csr_der)
    rogue = issue_client_cert_for_csr(rogue_ca, csr, BOX, T0_S)
    with pytest.raises(GrantChainInvalid, match="not signed by"):
        accept_grant(attempt, replace(grant, certificate_pem=pem(rogue)).to_json())


def test_grant_whose_ca_is_not_a_ca_is_refused(
    ca: Issued, trust: BackOfficeTrust, pki: TestPki
) -> None:
    attempt, grant = granted(ca, trust)
    not_a_ca = pki.server_cert.read_bytes()
    with pytest.raises(GrantChainInvalid, match="not a CA"):
        accept_grant(attempt, replace(grant, ca_certificate_pem=not_a_ca).to_json())


def test_grant_of_a_server_certificate_for_our_key_is_refused(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    """A certificate for our key and id, signed by the CA, but without clientAuth."""
    attempt, grant = granted(ca, trust)
    certificate = x509.load_pem_x509_certificate(grant.certificate_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    no_usage = (
        x509.CertificateBuilder()
        .subject_name(certificate.subject)
        .issuer_name(certificate.issuer)
        .public_key(certificate.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(certificate.not_valid_before_utc)
        .not_valid_after(certificate.not_valid_after_utc)
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(GrantChainInvalid, match="client certificate"):
        accept_grant(attempt, replace(grant, certificate_pem=pem(no_usage)).to_json())


def test_grant_for_another_box_is_refused(ca: Issued, trust: BackOfficeTrust) -> None:
    attempt, grant = granted(ca, trust)
    with pytest.raises(GrantWrongBox):
        accept_grant(attempt, replace(grant, box_id="MVB-0043").to_json())
    csr = x509.load_der_x509_csr(attempt.csr_der)
    other_cn = issue_client_cert_for_csr(ca, csr, "MVB-0043", T0_S)
    with pytest.raises(GrantWrongBox):
        accept_grant(attempt, replace(grant, certificate_pem=pem(other_cn)).to_json())


def test_grant_of_someone_elses_existing_certificate_is_refused(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    attempt, grant = granted(ca, trust)
    foreign = issue_client_cert(ca, BOX)  # right CA and CN, but a key the box never made
    with pytest.raises(GrantKeyMismatch):
        accept_grant(attempt, replace(grant, certificate_pem=foreign.cert_pem).to_json())


def grant_document(ca: Issued, trust: BackOfficeTrust) -> tuple[PairingAttempt, dict[str, object]]:
    attempt, grant = granted(ca, trust)
    document = json.loads(grant.to_json())
    assert isinstance(document, dict)
    return attempt, document


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"<html>pairing</html>",
        lambda d: json.dumps({**d, "extra": 1}).encode(),
        lambda d: json.dumps({**d, "pins": []}).encode(),
        lambda d: json.dumps({**d, "pins": ["sha1/abc"]}).encode(),
        lambda d: json.dumps({**d, "tuf_root": ""}).encode(),
        lambda d: json.dumps({**d, "certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n"}).encode(),
        lambda d: json.dumps(
            {**d, "certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}
        ).encode(),
        lambda d: json.dumps({**d, "tuf_root": "A" * 90_000}).encode(),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "service_address"}).encode(),
        lambda d: json.dumps({**d, "service_address": "127.0.0.1:443"}).encode(),
        lambda d: json.dumps({**d, "service_address": "Backoffice.test:8444"}).encode(),
        lambda d: json.dumps({**d, "service_address": "127.0.0.1:70000"}).encode(),
        lambda d: json.dumps({**d, "service_address": "https://127.0.0.1:8444"}).encode(),
        lambda d: json.dumps({**d, "service_server_name": "backoffice.test:8444"}).encode(),
        lambda d: json.dumps({**d, "service_server_name": ""}).encode(),
        lambda d: json.dumps({**d, "service_h3_port": 65536}).encode(),
        lambda d: json.dumps({**d, "service_h3_port": True}).encode(),
        lambda d: json.dumps({**d, "service_h3_port": "8445"}).encode(),
    ],
    ids=[
        "not-json",
        "extra-member",
        "no-pins",
        "bad-pin",
        "empty-root",
        "truncated-pem",
        "garbage-certificate",
        "oversized",
        "no-service-address",
        "service-port-443-not-left-out",
        "service-address-upper-case",
        "service-port-out-of-range",
        "service-address-url",
        "server-name-with-port",
        "server-name-empty",
        "h3-port-out-of-range",
        "h3-port-bool",
        "h3-port-string",
    ],
)
def test_malformed_grant_is_refused(ca: Issued, trust: BackOfficeTrust, mangle: object) -> None:
    assert callable(mangle)
    attempt, document = grant_document(ca, trust)
    with pytest.raises(GrantMalformed) as caught:
        accept_grant(attempt, mangle(document))
    assert isinstance(caught.value, GrantRejected)
    assert caught.value.withdraws


# --- refusals from the back office ---


def test_refusal_reaches_the_officer_with_its_kind_and_message(
    ca: Issued, trust: BackOfficeTrust
) -> None:
    ledger, code = issued(trust)
    attempt = start_pairing(code.text(), BOX, DEVICE_KEY)
    with pytest.raises(PairingRefused) as caught:
        redeem(ledger, attempt.request_json(), T0_S + 901, ca, trust)
    assert isinstance(caught.value, CodeExpired)
    error = refusal_from_answer(caught.value.http_status, refusal_json(caught.value))
    assert (error.kind, error.http_status) == ("code-expired", 410)
    assert "expired" in str(error)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b'{"version": 1, "refusal": "try-harder", "message": "no"}',
        b'{"version": 1, "refusal": "code-expired"}',
    ],
)
def test_unreadable_refusal_is_reported_with_its_status_only(body: bytes) -> None:
    error = refusal_from_answer(502, body)
    assert (error.kind, error.http_status) == ("unreadable", 502)
    assert "try-harder" not in str(error)


def test_a_rate_limited_request_tells_the_officer_to_wait_and_keep_the_code() -> None:
    refusal = RateLimited("too many pairing requests reached the back office; try again in 6 s")

    error = refusal_from_answer(429, refusal_json(refusal))

    assert (error.kind, error.http_status) == ("rate-limited", 429)
    assert officer_message(error) == (
        "refused (rate-limited): the back office is receiving too many pairing requests: wait a "
        "minute and enter the same code again (it is still valid for its 15 minutes)"
    )
