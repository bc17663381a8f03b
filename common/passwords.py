"""Password hashes of web accounts (RULES U2): the box's officer and admin accounts and the back
office's fleet admin accounts (backoffice/admin_accounts.py) are hashed and checked alike.

A hash is written `pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>` (the format Django and
passlib use, so a fleet admin's tools can make them). The box never sees a password it did not
just receive at login, never stores one, and compares in constant time. At least
MIN_ITERATIONS: OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

from common.faults import ConfigurationFault

ALGORITHM = "pbkdf2_sha256"
MIN_ITERATIONS = 600_000
MAX_ITERATIONS = 10_000_000  # a forged document must not make one login cost minutes
SALT_BYTES = 16


class PasswordHashError(ValueError, ConfigurationFault):
    """A stored hash that is not in the one accepted format, or too weak."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    iterations: int
    salt: bytes
    digest: bytes

    def text(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return f"{ALGORITHM}${self.iterations}${salt}${digest}"


def parse_password_hash(text: str) -> PasswordHash:
    parts = text.split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM:
        raise PasswordHashError(f"a password hash must look like {ALGORITHM}$<n>$<salt>$<hash>")
    try:
        iterations = int(parts[1])
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except ValueError as exc:
        raise PasswordHashError("a password hash has a malformed number or base64") from exc
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise PasswordHashError(
            f"a password hash needs {MIN_ITERATIONS:,} to {MAX_ITERATIONS:,} iterations"
        )
    if len(salt) < 8 or len(digest) != 32:
        raise PasswordHashError("a password hash needs a salt of 8+ bytes and a 32-byte hash")
    return PasswordHash(iterations, salt, digest)


def hash_password(password: str, *, iterations: int = MIN_ITERATIONS) -> str:
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return PasswordHash(iterations, salt, digest).text()


def verify_password(stored: str, password: str) -> bool:
    """True iff `password` matches; a malformed stored hash never matches (and is logged by
    whoever loaded it: the configuration refuses it first)."""
    try:
        parsed = parse_password_hash(stored)
    except PasswordHashError:
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), parsed.salt, parsed.iterations)
    return hmac.compare_digest(candidate, parsed.digest)
