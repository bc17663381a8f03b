"""What the fleet's admin tools may build on: the repository's metadata checked against the admin's
own trusted root (pure; docs/fleet-config.md 7.1).

The repository lives on the back office server, and whoever owns that server holds the online
keys and can write any file there. The admin's tools (`config sign`, `hold`, `release`,
`publish`) sign new versions on top of what is on disk, so before they build on anything they
check it the way a box would, starting from a root the admin keeps on their own machine (the
"trust", backoffice/fleet_trust_io.py), never from the server's word:

- **roots** (`verified_root_chain`): the trusted root's bytes must still be on disk unchanged,
  and every newer `N.root.json` must follow without a gap, each signed by the threshold of the
  one before and by its own (TUF's root rotation rule);
- **targets** (`verified_targets`): the newest `N.targets.json` must carry the targets
  threshold of the newest verified root, or be byte for byte the targets the admin last signed
  or verified (signed under a key the root has since retired: the re-sign after a rotation);
  and it may not be older than that one (rollback: newer versions removed);
- **snapshot and timestamp** (`online_version`): publishing builds on nothing in them but
  their version numbers, and numbers above every file on disk (see there why that is safe
  without their signatures).

Anything else is `UntrustedMetadata`, naming the file: nothing is signed on top of it.

Invariants: nothing here reads a file or a clock (bytes and versions come in); every check is
python-tuf's Metadata API (`Root.verify_delegate`); a refusal never depends on expiry (an
expired version is still the admin's to renew).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

# python-tuf documents these names in tuf.api.metadata, which re-exports them without __all__.
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from common.faults import RemoteFault


class UntrustedMetadata(RemoteFault):
    """The repository on disk holds metadata the admin's trusted root does not vouch for (forged,
    replaced or rolled back): the tools refuse to build on it. The message names the file."""


@dataclass(frozen=True, slots=True)
class KnownTargets:
    """The targets version the admin's tools last signed or verified, by version and SHA-256
    of its bytes."""

    version: int
    sha256: str

    @classmethod
    def of(cls, version: int, data: bytes) -> KnownTargets:
        return cls(version, hashlib.sha256(data).hexdigest())


Role = TypeVar("Role", Root, Targets, Snapshot, Timestamp)


def _parse(kind: type[Role], data: bytes, name: str) -> Metadata[Role]:
    try:
        metadata = Metadata[Role].from_bytes(data)
    except Exception as error:  # python-tuf raises DeserializationError and friends
        raise UntrustedMetadata(f"metadata/{name} is not TUF metadata: {error}") from None
    if not isinstance(metadata.signed, kind):
        raise UntrustedMetadata(f"metadata/{name} is not {kind.type} metadata")
    return metadata


def _delegated(delegator: Root, role: str, metadata: Metadata[Role]) -> bool:
    try:
        delegator.verify_delegate(role, metadata.signed_bytes, metadata.signatures)
    except UnsignedMetadataError:
        return False
    return True


def verified_root_chain(trusted: bytes, on_disk: Mapping[int, bytes]) -> list[Metadata[Root]]:
    """The roots from the trusted one to the newest on disk, each verified by the one before.

    `on_disk` maps each `N.root.json`'s N to its bytes. Raises UntrustedMetadata when the
    trusted root is missing or changed on disk, when a newer root fails either threshold or
    its version, or when the versions have a gap (a root no chain reaches)."""
    anchor = _parse(Root, trusted, "root.json of the admin's trust")
    version = anchor.signed.version
    if on_disk.get(version) != trusted:
        raise UntrustedMetadata(
            f"metadata/{version}.root.json is missing or differs from the root you trust "
            f"(v{version}): the repository was replaced or rolled back"
        )
    chain = [anchor]
    newest = max(on_disk)
    for number in range(version + 1, newest + 1):
        name = f"{number}.root.json"
        data = on_disk.get(number)
        if data is None:
            raise UntrustedMetadata(
                f"metadata/{newest}.root.json exists but {name} does not: no verified chain "
                "reaches it"
            )
        root = _parse(Root, data, name)
        if root.signed.version != number:
            raise UntrustedMetadata(f"metadata/{name} says it is version {root.signed.version}")
        before = chain[-1].signed
        if not _delegated(before, Root.type, root) or not _delegated(root.signed, Root.type, root):
            raise UntrustedMetadata(
                f"metadata/{name} is not signed by the threshold of root v{before.version} and "
                "its own: a forged root"
            )
        chain.append(root)
    return chain


def verified_targets(
    chain: Sequence[Metadata[Root]],
    newest_version: int,
    data: bytes,
    known: KnownTargets | None,
    *,
    allow_retired_key: bool,
) -> Metadata[Targets]:
    """The newest targets (`newest_version`, its bytes `data`) if the admin may build on it.

    It must carry the targets threshold of the newest root in `chain`; with
    `allow_retired_key` (re-signing after a targets key rotation), being exactly `known` is
    enough. It must not be older than `known`, nor `known`'s version with other bytes."""
    name = f"{newest_version}.targets.json"
    targets = _parse(Targets, data, name)
    if targets.signed.version != newest_version:
        raise UntrustedMetadata(f"metadata/{name} says it is version {targets.signed.version}")
    if known is not None and newest_version < known.version:
        raise UntrustedMetadata(
            f"the newest targets on disk is v{newest_version}, but you signed or verified "
            f"v{known.version}: newer versions were removed (a rollback)"
        )
    is_known = known is not None and known == KnownTargets.of(newest_version, data)
    if known is not None and newest_version == known.version and not is_known:
        raise UntrustedMetadata(
            f"metadata/{name} differs from the v{newest_version} you signed or verified"
        )
    root = chain[-1].signed
    if _delegated(root, Targets.type, targets) or (allow_retired_key and is_known):
        return targets
    raise UntrustedMetadata(
        f"metadata/{name} is not signed by the fleet's targets key (root v{root.version}): "
        "someone wrote it without that key. Nothing was signed. Keep the file for the "
        "investigation, move it out of metadata/ and run the command again"
    )


def online_version(role: str, data: bytes, name: str) -> int:
    """The version a snapshot or timestamp file says it is. Publishing takes nothing else from
    them, and numbers its next version above every such file on disk: a box that stored any of
    them (the fleet's online keys signed it) then still moves forward, and a forged one costs
    only a skipped number. Their signatures cannot all be checked: one signed under a root older
    than the admin's trust has no verified root to check it against."""
    if role == Snapshot.type:
        return _parse(Snapshot, data, name).signed.version
    return _parse(Timestamp, data, name).signed.version
