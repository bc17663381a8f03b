"""The back office's viewing log (RULES S7, H2O art. 5): who decrypted what, when and why. Pure.

The log is an "MVB audit v1" log (storage/audit.py, whose docstring is the format: JSON lines,
each holding the SHA-256 of the line before and an Ed25519 signature), signed by the back
office's viewing key instead of a box's device key. So the chain code, its verification and its
appender (storage/audit_io.py) are the box's own, not a second copy; this module only says what
a viewing entry holds and how a noted head is checked. The shell is backoffice/viewing_io.py.

Entries (`event`, then `fields`):
- `viewing.log_started`: `key_id` of the viewing key (the first entry).
- `viewing.decrypted`: one per file decrypted: `file`, `file_sha256`, `recording_id`,
  `file_id`, `file_seq`, `holders` (names, comma-separated), `key_ids` (of the keys that opened
  it), `threshold`, `format_version`, `key_committed`, `reason`, `operator` (the login that ran
  the command), `out` (where the plaintext went). `at_ms` of the entry is the when.
- `viewing.refused`: a decryption that did not happen (one key holder of a four-eyes file, a
  wrong passphrase, a file that fails its checks): `file`, `file_sha256`, `holders`, `key_ids`,
  `reason`, `operator`, `error`.

What the chain proves, and what not: no entry was altered, removed or inserted before the last
one, and each was signed by the viewing key. Cutting entries off the end, or rewriting the log
with the viewing key, needs an anchor from outside: the head (`seq:hash`) that `mvb-admin
decrypt` prints is noted on the paper viewing form, and `mvb-admin viewing verify --head`
checks the log still holds it (docs/four-eyes.md).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from common.faults import MisuseFault
from storage.audit import Scalar, split_lines, verify_audit_log
from storage.devicekey import DevicePublicKey
from storage.reader import ReadReport

STARTED: Final = "viewing.log_started"
DECRYPTED: Final = "viewing.decrypted"
REFUSED: Final = "viewing.refused"
MAX_REASON_CHARS: Final = 500
"""The why, as the approval names it (a request number, a complaint); within one audit string."""
MAX_FIELD_CHARS: Final = 512
HEAD_HEX_CHARS: Final = 16
"""What the holders note of a head's hash: 64 bits, enough that no rewrite meets it by chance."""
_HEAD = re.compile(r"(\d{1,19}):([0-9a-f]{16,64})")


class ViewingInputError(ValueError, MisuseFault):
    """A reason or a noted head that cannot be used: the command is refused."""


@dataclass(frozen=True, slots=True)
class Viewing:
    """Who is viewing and why: the holders whose keys were unlocked, their key ids, the reason
    given, and the login that ran the command."""

    holders: tuple[str, ...]
    key_ids: tuple[str, ...]
    reason: str
    operator: str

    def __post_init__(self) -> None:
        check_reason(self.reason)


def check_reason(reason: str) -> None:
    if not reason.strip() or len(reason) > MAX_REASON_CHARS:
        raise ViewingInputError(f"--reason must say why, in 1 to {MAX_REASON_CHARS} characters")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 1] + "…"


def _who(viewing: Viewing) -> dict[str, Scalar]:
    return {
        "holders": _clip(",".join(viewing.holders)),
        "reason": viewing.reason,
        "operator": _clip(viewing.operator),
    }


def decrypted_fields(
    viewing: Viewing, file_name: str, report: ReadReport, out: str
) -> dict[str, Scalar]:
    """The fields of a `viewing.decrypted` entry for one file that was decrypted."""
    header = report.header
    return {
        **_who(viewing),
        "file": _clip(file_name),
        "file_sha256": report.file_sha256_hex,
        "recording_id": header.recording_id.hex(),
        "file_id": header.file_id.hex(),
        "file_seq": header.file_seq,
        "key_ids": ",".join(report.key_ids),
        "threshold": header.threshold,
        "format_version": header.version,
        "key_committed": report.key_committed,
        "out": _clip(out),
    }


def refused_fields(
    viewing: Viewing, file_name: str, file_sha256: str | None, error: str
) -> dict[str, Scalar]:
    """The fields of a `viewing.refused` entry: what was asked, and why it did not happen."""
    return {
        **_who(viewing),
        "file": _clip(file_name),
        "file_sha256": file_sha256,
        "key_ids": ",".join(viewing.key_ids),
        "error": _clip(error),
    }


@dataclass(frozen=True, slots=True)
class NotedHead:
    """A head as the holders noted it: `seq:hash`, the hash at least 16 hex digits."""

    seq: int
    hash_prefix: str

    @classmethod
    def parse(cls, text: str) -> NotedHead:
        match = _HEAD.fullmatch(text.strip().lower())
        if match is None:
            raise ViewingInputError(f"a head is SEQ:HASH (16 to 64 hex digits), not {text!r}")
        return cls(int(match[1]), match[2])


def head_text(seq: int, head_hex: str) -> str:
    """How a head is shown for the holders to note."""
    return f"{seq}:{head_hex[:HEAD_HEX_CHARS]}"


@dataclass(frozen=True, slots=True)
class ViewingCheck:
    ok: bool
    message: str


def check_viewing_log(
    data: bytes, public_key: DevicePublicKey, noted: NotedHead | None = None
) -> ViewingCheck:
    """Verify the chain and every signature; with `noted`, also that the log still holds that
    head (entry `seq` with that hash): a log cut short or rewritten since fails it."""
    report = verify_audit_log(data, public_key)
    if not report.ok:
        return ViewingCheck(False, f"viewing log BROKEN: {report.first_problem}")
    if report.last_seq is None or report.head_sha256_hex is None:
        return ViewingCheck(False, "viewing log BROKEN: it is empty (not even its start)")
    if noted is not None:
        problem = _noted_head_problem(data, noted, report.last_seq)
        if problem is not None:
            return ViewingCheck(False, f"viewing log BROKEN: {problem}")
    head = head_text(report.last_seq, report.head_sha256_hex)
    checked = "" if noted is None else f", holds the noted head {noted.seq}"
    return ViewingCheck(
        True,
        f"viewing log OK: {report.entries} entries, chain and signatures verify with key "
        f"{public_key.key_id()}{checked}; head {head}",
    )


def _noted_head_problem(data: bytes, noted: NotedHead, last_seq: int) -> str | None:
    if noted.seq > last_seq:
        return f"the noted head {noted.seq} is beyond the last entry {last_seq} (cut short)"
    # The chain verified from seq 0 up, one entry per line: line `seq` is entry `seq`.
    line = split_lines(data)[0][noted.seq]
    if not hashlib.sha256(line).hexdigest().startswith(noted.hash_prefix):
        return f"entry {noted.seq} is not the one noted (the log was rewritten)"
    return None
