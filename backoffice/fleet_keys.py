"""The fleet's signing keys on disk (docs/fleet-config.md 2): made once on the offline machine,
then each root key to its own medium, the targets key to the admin, the online keys to the back
office. ECDSA P-256 as PEM PKCS#8 files, mode 0600, in a 0700 directory; never overwritten.

backoffice/fleet_repo.py re-exports these names (its callers have always imported them there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key

# securesystemslib documents these names in the module imported here.
from securesystemslib.signer import CryptoSigner, Signer

from backoffice.fleet_metadata import FleetRepoError
from common.durable import atomic_create_bytes, make_dirs

ROOT_KEY_COUNT = 3
_ROOT_KEY_FILE = re.compile(r"root-([1-9][0-9]{0,2})\.key")


@dataclass(frozen=True, slots=True)
class FleetSigners:
    """Every key of a fleet, as loaded by an admin tool. In production the root signers are
    never in one place: each admin tool loads only the keys its step needs."""

    root: tuple[Signer, ...]
    targets: Signer
    snapshot: Signer
    timestamp: Signer


def generate_fleet_keys(keys_dir: Path, *, root_key_count: int = ROOT_KEY_COUNT) -> FleetSigners:
    """Create `root-1.key`..`root-<n>.key`, `targets.key`, `snapshot.key`, `timestamp.key`
    (ECDSA P-256, PEM PKCS#8, 0600) in `keys_dir` (0700). Never overwrites a key file.

    P-256 because hardware tokens (PIV, PKCS#11) hold it: a root key can move to one and sign
    through securesystemslib's HSMSigner without any change here.
    """
    if root_key_count < 1:
        raise FleetRepoError("a fleet needs at least one root key")
    names = [f"root-{index}.key" for index in range(1, root_key_count + 1)]
    names += ["targets.key", "snapshot.key", "timestamp.key"]
    make_dirs(keys_dir, mode=0o700)
    existing = [name for name in names if (keys_dir / name).exists()]
    if existing:
        raise FileExistsError(f"{keys_dir / existing[0]} exists; refusing to overwrite a key")
    signers = {name: CryptoSigner.generate_ecdsa() for name in names}
    for name, signer in signers.items():
        _write_private_key(keys_dir / name, signer.private_bytes)
    return FleetSigners(
        root=tuple(signers[name] for name in names[:root_key_count]),
        targets=signers["targets.key"],
        snapshot=signers["snapshot.key"],
        timestamp=signers["timestamp.key"],
    )


def _write_private_key(path: Path, pem: bytes) -> None:
    atomic_create_bytes(path, pem, mode=0o600)


def load_signer(path: Path) -> CryptoSigner:
    """A signer from a PEM PKCS#8 private key file written by `generate_fleet_keys`."""
    private_key = load_pem_private_key(path.read_bytes(), password=None)
    return CryptoSigner(private_key)


def load_fleet_signers(keys_dir: Path) -> FleetSigners:
    """Every key in `keys_dir` (root keys in file-number order)."""
    root_files = sorted(
        (int(match.group(1)), path)
        for path in keys_dir.iterdir()
        if (match := _ROOT_KEY_FILE.fullmatch(path.name))
    )
    return FleetSigners(
        root=tuple(load_signer(path) for _, path in root_files),
        targets=load_signer(keys_dir / "targets.key"),
        snapshot=load_signer(keys_dir / "snapshot.key"),
        timestamp=load_signer(keys_dir / "timestamp.key"),
    )
