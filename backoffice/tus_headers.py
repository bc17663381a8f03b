"""The tus request headers the back office reads, parsed strictly (pure: no I/O).

Upload-Metadata (with the `file_id` and `sha256` every box must declare), Upload-Checksum and
decimal fields. Shared by TusApp (backoffice/tus_app.py), which re-exports these names.

Invariants: every parser returns a value within its bounds or raises (MetadataError,
ChecksumHeaderError: RemoteFault, the peer's data) or returns None for a decimal that is not
one; no parser accepts a sign, spaces inside a number, non-ASCII digits or a value longer than
its bound.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from backoffice.upload_store import FILE_ID_PATTERN
from common.faults import RemoteFault

CHECKSUM_ALGORITHMS: Final = ("sha256", "sha1", "md5")
MAX_METADATA_CHARS: Final = 4096

# At most 18 digits: every real size fits in an int64, and int() alone would accept "+5", " 5"
# and non-ASCII digits.
_DECIMAL: Final = re.compile(r"[0-9]{1,18}")
_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
# tus metadata keys: non-empty, no space, no comma; we also keep them printable ASCII.
_METADATA_KEY: Final = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
# The header is echoed on HEAD: printable ASCII only, so it can never split a header line.
PRINTABLE: Final = re.compile(r"[\x20-\x7e]*")


class MetadataError(ValueError, RemoteFault):
    """Upload-Metadata is not valid tus metadata or lacks what the back office needs."""


class ChecksumHeaderError(ValueError, RemoteFault):
    """Upload-Checksum is malformed or names an algorithm this server does not offer."""


@dataclass(frozen=True, slots=True)
class UploadChecksum:
    algorithm: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class DeclaredFile:
    """What Upload-Metadata must say: the box's file id and the SHA-256 it computed."""

    file_id: str
    sha256: str


def parse_decimal(text: str | None) -> int | None:
    """A non-negative decimal of at most 18 ASCII digits, else None."""
    if text is None or not _DECIMAL.fullmatch(text):
        return None
    return int(text)


def parse_upload_metadata(header: str) -> dict[str, bytes]:
    """tus Upload-Metadata: comma-separated `key base64value` (or a bare `key`), keys unique."""
    if len(header) > MAX_METADATA_CHARS:
        raise MetadataError(f"Upload-Metadata is longer than {MAX_METADATA_CHARS} characters")
    if not PRINTABLE.fullmatch(header):
        raise MetadataError("Upload-Metadata must be printable ASCII")
    pairs: dict[str, bytes] = {}
    for item in header.split(","):
        parts = item.strip().split(" ")
        key = parts[0]
        if len(parts) > 2 or not _METADATA_KEY.fullmatch(key):
            raise MetadataError("Upload-Metadata pairs must be 'key base64value'")
        if key in pairs:
            raise MetadataError("Upload-Metadata repeats a key")
        try:
            pairs[key] = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except ValueError as exc:  # binascii.Error, or a non-ASCII character
            raise MetadataError("an Upload-Metadata value is not base64") from exc
    return pairs


def declared_file(metadata: Mapping[str, bytes]) -> DeclaredFile:
    """The `file_id` (1-64 url-safe characters) and `sha256` (64 hex) the box must declare."""
    file_id = _ascii(metadata.get("file_id"))
    if file_id is None or not FILE_ID_PATTERN.fullmatch(file_id):
        raise MetadataError("Upload-Metadata needs file_id: 1-64 of A-Z a-z 0-9 _ -")
    sha256 = _ascii(metadata.get("sha256"))
    if sha256 is None or not _SHA256_HEX.fullmatch(sha256):
        raise MetadataError("Upload-Metadata needs sha256: 64 hex characters")
    return DeclaredFile(file_id, sha256.lower())


def _ascii(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def parse_upload_checksum(header: str) -> UploadChecksum:
    """tus Upload-Checksum: `<algorithm> <base64 digest>` with an offered algorithm."""
    parts = header.strip().split(" ")
    if len(parts) != 2:
        raise ChecksumHeaderError("Upload-Checksum must be '<algorithm> <base64 digest>'")
    algorithm, encoded = parts
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise ChecksumHeaderError(f"checksum algorithms offered: {','.join(CHECKSUM_ALGORITHMS)}")
    try:
        digest = base64.b64decode(encoded, validate=True)
    except ValueError as exc:  # binascii.Error, or a non-ASCII character
        raise ChecksumHeaderError("the Upload-Checksum digest is not base64") from exc
    if len(digest) != hashlib.new(algorithm, usedforsecurity=False).digest_size:
        raise ChecksumHeaderError(
            f"the Upload-Checksum digest has the wrong length for {algorithm}"
        )
    return UploadChecksum(algorithm, digest)
