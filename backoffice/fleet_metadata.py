"""The fleet repository's TUF metadata, pure: roots and their rotation, role and threshold checks,
the target file of a fleet document, serials.

The rules every version the back office signs must satisfy (docs/fleet-config.md); the
repository on disk that applies them, with its keys and files, is backoffice/fleet_repo.py. Nothing
here reads a file or a clock: time comes in as `now`, keys as signers.

Invariants:
- Every top-level role has 1 <= threshold <= its key count, and no key serves two roles (the
  online back office must never hold a key that also signs configuration or roots).
- A target's path and its custom fields agree: `boxes/<id>.toml` names box `id`,
  `groups/<g>.toml` names group `g` (FleetRepoError otherwise); every target names the boxes that
  may read it (a group document its members: the back office serves a document to those boxes
  only), and a document with `[[accounts]]` (password hashes) names exactly one box and no group.
- A signed version is accepted only with its role's threshold of the delegator's keys
  (ThresholdNotMet otherwise).
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

# python-tuf and securesystemslib document these names in the modules imported here, which
# re-export them without __all__.
from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp

from common.faults import MisuseFault
from config.fleet_targets import (
    BOX_TARGETS_DIR,
    DOCUMENT_SUFFIX,
    GROUP_TARGETS_DIR,
    FleetCustom,
    MalformedCustom,
    is_valid_name,
    parse_custom,
)

TOP_LEVEL_ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
HASH_ALGORITHMS = ["sha256"]
Role = TypeVar("Role", Root, Targets, Snapshot, Timestamp)


class FleetRepoError(MisuseFault):
    """The admin asked for something the fleet's rules forbid; the message says what."""


class SerialNotIncreasing(FleetRepoError):
    """A new document's config_serial does not exceed every serial already signed."""


class ThresholdNotMet(FleetRepoError):
    """The signers given do not meet a role's threshold (wrong key, or too few keys)."""


def new_root(
    role_keys: Mapping[str, Sequence[Key]],
    thresholds: Mapping[str, int],
    *,
    now: datetime,
    lifetime: timedelta,
) -> Root:
    """Version 1 of the root: every top-level role with its keys and threshold."""
    root = Root(version=1, expires=now + lifetime, consistent_snapshot=True)
    for role in TOP_LEVEL_ROLES:
        for key in role_keys[role]:
            root.add_key(key, role)
        root.roles[role].threshold = thresholds.get(role, 1)
    check_root_roles(root)
    return root


def rotated_root(
    current: Root,
    *,
    role_keys: Mapping[str, Sequence[Key]],
    thresholds: Mapping[str, int],
    now: datetime,
    lifetime: timedelta,
) -> Root:
    """The next root version: the roles named in `role_keys` get exactly those keys, the roles
    named in `thresholds` that threshold, the rest is kept. Unsigned."""
    root = Root.from_dict(copy.deepcopy(current.to_dict()))
    root.version = current.version + 1
    root.expires = now + lifetime
    for role, keys in role_keys.items():
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        for key in keys:
            root.add_key(key, role)
    for role, threshold in thresholds.items():
        root.roles[role].threshold = threshold
    check_root_roles(root)
    return root


def check_root_roles(root: Root) -> None:
    """Each role has 1 <= threshold <= its key count; no key serves two roles (the online
    back office must never hold a key that also signs configuration or roots)."""
    seen: dict[str, str] = {}
    for role in TOP_LEVEL_ROLES:
        keyids = root.roles[role].keyids
        threshold = root.roles[role].threshold
        if not 1 <= threshold <= len(keyids):
            raise FleetRepoError(f"{role}: threshold {threshold} with {len(keyids)} key(s)")
        for keyid in keyids:
            if keyid in seen:
                raise FleetRepoError(f"key {keyid[:12]} serves both {seen[keyid]} and {role}")
            seen[keyid] = role


def signed_by(signed: Role, signers: Sequence[Signer]) -> Metadata[Role]:
    """Metadata around `signed` with one signature per signer (none checked here)."""
    metadata = Metadata(signed)
    for signer in signers:
        metadata.sign(signer, append=True)
    return metadata


def check_threshold(delegator: Root, role: str, metadata: Metadata[Role]) -> None:
    """Raise ThresholdNotMet unless `metadata` carries `role`'s threshold of `delegator`'s keys."""
    try:
        delegator.verify_delegate(role, metadata.signed_bytes, metadata.signatures)
    except UnsignedMetadataError as error:
        raise ThresholdNotMet(f"{role} v{metadata.signed.version}: {error}") from error


def split_target_path(target_path: str) -> tuple[str, str]:
    """(`boxes` or `groups`, name) of a conventional target path; FleetRepoError otherwise."""
    folder, _, file_name = target_path.partition("/")
    name = file_name.removesuffix(DOCUMENT_SUFFIX)
    conventional = folder in (BOX_TARGETS_DIR, GROUP_TARGETS_DIR)
    if not conventional or not file_name.endswith(DOCUMENT_SUFFIX) or not is_valid_name(name):
        raise FleetRepoError(
            f"target path {target_path!r} must be {BOX_TARGETS_DIR}/<box_id>{DOCUMENT_SUFFIX} "
            f"or {GROUP_TARGETS_DIR}/<group>{DOCUMENT_SUFFIX}"
        )
    return folder, name


def config_target_file(target_path: str, document: bytes, custom: FleetCustom) -> TargetFile:
    """The TargetFile of a fleet document: length, SHA-256 and the custom fields, with the path
    and the custom fields checked to agree. Policy (size, serial) is the repository's."""
    folder, name = split_target_path(target_path)
    try:
        parse_custom(target_path, custom.to_custom())
    except MalformedCustom as error:
        raise FleetRepoError(str(error)) from error
    named = custom.boxes if folder == BOX_TARGETS_DIR else custom.groups
    if name not in named:
        raise FleetRepoError(f"{target_path} must name {name!r} in its {folder}")
    if not custom.boxes:
        # The back office serves a document only to the boxes it names (fleet_access.py).
        raise FleetRepoError(
            f"{target_path} must name the boxes that may read it (a group's members: --box)"
        )
    if document_has_accounts(document) and (len(custom.boxes) != 1 or custom.groups):
        raise FleetRepoError(
            f"{target_path} sets [[accounts]] (password hashes): only a document for exactly "
            "one box and no group may, so that no hash reaches a box it is not for"
        )
    target = TargetFile.from_data(target_path, document, HASH_ALGORITHMS)
    target.unrecognized_fields["custom"] = custom.to_custom()
    return target


def document_has_accounts(document: bytes) -> bool:
    """Does the document (TOML) set `[[accounts]]`? One that is not TOML sets nothing a box
    would take (it refuses the document)."""
    try:
        return "accounts" in tomllib.loads(document.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def highest_serial(targets: Targets) -> int:
    """The highest config_serial signed in `targets` (0 when none)."""
    serials = [0]
    for target in targets.targets.values():
        custom = target.custom
        if isinstance(custom, dict) and isinstance(custom.get("config_serial"), int):
            serials.append(custom["config_serial"])
    return max(serials)


def stored_target_name(target: TargetFile) -> str:
    """Where a consistent-snapshot repository stores a target: `<dir>/<sha256>.<basename>`."""
    folder, _, base = target.path.rpartition("/")
    return f"{folder}/{target.hashes['sha256']}.{base}"
