"""Whether a TLS peer is the configured camera (gateway/capture/camera_trust.py, pure) and how a
failed handshake is named (gateway/capture/camera_tls.py `refusal_reason`)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.capture.camera_tls import refusal_reason
from gateway.capture.camera_trust import (
    BY_CA,
    FOREIGN_CAMERA,
    HANDSHAKE_FAILED,
    NO_CERTIFICATE,
    NOT_TLS,
    PINNED,
    TIMEOUT,
    UNTRUSTED_CERTIFICATE,
    TrustError,
    ca_trust,
    identity_of,
    judge_certificate,
    pinned_trust,
)
from tests.cameras.camera_pki import CameraPki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CameraPki:
    return CameraPki(tmp_path_factory.mktemp("pki"))


def der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


def test_a_certificate_names_its_camera_by_serial_number_else_common_name(pki: CameraPki) -> None:
    by_cn = x509.load_pem_x509_certificate(pki.camera("BC-1").cert.read_bytes())
    by_serial = x509.load_pem_x509_certificate(
        pki.camera("BC-7", in_serial_number=True).cert.read_bytes()
    )
    assert identity_of(by_cn) == "BC-1"
    assert by_serial.subject.rfc4514_string().startswith("CN=bodycam BC-7")
    assert identity_of(by_serial) == "BC-7"


def test_by_ca_the_camera_of_that_serial_passes_and_another_is_foreign(pki: CameraPki) -> None:
    trust = ca_trust("BC-1", pki.ca.read_bytes())
    assert trust.method == BY_CA
    assert judge_certificate(trust, der(pki.camera("BC-1").cert)) is None
    assert judge_certificate(trust, der(pki.camera("BC-2").cert)) == FOREIGN_CAMERA
    assert judge_certificate(trust, None) == NO_CERTIFICATE


def test_pinned_only_that_certificate_passes(pki: CameraPki) -> None:
    own = pki.self_signed("BC-1")
    trust = pinned_trust("BC-1", own.cert.read_bytes())
    assert trust.method == PINNED
    assert judge_certificate(trust, der(own.cert)) is None
    same_name = pki.self_signed("BC-1", stem="another-BC-1")
    assert judge_certificate(trust, der(same_name.cert)) == UNTRUSTED_CERTIFICATE


def test_a_pinned_certificate_of_another_serial_is_a_configuration_error(pki: CameraPki) -> None:
    with pytest.raises(TrustError, match="names 'BC-2', not the camera's serial 'BC-1'"):
        pinned_trust("BC-1", pki.self_signed("BC-2").cert.read_bytes())


def test_a_camera_ca_file_must_hold_ca_certificates(pki: CameraPki) -> None:
    with pytest.raises(TrustError, match="not a CA"):
        ca_trust("BC-1", pki.camera("BC-1").cert.read_bytes())
    with pytest.raises(TrustError, match="no PEM certificate"):
        ca_trust("BC-1", b"not a certificate")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ssl.SSLCertVerificationError("certificate verify failed"), UNTRUSTED_CERTIFICATE),
        (TimeoutError("timed out"), TIMEOUT),
        (ConnectionResetError("reset"), HANDSHAKE_FAILED),
    ],
)
def test_handshake_failures_are_named(exc: BaseException, reason: str) -> None:
    assert refusal_reason(exc) == reason


@pytest.mark.parametrize(
    ("openssl_reason", "reason"),
    [
        ("PEER_DID_NOT_RETURN_A_CERTIFICATE", NO_CERTIFICATE),
        ("HTTP_REQUEST", NOT_TLS),
        ("WRONG_VERSION_NUMBER", NOT_TLS),
        ("TLSV1_ALERT_UNKNOWN_CA", HANDSHAKE_FAILED),  # the sender distrusted the box
    ],
)
def test_openssl_reasons_are_named(openssl_reason: str, reason: str) -> None:
    error = ssl.SSLError(1, openssl_reason)
    error.reason = openssl_reason
    assert refusal_reason(error) == reason
