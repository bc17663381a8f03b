"""The tus checksum extension's request header, shared by both transports."""

from __future__ import annotations

import base64
import hashlib

SUPPORTED_ALGORITHMS = ("sha256", "sha1", "md5")
"""In the box's order of preference; md5 and sha1 only guard against transmission damage here."""


def checksum_header(algorithm: str, body: bytes | bytearray) -> tuple[str, str]:
    """("Upload-Checksum", "<algorithm> <base64 digest of body>"); ValueError if unsupported."""
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"unsupported tus checksum algorithm {algorithm!r}")
    digest = hashlib.new(algorithm, body, usedforsecurity=False).digest()
    return "Upload-Checksum", f"{algorithm} {base64.b64encode(digest).decode('ascii')}"
