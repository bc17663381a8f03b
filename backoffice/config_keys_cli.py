"""`mvb-admin config keygen|resign|rotate-root` and the passphrases of the offline keys: the key
ceremony's commands (docs/fleet-config.md 8).

- keygen: one new key for a rotation, `NAME.key` (encrypted with a passphrase when given) and
  `NAME.pub`, which is all its holder hands over;
- resign: the targets signed again as a new version (a fresh 90-day expiry, or after the targets
  key was rotated);
- rotate-root: the next root version, signed by enough current root keys AND enough of the new
  root's (a box accepts nothing less): new keys for roles, new thresholds, or none (a renewal).

A passphrase comes from `--passphrase-file` (one passphrase for every encrypted key the command
loads: the ceremony's), else from a prompt on a terminal; it is never an argument (it would stand
in the shell history and the process list) and never printed.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime
from pathlib import Path

from securesystemslib.signer import CryptoSigner, Key

from backoffice.fleet_keys import (
    FleetKeyLocked,
    generate_key,
    key_is_encrypted,
    load_public_key,
    load_signer,
)
from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_trust_io import AdminTrust

ROLES = ("root", "targets", "snapshot", "timestamp")
TRUST_HELP = "the admin's trusted fleet root (config init --trust, or config trust)"


def add_passphrase_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        help="the passphrase of the encrypted offline keys (else asked on the terminal)",
    )


def add_key_parsers(config: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen = config.add_parser("keygen", help="a new key for a rotation (NAME.key, NAME.pub)")
    keygen.add_argument("--out", type=Path, required=True, help="the new private key file")
    add_passphrase_file(keygen)
    resign = config.add_parser("resign", help="sign the targets again (expiry, or a new key)")
    resign.add_argument("--repo", type=Path, required=True)
    resign.add_argument("--trust", type=Path, required=True, help=TRUST_HELP)
    resign.add_argument("--targets-key", type=Path, required=True)
    add_passphrase_file(resign)
    rotate = config.add_parser("rotate-root", help="the next root: new keys, thresholds, expiry")
    rotate.add_argument("--repo", type=Path, required=True)
    rotate.add_argument("--trust", type=Path, required=True, help=TRUST_HELP)
    rotate.add_argument(
        "--root-key",
        type=Path,
        action="append",
        required=True,
        help="a root private key that signs (current root's and, when rotated, new root's)",
    )
    rotate.add_argument(
        "--role-key",
        action="append",
        default=[],
        metavar="ROLE=PUB",
        help="the role's keys become these public key files (repeat per key)",
    )
    rotate.add_argument(
        "--threshold", action="append", default=[], metavar="ROLE=N", help="a new threshold"
    )
    add_passphrase_file(rotate)


def signer_from(path: Path, args: argparse.Namespace) -> CryptoSigner:
    """The private key at `path`, opened with the command's passphrase when it is encrypted."""
    return load_signer(path, passphrase_for(path, args))


def passphrase_for(path: Path, args: argparse.Namespace) -> str | None:
    if not key_is_encrypted(path):
        return None
    return new_passphrase(args, f"passphrase of {path.name}: ")


def new_passphrase(args: argparse.Namespace, prompt: str) -> str | None:
    """The command's passphrase: from --passphrase-file, else asked on a terminal; None when
    there is neither (keygen: an unencrypted key)."""
    file: Path | None = args.passphrase_file
    if file is not None:
        text = file.read_text(encoding="utf-8").removesuffix("\n")
        if not text:
            raise FleetKeyLocked(f"{file} holds no passphrase")
        return text
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return None


def run_key_command(command: str, args: argparse.Namespace, now: datetime) -> int:
    if command == "keygen":
        passphrase = new_passphrase(args, f"passphrase for {args.out.name} (empty: none): ")
        key = generate_key(args.out, passphrase or None)
        state = "encrypted" if passphrase else "NOT encrypted"
        print(f"created {args.out} ({state}) and {args.out.with_suffix('.pub')}")
        print(f"key id {key.keyid}: hand over only the .pub file")
        return 0
    repo = FleetRepository(args.repo, trust=AdminTrust.load(args.trust))
    if command == "resign":
        version = repo.sign_targets(signer_from(args.targets_key, args), now=now)
        print(f"signed targets v{version}; run `publish` to release it")
        return 0
    version = repo.rotate_root(
        [signer_from(path, args) for path in args.root_key],
        role_keys=_role_keys(args.role_key),
        thresholds=_thresholds(args.threshold),
        now=now,
    )
    print(f"signed root v{version}; re-sign targets or publish with a rotated key, then publish")
    return 0


def _pairs(values: list[str], what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        role, _, rest = value.partition("=")
        if role not in ROLES or not rest:
            raise FleetKeyLocked(f"{what} must be ROLE=... with ROLE one of {ROLES}: {value!r}")
        pairs.append((role, rest))
    return pairs


def _role_keys(values: list[str]) -> dict[str, list[Key]]:
    keys: dict[str, list[Key]] = {}
    for role, path in _pairs(values, "--role-key"):
        keys.setdefault(role, []).append(load_public_key(Path(path)))
    return keys


def _thresholds(values: list[str]) -> dict[str, int]:
    thresholds = {}
    for role, number in _pairs(values, "--threshold"):
        if not number.isdigit() or int(number) < 1:
            raise FleetKeyLocked(f"--threshold {role}= must be a positive integer")
        thresholds[role] = int(number)
    return thresholds
