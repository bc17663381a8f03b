"""The tus session's messages: what the caller hands in (UploadSpec), what a server offers
(ServerCapabilities, from its OPTIONS answer) and what a completed upload yields (UploadOutcome).
Pure values, frozen; each is validated where it is built, so the session (transport/tus_session.py)
never sends a header it could not have built from valid values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from transport.checksum import SUPPORTED_ALGORITHMS
from transport.errors import HostileServer
from transport.http import HttpResponse
from transport.tus_headers import (
    MAX_CHUNK_HEADER,
    MAX_METADATA_HEADER_CHARS,
    METADATA_KEY,
    RESERVED_METADATA_KEYS,
    SHA256_HEX,
    TUS_VERSION,
    encode_upload_metadata,
    is_absolute_path,
    optional_decimal,
    quote,
    split_list,
)


@dataclass(frozen=True)
class ServerCapabilities:
    """What a tus server offers, from its OPTIONS answer. Extension and algorithm names are
    lower-case; `versions` keeps the server's order (its preferred version first)."""

    versions: tuple[str, ...]
    extensions: frozenset[str]
    max_size_bytes: int | None
    checksum_algorithms: tuple[str, ...]
    attests: bool = False  # Mvb-Attestation lists sha256: complete uploads carry Mvb-Stored-Sha256
    max_chunk_bytes: int | None = None

    @classmethod
    def from_response(cls, response: HttpResponse) -> ServerCapabilities:
        """Parse an OPTIONS answer; HostileServer if malformed or unusable by this profile."""
        if response.status not in (200, 204):
            raise HostileServer(f"OPTIONS answered {response.status}, expected 200 or 204")
        headers = response.headers
        capabilities = cls(
            versions=split_list(headers.get("tus-version", "")),
            extensions=frozenset(split_list(headers.get("tus-extension", ""), lower=True)),
            max_size_bytes=optional_decimal(headers, "Tus-Max-Size"),
            checksum_algorithms=split_list(headers.get("tus-checksum-algorithm", ""), lower=True),
            attests="sha256" in split_list(headers.get("mvb-attestation", ""), lower=True),
            max_chunk_bytes=optional_decimal(headers, MAX_CHUNK_HEADER),
        )
        capabilities.require_usable()
        return capabilities

    def require_usable(self) -> None:
        """HostileServer unless the server speaks tus 1.0.0 and can create uploads."""
        if TUS_VERSION not in self.versions:
            offered = quote(",".join(self.versions))
            raise HostileServer(f"Tus-Version {offered} does not list {TUS_VERSION}")
        if "creation" not in self.extensions:
            raise HostileServer("Tus-Extension does not list 'creation': cannot create uploads")
        if self.max_chunk_bytes == 0:
            raise HostileServer(f"{MAX_CHUNK_HEADER} 0: no chunk could ever be sent")

    def offers(self, extension: str) -> bool:
        """Whether Tus-Extension listed `extension`."""
        return extension in self.extensions

    def preferred_checksum_algorithm(self) -> str | None:
        """The box's most preferred algorithm the server also offers, if `checksum` is offered."""
        if not self.offers("checksum"):
            return None
        return next((a for a in SUPPORTED_ALGORITHMS if a in self.checksum_algorithms), None)


@dataclass(frozen=True)
class UploadSpec:
    """One file to upload. `endpoint` is the creation path ("/files/"); `metadata` goes into
    Upload-Metadata next to the reserved keys `file_id` and `sha256`. Validated on construction
    (ValueError): the session never sends a header it could not have built from a valid spec."""

    file_id: str
    size_bytes: int
    sha256_hex: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    endpoint: str = "/files/"

    def __post_init__(self) -> None:
        if not self.file_id:
            raise ValueError("file_id must not be empty")
        if self.size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {self.size_bytes}")
        if not SHA256_HEX.fullmatch(self.sha256_hex):
            raise ValueError("sha256_hex must be 64 hex characters")
        if not is_absolute_path(self.endpoint):
            raise ValueError(f"endpoint must be an absolute path, got {self.endpoint!r}")
        for key in self.metadata:
            if key in RESERVED_METADATA_KEYS or not METADATA_KEY.fullmatch(key):
                raise ValueError(f"metadata key {key!r} is reserved or not a tus metadata key")
        # A private copy: the caller's dict may change, the spec must not.
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        if len(encode_upload_metadata(self.metadata_pairs())) > MAX_METADATA_HEADER_CHARS:
            raise ValueError(f"Upload-Metadata would exceed {MAX_METADATA_HEADER_CHARS} chars")

    def metadata_pairs(self) -> tuple[tuple[str, str], ...]:
        """Every Upload-Metadata pair, reserved keys first."""
        reserved = (("file_id", self.file_id), ("sha256", self.sha256_hex.lower()))
        return reserved + tuple(self.metadata.items())


@dataclass(frozen=True)
class UploadOutcome:
    """A completed upload. `attested_sha256_hex` is the back office's lower-case SHA-256 over what
    it stored, or None from a plain tus server (which cannot attest; the caller must not treat the
    upload as verified). Comparing it with the spec's SHA-256 is the caller's job."""

    upload_url: str
    size_bytes: int
    attested_sha256_hex: str | None
