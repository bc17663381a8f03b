"""Holds: which recordings must outlive retention (RULES S4: "unless held for a request, complaint
or police demand"). PURE: the book and its JSON; the store (storage/store.py) keeps it on the
card and copies it into the catalog's `held` flags.

A recording is held while at least one source holds it:
- `local`: set and released on the box (`mvb hold`, the admin's API route), audited with the
  channel and who; the reason the admin typed is never here (it is sealed, encrypted to the back
  office, as a note file of the recording: `note_file_id` names it);
- `fleet`: named by a signed fleet document (`[[holds]]`, docs/fleet-config.md 10) with a
  ground code (`request`, `complaint`, `police_demand`), never free text.

Invariants:
- the book is the record; the catalog's per-file `held` flag is its copy, so a hold covers every
  file of the recording, including files sealed later and files a catalog rebuild brings back;
- a book that is written is one this module reads back (`from_json(to_json())` is the identity);
  it holds recording ids, times, codes and account tags only: nothing personal;
- each source holds at most MAX_HOLDS recordings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Final

from common.faults import MisuseFault, StorageFault

HOLD_GROUNDS: Final = ("request", "complaint", "police_demand")
"""Why the fleet holds a recording: the three grounds of RULES S4, as codes."""
MAX_HOLDS: Final = 4096
LOCAL_CHANNELS: Final = frozenset({"local", "web", "recovery"})
RECORDING_ID: Final = re.compile(r"[0-9a-f]{32}")
_BY = re.compile(r"local|box|[0-9a-f]{12}")
_FORMAT = 1


class HoldBookError(ValueError, StorageFault):
    """The holds file is not a book this module wrote."""


class TooManyHolds(ValueError, MisuseFault):
    """A source would hold more than MAX_HOLDS recordings."""


@dataclass(frozen=True, slots=True)
class LocalHold:
    """A hold set on the box. `by` is "local" (the loopback channel), an account tag (12 hex:
    docs/webui.md 1.1, never a login name) or "box" (set by the box itself, see `recovered`)."""

    since_ms: int
    channel: str
    by: str
    note_file_id: str | None = None


@dataclass(frozen=True, slots=True)
class FleetHold:
    """A hold named by the signed fleet document with serial `config_serial`."""

    ground: str
    config_serial: int


def _frozen(items: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True)
class HoldBook:
    """The holds of one card, by recording id. Values are immutable: changes return a new book."""

    local: Mapping[str, LocalHold] = field(default_factory=lambda: _frozen(None))
    fleet: Mapping[str, FleetHold] = field(default_factory=lambda: _frozen(None))

    def held(self) -> frozenset[str]:
        return frozenset(self.local) | frozenset(self.fleet)

    def is_held(self, recording_id: str) -> bool:
        return recording_id in self.local or recording_id in self.fleet

    def sources(self, recording_id: str) -> tuple[str, ...]:
        """Who holds it: ("local",), ("fleet",), both, or ()."""
        return tuple(
            name
            for name, holds in (("local", self.local), ("fleet", self.fleet))
            if recording_id in holds
        )

    def with_local(self, recording_id: str, hold: LocalHold) -> HoldBook:
        _check_id(recording_id)
        local = {**self.local, recording_id: hold}
        _check_count(local, "local")
        return HoldBook(_frozen(local), self.fleet)

    def without_local(self, recording_id: str) -> HoldBook:
        local = {k: v for k, v in self.local.items() if k != recording_id}
        return HoldBook(_frozen(local), self.fleet)

    def with_fleet_named(self, config_serial: int, grounds: Mapping[str, str]) -> HoldBook:
        """A verified fleet document names holds: they hold at once, added to the fleet's
        (holding more never endangers evidence); nothing is released until it is applied."""
        fleet = dict(self.fleet)
        for recording_id, ground in grounds.items():
            if recording_id not in fleet:
                fleet[recording_id] = _fleet_hold(recording_id, ground, config_serial)
        _check_count(fleet, "fleet")
        return HoldBook(self.local, _frozen(fleet))

    def with_fleet_applied(self, config_serial: int, grounds: Mapping[str, str]) -> HoldBook:
        """The document is applied: the fleet's holds are exactly those it names (a recording
        it no longer names is released by the fleet)."""
        fleet: dict[str, FleetHold] = {}
        for recording_id, ground in grounds.items():
            kept = self.fleet.get(recording_id)  # keeps the serial that first named it
            if kept is not None and kept.ground == ground:
                fleet[recording_id] = kept
            else:
                fleet[recording_id] = _fleet_hold(recording_id, ground, config_serial)
        _check_count(fleet, "fleet")
        return HoldBook(self.local, _frozen(fleet))

    def recovered(self, recording_ids: frozenset[str], now_ms: int) -> HoldBook:
        """After the holds file was lost: hold every recording on the card (`channel`
        "recovery", by "box") until an admin releases them; a lost hold must not let retention
        delete what someone asked to keep."""
        local = dict(self.local)
        for recording_id in sorted(recording_ids):
            local.setdefault(recording_id, LocalHold(now_ms, "recovery", "box"))
        return HoldBook(_frozen(local), self.fleet)

    def to_json(self) -> bytes:
        document = {
            "format": _FORMAT,
            "local": {k: asdict(v) for k, v in sorted(self.local.items())},
            "fleet": {k: asdict(v) for k, v in sorted(self.fleet.items())},
        }
        return json.dumps(document, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> HoldBook:
        """Closed: an unknown member, a bad id, channel, ground or number is HoldBookError."""
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or set(document) != {"format", "local", "fleet"}:
                raise ValueError("members")
            if document["format"] != _FORMAT:
                raise ValueError("format")
            local = {k: _local_from(k, v) for k, v in _object(document["local"]).items()}
            fleet = {k: _fleet_from(k, v) for k, v in _object(document["fleet"]).items()}
            _check_count(local, "local")
            _check_count(fleet, "fleet")
        except (ValueError, TypeError, KeyError) as exc:
            raise HoldBookError(f"not a holds file: {exc}") from exc
        return cls(_frozen(local), _frozen(fleet))


def holds_from_tables(values: object) -> dict[str, str]:
    """A fleet document's `[[holds]]` (a list of tables, as tomllib reads them) as recording
    id -> ground. Each table holds exactly `recording_id` (32 lower-case hex) and `ground` (one
    of HOLD_GROUNDS); at most MAX_HOLDS, none twice. ValueError names the entry at fault. The
    rule of the box (config/fleet_schema.py) and of the admin's tool (backoffice/fleet_holds.py).
    """
    if not isinstance(values, list):
        raise ValueError("holds must be an array of tables ([[holds]])")
    if len(values) > MAX_HOLDS:
        raise ValueError(f"at most {MAX_HOLDS} [[holds]]")
    holds: dict[str, str] = {}
    for index, table in enumerate(values):
        where = f"holds[{index}]"
        if not isinstance(table, dict) or set(table) != {"recording_id", "ground"}:
            raise ValueError(f"{where} must have exactly recording_id and ground")
        recording_id, ground = table["recording_id"], table["ground"]
        if not isinstance(recording_id, str) or RECORDING_ID.fullmatch(recording_id) is None:
            raise ValueError(f"{where}.recording_id must be 32 lower-case hex digits")
        if not isinstance(ground, str) or ground not in HOLD_GROUNDS:
            raise ValueError(f"{where}.ground must be one of {', '.join(HOLD_GROUNDS)}")
        if recording_id in holds:
            raise ValueError(f"{where}: recording {recording_id} is held twice")
        holds[recording_id] = ground
    return holds


def _fleet_hold(recording_id: str, ground: str, config_serial: int) -> FleetHold:
    _check_id(recording_id)
    if ground not in HOLD_GROUNDS:
        raise ValueError(f"unknown hold ground {ground!r}")
    return FleetHold(ground, config_serial)


def _check_id(recording_id: str) -> None:
    if RECORDING_ID.fullmatch(recording_id) is None:
        raise ValueError("a recording id is 32 lower-case hex digits")


def _check_count(holds: Mapping[str, object], source: str) -> None:
    if len(holds) > MAX_HOLDS:
        raise TooManyHolds(f"{source} holds would exceed {MAX_HOLDS} recordings")


def _object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _local_from(recording_id: str, value: object) -> LocalHold:
    _check_id(recording_id)
    item = _object(value)
    hold = LocalHold(**item)
    note = hold.note_file_id
    valid = (
        _is_int(hold.since_ms)
        and hold.channel in LOCAL_CHANNELS
        and isinstance(hold.by, str)
        and _BY.fullmatch(hold.by) is not None
        and (note is None or (isinstance(note, str) and RECORDING_ID.fullmatch(note) is not None))
    )
    if not valid:
        raise ValueError(f"local hold of {recording_id}")
    return hold


def _fleet_from(recording_id: str, value: object) -> FleetHold:
    item = _object(value)
    hold = FleetHold(**item)
    if not _is_int(hold.config_serial) or hold.config_serial < 1:
        raise ValueError(f"fleet hold of {recording_id}")
    return _fleet_hold(recording_id, hold.ground, hold.config_serial)
