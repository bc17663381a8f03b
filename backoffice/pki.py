"""The back office's small private PKI: a CA, its TLS server certificate, box client certificates.

Boxes verify the server against this CA *and* pin its key (transport/pinning.py); the server
accepts only clients whose certificate this CA issued (mutual TLS). Pairing (issue 5) issues the
box's client certificate; tests and `mvb-admin pki` use the same functions.
Keys are ECDSA P-256: small, fast on the box's CPU, supported by every TLS stack we use
(OpenSSL for aiohttp, cryptography for aioquic, Node for @tus/server).
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

from common.durable import atomic_write_bytes, make_dirs

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=825)


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write `<stem>.crt` (0644) and `<stem>.key` (0600) into `directory`; return both paths."""
        make_dirs(directory)
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        atomic_write_bytes(cert_path, self.cert_pem, mode=None)  # as write_bytes gave it before
        atomic_write_bytes(key_path, self.key_pem, mode=0o600)
        return cert_path, key_path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mobile Video Box"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_ca(common_name: str = "MVB back office CA") -> Issued:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _issue(
    ca: Issued,
    common_name: str,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    leaf_key = key or _new_key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(leaf_key))


def issue_server_cert(
    ca: Issued, host_names: list[str], reuse_key_pem: bytes | None = None
) -> Issued:
    """A TLS server certificate for `host_names` (DNS names or IP addresses).

    `reuse_key_pem` renews the certificate on the same key, so the boxes' pins stay valid.
    """
    names: list[x509.GeneralName] = []
    for host in host_names:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = None
    if reuse_key_pem is not None:
        loaded = serialization.load_pem_private_key(reuse_key_pem, password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        key = loaded
    return _issue(ca, host_names[0], ExtendedKeyUsageOID.SERVER_AUTH, names, key)


def issue_client_cert(ca: Issued, device_serial: str) -> Issued:
    """A box's client certificate; the CN is the device serial the back office knows it by."""
    return _issue(ca, device_serial, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def load_issued(cert_path: Path, key_path: Path) -> Issued:
    return Issued(cert_path.read_bytes(), key_path.read_bytes())
