"""The fleet admin's holds: a fleet document with one `[[holds]]` table more or less (RULES S4;
docs/fleet-config.md 11). PURE: document text in, document text out.

A fleet document is a complete configuration written by people (comments, order, layout), so
the tool edits its text, never re-writes it: a hold is one `[[holds]]` table appended at the end;
a release removes the lines of the one table that holds that recording. Either way the result is
read back (tomllib) and must be the same document with exactly that hold more or less; anything
else (a hold written in a shape the edit cannot find, an inline `holds = [...]`) is refused with
HoldEditError, and the admin edits the file by hand. The hold rules are the box's
(storage/holds.py `holds_from_tables`); no reason text ever goes into a document.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from common.faults import MisuseFault
from storage.holds import holds_from_tables

_HOLDS_HEADER = re.compile(r"^\s*\[\[\s*holds\s*\]\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")


class HoldEditError(ValueError, MisuseFault):
    """The document cannot take (or give up) that hold by a checked edit; nothing was signed."""


def holds_of(text: str) -> dict[str, str]:
    """The document's holds: recording id -> ground."""
    return holds_from_tables(_parse(text).get("holds", []))


def with_hold(text: str, recording_id: str, ground: str) -> str:
    """`text` with a `[[holds]]` table for `recording_id` appended."""
    before = _parse(text)
    if recording_id in holds_of(text):
        raise HoldEditError(f"the document already holds recording {recording_id}")
    table = f'[[holds]]\nrecording_id = "{recording_id}"\nground = "{ground}"\n'
    edited = text if text.endswith("\n") or not text else text + "\n"
    edited = f"{edited}\n{table}" if edited else table
    expected = {**before, "holds": [*before.get("holds", []), _table(recording_id, ground)]}
    _check(edited, expected)
    return edited


def without_hold(text: str, recording_id: str) -> str:
    """`text` without the `[[holds]]` table of `recording_id`."""
    before = _parse(text)
    holds = holds_of(text)
    if recording_id not in holds:
        raise HoldEditError(f"the document does not hold recording {recording_id}")
    lines = text.splitlines(keepends=True)
    start, end = _block_of(lines, recording_id)
    edited = "".join(lines[:start] + lines[end:])
    remaining = [h for h in before["holds"] if h.get("recording_id") != recording_id]
    expected = {k: v for k, v in before.items() if k != "holds"}
    if remaining:
        expected["holds"] = remaining
    _check(edited, expected)
    return edited


def _block_of(lines: list[str], recording_id: str) -> tuple[int, int]:
    """The line span of the `[[holds]]` table naming `recording_id`: its header up to the next
    table header (or the end)."""
    starts = [i for i, line in enumerate(lines) if _HOLDS_HEADER.match(line)]
    for start in starts:
        end = next(
            (i for i in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines)
        )
        try:
            block = tomllib.loads("".join(lines[start + 1 : end]))
        except tomllib.TOMLDecodeError:
            continue
        if block.get("recording_id") == recording_id:
            return start, end
    raise HoldEditError(
        f"the hold of recording {recording_id} is not a [[holds]] table this tool can remove; "
        "edit the document by hand"
    )


def _table(recording_id: str, ground: str) -> dict[str, str]:
    holds_from_tables([{"recording_id": recording_id, "ground": ground}])  # the box's rule
    return {"recording_id": recording_id, "ground": ground}


def _parse(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HoldEditError(f"the document is not valid TOML: {exc}") from exc


def _check(edited: str, expected: dict[str, Any]) -> None:
    try:
        parsed = tomllib.loads(edited)
    except tomllib.TOMLDecodeError as exc:
        raise HoldEditError(f"the edit would not be valid TOML ({exc}); edit by hand") from exc
    if parsed != expected:
        raise HoldEditError("the edit would change more than that hold; edit the document by hand")
    holds_from_tables(parsed.get("holds", []))
