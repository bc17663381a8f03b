"""The fleet admin's trust, kept on the admin's own machine (docs/fleet-config.md 7.1).

A directory (0700) beside the admin's targets key, never on the back office server:

    <trust>/root.json      the newest fleet root the admin's tools verified, byte for byte
    <trust>/targets.json   {"format": 1, "version": N, "sha256": "..."}: the targets version
                           the tools last signed or verified (absent until there is one)

Where it comes from: `mvb-admin config init --trust DIR` writes it on the offline machine that
made the fleet's keys (root v1, targets v1: what that machine just signed); `mvb-admin config
trust --trust DIR --root FILE` starts one from a root file handed over out of band (a second
admin, the back office's publisher), after comparing the fingerprint it prints with the root key
holders'. Afterwards the tools advance it only through verified root rotations and verified or
self-signed targets (backoffice/fleet_trust.py), so the server's disk can never tell the admin's
tools what to trust.

Invariants: every write is durable (common/durable.py); `root.json` only ever moves to a newer
root that a verified chain reached; `targets.json` only to a higher version (or the same).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# python-tuf documents Metadata and Root in tuf.api.metadata, which re-exports them.
from tuf.api.metadata import Metadata, Root

from backoffice.fleet_metadata import FleetRepoError
from backoffice.fleet_trust import KnownTargets, UntrustedMetadata
from common.durable import atomic_write_bytes, make_dirs

TRUST_ROOT_FILE = "root.json"
TRUST_TARGETS_FILE = "targets.json"
_FORMAT = 1


@dataclass
class AdminTrust:
    """The trusted root and the known targets; kept in `directory` (None: in memory only, for
    a repository made in this process and for tests)."""

    root_bytes: bytes
    targets: KnownTargets | None = None
    directory: Path | None = field(default=None)

    @property
    def root(self) -> Metadata[Root]:
        return Metadata[Root].from_bytes(self.root_bytes)

    @classmethod
    def load(cls, directory: Path) -> AdminTrust:
        """The trust kept in `directory`; FleetRepoError when there is none or it is damaged."""
        try:
            root_bytes = (directory / TRUST_ROOT_FILE).read_bytes()
        except FileNotFoundError:
            raise FleetRepoError(
                f"{directory} holds no trusted fleet root: make it with `config init --trust` "
                "or `config trust --root`"
            ) from None
        trust = cls(_checked_root(root_bytes, directory / TRUST_ROOT_FILE), None, directory)
        path = directory / TRUST_TARGETS_FILE
        if path.exists():
            trust.targets = _parse_targets(path.read_bytes(), path)
        return trust

    @classmethod
    def start(
        cls, directory: Path, root_bytes: bytes, targets: KnownTargets | None = None
    ) -> AdminTrust:
        """A new trust in `directory` (refused when one is there: replacing trust is a decision
        the admin makes by removing it first)."""
        if (directory / TRUST_ROOT_FILE).exists():
            raise FleetRepoError(f"{directory} already holds a trusted fleet root")
        trust = cls(_checked_root(root_bytes, Path("the root given")), None, directory)
        make_dirs(directory, mode=0o700)
        trust.advance_root(root_bytes)
        if targets is not None:
            trust.note_targets(targets)
        return trust

    def advance_root(self, root_bytes: bytes) -> None:
        """The newest root a verified chain reached (or the one trust starts from)."""
        self.root_bytes = root_bytes
        if self.directory is not None:
            atomic_write_bytes(self.directory / TRUST_ROOT_FILE, root_bytes, mode=0o644)

    def note_targets(self, targets: KnownTargets) -> None:
        """Targets the tools verified or signed; never moves back to a lower version."""
        if self.targets is not None and targets.version < self.targets.version:
            return
        self.targets = targets
        if self.directory is not None:
            document = {"format": _FORMAT, "version": targets.version, "sha256": targets.sha256}
            data = json.dumps(document, sort_keys=True).encode() + b"\n"
            atomic_write_bytes(self.directory / TRUST_TARGETS_FILE, data, mode=0o644)


def _checked_root(data: bytes, source: Path) -> bytes:
    """`data` if it is a root signed by its own threshold."""
    try:
        root = Metadata[Root].from_bytes(data)
        if not isinstance(root.signed, Root):
            raise ValueError("not root metadata")
        root.signed.verify_delegate(Root.type, root.signed_bytes, root.signatures)
    except Exception as error:
        message = f"{source}: not a fleet root signed by its own keys: {error}"
        raise UntrustedMetadata(message) from None
    return data


def _parse_targets(data: bytes, source: Path) -> KnownTargets:
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise ValueError(f"format must be {_FORMAT}")
        version, sha256 = raw["version"], raw["sha256"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError("version must be a positive integer")
        if not isinstance(sha256, str) or len(sha256) != 64:
            raise ValueError("sha256 must be 64 hex digits")
    except (ValueError, KeyError) as error:
        raise FleetRepoError(f"{source} is damaged: {error}") from None
    return KnownTargets(version, sha256)
