"""The tus 1.0.0 profile's words on the wire: header names, limits, and the parsers of what a
server sends back (pure: no I/O, no clock). docs/tus-profile.md is the profile.

Invariants:
- A malformed decimal, attestation or Location header raises HostileServer, never a ValueError;
  only the optional Retry-After hint is ignored when malformed. A value from a server reaches an
  error message only through `quote` (bounded, control characters escaped).
- A decimal header is at most 18 ASCII digits: a hostile header cannot make us build a huge int.
- An upload path is an absolute path of printable ASCII of at most MAX_UPLOAD_PATH_CHARS: the
  box talks only to its pinned back office, never to another origin named by a Location header.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urljoin, urlsplit

from transport.errors import HostileServer
from transport.http import HttpResponse

TUS_VERSION: Final = "1.0.0"
ATTESTATION_HEADER: Final = "Mvb-Stored-Sha256"
"""The reference back office's SHA-256 (hex) over the bytes it stored, on the completing response
and on every later HEAD. Not part of tus; a plain tus server omits it."""
ATTESTATION_OFFER_HEADER: Final = "Mvb-Attestation"
"""On the OPTIONS answer of a back office that attests (value `sha256`): what it promises for
every complete upload. A plain tus server omits it (docs/tus-profile.md 8)."""
MAX_CHUNK_HEADER: Final = "Mvb-Max-Chunk-Size"
"""The reference back office's largest request body (bytes, decimal) on OPTIONS: the box never
sends a longer chunk. Not part of tus; a plain tus server omits it (a 413 then teaches it)."""
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
MAX_METADATA_HEADER_CHARS: Final = 4096
"""Well under common server header limits (8 KiB), so creation never fails on header size."""
MAX_UPLOAD_PATH_CHARS: Final = 1024

RESUMABLE: Final = ("Tus-Resumable", TUS_VERSION)
"""The header every request of the session carries."""
RESERVED_METADATA_KEYS: Final = frozenset({"file_id", "sha256"})
# At most 18 digits: every real size fits, and a hostile header cannot make us build a huge int.
# (int() alone would also accept "+5", " 5" and non-ASCII digits.)
_DECIMAL: Final = re.compile(r"[0-9]{1,18}")
SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
# tus metadata keys: non-empty, no spaces, no commas; we also keep them printable ASCII.
METADATA_KEY: Final = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
# An absolute path of printable ASCII: nothing that could split a request line or a header.
_ABSOLUTE_PATH: Final = re.compile(r"/[\x21-\x7e]*")
_QUOTED_CHARS: Final = 64


def encode_upload_metadata(pairs: tuple[tuple[str, str], ...]) -> str:
    """tus Upload-Metadata: comma-separated `key base64(utf-8 value)`; an empty value is the
    bare key."""
    encoded = []
    for key, value in pairs:
        if not value:
            encoded.append(key)
            continue
        encoded.append(f"{key} {base64.b64encode(value.encode('utf-8')).decode('ascii')}")
    return ",".join(encoded)


def retry_after_s(response: HttpResponse) -> float | None:
    # Only delta-seconds: the HTTP-date form would need a clock, and the hint is optional.
    value = response.headers.get("retry-after", "").strip()
    return float(value) if _DECIMAL.fullmatch(value) else None


def required_decimal(response: HttpResponse, header: str, method: str) -> int:
    value = optional_decimal(response.headers, header)
    if value is None:
        raise HostileServer(f"{method} answered {response.status} without {header}")
    return value


def optional_decimal(headers: Mapping[str, str], header: str) -> int | None:
    value = headers.get(header.lower())
    if value is None:
        return None
    stripped = value.strip()
    if not _DECIMAL.fullmatch(stripped):
        raise HostileServer(f"{header} {quote(value)} is not a non-negative decimal integer")
    return int(stripped)


def attested_sha256(response: HttpResponse) -> str | None:
    value = response.headers.get(ATTESTATION_HEADER.lower())
    if value is None:
        return None
    stripped = value.strip()
    if not SHA256_HEX.fullmatch(stripped):
        raise HostileServer(f"{ATTESTATION_HEADER} {quote(value)} is not 64 hex characters")
    return stripped.lower()


_WEB_SCHEMES = frozenset({"http", "https", ""})  # "": a network-path reference, //host/path


def upload_path(endpoint: str, location: str | None) -> str:
    """The upload's path from a creation answer's Location, resolved against the endpoint.

    Only the path is kept: the box talks to its pinned back office alone and never follows a
    server to another origin. Real tus servers (tusd, @tus/server) answer with absolute URLs
    built from the Host header, often with the wrong scheme behind a TLS terminator, so an
    http(s) URL with a host is accepted and its path used on the pinned connection; any other
    scheme, or a scheme without a host, is hostile."""
    if location is None:
        raise HostileServer("POST answered 201 without Location")
    try:
        parts = urlsplit(location.strip())
    except ValueError as error:
        raise HostileServer(f"Location {quote(location)} is not a URL") from error
    if (parts.scheme or parts.netloc) and not (parts.scheme in _WEB_SCHEMES and parts.netloc):
        raise HostileServer(f"Location {quote(location)} is neither a path nor an http(s) URL")
    path = urlsplit(urljoin(endpoint, parts.path)).path
    if not parts.path or path == endpoint or not is_absolute_path(path):
        raise HostileServer(f"Location {quote(location)} is not a usable upload path")
    return path


def is_absolute_path(path: str) -> bool:
    return len(path) <= MAX_UPLOAD_PATH_CHARS and _ABSOLUTE_PATH.fullmatch(path) is not None


def split_list(value: str, *, lower: bool = False) -> tuple[str, ...]:
    items = (item.strip() for item in value.split(","))
    return tuple(item.lower() if lower else item for item in items if item)


def quote(value: str) -> str:
    """A server-sent value made fit for an error message: bounded, control characters escaped."""
    shown = repr(value[:_QUOTED_CHARS])
    return shown + "..." if len(value) > _QUOTED_CHARS else shown
