"""The web channel's TLS certificate (docs/webui.md 1.3).

A municipality may configure its own (`[web] tls_cert_file` / `tls_key_file`). Otherwise the box
makes a P-256 key and a self-signed certificate at first start in `<state>/web/`, for its host
name, `localhost`, 127.0.0.1 and `[web] san`, valid VALIDITY; `mvb status` shows its SHA-256
fingerprint so the officer's tablet can be told to trust exactly that certificate.

Invariants:
- The key file is 0600 and both files are written atomically (tmp, fsync, rename, fsync dir):
  a power cut leaves the old pair or the new one. The key is written first; a certificate that
  does not match its key (a cut between the two renames) is made again at the next start.
- A self-signed certificate is made again when it has expired or its names differ from what the
  configuration asks for; otherwise it is kept (its fingerprint is what the tablet trusts).
- The server accepts TLS 1.2 and 1.3 only.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.durable import atomic_write_bytes, make_dirs
from common.faults import ConfigurationFault
from config.local import is_san_entry

VALIDITY = datetime.timedelta(days=825)  # the CA/Browser Forum's old ceiling; browsers accept it
BACKDATE = datetime.timedelta(minutes=5)  # a tablet whose clock runs a little behind
CERT_FILE = "web.crt"
KEY_FILE = "web.key"
ALWAYS_NAMES = ("localhost", "127.0.0.1")


class WebCertificateError(ConfigurationFault, ValueError):
    """A configured certificate or key that cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class WebCertificate:
    cert_path: Path
    key_path: Path
    fingerprint_sha256: str
    self_signed: bool


def wanted_names(hostname: str, extra: Iterable[str]) -> tuple[str, ...]:
    """The names a self-signed certificate carries, in order, without duplicates: the host name
    (left out when it is not a valid DNS name), localhost, 127.0.0.1, then `[web] san`."""
    names = ([hostname] if is_san_entry(hostname) else []) + [*ALWAYS_NAMES, *extra]
    normalised = [_normalised(name) for name in names]
    return tuple(dict.fromkeys(normalised))


def _normalised(name: str) -> str:
    """One spelling per name, so a changed SAN list is a changed set (IPv6, letter case)."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def names_of(cert: x509.Certificate) -> frozenset[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    dns = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    ips = [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    return frozenset(dns + ips)


def renewal_reason(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    names: tuple[str, ...],
    now: datetime.datetime,
) -> str | None:
    """Why the stored self-signed pair must be made again, or None to keep it."""
    if _public_bytes(cert.public_key()) != _public_bytes(key.public_key()):
        return "the certificate does not match its key"
    if now >= cert.not_valid_after_utc:
        return "the certificate has expired"
    if names_of(cert) != frozenset(names):
        return "the configured names changed"
    return None


def _public_bytes(public_key: object) -> bytes:
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return b""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def self_signed(
    names: tuple[str, ...], now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A fresh P-256 key and a self-signed server certificate for `names` (first: the CN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mobile Video Box"),
            x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Upper-case hex pairs joined by colons: how browsers and `openssl x509 -fingerprint`
    show it, so the officer can compare it on the tablet's certificate page."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def ensure_self_signed(
    directory: Path, names: tuple[str, ...], now: datetime.datetime
) -> WebCertificate:
    """The box's own certificate in `directory`, made (again) when missing or due."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    stored = _read_pair(cert_path, key_path)
    if stored is None or renewal_reason(*stored, names, now) is not None:
        cert, key = self_signed(names, now)
        make_dirs(directory, mode=0o700)
        atomic_write_bytes(key_path, _key_pem(key), mode=0o600)
        atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        stored = cert, key
    return WebCertificate(cert_path, key_path, fingerprint_sha256(stored[0]), self_signed=True)


def _read_pair(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The stored pair, or None when missing or unreadable (then a new one is made)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    return (cert, key) if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_configured(cert_path: Path, key_path: Path) -> WebCertificate:
    """A municipality's own certificate (chain) and key; the box never rewrites them."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise WebCertificateError(f"web.tls_cert_file {cert_path}: cannot be read ({exc})") from exc
    try:
        server_context(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise WebCertificateError(
            f"web.tls_key_file {key_path}: not the key of {cert_path.name} or unreadable ({exc})"
        ) from exc
    return WebCertificate(cert_path, key_path, fingerprint_sha256(cert), self_signed=False)


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """TLS 1.2+ with Python's default (modern) cipher choice; no client certificates."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context
