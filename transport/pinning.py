"""Certificate pinning by SubjectPublicKeyInfo SHA-256 (RULES L1).

A pin is written as in HPKP: "sha256/<base64 of SHA-256 over the DER SubjectPublicKeyInfo>". The
box carries a primary and a backup pin so the back office can roll its key without bricking the
fleet. The check runs after the TLS handshake and before a single request byte is sent; a mismatch
is PinMismatch, which is never retried on that link and never downgraded to unpinned.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common.faults import ConfigurationFault
from transport.errors import PinMismatch

PIN_PREFIX = "sha256/"


class PinFormatError(ValueError, ConfigurationFault):
    """A configured pin is not "sha256/<44 base64 chars>"."""


def spki_sha256(der_certificate: bytes) -> bytes:
    """SHA-256 over the DER SubjectPublicKeyInfo of an X.509 certificate."""
    certificate = x509.load_der_x509_certificate(der_certificate)
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def pin_of_certificate(der_certificate: bytes) -> str:
    """The pin string for a certificate (what `mvb-admin` prints for the box's configuration)."""
    return PIN_PREFIX + base64.b64encode(spki_sha256(der_certificate)).decode("ascii")


def pin_of_pem_file(pem: bytes) -> str:
    """The pin of the first certificate in a PEM file."""
    certificate = x509.load_pem_x509_certificate(pem)
    return pin_of_certificate(certificate.public_bytes(Encoding.DER))


def parse_pin(text: str) -> bytes:
    """Decode one pin string to its 32-byte digest; PinFormatError says what is wrong."""
    if not text.startswith(PIN_PREFIX):
        raise PinFormatError(f"pin {text!r} must start with {PIN_PREFIX!r}")
    try:
        digest = base64.b64decode(text[len(PIN_PREFIX) :], validate=True)
    except ValueError as exc:
        raise PinFormatError(f"pin {text!r} is not base64") from exc
    if len(digest) != 32:
        raise PinFormatError(f"pin {text!r} is {len(digest)} bytes, a SHA-256 is 32")
    return digest


@dataclass(frozen=True, slots=True)
class PinSet:
    """The pins one back office may present. Invariant: never empty (no unpinned mode exists)."""

    digests: frozenset[bytes]

    @classmethod
    def from_strings(cls, pins: list[str] | tuple[str, ...]) -> PinSet:
        if not pins:
            raise PinFormatError("at least one pin is required (there is no unpinned mode)")
        return cls(frozenset(parse_pin(pin) for pin in pins))

    def check(self, der_certificate: bytes | None) -> None:
        """Raise PinMismatch unless the peer's SPKI hash is one of the pins.

        The message carries the peer's pin (a public key hash, not a secret) so the fleet admin
        can see what the box was shown.
        """
        if der_certificate is None:
            raise PinMismatch("the peer presented no certificate")
        if spki_sha256(der_certificate) not in self.digests:
            raise PinMismatch(
                f"peer key {pin_of_certificate(der_certificate)} is not pinned; connection dropped"
            )
