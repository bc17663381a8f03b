"""Strict JSON for the wire formats: one object, exactly the expected members, typed reads.

Invariants: a duplicate member, a NaN/Infinity constant, a body over its bound or a document
that is not UTF-8 JSON is refused before any member is read; every refusal is the caller's
`fault` class, naming the member and never repeating its value.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Final, NoReturn

from common.faults import RemoteFault

_LOWER_HEX: Final = re.compile(r"[0-9a-f]*")
_SERIAL_HEX: Final = re.compile(r"[0-9a-f]{1,40}")
MAX_SERIAL_HEX_CHARS: Final = 40
"""An X.509 serial is at most 20 bytes (RFC 5280)."""


class _NotStrict(ValueError, RemoteFault):
    """Valid JSON that the wire formats still refuse: a member named twice (json.loads would let
    the last one win silently) or a NaN/Infinity constant."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _NotStrict(f"member {key!r} appears twice")
        result[key] = value
    return result


def _no_constants(name: str) -> NoReturn:
    raise _NotStrict(f"{name} is not a JSON number")


def load_object(data: bytes, max_bytes: int, what: str, fault: type[Exception]) -> object:
    """Parse `data` (at most `max_bytes`) as UTF-8 JSON without duplicates or NaN; `fault`
    otherwise, naming `what`."""
    if len(data) > max_bytes:
        raise fault(f"{what} is {len(data)} bytes; at most {max_bytes} are allowed")
    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_no_constants
        )
    except _NotStrict as exc:
        raise fault(f"{what}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int limit
        raise fault(f"{what} is not UTF-8 JSON: {exc}") from None


def dump_json(document: dict[str, Any]) -> bytes:
    """The canonical encoding: sorted members, no blanks (identical bytes for equal documents)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


class Fields:
    """Typed reads of one JSON object with exactly `members`; every failure is `fault` naming the
    member (never its value, which may be anything a hostile peer sent)."""

    def __init__(
        self, value: object, members: frozenset[str], what: str, fault: type[Exception]
    ) -> None:
        if not isinstance(value, dict):
            raise fault(f"{what} must be a JSON object")
        missing, unknown = sorted(members - value.keys()), sorted(value.keys() - members)
        if missing or unknown:
            raise fault(f"{what}: missing members {missing}, unknown members {unknown}")
        self._value: dict[str, Any] = value
        self._what = what
        self._fault = fault

    def fail(self, name: str, expectation: str) -> NoReturn:
        raise self._fault(f"{self._what}: member {name!r} must be {expectation}")

    def raw(self, name: str) -> object:
        return self._value[name]

    def text(self, name: str, max_chars: int, pattern: re.Pattern[str] | None = None) -> str:
        value = self._value[name]
        if not isinstance(value, str) or len(value) > max_chars:
            self.fail(name, f"a string of at most {max_chars} characters")
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(name, f"a string matching {pattern.pattern}")
        return value

    def version(self, expected: int) -> None:
        """The member `version` is exactly the integer `expected` (true is not 1)."""
        value = self._value["version"]
        if type(value) is not int or value != expected:
            self.fail("version", f"the integer {expected}")

    def integer(self, name: str, low: int, high: int) -> int:
        """An integer from `low` to `high` (a bool or 1.0 is not one)."""
        value = self._value[name]
        if type(value) is not int or not low <= value <= high:
            self.fail(name, f"an integer from {low} to {high}")
        return value

    def number(self, name: str) -> float:
        value = self._value[name]
        if type(value) not in (int, float) or not math.isfinite(value):
            self.fail(name, "a finite number")
        return float(value)

    def hex_bytes(self, name: str, size: int) -> bytes:
        text = self.text(name, 2 * size)
        if not _LOWER_HEX.fullmatch(text) or len(text) != 2 * size:
            self.fail(name, f"{2 * size} lower-case hex characters")
        return bytes.fromhex(text)

    def base64_bytes(self, name: str, max_bytes: int) -> bytes:
        text = self.text(name, 4 * math.ceil(max_bytes / 3))
        try:
            decoded = base64.b64decode(text, validate=True)
        except binascii.Error:
            self.fail(name, "standard base64")
        if not 1 <= len(decoded) <= max_bytes:
            self.fail(name, f"1 to {max_bytes} bytes")
        return decoded

    def serial(self, name: str) -> int:
        return int(self.text(name, MAX_SERIAL_HEX_CHARS, _SERIAL_HEX), 16)

    def optional_serial(self, name: str) -> int | None:
        return None if self._value[name] is None else self.serial(name)
