"""The fleet's signing keys on disk (docs/fleet-config.md 2): made once on the offline machine,
then each root key to its own medium, the targets key to the admin, the online keys to the back
office. ECDSA P-256 as PEM PKCS#8 files, mode 0600, in a 0700 directory; never overwritten.

The offline keys (root, targets) can be encrypted with a passphrase (PKCS#8, scrypt N = 2^17 and
AES-256-CBC, as the key holders' files of docs/four-eyes.md): a copied medium then reveals no
key. The online keys (snapshot, timestamp) are never encrypted: an unattended timer signs with
them (systemd/mvb-fleet-publish.service), and they are protected as root-only credentials.
A passphrase never appears in a message.

backoffice/fleet_repo.py re-exports these names (its callers have always imported them there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from Crypto.PublicKey import ECC
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

# securesystemslib documents these names in the module imported here.
from securesystemslib.signer import CryptoSigner, Signer, SSlibKey

from backoffice.fleet_metadata import FleetRepoError
from common.durable import atomic_create_bytes, make_dirs

ROOT_KEY_COUNT = 3
OFFLINE_KEY_PREFIXES = ("root-", "targets")
"""Key files a passphrase protects (the online keys sign unattended)."""
_SCRYPT_COST = 2**17
_ENCRYPTED_LABEL = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
_ROOT_KEY_FILE = re.compile(r"root-([1-9][0-9]{0,2})\.key")


@dataclass(frozen=True, slots=True)
class FleetSigners:
    """Every key of a fleet, as loaded by an admin tool. In production the root signers are
    never in one place: each admin tool loads only the keys its step needs."""

    root: tuple[Signer, ...]
    targets: Signer
    snapshot: Signer
    timestamp: Signer


class FleetKeyLocked(FleetRepoError):
    """A key file that is encrypted and was given no passphrase, or the wrong one."""


def generate_fleet_keys(
    keys_dir: Path, *, root_key_count: int = ROOT_KEY_COUNT, passphrase: str | None = None
) -> FleetSigners:
    """Create `root-1.key`..`root-<n>.key`, `targets.key`, `snapshot.key`, `timestamp.key`
    (ECDSA P-256, PEM PKCS#8, 0600) in `keys_dir` (0700). Never overwrites a key file. With
    `passphrase`, the root and targets keys are encrypted with it.

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
        offline = name.startswith(OFFLINE_KEY_PREFIXES)
        _write_private_key(keys_dir / name, private_pem(signer, passphrase if offline else None))
    return FleetSigners(
        root=tuple(signers[name] for name in names[:root_key_count]),
        targets=signers["targets.key"],
        snapshot=signers["snapshot.key"],
        timestamp=signers["timestamp.key"],
    )


def _write_private_key(path: Path, pem: bytes) -> None:
    atomic_create_bytes(path, pem, mode=0o600)


def private_pem(signer: CryptoSigner, passphrase: str | None) -> bytes:
    """The signer's key as PEM PKCS#8, encrypted with `passphrase` when one is given."""
    if passphrase is None:
        return signer.private_bytes
    key = ECC.import_key(signer.private_bytes)
    pem: str = key.export_key(
        format="PEM",
        passphrase=passphrase,
        protection="scryptAndAES256-CBC",
        prot_params={"iteration_count": _SCRYPT_COST},
    )
    return pem.encode("ascii")


def generate_key(path: Path, passphrase: str | None) -> SSlibKey:
    """One new key (for a rotation): `path` (private, 0600, encrypted with `passphrase` when
    given) and `path` with suffix .pub (public PEM). Never overwrites. Returns its public key."""
    signer = CryptoSigner.generate_ecdsa()
    _write_private_key(path, private_pem(signer, passphrase))
    public = signer.public_key
    assert isinstance(public, SSlibKey)
    atomic_create_bytes(path.with_suffix(".pub"), public_pem(public), mode=0o644)
    return public


def public_pem(key: SSlibKey) -> bytes:
    pem: str = key.keyval["public"]
    return pem.encode("ascii")


def load_public_key(path: Path) -> SSlibKey:
    """A public key file written by `generate_key` (the holder hands over only this)."""
    try:
        return SSlibKey.from_crypto(load_pem_public_key(path.read_bytes()))
    except ValueError as exc:
        raise FleetRepoError(f"{path} is not a public key file") from exc


def key_is_encrypted(path: Path) -> bool:
    """Whether a private key file needs a passphrase (read from its PEM label)."""
    with path.open("rb") as handle:
        return handle.readline().strip() == _ENCRYPTED_LABEL


def load_signer(path: Path, passphrase: str | None = None) -> CryptoSigner:
    """A signer from a PEM PKCS#8 private key file written by `generate_fleet_keys` or
    `generate_key`; FleetKeyLocked when it is encrypted and `passphrase` does not open it."""
    data = path.read_bytes()
    encrypted = data.lstrip().startswith(_ENCRYPTED_LABEL)
    if encrypted and passphrase is None:
        raise FleetKeyLocked(f"{path} is encrypted: give its passphrase (--passphrase-file)")
    try:
        private_key = load_pem_private_key(
            data, password=passphrase.encode("utf-8") if encrypted and passphrase else None
        )
    except ValueError as exc:
        what = "the passphrase does not open it" if encrypted else "it is not a private key"
        raise FleetKeyLocked(f"{path}: {what}") from exc
    return CryptoSigner(private_key)


def load_fleet_signers(keys_dir: Path, passphrase: str | None = None) -> FleetSigners:
    """Every key in `keys_dir` (root keys in file-number order; `passphrase` opens the
    encrypted ones)."""
    root_files = sorted(
        (int(match.group(1)), path)
        for path in keys_dir.iterdir()
        if (match := _ROOT_KEY_FILE.fullmatch(path.name))
    )
    return FleetSigners(
        root=tuple(load_signer(path, passphrase) for _, path in root_files),
        targets=load_signer(keys_dir / "targets.key", passphrase),
        snapshot=load_signer(keys_dir / "snapshot.key"),
        timestamp=load_signer(keys_dir / "timestamp.key"),
    )
