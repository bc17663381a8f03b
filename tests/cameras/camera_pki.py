"""Certificates for the camera-authentication tests: a camera CA and what it issues, a stranger's
CA, self-signed camera certificates (to pin), and the box's certificate its cameras check.

Keys are ECDSA P-256 (as the back office's PKI, backoffice/pki.py). Camera certificates carry
both client and server authentication: a bodycam presents one when it pushes (TLS client), a
dashcam when the box pulls from it (RTSPS server). A camera is named by its serial in the CN or,
with `in_serial_number=True`, in the subject serialNumber attribute (IEEE 802.1AR style).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.cameras import LOOPBACK, CertPair

_NOW = datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class _Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str, serial_number: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "camera test")]
    if serial_number is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _authority(common_name: str) -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - datetime.timedelta(days=1))
        .not_valid_after(_NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _Authority(cert, key)


def _leaf(
    subject: x509.Name,
    issuer: _Authority | None,
    *,
    hosts: tuple[str, ...] = (),
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after or _NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
    )
    if hosts:
        names = [x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256()), key


def _write(directory: Path, stem: str, cert: x509.Certificate, key: object) -> CertPair:
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return CertPair(cert_path, key_path)


class CameraPki:
    """Writes everything under `directory`. `ca` is the camera CA's certificate
    (`camera_ca_file`), `box` the box's listener certificate for 127.0.0.1, issued by `box_ca`
    (what a camera checks the box with)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._cameras = _authority("camera CA")
        self._stranger = _authority("someone else's CA")
        self.ca = directory / "camera-ca.crt"
        self.ca.write_bytes(self._cameras.cert.public_bytes(serialization.Encoding.PEM))
        self.box_ca = self.ca  # one CA for both in these tests; a fleet may use two
        box_cert, box_key = _leaf(_name("mvb camera listener"), self._cameras, hosts=(LOOPBACK,))
        self.box = _write(directory, "box-listener", box_cert, box_key)

    def camera(self, serial: str, *, in_serial_number: bool = False) -> CertPair:
        """A camera certificate the camera CA issued, naming `serial`."""
        subject = _name(f"bodycam {serial}", serial) if in_serial_number else _name(serial)
        cert, key = _leaf(subject, self._cameras, hosts=(LOOPBACK,))
        return _write(self.directory, f"camera-{serial}", cert, key)

    def stranger(self, serial: str) -> CertPair:
        """A certificate naming `serial`, issued by a CA the box does not know."""
        cert, key = _leaf(_name(serial), self._stranger, hosts=(LOOPBACK,))
        return _write(self.directory, f"stranger-{serial}", cert, key)

    def self_signed(self, serial: str, *, stem: str = "", expired: bool = False) -> CertPair:
        """A camera's own self-signed certificate (to pin); `expired` ended yesterday."""
        not_after = _NOW - datetime.timedelta(hours=1) if expired else None
        cert, key = _leaf(_name(serial), None, hosts=(LOOPBACK,), not_after=not_after)
        return _write(self.directory, stem or f"self-{serial}", cert, key)
