"""Signed fleet configuration targets, the pure core shared by the box and the back office.

What a fleet configuration document is as a TUF target in the back office's repository (spec in
`docs/fleet-config.md`): its path (`boxes/<id>.toml`, `groups/<g>.toml`) and URL prefixes, its
signed custom fields (`FleetCustom`: whom it is for, its `config_serial`), which of the targets
found at a box's paths is that box's document (`select_candidate`), and the state the box keeps of
what it applied (`AppliedState`). The back office's repository (backoffice/fleet_repo.py) writes
targets with these rules; the box's TUF client (config/fleet_client.py, the shell: ngclient,
downloads, bundles, the metadata directory) reads them. Nothing here does I/O.

Invariants:
- Custom fields are closed: an unknown key, a serial outside [1, MAX_CONFIG_SERIAL], an invalid or
  repeated name, or a target naming neither boxes nor groups is MalformedCustom.
- A box never skips past a signed document that contradicts its path: a target found at one of
  its paths that does not name the box or one of its groups is WrongBox. Two targets with the same
  serial and different contents are MalformedCustom.
- Serials only grow: a document is newer only with a higher `config_serial`; a lower one, or the
  applied serial on other bytes, is SerialRollback (a serial is never reused).
- Serials are bounded (at most MAX_CONFIG_SERIAL, 2**31 - 1: room for 68 years of a document a
  second) and compared only among documents verified under the same targets keys
  (`AppliedState.in_epoch`). So a correctly signed serial at the bound (a stolen targets key)
  wedges a box only until the root rotates the targets key, which the theft calls for anyway:
  the box then orders the new key's documents from 0 again (docs/fleet-config.md 4.3, 8).

Errors: `ConfigRejected` and its subclasses are `tuf.api.exceptions.RepositoryError`s for
correctly signed documents this box must refuse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tuf.api.exceptions import RepositoryError

from common.faults import RemoteFault

if TYPE_CHECKING:  # tuf.api.metadata loads with the box's first verification (issue 18)
    # python-tuf documents TargetFile in tuf.api.metadata, which re-exports it without __all__.
    from tuf.api.metadata import TargetFile

MAX_DOCUMENT_BYTES = 256 * 1024
"""A fleet document larger than this (by its signed length) is refused before it is fetched."""
MAX_NAMES_PER_TARGET = 4096
MAX_CONFIG_SERIAL = 2**31 - 1
"""The highest serial a document may carry: far beyond any fleet's needs (the repository gives
each document the next one), and an int everywhere (JSON in JavaScript, TOML, sqlite)."""

METADATA_PREFIX = "/fleet/metadata/"
TARGETS_PREFIX = "/fleet/targets/"
BUNDLE_METADATA_DIR = "metadata"
BUNDLE_TARGETS_DIR = "targets"
BOX_TARGETS_DIR = "boxes"
GROUP_TARGETS_DIR = "groups"
DOCUMENT_SUFFIX = ".toml"
CUSTOM_BOXES = "boxes"
CUSTOM_GROUPS = "groups"
CUSTOM_SERIAL = "config_serial"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PATH_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
"""One segment of a URL path the box fetches or of a pushed bundle's member: nothing that could
leave its folder ('..'), no query, no scheme."""
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_STATE_FORMAT = 1


class ConfigRejected(RepositoryError, RemoteFault):
    """A document that verified under TUF but that this box must not apply."""


class SerialRollback(ConfigRejected):
    """The document's config_serial is lower than the highest applied (or reuses it)."""


class WrongBox(ConfigRejected):
    """The document does not name this box or any of its groups."""


class DocumentTooLarge(ConfigRejected):
    """The document's signed length exceeds the box's maximum."""


class MalformedCustom(ConfigRejected):
    """The target's custom fields are not the fleet's (missing serial, bad names, a tie)."""


def is_valid_name(name: str) -> bool:
    """Box ids and group names: 1-64 of [A-Za-z0-9._-], not starting with '.', '-' or '_'."""
    return _NAME.fullmatch(name) is not None


def box_target_path(box_id: str) -> str:
    """The target path of the document for one box: `boxes/<box_id>.toml`."""
    _require_name(box_id, "box id")
    return f"{BOX_TARGETS_DIR}/{box_id}{DOCUMENT_SUFFIX}"


def group_target_path(group: str) -> str:
    """The target path of the document for a group of boxes: `groups/<group>.toml`."""
    _require_name(group, "group name")
    return f"{GROUP_TARGETS_DIR}/{group}{DOCUMENT_SUFFIX}"


def candidate_paths(box_id: str, groups: Sequence[str]) -> tuple[str, ...]:
    """Where a box looks for its document: its own path first, then each group's."""
    return (box_target_path(box_id), *(group_target_path(group) for group in groups))


def _require_name(name: str, what: str) -> None:
    if not is_valid_name(name):
        raise ValueError(f"{what} {name!r} must be 1-64 of [A-Za-z0-9._-], starting alphanumeric")


@dataclass(frozen=True, slots=True)
class FleetCustom:
    """The signed custom fields of a fleet target (Uptane style): whom it is for, and its serial."""

    boxes: tuple[str, ...]
    groups: tuple[str, ...]
    config_serial: int

    def applies_to(self, box_id: str, groups: Sequence[str]) -> bool:
        return box_id in self.boxes or any(group in self.groups for group in groups)

    def to_custom(self) -> dict[str, object]:
        """The JSON object stored as the target's `custom`."""
        return {
            CUSTOM_BOXES: list(self.boxes),
            CUSTOM_GROUPS: list(self.groups),
            CUSTOM_SERIAL: self.config_serial,
        }


def parse_custom(target_path: str, custom: object) -> FleetCustom:
    """Read a target's `custom` (closed: unknown keys fail). Raises MalformedCustom."""
    if not isinstance(custom, dict):
        raise MalformedCustom(f"{target_path}: custom must be an object")
    unknown = sorted(set(custom) - {CUSTOM_BOXES, CUSTOM_GROUPS, CUSTOM_SERIAL})
    if unknown:
        raise MalformedCustom(f"{target_path}: unknown custom field {unknown[0]!r}")
    serial = custom.get(CUSTOM_SERIAL)
    # bool is an int in Python; a JSON true is not a serial.
    if not isinstance(serial, int) or isinstance(serial, bool):
        raise MalformedCustom(f"{target_path}: {CUSTOM_SERIAL} must be an integer")
    if not 1 <= serial <= MAX_CONFIG_SERIAL:
        raise MalformedCustom(f"{target_path}: {CUSTOM_SERIAL} = {serial} is out of range")
    boxes = _parse_names(target_path, CUSTOM_BOXES, custom.get(CUSTOM_BOXES, []))
    groups = _parse_names(target_path, CUSTOM_GROUPS, custom.get(CUSTOM_GROUPS, []))
    if not boxes and not groups:
        raise MalformedCustom(f"{target_path}: names neither boxes nor groups")
    return FleetCustom(boxes, groups, serial)


def _parse_names(target_path: str, key: str, raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_NAMES_PER_TARGET:
        raise MalformedCustom(
            f"{target_path}: {key} must be a list of at most {MAX_NAMES_PER_TARGET} names"
        )
    names = tuple(raw)
    for name in names:
        if not isinstance(name, str) or not is_valid_name(name):
            raise MalformedCustom(f"{target_path}: {key} holds an invalid name {name!r}")
    if len(set(names)) != len(names):
        raise MalformedCustom(f"{target_path}: {key} names an entry twice")
    return names


@dataclass(frozen=True, slots=True)
class Candidate:
    """A target found at one of this box's paths, with its custom fields read."""

    target_path: str
    custom: FleetCustom
    length_bytes: int
    sha256: str
    info: TargetFile = field(compare=False, repr=False)


def candidate_from_targetinfo(info: TargetFile) -> Candidate:
    """Raises MalformedCustom when the custom fields or the SHA-256 are missing or malformed."""
    custom = parse_custom(info.path, info.custom)
    sha256 = info.hashes.get("sha256")
    if sha256 is None or _SHA256_HEX.fullmatch(sha256) is None:
        raise MalformedCustom(f"{info.path}: the target carries no SHA-256")
    return Candidate(info.path, custom, info.length, sha256, info)


def select_candidate(
    candidates: Sequence[Candidate], box_id: str, groups: Sequence[str]
) -> Candidate | None:
    """The box's document: the found target with the highest serial; None when none was found.

    Every target found at this box's paths must name the box or one of its groups (WrongBox
    otherwise): a box never skips past a signed document that contradicts its path.
    """
    for candidate in candidates:
        if not candidate.custom.applies_to(box_id, groups):
            raise WrongBox(f"{candidate.target_path} is signed for other boxes, not {box_id}")
    if not candidates:
        return None
    best = max(candidates, key=lambda candidate: candidate.custom.config_serial)
    for candidate in candidates:
        same_serial = candidate.custom.config_serial == best.custom.config_serial
        if same_serial and candidate.sha256 != best.sha256:
            raise MalformedCustom(
                f"{best.target_path} and {candidate.target_path} share config_serial "
                f"{best.custom.config_serial} with different contents"
            )
    return best


@dataclass(frozen=True, slots=True)
class FleetDocument:
    """A verified fleet document for this box. `document` is the raw bytes (TOML); its schema is
    checked by whoever applies it. The bytes stay out of `repr` (they hold password hashes).
    `targets_keys`: the key ids of the targets role it verified under (sorted; empty: unknown)."""

    target_path: str
    config_serial: int
    sha256: str
    boxes: tuple[str, ...]
    groups: tuple[str, ...]
    document: bytes = field(repr=False)
    targets_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AppliedState:
    """What the box last applied: the highest serial (0: none yet), its SHA-256 and path, and
    the targets keys it verified under (empty: not known, as in states from before they were
    kept: such a state orders every document, whatever its keys)."""

    config_serial: int = 0
    sha256: str | None = None
    target_path: str | None = None
    targets_keys: tuple[str, ...] = ()

    def in_epoch(self, targets_keys: Sequence[str]) -> AppliedState:
        """The state that orders a document verified under `targets_keys`: this one, or a fresh
        one when the fleet's targets keys changed since this was recorded (a rotation: serials
        start over, and no document of the retired key verifies any more)."""
        keys = tuple(sorted(targets_keys))
        if self.targets_keys and keys and keys != self.targets_keys:
            return AppliedState(targets_keys=keys)
        return self

    def after_applying(self, document: FleetDocument) -> AppliedState:
        """The state once `document` is applied. Raises SerialRollback if it is not newer."""
        base = self.in_epoch(document.targets_keys)
        if not is_newer(base, document.config_serial, document.sha256):
            raise SerialRollback(
                f"{document.target_path}: config_serial {document.config_serial} is not above "
                f"the applied {base.config_serial}"
            )
        keys = tuple(sorted(document.targets_keys)) or base.targets_keys
        return AppliedState(document.config_serial, document.sha256, document.target_path, keys)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _STATE_FORMAT,
                "config_serial": self.config_serial,
                "sha256": self.sha256,
                "target_path": self.target_path,
                "targets_keys": list(self.targets_keys),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> AppliedState:
        """Raises ValueError naming the problem (closed: unknown keys fail)."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != _STATE_FORMAT:
            raise ValueError(f"applied state: format must be {_STATE_FORMAT}")
        known = {"format", "config_serial", "sha256", "target_path", "targets_keys"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"applied state: unknown key {unknown[0]!r}")
        keys = raw.get("targets_keys", [])  # absent in states written before it was kept
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("applied state: targets_keys must be a list of key ids")
        serial, sha256, path = raw.get("config_serial"), raw.get("sha256"), raw.get("target_path")
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
            raise ValueError("applied state: config_serial must be a non-negative integer")
        if (serial == 0) != (sha256 is None) or (sha256 is None) != (path is None):
            raise ValueError("applied state: serial, sha256 and target_path go together")
        if sha256 is not None and (
            not isinstance(sha256, str) or _SHA256_HEX.fullmatch(sha256) is None
        ):
            raise ValueError("applied state: sha256 must be 64 lower-case hex digits")
        if path is not None and not isinstance(path, str):
            raise ValueError("applied state: target_path must be a string")
        return cls(serial, sha256, path, tuple(sorted(keys)))


def is_newer(state: AppliedState, config_serial: int, sha256: str) -> bool:
    """True: a newer document. False: the applied document itself. Raises SerialRollback for a
    lower serial, or the applied serial on different bytes (a serial must never be reused)."""
    if config_serial > state.config_serial:
        return True
    if config_serial == state.config_serial and sha256 == state.sha256:
        return False
    raise SerialRollback(
        f"config_serial {config_serial} is not above the applied {state.config_serial}"
    )


def check_size(candidate: Candidate, max_document_bytes: int) -> None:
    if candidate.length_bytes > max_document_bytes:
        raise DocumentTooLarge(
            f"{candidate.target_path} is {candidate.length_bytes} bytes; the box accepts at most "
            f"{max_document_bytes}"
        )
