"""`mvb-admin`: the back office's and fleet admin's tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from backoffice.decrypt import decrypt_file, describe
from backoffice.keys import create_recording_keys
from storage.audit import format_report, verify_audit_log
from storage.devicekey import DeviceKeyError, DevicePublicKey
from storage.envelope import RecipientKeyError, RecipientPrivateKey
from storage.errors import EvidenceError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvb-admin", description="MVB back-office tools")
    sub = parser.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="key management").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create the recording key pair")
    create.add_argument("--dir", type=Path, required=True)

    dec = sub.add_parser("decrypt", help="decrypt evidence files")
    dec.add_argument("files", type=Path, nargs="+")
    dec.add_argument("--key", type=Path, required=True, help="recording private key")
    dec.add_argument("--out", type=Path, required=True)
    dec.add_argument("--device-key", type=Path, help="box public key: verifies power-cut records")

    audit = sub.add_parser("audit", help="audit log tools").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser("verify", help="verify a box's audit log")
    verify.add_argument("log", type=Path)
    verify.add_argument("--device-key", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "keys":
            return _keys_create(args)
        if args.command == "decrypt":
            return _decrypt(args)
        return _audit_verify(args)
    except (RecipientKeyError, DeviceKeyError, OSError) as exc:
        print(f"mvb-admin: {exc}", file=sys.stderr)
        return 2


def _keys_create(args: argparse.Namespace) -> int:
    private_path, public_path = create_recording_keys(args.dir)
    print(f"created {private_path} (keep offline, mode 0600) and {public_path} (give to boxes)")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    key = RecipientPrivateKey.load(args.key)
    device_key = DevicePublicKey.load(args.device_key) if args.device_key else None
    failures = 0
    for path in args.files:
        try:
            result = decrypt_file(path, key, args.out, device_key)
        except EvidenceError as exc:
            print(f"{path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failures += 1
            continue
        print(f"{path.name} -> {describe(result)}")
    return 1 if failures else 0


def _audit_verify(args: argparse.Namespace) -> int:
    public_key = DevicePublicKey.load(args.device_key)
    report = verify_audit_log(args.log.read_bytes(), public_key)
    print(format_report(report))
    return 0 if report.ok else 1
