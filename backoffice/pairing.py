"""Pairing (docs/pairing.md): the one-time code, the messages, and the back office's pure core.

The code and the messages are shared with the box (gateway/pairing.py), which imports them from
here. The back office's side is a set of pure functions over an immutable `PairingLedger`:
`issue_code`, `redeem`, `unpair`, `check_client_serial`. They take `now_s` (Unix seconds on the
back office's clock) and return a new ledger. A thin shell persists it (mode 0600, atomically)
and serves `POST /pair/v1`.

Invariants:
- A code is redeemed at most once. The only answer a used code gives again is the same
  certificate, to the same public key, within its 15 minutes (docs/pairing.md 5.3).
- A refusal from `redeem` carries the ledger to persist (`PairingRefused.ledger`): a failed proof
  withdraws the code (RULES L2), so a refusal can change state too.
- The nonce and the keys derived from it never appear in a repr, an error message or a grant.
- Every collection is bounded: open codes per box and in all, code records (forgotten 7 days after
  expiry), denied serials (forgotten when the certificate expires).
- The only crypto with a side effect is the CA signature (`issue_client_cert_for_csr`), which
  needs randomness. Everything else is a function of its arguments.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import ipaddress
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar, Final, NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from backoffice.pki import LEAF_VALIDITY, Issued
from transport.pinning import PinFormatError, parse_pin

CODE_VALIDITY_S: Final = 15 * 60
NONCE_BYTES: Final = 10
PIN_CHECK_BITS: Final = 50
CODE_ID_BYTES: Final = 16
PROOF_BYTES: Final = 32
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford's base32: no I, L, O or U, so no symbol looks like another."""
PAYLOAD_SYMBOLS: Final = 26
CODE_SYMBOLS: Final = 28
GROUP_SYMBOLS: Final = 4
MAX_TYPED_CODE_CHARS: Final = 400
MAX_HOST_CHARS: Final = 253
DEFAULT_PORT: Final = 443
PAIR_PATH: Final = "/pair/v1"
MESSAGE_VERSION: Final = 1
MAX_REQUEST_BYTES: Final = 8 * 1024
MAX_CSR_DER_BYTES: Final = 2 * 1024
MAX_GRANT_BYTES: Final = 64 * 1024
MAX_CERTIFICATE_PEM_CHARS: Final = 8 * 1024
MAX_TUF_ROOT_BYTES: Final = 32 * 1024
MAX_PINS: Final = 8
MAX_REFUSAL_MESSAGE_CHARS: Final = 300
MAX_OPEN_CODES_PER_BOX: Final = 3
MAX_OPEN_CODES: Final = 1024
MAX_LEDGER_BYTES: Final = 64 * 1024 * 1024
CODE_RECORD_KEEP_S: Final = 7 * 24 * 3600
"""A used or expired code is remembered this long, so that it is refused as reused or expired
rather than unknown."""
BOX_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""The server's client id pattern (backoffice/server.py): the box id becomes the certificate CN."""

_CODE_ID_INFO: Final = b"MVB pairing v1 code id"
_PROOF_KEY_INFO: Final = b"MVB pairing v1 proof key"
_PIN_KEY_INFO: Final = b"MVB pairing v1 pin key"
_PROOF_LABEL: Final = b"MVB pairing v1 request\x00"
_GF_MODULUS: Final = 0x409  # x^10 + x^3 + 1, primitive: alpha = x has order 1023
_GF_TOP_BIT: Final = 0x400
_SYMBOL_VALUE_BASE: Final = 0x100
_ALIASES: Final = {"O": "0", "I": "1", "L": "1"}
_SEPARATORS: Final = frozenset(" \t-")
_DNS_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT: Final = re.compile(r"[0-9]{1,5}")
_SERIAL_HEX: Final = re.compile(r"[0-9a-f]{1,40}")
_LOWER_HEX: Final = re.compile(r"[0-9a-f]*")
_ORGANIZATION: Final = "Mobile Video Box"
_BACKDATE: Final = datetime.timedelta(minutes=5)


# --- errors, by fault ----------------------------------------------------------------------------


class PairingError(Exception):
    """Base of every error of this module."""


class CodeFormatError(PairingError, ValueError):
    """A typed code is not a pairing code: the message says what is wrong (never the code)."""


class CodeTypo(CodeFormatError):
    """The typed code's check symbols do not match: a character is mistyped."""


class MessageFormatError(PairingError, ValueError):
    """A request, grant or refusal breaks its schema (docs/pairing.md 3)."""


class LedgerFormatError(PairingError, ValueError):
    """The persisted ledger is not a ledger this version wrote."""


class AdminInputError(PairingError, ValueError):
    """The admin asked for something impossible: a bad box id, address, pin set or nonce."""


class TooManyOpenCodes(PairingError):
    """The bound on open codes (per box or in all) is reached; wait for codes to expire."""


class NotPaired(PairingError):
    """`unpair` of a box that is not paired."""


class CertificateDenied(PairingError):
    """A client certificate whose serial is on the deny list (unpaired or re-paired)."""


class PairingRefused(PairingError):
    """`redeem` refuses a request. `kind` and `http_status` are the refusal of docs/pairing.md
    3.3; `ledger` is the ledger to persist (it may differ from the input: see ProofInvalid)."""

    kind: ClassVar[str] = "refused"
    http_status: ClassVar[int] = 400

    def __init__(self, message: str, ledger: PairingLedger | None = None) -> None:
        super().__init__(message)
        self.ledger = ledger


class MalformedRequest(PairingRefused):
    kind = "malformed-request"
    http_status = 400


class CodeUnknown(PairingRefused):
    kind = "code-unknown"
    http_status = 404


class CodeExpired(PairingRefused):
    kind = "code-expired"
    http_status = 410


class CodeReused(PairingRefused):
    kind = "code-reused"
    http_status = 410


class CodeWithdrawn(PairingRefused):
    kind = "code-withdrawn"
    http_status = 410


class ProofInvalid(PairingRefused):
    """The proof does not match: whoever sent it does not know the nonce. The code is withdrawn."""

    kind = "proof-invalid"
    http_status = 403


class BoxIdMismatch(PairingRefused):
    kind = "box-id-mismatch"
    http_status = 403


class CsrInvalid(PairingRefused):
    kind = "csr-invalid"
    http_status = 400


class AlreadyPaired(PairingRefused):
    kind = "already-paired"
    http_status = 409


REFUSALS: Final[tuple[type[PairingRefused], ...]] = (
    MalformedRequest,
    CodeUnknown,
    CodeExpired,
    CodeReused,
    CodeWithdrawn,
    ProofInvalid,
    BoxIdMismatch,
    CsrInvalid,
    AlreadyPaired,
)
REFUSAL_KINDS: Final = frozenset(refusal.kind for refusal in REFUSALS)


# --- keys derived from the nonce (docs/pairing.md 2.1, 2.3, 3.1) --------------------------------


def _derive(nonce: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(nonce)


def code_id_of(nonce: bytes) -> bytes:
    """The 16-byte name of a code in requests and in the ledger; one-way from the nonce."""
    return _derive(nonce, _CODE_ID_INFO, CODE_ID_BYTES)


def proof_key_of(nonce: bytes) -> bytes:
    """The HMAC key of the request proof."""
    return _derive(nonce, _PROOF_KEY_INFO, 32)


def pin_check_of(nonce: bytes, spki_sha256: bytes) -> int:
    """The 50-bit check of a server key, keyed by the nonce so it cannot be searched offline."""
    mac = hmac.new(_derive(nonce, _PIN_KEY_INFO, 32), spki_sha256, hashlib.sha256).digest()
    return int.from_bytes(mac[:7], "big") >> (56 - PIN_CHECK_BITS)


def proof_of(proof_key: bytes, box_id: str, csr_der: bytes) -> bytes:
    """HMAC-SHA256 over the box id and the CSR's DER bytes exactly as sent."""
    box = box_id.encode("ascii")
    message = _PROOF_LABEL + bytes([len(box)]) + box + csr_der
    return hmac.new(proof_key, message, hashlib.sha256).digest()


# --- the address (docs/pairing.md 2.4) ------------------------------------------------------------


def normalise_address(text: str) -> str:
    """The canonical `host[:port]` (lower case, no `:443`); CodeFormatError says what is wrong."""
    lowered = text.strip().lower()
    if not lowered:
        raise CodeFormatError("the back-office address before the '/' is missing")
    host_text, port = _split_port(lowered)
    host = _canonical_host(host_text)
    return host if port == DEFAULT_PORT else f"{host}:{port}"


def _split_port(text: str) -> tuple[str, int]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise CodeFormatError(f"address {text!r}: '[' without ']'")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
    if not rest:
        return host, DEFAULT_PORT
    if not rest.startswith(":") or not _PORT.fullmatch(rest[1:]) or not 1 <= int(rest[1:]) <= 65535:
        raise CodeFormatError(f"address {text!r}: the port must be a number from 1 to 65535")
    return host, int(rest[1:])


def _canonical_host(host: str) -> str:
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1])}]"
        except ValueError:
            raise CodeFormatError(f"address {host!r} is not an IPv6 address") from None
    if host.replace(".", "").isdigit():
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise CodeFormatError(f"address {host!r} is not an IPv4 address") from None
    labels = host.split(".")
    if len(host) > MAX_HOST_CHARS or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise CodeFormatError(f"address {host!r} is not a host name (letters, digits, '-', '.')")
    return host


# --- the check symbols (docs/pairing.md 2.5) ------------------------------------------------------


def _times_alpha(value: int) -> int:
    value <<= 1
    return value ^ _GF_MODULUS if value & _GF_TOP_BIT else value


def check_value(address: str, payload_symbols: Sequence[int]) -> int:
    """The 10-bit check over GF(2^10): one field element per address character and per symbol,
    so any single substitution and any adjacent swap changes it."""
    values = [len(address), *map(ord, address), *(_SYMBOL_VALUE_BASE + s for s in payload_symbols)]
    check = 0
    for value in values:
        check = _times_alpha(check) ^ value
    return check


def _read_symbols(text: str) -> list[int]:
    symbols: list[int] = []
    for char in text:
        if char in _SEPARATORS:
            continue
        upper = char.upper()
        index = ALPHABET.find(_ALIASES.get(upper, upper)) if char.isascii() else -1
        if index < 0:
            raise CodeFormatError(
                f"{char!r} is not used in pairing codes (digits and letters other than U)"
            )
        symbols.append(index)
    if len(symbols) != CODE_SYMBOLS:
        raise CodeFormatError(
            f"the code after the '/' has {len(symbols)} characters; a pairing code has "
            f"{CODE_SYMBOLS} (leaving out spaces and dashes)"
        )
    return symbols


# --- the code -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairingCode:
    """A one-time pairing code (docs/pairing.md 2).

    Invariants: `address` is canonical; `nonce` is NONCE_BYTES long; `pin_check` fits in 50 bits.
    The nonce is the secret, so it stays out of repr; only `text()` shows it, for the admin once.
    """

    address: str
    nonce: bytes = field(repr=False)
    pin_check: int

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_BYTES:
            raise CodeFormatError(f"a nonce is {NONCE_BYTES} bytes, not {len(self.nonce)}")
        if not 0 <= self.pin_check < 1 << PIN_CHECK_BITS:
            raise CodeFormatError(f"a pin check is {PIN_CHECK_BITS} bits")
        if normalise_address(self.address) != self.address:
            raise CodeFormatError(f"address {self.address!r} is not in canonical form")

    @classmethod
    def for_back_office(cls, address: str, nonce: bytes, serving_pin: str) -> PairingCode:
        """The code for a back office at `address` whose pairing endpoint presents `serving_pin`."""
        return cls(normalise_address(address), nonce, pin_check_of(nonce, parse_pin(serving_pin)))

    @property
    def code_id(self) -> bytes:
        return code_id_of(self.nonce)

    @property
    def proof_key(self) -> bytes:
        return proof_key_of(self.nonce)

    @property
    def endpoint_url(self) -> str:
        return f"https://{self.address}{PAIR_PATH}"

    def matches_server_key(self, spki_sha256: bytes) -> bool:
        """Whether a server key (its SPKI SHA-256: a pin's digest) is the one the code names."""
        return pin_check_of(self.nonce, spki_sha256) == self.pin_check

    def text(self) -> str:
        """The typed form: `address/XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`."""
        payload = int.from_bytes(self.nonce, "big") << PIN_CHECK_BITS | self.pin_check
        symbols = [
            (payload >> (5 * (PAYLOAD_SYMBOLS - 1 - i))) & 31 for i in range(PAYLOAD_SYMBOLS)
        ]
        check = check_value(self.address, symbols)
        symbols += [check >> 5, check & 31]
        chars = "".join(ALPHABET[s] for s in symbols)
        groups = [chars[i : i + GROUP_SYMBOLS] for i in range(0, CODE_SYMBOLS, GROUP_SYMBOLS)]
        return f"{self.address}/{'-'.join(groups)}"

    @classmethod
    def parse(cls, typed: str) -> PairingCode:
        """Read a code as an officer typed it (docs/pairing.md 2.5): case, spaces, dashes, O/I/L
        and an `https://` prefix are forgiven; a wrong check is CodeTypo."""
        if len(typed) > MAX_TYPED_CODE_CHARS:
            raise CodeFormatError(
                f"a pairing code has at most {MAX_TYPED_CODE_CHARS} characters; got {len(typed)}"
            )
        text = typed.strip()
        if text[:8].lower() == "https://":
            text = text[8:]
        address_text, slash, symbols_text = text.rpartition("/")
        if not slash:
            raise CodeFormatError("a pairing code is ADDRESS/CODE; the '/' is missing")
        address = normalise_address(address_text)
        symbols = _read_symbols(symbols_text)
        payload_symbols = symbols[:PAYLOAD_SYMBOLS]
        if symbols[PAYLOAD_SYMBOLS] << 5 | symbols[PAYLOAD_SYMBOLS + 1] != check_value(
            address, payload_symbols
        ):
            raise CodeTypo(
                "the code does not check out: a character of the address or of the code is "
                "mistyped; compare it with the code from the back office"
            )
        payload = 0
        for symbol in payload_symbols:
            payload = payload << 5 | symbol
        nonce = (payload >> PIN_CHECK_BITS).to_bytes(NONCE_BYTES, "big")
        return cls(address, nonce, payload & ((1 << PIN_CHECK_BITS) - 1))


# --- strict JSON ----------------------------------------------------------------------------------


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MessageFormatError(f"member {key!r} appears twice")
        result[key] = value
    return result


def _no_constants(name: str) -> NoReturn:
    raise MessageFormatError(f"{name} is not a JSON number")


class _Fields:
    """Typed reads of one JSON object with exactly the expected members; every failure is
    `fault` naming the member."""

    def __init__(
        self, value: object, members: frozenset[str], what: str, fault: type[PairingError]
    ) -> None:
        if not isinstance(value, dict):
            raise fault(f"{what} must be a JSON object")
        missing, unknown = sorted(members - value.keys()), sorted(value.keys() - members)
        if missing or unknown:
            raise fault(f"{what}: missing members {missing}, unknown members {unknown}")
        self._value: dict[str, Any] = value
        self._what = what
        self._fault = fault

    def _fail(self, name: str, expectation: str) -> NoReturn:
        raise self._fault(f"{self._what}: member {name!r} must be {expectation}")

    def raw(self, name: str) -> object:
        return self._value[name]

    def text(self, name: str, max_chars: int, pattern: re.Pattern[str] | None = None) -> str:
        value = self._value[name]
        if not isinstance(value, str) or len(value) > max_chars:
            self._fail(name, f"a string of at most {max_chars} characters")
        if pattern is not None and not pattern.fullmatch(value):
            self._fail(name, f"a string matching {pattern.pattern}")
        return value

    def version(self) -> None:
        value = self._value["version"]
        if type(value) is not int or value != MESSAGE_VERSION:
            self._fail("version", f"the integer {MESSAGE_VERSION}")

    def number(self, name: str) -> float:
        value = self._value[name]
        if type(value) not in (int, float) or not math.isfinite(value):
            self._fail(name, "a finite number")
        return float(value)

    def hex_bytes(self, name: str, size: int) -> bytes:
        text = self.text(name, 2 * size)
        if not _LOWER_HEX.fullmatch(text) or len(text) != 2 * size:
            self._fail(name, f"{2 * size} lower-case hex characters")
        return bytes.fromhex(text)

    def base64_bytes(self, name: str, max_bytes: int) -> bytes:
        text = self.text(name, 4 * math.ceil(max_bytes / 3))
        try:
            decoded = base64.b64decode(text, validate=True)
        except binascii.Error:
            self._fail(name, "standard base64")
        if not 1 <= len(decoded) <= max_bytes:
            self._fail(name, f"1 to {max_bytes} bytes")
        return decoded

    def serial(self, name: str) -> int:
        return int(self.text(name, 40, _SERIAL_HEX), 16)

    def optional_serial(self, name: str) -> int | None:
        return None if self._value[name] is None else self.serial(name)

    def pins(self, name: str) -> tuple[str, ...]:
        value = self._value[name]
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_PINS:
            self._fail(name, f"a list of 1 to {MAX_PINS} pins")
        try:
            for pin in value:
                parse_pin(pin if isinstance(pin, str) else "")
        except PinFormatError:
            self._fail(name, "a list of 'sha256/<base64>' pins")
        return tuple(value)


def _load_object(data: bytes, max_bytes: int, what: str, fault: type[PairingError]) -> object:
    if len(data) > max_bytes:
        raise fault(f"{what} is {len(data)} bytes; at most {max_bytes} are allowed")
    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_no_constants
        )
    except MessageFormatError as exc:
        raise fault(f"{what}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int limit
        raise fault(f"{what} is not UTF-8 JSON: {exc}") from None


def _dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


# --- messages (docs/pairing.md 3) -----------------------------------------------------------------

_REQUEST_MEMBERS: Final = frozenset({"version", "box_id", "code_id", "csr", "proof"})
_GRANT_MEMBERS: Final = frozenset(
    {"version", "box_id", "certificate", "ca_certificate", "pins", "tuf_root"}
)
_REFUSAL_MEMBERS: Final = frozenset({"version", "refusal", "message"})
_PEM_TEXT: Final = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?"
)


@dataclass(frozen=True, slots=True)
class PairingRequest:
    """The box's request (3.1). Invariant: `box_id` matches BOX_ID_PATTERN."""

    box_id: str
    code_id: bytes
    csr_der: bytes
    proof: bytes

    def to_json(self) -> bytes:
        return _dump(
            {
                "version": MESSAGE_VERSION,
                "box_id": self.box_id,
                "code_id": self.code_id.hex(),
                "csr": base64.b64encode(self.csr_der).decode("ascii"),
                "proof": self.proof.hex(),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> PairingRequest:
        """Parse a request body; MessageFormatError names what breaks 3.1."""
        raw = _load_object(data, MAX_REQUEST_BYTES, "the request", MessageFormatError)
        fields = _Fields(raw, _REQUEST_MEMBERS, "the request", MessageFormatError)
        fields.version()
        return cls(
            box_id=fields.text("box_id", 64, BOX_ID_PATTERN),
            code_id=fields.hex_bytes("code_id", CODE_ID_BYTES),
            csr_der=fields.base64_bytes("csr", MAX_CSR_DER_BYTES),
            proof=fields.hex_bytes("proof", PROOF_BYTES),
        )


@dataclass(frozen=True, slots=True)
class PairingGrant:
    """The back office's answer (3.2). Everything in it is public."""

    box_id: str
    certificate_pem: bytes
    ca_certificate_pem: bytes
    pins: tuple[str, ...]
    tuf_root: bytes = field(repr=False)

    def to_json(self) -> bytes:
        return _dump(
            {
                "version": MESSAGE_VERSION,
                "box_id": self.box_id,
                "certificate": self.certificate_pem.decode("ascii"),
                "ca_certificate": self.ca_certificate_pem.decode("ascii"),
                "pins": list(self.pins),
                "tuf_root": base64.b64encode(self.tuf_root).decode("ascii"),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> PairingGrant:
        """Parse a grant body; MessageFormatError names what breaks 3.2."""
        raw = _load_object(data, MAX_GRANT_BYTES, "the grant", MessageFormatError)
        fields = _Fields(raw, _GRANT_MEMBERS, "the grant", MessageFormatError)
        fields.version()
        return cls(
            box_id=fields.text("box_id", 64, BOX_ID_PATTERN),
            certificate_pem=fields.text("certificate", MAX_CERTIFICATE_PEM_CHARS, _PEM_TEXT).encode(
                "ascii"
            ),
            ca_certificate_pem=fields.text(
                "ca_certificate", MAX_CERTIFICATE_PEM_CHARS, _PEM_TEXT
            ).encode("ascii"),
            pins=fields.pins("pins"),
            tuf_root=fields.base64_bytes("tuf_root", MAX_TUF_ROOT_BYTES),
        )


@dataclass(frozen=True, slots=True)
class RefusalMessage:
    """A refusal as the box reads it (3.3). Invariant: `kind` is one of REFUSAL_KINDS."""

    kind: str
    message: str


def refusal_json(refusal: PairingRefused) -> bytes:
    """The body of the answer to a refused request; its status is `refusal.http_status`."""
    message = str(refusal)[:MAX_REFUSAL_MESSAGE_CHARS]
    return _dump({"version": MESSAGE_VERSION, "refusal": refusal.kind, "message": message})


def parse_refusal(data: bytes) -> RefusalMessage:
    """Read a refusal body; MessageFormatError if it is not one."""
    raw = _load_object(data, MAX_GRANT_BYTES, "the refusal", MessageFormatError)
    fields = _Fields(raw, _REFUSAL_MEMBERS, "the refusal", MessageFormatError)
    fields.version()
    kind = fields.text("refusal", 40)
    if kind not in REFUSAL_KINDS:
        raise MessageFormatError(f"the refusal: {kind!r} is not a refusal of docs/pairing.md 3.3")
    return RefusalMessage(kind, fields.text("message", MAX_REFUSAL_MESSAGE_CHARS))


# --- the ledger (docs/pairing.md 5.1) -------------------------------------------------------------


class CodeState(StrEnum):
    OPEN = "open"
    USED = "used"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class CodeRecord:
    """One issued code. Invariants: `expires_at_s = issued_at_s + CODE_VALIDITY_S`;
    `certificate_pem` is set exactly when the state is USED. `proof_key` is secret while the
    code is open, so it stays out of repr."""

    code_id: bytes
    box_id: str
    issued_at_s: float
    expires_at_s: float
    state: CodeState
    proof_key: bytes = field(repr=False)
    replaces_serial: int | None = None
    certificate_pem: bytes | None = None

    def is_live(self, now_s: float) -> bool:
        """Open and inside its window: `issued_at_s <= now_s < expires_at_s`."""
        return self.state is CodeState.OPEN and self.issued_at_s <= now_s < self.expires_at_s


@dataclass(frozen=True, slots=True)
class PairedBox:
    """A box's current pairing: the serial of the one certificate it was granted last."""

    box_id: str
    serial: int
    paired_at_s: float
    not_after_s: float


@dataclass(frozen=True, slots=True)
class DeniedCertificate:
    """A withdrawn certificate; `reason` is "unpaired" or "re-paired"."""

    serial: int
    box_id: str
    denied_at_s: float
    not_after_s: float
    reason: str


_CODE_MEMBERS: Final = frozenset(
    {
        "code_id",
        "box_id",
        "issued_at_s",
        "expires_at_s",
        "state",
        "proof_key",
        "replaces_serial",
        "certificate",
    }
)
_PAIRED_MEMBERS: Final = frozenset({"box_id", "serial", "paired_at_s", "not_after_s"})
_DENIED_MEMBERS: Final = frozenset({"serial", "box_id", "denied_at_s", "not_after_s", "reason"})
_LEDGER_MEMBERS: Final = frozenset({"version", "codes", "paired", "denied"})
_DENY_REASONS: Final = frozenset({"unpaired", "re-paired"})


@dataclass(frozen=True, slots=True)
class PairingLedger:
    """The back office's pairing state. Invariants: at most one PairedBox per box id; code ids
    are unique. Immutable: every operation returns a new ledger."""

    codes: tuple[CodeRecord, ...] = ()
    paired: tuple[PairedBox, ...] = ()
    denied: tuple[DeniedCertificate, ...] = ()

    def code(self, code_id: bytes) -> CodeRecord | None:
        return next((record for record in self.codes if record.code_id == code_id), None)

    def pairing_of(self, box_id: str) -> PairedBox | None:
        return next((box for box in self.paired if box.box_id == box_id), None)

    def is_denied(self, serial: int) -> bool:
        return any(entry.serial == serial for entry in self.denied)

    def to_json(self) -> bytes:
        return _dump(
            {
                "version": MESSAGE_VERSION,
                "codes": [_code_document(record) for record in self.codes],
                "paired": [_paired_document(box) for box in self.paired],
                "denied": [_denied_document(entry) for entry in self.denied],
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> PairingLedger:
        """Read a persisted ledger; LedgerFormatError names what is wrong."""
        raw = _load_object(data, MAX_LEDGER_BYTES, "the ledger", LedgerFormatError)
        fields = _Fields(raw, _LEDGER_MEMBERS, "the ledger", LedgerFormatError)
        fields.version()
        return cls(
            codes=tuple(_code_record(item) for item in _list(fields, "codes")),
            paired=tuple(_paired_box(item) for item in _list(fields, "paired")),
            denied=tuple(_denied_certificate(item) for item in _list(fields, "denied")),
        )


def _list(fields: _Fields, name: str) -> list[object]:
    value = fields.raw(name)
    if not isinstance(value, list):
        raise LedgerFormatError(f"the ledger: member {name!r} must be a list")
    return value


def _code_document(record: CodeRecord) -> dict[str, Any]:
    return {
        "code_id": record.code_id.hex(),
        "box_id": record.box_id,
        "issued_at_s": record.issued_at_s,
        "expires_at_s": record.expires_at_s,
        "state": record.state.value,
        "proof_key": record.proof_key.hex(),
        "replaces_serial": None
        if record.replaces_serial is None
        else f"{record.replaces_serial:x}",
        "certificate": None if record.certificate_pem is None else record.certificate_pem.decode(),
    }


def _code_record(item: object) -> CodeRecord:
    fields = _Fields(item, _CODE_MEMBERS, "a ledger code", LedgerFormatError)
    state_text = fields.text("state", 16)
    if state_text not in {state.value for state in CodeState}:
        raise LedgerFormatError(f"a ledger code: state {state_text!r} is not a code state")
    certificate = fields.raw("certificate")
    state = CodeState(state_text)
    if (certificate is not None) != (state is CodeState.USED):
        raise LedgerFormatError("a ledger code: a certificate belongs to exactly the used codes")
    return CodeRecord(
        code_id=fields.hex_bytes("code_id", CODE_ID_BYTES),
        box_id=fields.text("box_id", 64, BOX_ID_PATTERN),
        issued_at_s=fields.number("issued_at_s"),
        expires_at_s=fields.number("expires_at_s"),
        state=state,
        proof_key=fields.hex_bytes("proof_key", 32),
        replaces_serial=fields.optional_serial("replaces_serial"),
        certificate_pem=None
        if certificate is None
        else fields.text("certificate", MAX_CERTIFICATE_PEM_CHARS, _PEM_TEXT).encode("ascii"),
    )


def _paired_document(box: PairedBox) -> dict[str, Any]:
    return {
        "box_id": box.box_id,
        "serial": f"{box.serial:x}",
        "paired_at_s": box.paired_at_s,
        "not_after_s": box.not_after_s,
    }


def _paired_box(item: object) -> PairedBox:
    fields = _Fields(item, _PAIRED_MEMBERS, "a ledger pairing", LedgerFormatError)
    return PairedBox(
        box_id=fields.text("box_id", 64, BOX_ID_PATTERN),
        serial=fields.serial("serial"),
        paired_at_s=fields.number("paired_at_s"),
        not_after_s=fields.number("not_after_s"),
    )


def _denied_document(entry: DeniedCertificate) -> dict[str, Any]:
    return {
        "serial": f"{entry.serial:x}",
        "box_id": entry.box_id,
        "denied_at_s": entry.denied_at_s,
        "not_after_s": entry.not_after_s,
        "reason": entry.reason,
    }


def _denied_certificate(item: object) -> DeniedCertificate:
    fields = _Fields(item, _DENIED_MEMBERS, "a ledger denial", LedgerFormatError)
    reason = fields.text("reason", 16)
    if reason not in _DENY_REASONS:
        raise LedgerFormatError(f"a ledger denial: reason {reason!r} is not one of {_DENY_REASONS}")
    return DeniedCertificate(
        serial=fields.serial("serial"),
        box_id=fields.text("box_id", 64, BOX_ID_PATTERN),
        denied_at_s=fields.number("denied_at_s"),
        not_after_s=fields.number("not_after_s"),
        reason=reason,
    )


# --- the back office's operations -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackOfficeTrust:
    """What every grant hands out. Invariants: 1 to MAX_PINS valid pins, the serving pin first
    (codes check it); a TUF root of 1 to MAX_TUF_ROOT_BYTES bytes (opaque here)."""

    pins: tuple[str, ...]
    tuf_root: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_pins(self.pins)
        if not 1 <= len(self.tuf_root) <= MAX_TUF_ROOT_BYTES:
            raise AdminInputError(f"the TUF root must be 1 to {MAX_TUF_ROOT_BYTES} bytes")


def _check_pins(pins: Sequence[str]) -> None:
    if not 1 <= len(pins) <= MAX_PINS:
        raise AdminInputError(f"the back office needs 1 to {MAX_PINS} pins, not {len(pins)}")
    try:
        for pin in pins:
            parse_pin(pin)
    except PinFormatError as exc:
        raise AdminInputError(str(exc)) from None


def _check_box_id(box_id: str) -> None:
    if not BOX_ID_PATTERN.fullmatch(box_id):
        raise AdminInputError(f"box id {box_id!r} must match {BOX_ID_PATTERN.pattern}")


def prune_ledger(ledger: PairingLedger, now_s: float) -> PairingLedger:
    """Forget code records 7 days after their expiry and denied serials whose certificate has
    expired. Every operation below prunes first, which keeps the ledger bounded."""
    return replace(
        ledger,
        codes=tuple(r for r in ledger.codes if now_s < r.expires_at_s + CODE_RECORD_KEEP_S),
        denied=tuple(d for d in ledger.denied if now_s < d.not_after_s),
    )


def issue_code(
    ledger: PairingLedger,
    box_id: str,
    address: str,
    pins: Sequence[str],
    now_s: float,
    nonce_bytes: bytes,
    *,
    re_pair: bool = False,
) -> tuple[PairingLedger, PairingCode]:
    """A new one-time code for `box_id` (`mvb-admin pair-code`). `pins[0]` is the pin of the key
    the pairing endpoint presents; `nonce_bytes` are NONCE_BYTES from a CSPRNG. A paired box gets
    a code only with `re_pair`, and that code replaces exactly the box's current certificate."""
    _check_box_id(box_id)
    _check_pins(pins)
    if len(nonce_bytes) != NONCE_BYTES:
        raise AdminInputError(f"a nonce is {NONCE_BYTES} bytes, not {len(nonce_bytes)}")
    try:
        code = PairingCode.for_back_office(address, nonce_bytes, pins[0])
    except CodeFormatError as exc:
        raise AdminInputError(str(exc)) from None
    ledger = prune_ledger(ledger, now_s)
    current = ledger.pairing_of(box_id)
    if current is not None and not re_pair:
        raise AlreadyPaired(
            f"box {box_id} is paired (certificate serial {current.serial:x}); "
            "make a re-pair code to pair it again",
            ledger,
        )
    _check_open_code_bounds(ledger, box_id, now_s)
    if ledger.code(code.code_id) is not None:
        raise AdminInputError("this nonce was used before: the random source is broken")
    record = CodeRecord(
        code_id=code.code_id,
        box_id=box_id,
        issued_at_s=now_s,
        expires_at_s=now_s + CODE_VALIDITY_S,
        state=CodeState.OPEN,
        proof_key=code.proof_key,
        replaces_serial=None if current is None else current.serial,
    )
    return replace(ledger, codes=(*ledger.codes, record)), code


def _check_open_code_bounds(ledger: PairingLedger, box_id: str, now_s: float) -> None:
    live = [record for record in ledger.codes if record.is_live(now_s)]
    if len(live) >= MAX_OPEN_CODES:
        raise TooManyOpenCodes(f"{len(live)} codes are open; wait until some expire")
    if sum(record.box_id == box_id for record in live) >= MAX_OPEN_CODES_PER_BOX:
        raise TooManyOpenCodes(
            f"box {box_id} has {MAX_OPEN_CODES_PER_BOX} open codes; use one or let them expire"
        )


def redeem(
    ledger: PairingLedger,
    request_json: bytes,
    now_s: float,
    ca: Issued,
    trust: BackOfficeTrust,
) -> tuple[PairingLedger, PairingGrant]:
    """Check a box's request (docs/pairing.md 4.2, in that order) and grant it a certificate.

    Raises a PairingRefused subclass by fault; its `ledger` is the ledger to persist.
    """
    ledger = prune_ledger(ledger, now_s)
    try:
        request = PairingRequest.from_json(request_json)
    except MessageFormatError as exc:
        raise MalformedRequest(str(exc), ledger) from None
    record = ledger.code(request.code_id)
    if record is None:
        raise CodeUnknown(
            "the back office does not know this pairing code; ask the admin for a new one", ledger
        )
    if record.state is CodeState.WITHDRAWN:
        raise CodeWithdrawn("this pairing code was withdrawn; ask the admin for a new one", ledger)
    _check_proof(ledger, record, request)
    if record.state is CodeState.USED:
        return ledger, _grant_again(ledger, record, request, now_s, ca, trust)
    _check_window(ledger, record, now_s)
    if request.box_id != record.box_id:
        raise BoxIdMismatch(
            f"this pairing code is for another box than {request.box_id}; "
            "enter it on the box it was made for",
            ledger,
        )
    csr = _valid_csr(ledger, request)
    _check_pairing_state(ledger, record)
    return _grant(ledger, record, csr, now_s, ca, trust)


def _check_proof(ledger: PairingLedger, record: CodeRecord, request: PairingRequest) -> None:
    expected = proof_of(record.proof_key, request.box_id, request.csr_der)
    if hmac.compare_digest(expected, request.proof):
        return
    # Only someone without the nonce gets here: an attacker or a tampered request (RULES L2).
    withdrawn = ledger
    if record.state is CodeState.OPEN:
        withdrawn = _replace_code(ledger, replace(record, state=CodeState.WITHDRAWN))
    raise ProofInvalid(
        "the request does not prove knowledge of the pairing code; the code is withdrawn, "
        "ask the admin for a new one",
        withdrawn,
    )


def _check_window(ledger: PairingLedger, record: CodeRecord, now_s: float) -> None:
    if now_s < record.issued_at_s:
        raise CodeExpired(
            "the back office clock is before this code's issue time; ask for a new code", ledger
        )
    if now_s >= record.expires_at_s:
        minutes = CODE_VALIDITY_S // 60
        raise CodeExpired(
            f"this pairing code expired ({minutes} minutes after it was made); "
            "ask the admin for a new one",
            ledger,
        )


def _grant_again(
    ledger: PairingLedger,
    record: CodeRecord,
    request: PairingRequest,
    now_s: float,
    ca: Issued,
    trust: BackOfficeTrust,
) -> PairingGrant:
    """A used code answers again only a lost grant: same key, inside the window (5.3)."""
    assert record.certificate_pem is not None  # a USED record holds its certificate
    certificate = x509.load_pem_x509_certificate(record.certificate_pem)
    if record.issued_at_s <= now_s < record.expires_at_s and _spki_der(
        certificate.public_key()
    ) == _csr_spki_der(request.csr_der):
        return _grant_message(record.box_id, record.certificate_pem, ca, trust)
    raise CodeReused(
        "this pairing code was already used; ask the admin for a new one "
        "(if this box did not use it, tell the admin: someone else did)",
        ledger,
    )


def _spki_der(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _csr_spki_der(csr_der: bytes) -> bytes | None:
    try:
        return _spki_der(x509.load_der_x509_csr(csr_der).public_key())
    except (ValueError, UnsupportedAlgorithm):
        return None


def _valid_csr(ledger: PairingLedger, request: PairingRequest) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_der_x509_csr(request.csr_der)
        signature_ok = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm, InvalidSignature):
        raise CsrInvalid("the certificate request is not a PKCS#10 request", ledger) from None
    if not signature_ok:
        raise CsrInvalid("the certificate request's signature does not verify", ledger)
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or names[0].value != request.box_id:
        raise CsrInvalid(
            f"the certificate request's CN must be the box id {request.box_id}", ledger
        )
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CsrInvalid("the certificate request's key must be ECDSA P-256", ledger)
    return csr


def _check_pairing_state(ledger: PairingLedger, record: CodeRecord) -> None:
    current = ledger.pairing_of(record.box_id)
    current_serial = None if current is None else current.serial
    if current_serial == record.replaces_serial:
        return
    raise AlreadyPaired(
        f"box {record.box_id} was paired (again) after this code was made; "
        "the admin must make a re-pair code",
        ledger,
    )


def _grant(
    ledger: PairingLedger,
    record: CodeRecord,
    csr: x509.CertificateSigningRequest,
    now_s: float,
    ca: Issued,
    trust: BackOfficeTrust,
) -> tuple[PairingLedger, PairingGrant]:
    certificate = issue_client_cert_for_csr(ca, csr, record.box_id, now_s)
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    not_after_s = certificate.not_valid_after_utc.timestamp()
    denied = ledger.denied
    current = ledger.pairing_of(record.box_id)
    if current is not None:
        denied = (*denied, _denial(current, now_s, "re-paired"))
    pairing = PairedBox(record.box_id, certificate.serial_number, now_s, not_after_s)
    used = replace(record, state=CodeState.USED, certificate_pem=pem)
    new_ledger = replace(
        _replace_code(ledger, used),
        paired=(*(box for box in ledger.paired if box.box_id != record.box_id), pairing),
        denied=denied,
    )
    return new_ledger, _grant_message(record.box_id, pem, ca, trust)


def _grant_message(box_id: str, pem: bytes, ca: Issued, trust: BackOfficeTrust) -> PairingGrant:
    return PairingGrant(box_id, pem, ca.cert_pem, trust.pins, trust.tuf_root)


def _denial(box: PairedBox, now_s: float, reason: str) -> DeniedCertificate:
    return DeniedCertificate(box.serial, box.box_id, now_s, box.not_after_s, reason)


def _replace_code(ledger: PairingLedger, record: CodeRecord) -> PairingLedger:
    codes = tuple(record if r.code_id == record.code_id else r for r in ledger.codes)
    return replace(ledger, codes=codes)


def unpair(ledger: PairingLedger, box_id: str, now_s: float) -> PairingLedger:
    """Withdraw a box (`mvb-admin unpair`): its serial goes on the deny list and its open codes
    are withdrawn. NotPaired if the box is not paired."""
    ledger = prune_ledger(ledger, now_s)
    current = ledger.pairing_of(box_id)
    if current is None:
        raise NotPaired(f"box {box_id} is not paired")
    codes = tuple(
        replace(r, state=CodeState.WITHDRAWN)
        if r.box_id == box_id and r.state is CodeState.OPEN
        else r
        for r in ledger.codes
    )
    return PairingLedger(
        codes=codes,
        paired=tuple(box for box in ledger.paired if box.box_id != box_id),
        denied=(*ledger.denied, _denial(current, now_s, "unpaired")),
    )


def check_client_serial(ledger: PairingLedger, serial: int) -> None:
    """The server's check on every request of a mutual-TLS client: CertificateDenied if the
    certificate was withdrawn."""
    entry = next((d for d in ledger.denied if d.serial == serial), None)
    if entry is not None:
        raise CertificateDenied(
            f"the certificate {serial:x} of box {entry.box_id} was withdrawn ({entry.reason})"
        )


# --- the CA's signature ---------------------------------------------------------------------------


def issue_client_cert_for_csr(
    ca: Issued, csr: x509.CertificateSigningRequest, box_id: str, now_s: float
) -> x509.Certificate:
    """A box's client certificate for the CSR's public key, shaped like backoffice/pki.py's client
    certificates (docs/pairing.md 3.2). Only the key is taken from the CSR: its subject and
    extensions are ignored, so the box cannot ask for more than a client certificate."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise AdminInputError("the back office CA key must be ECDSA (backoffice/pki.py)")
    now = datetime.datetime.fromtimestamp(now_s, tz=datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, box_id),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
