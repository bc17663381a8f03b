"""The pairing messages (docs/pairing.md 3): request, grant, refusal, and their bounds.

Shared by the box (which writes requests and reads grants and refusals) and the back office
(which does the opposite). Every message is read strictly (protocol/strict_json.py): exactly the
members of the spec, each typed and bounded; MessageFormatError names what breaks.

Invariants:
- Everything in a grant or a refusal is public; a request carries a proof, never the nonce.
- A parsed message satisfies the spec's types and bounds, so its users check meaning only.
- The grant's service endpoint is in canonical form (2.4), so it compares and stores as text.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from common.faults import RemoteFault
from protocol.pairing_code import (
    CODE_ID_BYTES,
    PROOF_BYTES,
    CodeFormatError,
    PairingProtocolError,
    normalise_address,
    normalise_server_name,
)
from protocol.strict_json import Fields, dump_json, load_object
from transport.pinning import PinFormatError, parse_pin

MESSAGE_VERSION: Final = 1
MAX_REQUEST_BYTES: Final = 8 * 1024
MAX_CSR_DER_BYTES: Final = 2 * 1024
MAX_GRANT_BYTES: Final = 64 * 1024
MAX_CERTIFICATE_PEM_CHARS: Final = 8 * 1024
MAX_TUF_ROOT_BYTES: Final = 32 * 1024
MAX_PINS: Final = 8
MAX_REFUSAL_MESSAGE_CHARS: Final = 300
MAX_ADDRESS_CHARS: Final = 259
"""A host of 253 characters, ':' and a port of 5 digits (2.4)."""
MAX_SERVER_NAME_CHARS: Final = 253
MAX_PORT: Final = 65535
MAX_BOX_ID_CHARS: Final = 64
DEVICE_KEY_BYTES: Final = 32
"""A box's device key (Ed25519, RFC 8032 encoding), enrolled at pairing."""
BOX_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""The server's client id pattern (backoffice/server.py): the box id becomes the certificate CN."""
PEM_TEXT: Final = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?"
)


class MessageFormatError(PairingProtocolError, ValueError, RemoteFault):
    """A request, grant or refusal breaks its schema (docs/pairing.md 3)."""


class RefusalKind(StrEnum):
    """The refusals of docs/pairing.md 3.3."""

    MALFORMED_REQUEST = "malformed-request"
    CODE_UNKNOWN = "code-unknown"
    CODE_EXPIRED = "code-expired"
    CODE_REUSED = "code-reused"
    CODE_WITHDRAWN = "code-withdrawn"
    PROOF_INVALID = "proof-invalid"
    BOX_ID_MISMATCH = "box-id-mismatch"
    CSR_INVALID = "csr-invalid"
    ALREADY_PAIRED = "already-paired"
    RATE_LIMITED = "rate-limited"
    """From the listener, before the body is read: the code is untouched (docs/pairing.md 4.4)."""


REFUSAL_STATUS: Final[Mapping[RefusalKind, int]] = {
    RefusalKind.MALFORMED_REQUEST: 400,
    RefusalKind.CODE_UNKNOWN: 404,
    RefusalKind.CODE_EXPIRED: 410,
    RefusalKind.CODE_REUSED: 410,
    RefusalKind.CODE_WITHDRAWN: 410,
    RefusalKind.PROOF_INVALID: 403,
    RefusalKind.BOX_ID_MISMATCH: 403,
    RefusalKind.CSR_INVALID: 400,
    RefusalKind.ALREADY_PAIRED: 409,
    RefusalKind.RATE_LIMITED: 429,
}
"""The HTTP status of each refusal (3.3)."""


def read_pins(fields: Fields, name: str) -> tuple[str, ...]:
    """A list of 1 to MAX_PINS "sha256/<base64>" pins."""
    value = fields.raw(name)
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PINS:
        fields.fail(name, f"a list of 1 to {MAX_PINS} pins")
    try:
        for pin in value:
            parse_pin(pin if isinstance(pin, str) else "")
    except PinFormatError:
        fields.fail(name, "a list of 'sha256/<base64>' pins")
    return tuple(value)


# --- the request (3.1) ----------------------------------------------------------------------------

_REQUEST_MEMBERS: Final = frozenset({"version", "box_id", "code_id", "device_key", "csr", "proof"})


@dataclass(frozen=True, slots=True)
class PairingRequest:
    """The box's request (3.1). Invariants: `box_id` matches BOX_ID_PATTERN; `device_key` is
    DEVICE_KEY_BYTES (the public key the box signs its audit log and reports with: the back
    office enrolls it)."""

    box_id: str
    code_id: bytes
    device_key: bytes
    csr_der: bytes
    proof: bytes

    def to_json(self) -> bytes:
        return dump_json(
            {
                "version": MESSAGE_VERSION,
                "box_id": self.box_id,
                "code_id": self.code_id.hex(),
                "device_key": self.device_key.hex(),
                "csr": base64.b64encode(self.csr_der).decode("ascii"),
                "proof": self.proof.hex(),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> PairingRequest:
        """Parse a request body; MessageFormatError names what breaks 3.1."""
        raw = load_object(data, MAX_REQUEST_BYTES, "the request", MessageFormatError)
        fields = Fields(raw, _REQUEST_MEMBERS, "the request", MessageFormatError)
        fields.version(MESSAGE_VERSION)
        return cls(
            box_id=fields.text("box_id", MAX_BOX_ID_CHARS, BOX_ID_PATTERN),
            code_id=fields.hex_bytes("code_id", CODE_ID_BYTES),
            device_key=fields.hex_bytes("device_key", DEVICE_KEY_BYTES),
            csr_der=fields.base64_bytes("csr", MAX_CSR_DER_BYTES),
            proof=fields.hex_bytes("proof", PROOF_BYTES),
        )


# --- the service endpoint (3.2) -------------------------------------------------------------------

_SERVICE_FILE_MEMBERS: Final = frozenset({"version", "address", "server_name", "h3_port"})


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """Where a paired box reaches the back office's mutually authenticated listener (uploads and
    fleet configuration): `address` is `host[:port]` in the canonical form of 2.4, `server_name`
    the name its certificate carries (a DNS name or an IP address), `h3_port` its HTTP/3 port on
    the same host (0: none).

    Invariant: every member is canonical (`of` makes them so; the constructor refuses others with
    CodeFormatError), so two endpoints are equal exactly when their text is.
    """

    address: str
    server_name: str
    h3_port: int

    def __post_init__(self) -> None:
        if normalise_address(self.address) != self.address:
            raise CodeFormatError(f"service address {self.address!r} is not in canonical form")
        if normalise_server_name(self.server_name) != self.server_name:
            raise CodeFormatError(f"server name {self.server_name!r} is not in canonical form")
        if type(self.h3_port) is not int or not 0 <= self.h3_port <= MAX_PORT:
            raise CodeFormatError(f"the HTTP/3 port must be 0 to {MAX_PORT}")

    @classmethod
    def of(cls, address: str, server_name: str, h3_port: int) -> ServiceEndpoint:
        """The endpoint with `address` and `server_name` normalised; CodeFormatError if they
        cannot be."""
        return cls(normalise_address(address), normalise_server_name(server_name), h3_port)

    def to_json(self) -> bytes:
        """The box's record of the endpoint (`service.json` in its pairing directory)."""
        return dump_json(
            {
                "version": MESSAGE_VERSION,
                "address": self.address,
                "server_name": self.server_name,
                "h3_port": self.h3_port,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ServiceEndpoint:
        """Read `to_json`'s document back; MessageFormatError names what is wrong."""
        raw = load_object(data, MAX_GRANT_BYTES, "the service endpoint", MessageFormatError)
        fields = Fields(raw, _SERVICE_FILE_MEMBERS, "the service endpoint", MessageFormatError)
        fields.version(MESSAGE_VERSION)
        return _endpoint(fields, "address", "server_name", "h3_port")


def _endpoint(fields: Fields, address: str, server_name: str, h3_port: str) -> ServiceEndpoint:
    """The endpoint in members `address`, `server_name`, `h3_port`, which must be canonical."""
    text = fields.text(address, MAX_ADDRESS_CHARS)
    name = fields.text(server_name, MAX_SERVER_NAME_CHARS)
    port = fields.integer(h3_port, 0, MAX_PORT)
    try:
        return ServiceEndpoint(text, name, port)
    except CodeFormatError as exc:
        raise MessageFormatError(f"the service endpoint: {exc}") from None


# --- the grant (3.2) ------------------------------------------------------------------------------

_GRANT_MEMBERS: Final = frozenset(
    {
        "version",
        "box_id",
        "certificate",
        "ca_certificate",
        "pins",
        "tuf_root",
        "service_address",
        "service_server_name",
        "service_h3_port",
    }
)


@dataclass(frozen=True, slots=True)
class PairingGrant:
    """The back office's answer (3.2). Everything in it is public."""

    box_id: str
    certificate_pem: bytes
    ca_certificate_pem: bytes
    pins: tuple[str, ...]
    tuf_root: bytes = field(repr=False)
    service: ServiceEndpoint

    def to_json(self) -> bytes:
        return dump_json(
            {
                "version": MESSAGE_VERSION,
                "box_id": self.box_id,
                "certificate": self.certificate_pem.decode("ascii"),
                "ca_certificate": self.ca_certificate_pem.decode("ascii"),
                "pins": list(self.pins),
                "tuf_root": base64.b64encode(self.tuf_root).decode("ascii"),
                "service_address": self.service.address,
                "service_server_name": self.service.server_name,
                "service_h3_port": self.service.h3_port,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> PairingGrant:
        """Parse a grant body; MessageFormatError names what breaks 3.2."""
        raw = load_object(data, MAX_GRANT_BYTES, "the grant", MessageFormatError)
        fields = Fields(raw, _GRANT_MEMBERS, "the grant", MessageFormatError)
        fields.version(MESSAGE_VERSION)
        return cls(
            box_id=fields.text("box_id", MAX_BOX_ID_CHARS, BOX_ID_PATTERN),
            certificate_pem=_pem(fields, "certificate"),
            ca_certificate_pem=_pem(fields, "ca_certificate"),
            pins=read_pins(fields, "pins"),
            tuf_root=fields.base64_bytes("tuf_root", MAX_TUF_ROOT_BYTES),
            service=_endpoint(fields, "service_address", "service_server_name", "service_h3_port"),
        )


def _pem(fields: Fields, name: str) -> bytes:
    return fields.text(name, MAX_CERTIFICATE_PEM_CHARS, PEM_TEXT).encode("ascii")


# --- the refusal (3.3) ----------------------------------------------------------------------------

_REFUSAL_MEMBERS: Final = frozenset({"version", "refusal", "message"})
_REFUSAL_KINDS: Final = frozenset(kind.value for kind in RefusalKind)
_MAX_KIND_CHARS: Final = 40


@dataclass(frozen=True, slots=True)
class RefusalMessage:
    """A refusal (3.3). Invariant: `kind` is a RefusalKind; `message` is at most
    MAX_REFUSAL_MESSAGE_CHARS (longer text is cut when written)."""

    kind: RefusalKind
    message: str

    def to_json(self) -> bytes:
        message = self.message[:MAX_REFUSAL_MESSAGE_CHARS]
        document = {"version": MESSAGE_VERSION, "refusal": str(self.kind), "message": message}
        return dump_json(document)

    @classmethod
    def from_json(cls, data: bytes) -> RefusalMessage:
        """Read a refusal body; MessageFormatError if it is not one."""
        raw = load_object(data, MAX_GRANT_BYTES, "the refusal", MessageFormatError)
        fields = Fields(raw, _REFUSAL_MEMBERS, "the refusal", MessageFormatError)
        fields.version(MESSAGE_VERSION)
        kind = fields.text("refusal", _MAX_KIND_CHARS)
        if kind not in _REFUSAL_KINDS:
            raise MessageFormatError(
                f"the refusal: {kind!r} is not a refusal of docs/pairing.md 3.3"
            )
        return cls(RefusalKind(kind), fields.text("message", MAX_REFUSAL_MESSAGE_CHARS))


def parse_refusal(data: bytes) -> RefusalMessage:
    """Read a refusal body; MessageFormatError if it is not one."""
    return RefusalMessage.from_json(data)
