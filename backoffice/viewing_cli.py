"""`mvb-admin keys`, `decrypt` and `viewing`: the recording keys, their holders, and every
decryption written to the viewing log (docs/four-eyes.md).

- `keys create`: one recording key pair that opens every recording alone.
- `keys holder`: one key holder's pair, the private key encrypted with the holder's passphrase.
- `decrypt`: the files, with the keys of the holders present (`--key` once per holder, each
  unlocked by its holder's passphrase); a four-eyes file with fewer holders than its threshold is
  refused. Every file decrypted or refused is an entry in the viewing log, written (fsynced)
  before the plaintext is put in place; the log's new head is printed last, for the paper form.
- `viewing init` / `viewing verify`: make a viewing log; check its chain, its signatures and a
  head the holders noted.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from backoffice.decrypt import InterruptionUnchecked, decrypt_file, describe
from backoffice.keys import (
    MAX_PASSPHRASE_CHARS,
    HolderKey,
    KeyHolderError,
    create_holder_key,
    create_recording_keys,
    holder_of,
    key_is_encrypted,
    load_holder_key,
)
from backoffice.viewing import (
    DECRYPTED,
    REFUSED,
    NotedHead,
    Viewing,
    check_reason,
    check_viewing_log,
    decrypted_fields,
    head_text,
    refused_fields,
)
from backoffice.viewing_io import ViewingLog, file_sha256, log_public_key, read_log
from storage.devicekey import DevicePublicKey
from storage.envelope import RecipientKeyError
from storage.errors import EvidenceError
from storage.reader import ReadReport


def add_key_holder_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="recording keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create the recording key pair (one key opens all)")
    create.add_argument("--dir", type=Path, required=True)
    holder = keys.add_parser(
        "holder", help="create one key holder's pair, encrypted with the holder's passphrase"
    )
    holder.add_argument("--dir", type=Path, required=True)
    holder.add_argument("--name", required=True, help="the holder (a-z 0-9 . _ -): NAME.key")
    holder.add_argument(
        "--passphrase-fd", type=int, help="read the passphrase from this descriptor (else asked)"
    )

    dec = sub.add_parser("decrypt", help="decrypt evidence files (written to the viewing log)")
    dec.add_argument("files", type=Path, nargs="+")
    dec.add_argument(
        "--key",
        type=Path,
        action="append",
        required=True,
        help="a recording private key; once per key holder present (four-eyes: two)",
    )
    dec.add_argument(
        "--passphrase-fd",
        type=int,
        action="append",
        default=[],
        help="the next encrypted key's passphrase from this descriptor (else asked for)",
    )
    dec.add_argument("--out", type=Path, required=True)
    dec.add_argument("--device-key", type=Path, help="box public key: verifies power-cut records")
    dec.add_argument(
        "--unverified",
        action="store_true",
        help="decrypt a power-cut file without --device-key anyway, marked unverified",
    )
    dec.add_argument("--log", type=Path, required=True, help="the viewing log (viewing init)")
    dec.add_argument("--reason", required=True, help="why: the approval's reference (logged)")

    viewing = sub.add_parser("viewing", help="the back office's viewing log").add_subparsers(
        dest="viewing_command", required=True
    )
    init = viewing.add_parser("init", help="make a viewing log directory and its signing key")
    init.add_argument("--log", type=Path, required=True)
    verify = viewing.add_parser("verify", help="check a viewing log's chain and signatures")
    verify.add_argument("--log", type=Path, required=True)
    verify.add_argument("--key", type=Path, help="the log's public key, a copy kept apart")
    verify.add_argument("--head", help="a head noted on a viewing form: SEQ:HASH")


def run_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "create":
        private_path, public_path = create_recording_keys(args.dir)
        print(f"created {private_path} (keep offline, mode 0600) and {public_path} (give to boxes)")
        return 0
    passphrase = _new_passphrase(args.name, args.passphrase_fd)
    private_path, public_path = create_holder_key(args.dir, args.name, passphrase)
    print(
        f"created {private_path} (key holder {args.name}'s alone: encrypted with the holder's "
        f"passphrase) and {public_path} (give to boxes)"
    )
    return 0


def run_viewing(args: argparse.Namespace) -> int:
    if args.viewing_command == "init":
        public = ViewingLog.init(args.log)
        print(f"viewing log made in {args.log}: signing key {public.key_id()} (note its id)")
        return 0
    noted = None if args.head is None else NotedHead.parse(args.head)
    check = check_viewing_log(read_log(args.log), log_public_key(args.log, args.key), noted)
    print(check.message)
    return 0 if check.ok else 1


def run_decrypt(args: argparse.Namespace) -> int:
    """Exit 0 when every file was decrypted, 1 when one was refused (each line says why)."""
    check_reason(args.reason)
    with ViewingLog.open(args.log) as log:
        names = tuple(holder_of(path) for path in args.key)
        try:
            holders = _unlock(args.key, args.passphrase_fd)
        except (RecipientKeyError, KeyHolderError) as exc:
            # A wrong passphrase is an attempt too: logged for every file asked for.
            attempt = Viewing(names, (), args.reason, _operator())
            for path in args.files:
                fields = refused_fields(attempt, path.name, file_sha256(path), _error(exc))
                log.append(REFUSED, fields)
            raise
        viewing = Viewing(
            tuple(h.holder for h in holders),
            tuple(h.key_id_hex for h in holders),
            args.reason,
            _operator(),
        )
        failures = _decrypt_files(args, log, viewing, holders)
        seq, head = log.head()
        print(f"viewing log {args.log}: head {head_text(seq, head)} (note it on the viewing form)")
    return 1 if failures else 0


def _decrypt_files(
    args: argparse.Namespace, log: ViewingLog, viewing: Viewing, holders: list[HolderKey]
) -> int:
    device_key = DevicePublicKey.load(args.device_key) if args.device_key else None
    keys = [holder.key for holder in holders]
    failures = 0
    for path in args.files:

        def log_viewing(report: ReadReport, path: Path = path) -> None:
            log.append(DECRYPTED, decrypted_fields(viewing, path.name, report, str(args.out)))

        try:
            result = decrypt_file(
                path,
                keys,
                args.out,
                device_key,
                before_commit=log_viewing,
                allow_unverified=args.unverified,
            )
        except (EvidenceError, InterruptionUnchecked) as exc:
            log.append(REFUSED, refused_fields(viewing, path.name, file_sha256(path), _error(exc)))
            print(f"{path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failures += 1
            continue
        print(f"{path.name} -> {describe(result)}")
    return failures


def _unlock(paths: Sequence[Path], passphrase_fds: Sequence[int]) -> list[HolderKey]:
    """Each key unlocked by its holder: an encrypted key's passphrase from the next
    `--passphrase-fd`, else asked on the terminal, naming the holder."""
    fds = list(passphrase_fds)
    holders = []
    for path in paths:
        passphrase = None
        if key_is_encrypted(path):
            holder = holder_of(path)
            passphrase = (
                _read_passphrase(fds.pop(0))
                if fds
                else getpass.getpass(f"key holder {holder}, your passphrase: ")
            )
        holders.append(load_holder_key(path, passphrase))
    if fds:
        raise KeyHolderError(f"{len(fds)} --passphrase-fd more than there are encrypted keys")
    return holders


def _new_passphrase(holder: str, fd: int | None) -> str:
    if fd is not None:
        return _read_passphrase(fd)
    first = getpass.getpass(f"key holder {holder}, choose a passphrase: ")
    if getpass.getpass("the same passphrase again: ") != first:
        raise KeyHolderError("the two passphrases differ; nothing was created")
    return first


def _read_passphrase(fd: int) -> str:
    """One line from descriptor `fd` (closed after), without its line end."""
    try:
        with open(fd, encoding="utf-8", closefd=True) as stream:
            line = stream.readline(MAX_PASSPHRASE_CHARS + 2)
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyHolderError(f"cannot read a passphrase from descriptor {fd}") from exc
    return line.removesuffix("\n").removesuffix("\r")


def _operator() -> str:
    """The login that runs the command (who typed it; the holders are who unlocked)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
