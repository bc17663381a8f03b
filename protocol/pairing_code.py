"""The one-time pairing code (docs/pairing.md 2): derivations, the address, the typed form.

Shared by the back office (which makes codes) and the box (which parses them). Pure: no I/O, no
clock, no randomness (the nonce is the caller's).

Invariants:
- The nonce and the keys derived from it never appear in a repr or an error message; only
  `PairingCode.text()` shows the nonce, for the admin, once.
- Every single-character substitution and every adjacent swap in the symbols is caught by the
  check before a box opens any connection (2.5).
- An address is always handled in its canonical form (2.4): lower case, no `:443`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common.faults import MisuseFault
from transport.pinning import parse_pin

NONCE_BYTES: Final = 10
PIN_CHECK_BITS: Final = 50
CODE_ID_BYTES: Final = 16
PROOF_BYTES: Final = 32
PROOF_KEY_BYTES: Final = 32
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford's base32: no I, L, O or U, so no symbol looks like another."""
PAYLOAD_SYMBOLS: Final = 26
CODE_SYMBOLS: Final = 28
GROUP_SYMBOLS: Final = 4
MAX_TYPED_CODE_CHARS: Final = 400
MAX_HOST_CHARS: Final = 253
DEFAULT_PORT: Final = 443
PAIR_PATH: Final = "/pair/v1"

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


class PairingProtocolError(Exception):
    """Base of the errors of the shared pairing formats, never raised itself: a typed code that is
    not one (MisuseFault) and a message that breaks its schema (RemoteFault)."""


class CodeFormatError(PairingProtocolError, ValueError, MisuseFault):
    """A typed code (or an address) is not one: the message says what is wrong, never the code."""


class CodeTypo(CodeFormatError):
    """The typed code's check symbols do not match: a character is mistyped."""


# --- keys derived from the nonce (2.1, 2.3, 3.1) ------------------------------------------------


def _derive(nonce: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(nonce)


def code_id_of(nonce: bytes) -> bytes:
    """The 16-byte name of a code in requests and in the ledger; one-way from the nonce."""
    return _derive(nonce, _CODE_ID_INFO, CODE_ID_BYTES)


def proof_key_of(nonce: bytes) -> bytes:
    """The HMAC key of the request proof."""
    return _derive(nonce, _PROOF_KEY_INFO, PROOF_KEY_BYTES)


def pin_check_of(nonce: bytes, spki_sha256: bytes) -> int:
    """The 50-bit check of a server key, keyed by the nonce so it cannot be searched offline."""
    mac = hmac.new(_derive(nonce, _PIN_KEY_INFO, 32), spki_sha256, hashlib.sha256).digest()
    return int.from_bytes(mac[:7], "big") >> (56 - PIN_CHECK_BITS)


def proof_of(proof_key: bytes, box_id: str, device_key: bytes, csr_der: bytes) -> bytes:
    """HMAC-SHA256 over the box id, its device key (32 bytes, RFC 8032) and the CSR's DER bytes
    exactly as sent (docs/pairing.md 3.1)."""
    box = box_id.encode("ascii")
    message = _PROOF_LABEL + bytes([len(box)]) + box + device_key + csr_der
    return hmac.new(proof_key, message, hashlib.sha256).digest()


# --- the address (2.4) ----------------------------------------------------------------------------


def normalise_address(text: str) -> str:
    """The canonical `host[:port]` (lower case, no `:443`); CodeFormatError says what is wrong."""
    lowered = text.strip().lower()
    if not lowered:
        raise CodeFormatError("the back-office address before the '/' is missing")
    host_text, port = _split_port(lowered)
    host = canonical_host(host_text)
    return host if port == DEFAULT_PORT else f"{host}:{port}"


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of a canonical `host[:port]`; an IPv6 host loses its brackets."""
    host, port = _split_port(address)
    return (host[1:-1] if host.startswith("[") else host), port


def normalise_server_name(text: str) -> str:
    """A TLS server name as a certificate carries it: a DNS name or an IP address (IPv6 without
    brackets), lower case. CodeFormatError says what is wrong."""
    lowered = text.strip().lower()
    if not lowered:
        raise CodeFormatError("the server name is empty")
    try:
        return str(ipaddress.ip_address(lowered))
    except ValueError:
        pass
    if lowered.replace(".", "").isdigit() or ":" in lowered:
        raise CodeFormatError(f"server name {text!r} is neither a DNS name nor an IP address")
    return canonical_host(lowered)


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


def canonical_host(host: str) -> str:
    """A lower-case host of 2.4: a DNS name, an IPv4 address or a bracketed IPv6 address."""
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


# --- the check symbols (2.5) ----------------------------------------------------------------------


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
