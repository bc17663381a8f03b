"""A small local CA for the boxes' page certificates (docs/webui.md 1.3, docs/deploy-box.md):
an option beside the fingerprint pin, for tablets that trust only a CA (some Android builds)
and for fleets that would rather install one certificate on every tablet once.

The CA is separate from the back office's CA (backoffice/pki.py): a tablet that installs it
trusts it for the boxes' pages and nothing else. It carries X.509 name constraints (RFC 5280
4.2.1.10, critical) listing the names and address ranges the boxes' pages use, so even its
stolen key cannot make a certificate the tablet accepts for any other site (Chrome on Android
and iOS both enforce the constraints for user-installed roots). Leaf certificates live at most
LEAF_VALIDITY (397 days: iOS and Chrome refuse longer-lived TLS certificates), name only what
the constraints permit, and are usable for TLS server authentication only.

Keys are ECDSA P-256, as everywhere in the project.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from backoffice.pki import Issued
from common.faults import MisuseFault

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=397)
BACKDATE = datetime.timedelta(minutes=5)  # a tablet whose clock runs a little behind
CA_COMMON_NAME = "MVB vehicle page CA"
LEAF_COMMON_NAME = "MVB vehicle page"

Permitted = x509.DNSName | x509.IPAddress


class WebPkiRefused(MisuseFault, ValueError):
    """A name the CA may not vouch for, or a constraint that is not a name or a network."""


def permitted_subtree(entry: str) -> Permitted:
    """`10.0.0.0/8` or `192.168.4.1` as an address range, anything else as a DNS name (a
    domain: `mvb.local` permits `box-17.mvb.local`)."""
    try:
        return x509.IPAddress(ipaddress.ip_network(entry, strict=True))
    except ValueError:
        pass
    name = entry.strip().lower().rstrip(".")
    labels = name.split(".")
    if not name or not all(label and label.replace("-", "").isalnum() for label in labels):
        raise WebPkiRefused(f"{entry!r} is neither a DNS name nor an address or network")
    return x509.DNSName(name)


def host_name(entry: str) -> x509.DNSName | x509.IPAddress:
    try:
        return x509.IPAddress(ipaddress.ip_address(entry))
    except ValueError:
        return x509.DNSName(entry.strip().lower().rstrip("."))


def permits(subtrees: Sequence[Permitted], name: x509.DNSName | x509.IPAddress) -> bool:
    """Whether `name` lies inside one of `subtrees`, as RFC 5280 judges it."""
    for subtree in subtrees:
        if isinstance(name, x509.IPAddress) and isinstance(subtree, x509.IPAddress):
            network = subtree.value
            address = name.value
            if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network) and (
                isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
                and address in network
            ):
                return True
        if isinstance(name, x509.DNSName) and isinstance(subtree, x509.DNSName):
            host, domain = name.value, subtree.value
            if host == domain or host.endswith("." + domain):
                return True
    return False


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Upper-case hex pairs joined by colons, as `mvb status`, `mvb run` and the tablets'
    certificate pages show it (the box's own is gateway/web/certs.py: the back office does not
    import the box)."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mobile Video Box"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_web_ca(permitted: Sequence[str], now: datetime.datetime) -> Issued:
    """The CA, constrained to `permitted` (at least one name or network)."""
    if not permitted:
        raise WebPkiRefused("name the boxes' page names or networks the CA may vouch for")
    subtrees = [permitted_subtree(entry) for entry in permitted]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(CA_COMMON_NAME))
        .issuer_name(_name(CA_COMMON_NAME))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(
            x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def ca_subtrees(ca_cert: x509.Certificate) -> list[Permitted]:
    constraints = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    return [
        name
        for name in constraints.permitted_subtrees or ()
        if isinstance(name, x509.DNSName | x509.IPAddress)
    ]


@dataclass(frozen=True, slots=True)
class PageCertificate:
    """A box's page certificate: `chain_pem` is the leaf then the CA (what the box serves)."""

    chain_pem: bytes
    key_pem: bytes
    leaf: x509.Certificate


def issue_page_cert(ca: Issued, hosts: Sequence[str], now: datetime.datetime) -> PageCertificate:
    """A TLS server certificate for `hosts` (DNS names or addresses), each inside the CA's
    constraints; WebPkiRefused otherwise (a tablet would refuse it anyway, later and silently)."""
    if not hosts:
        raise WebPkiRefused("name at least one host the page is reached by")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise WebPkiRefused("the CA key is not a P-256 key of `pki web-ca`")
    names = [host_name(host) for host in hosts]
    subtrees = ca_subtrees(ca_cert)
    outside = [str(name.value) for name in names if not permits(subtrees, name)]
    if outside:
        raise WebPkiRefused(f"outside the CA's name constraints: {', '.join(outside)}")
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        # Not a host name: OpenSSL checks a host-like CN against the DNS constraints too, and
        # browsers read only the SAN.
        .subject_name(_name(LEAF_COMMON_NAME))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now - BACKDATE + LEAF_VALIDITY)  # the whole lifetime counts
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.cert_pem
    return PageCertificate(chain, _key_pem(key), leaf)
