"""The back office's pairing ledger (docs/pairing.md 5.1): its records and its JSON document, pure.

`PairingLedger` is the back office's whole pairing state: the codes issued (`CodeRecord`), the
boxes paired (`PairedBox`) and the certificates denied (`DeniedCertificate`). The operations
over it are backoffice/pairing.py; the file that holds it is backoffice/pairing_service.py
(`LedgerStore`). This module only defines the records and reads and writes the document.

Invariants:
- Immutable: every operation returns a new ledger. At most one PairedBox per box id; code ids
  are unique.
- `from_json` reads only what `to_json` writes (closed members, bounded sizes, the message
  version); anything else is LedgerFormatError, never a partial ledger.
- A code's `proof_key` is secret while the code is open: it stays out of every repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from common.faults import StorageFault
from protocol.pairing_code import CODE_ID_BYTES, PROOF_KEY_BYTES
from protocol.pairing_messages import (
    BOX_ID_PATTERN,
    DEVICE_KEY_BYTES,
    MAX_BOX_ID_CHARS,
    MAX_CERTIFICATE_PEM_CHARS,
    MESSAGE_VERSION,
    PEM_TEXT,
)
from protocol.strict_json import Fields, dump_json, load_object

MAX_LEDGER_BYTES: Final = 64 * 1024 * 1024


class PairingError(Exception):
    """Base of the back office's pairing errors (the shared formats have their own), never raised
    itself; each kind below has its root in common/faults.py."""


class LedgerFormatError(PairingError, ValueError, StorageFault):
    """The persisted ledger is not a ledger this version wrote."""


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
    """A box's current pairing: the serial of the one certificate it was granted last, and the
    device key (Ed25519, 32 bytes) its request enrolled: what its signed reports are verified
    against. None only for a pairing made before requests carried it (the box must re-pair)."""

    box_id: str
    serial: int
    paired_at_s: float
    not_after_s: float
    device_key: bytes | None = None


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
_PAIRED_MEMBERS_V1: Final = frozenset({"box_id", "serial", "paired_at_s", "not_after_s"})
"""A pairing written before the device key was enrolled: read as `device_key` None."""
_PAIRED_MEMBERS: Final = _PAIRED_MEMBERS_V1 | {"device_key"}
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
        return dump_json(
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
        raw = load_object(data, MAX_LEDGER_BYTES, "the ledger", LedgerFormatError)
        fields = Fields(raw, _LEDGER_MEMBERS, "the ledger", LedgerFormatError)
        fields.version(MESSAGE_VERSION)
        return cls(
            codes=tuple(_code_record(item) for item in _list(fields, "codes")),
            paired=tuple(_paired_box(item) for item in _list(fields, "paired")),
            denied=tuple(_denied_certificate(item) for item in _list(fields, "denied")),
        )


def _list(fields: Fields, name: str) -> list[object]:
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
    fields = Fields(item, _CODE_MEMBERS, "a ledger code", LedgerFormatError)
    state_text = fields.text("state", 16)
    if state_text not in {state.value for state in CodeState}:
        raise LedgerFormatError(f"a ledger code: state {state_text!r} is not a code state")
    certificate = fields.raw("certificate")
    state = CodeState(state_text)
    if (certificate is not None) != (state is CodeState.USED):
        raise LedgerFormatError("a ledger code: a certificate belongs to exactly the used codes")
    return CodeRecord(
        code_id=fields.hex_bytes("code_id", CODE_ID_BYTES),
        box_id=fields.text("box_id", MAX_BOX_ID_CHARS, BOX_ID_PATTERN),
        issued_at_s=fields.number("issued_at_s"),
        expires_at_s=fields.number("expires_at_s"),
        state=state,
        proof_key=fields.hex_bytes("proof_key", PROOF_KEY_BYTES),
        replaces_serial=fields.optional_serial("replaces_serial"),
        certificate_pem=None
        if certificate is None
        else fields.text("certificate", MAX_CERTIFICATE_PEM_CHARS, PEM_TEXT).encode("ascii"),
    )


def _paired_document(box: PairedBox) -> dict[str, Any]:
    return {
        "box_id": box.box_id,
        "serial": f"{box.serial:x}",
        "paired_at_s": box.paired_at_s,
        "not_after_s": box.not_after_s,
        "device_key": None if box.device_key is None else box.device_key.hex(),
    }


def _paired_box(item: object) -> PairedBox:
    members = _PAIRED_MEMBERS if isinstance(item, dict) and "device_key" in item else None
    fields = Fields(item, members or _PAIRED_MEMBERS_V1, "a ledger pairing", LedgerFormatError)
    enrolled = None if members is None or fields.raw("device_key") is None else True
    return PairedBox(
        box_id=fields.text("box_id", MAX_BOX_ID_CHARS, BOX_ID_PATTERN),
        serial=fields.serial("serial"),
        paired_at_s=fields.number("paired_at_s"),
        not_after_s=fields.number("not_after_s"),
        device_key=None if enrolled is None else fields.hex_bytes("device_key", DEVICE_KEY_BYTES),
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
    fields = Fields(item, _DENIED_MEMBERS, "a ledger denial", LedgerFormatError)
    reason = fields.text("reason", 16)
    if reason not in _DENY_REASONS:
        raise LedgerFormatError(f"a ledger denial: reason {reason!r} is not one of {_DENY_REASONS}")
    return DeniedCertificate(
        serial=fields.serial("serial"),
        box_id=fields.text("box_id", MAX_BOX_ID_CHARS, BOX_ID_PATTERN),
        denied_at_s=fields.number("denied_at_s"),
        not_after_s=fields.number("not_after_s"),
        reason=reason,
    )
