"""`mvb-admin audit ...`: a box's audit log at the back office (docs/audit-custody.md).

- `verify LOG --device-key PUB [--head HEAD]`: a copy of a box's log (from the box, a card, a
  colleague): chain and signatures; with a head the back office received (`audit check` prints
  it), also that the copy reaches it with the same entry, so a copy cut short, emptied or
  rewritten and signed again fails. Without `--head` it says what it cannot know.
- `check --store DIR --box-id ID`: what the back office holds of the box
  (backoffice/audit_check.py); prints the last head.
- `show LOG [--key KEY]`: the entries, one a line; with the recording key, the personal data a
  box seals (storage/sealed.py: officer ids) opened. `unseal TEXT --key KEY`: one sealed value
  (a recording's `shift_sealed`, a shift state's `sealed`).
Exit codes: 0 verified, 1 not (or alarms), 2 the command could not run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
from pathlib import Path

from backoffice.audit_check import check_box
from backoffice.audit_store import AUDIT_DIR
from common.faults import MisuseFault
from storage.audit import parse_line, split_lines, verify_audit_log
from storage.audit_head import (
    HeadFormatError,
    SignedHead,
    format_head_report,
    parse_head,
    verify_against_head,
)
from storage.devicekey import DevicePublicKey
from storage.envelope import RecipientPrivateKey
from storage.errors import EvidenceError
from storage.sealed import SealedFormatError, is_sealed, open_sealed

BOX_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a client certificate's CN (backoffice/server.py)


class HeadArgumentError(ValueError, MisuseFault):
    """--head is not a head's text, or --box-id not a box id (exit code 2)."""


def add_audit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="a box's audit log").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser("verify", help="verify a copy of a box's audit log")
    verify.add_argument("log", type=Path)
    verify.add_argument("--device-key", type=Path, required=True, help="the box's public key")
    verify.add_argument(
        "--head",
        help="SEQ:SHA256[:SIG], a head the back office received (mvb-admin audit check): "
        "without it, entries cut off the end cannot be detected",
    )
    check = audit.add_parser("check", help="verify what the back office holds of a box")
    check.add_argument("--store", type=Path, required=True, help="the --dir of mvb-admin serve")
    check.add_argument("--box-id", required=True, help="the box's id (its certificate's CN)")
    check.add_argument(
        "--device-key", type=Path, help="the box's public key (default: the one pinned)"
    )
    show = audit.add_parser("show", help="a box's audit entries, sealed values opened")
    show.add_argument("log", type=Path)
    show.add_argument("--key", type=Path, help="the recording private key: opens sealed values")
    unseal = audit.add_parser("unseal", help="open one sealed value with the recording key")
    unseal.add_argument("text")
    unseal.add_argument("--key", type=Path, required=True, help="the recording private key")


def run_audit(args: argparse.Namespace) -> int:
    if args.audit_command == "verify":
        return _verify(args)
    if args.audit_command == "show":
        key = None if args.key is None else RecipientPrivateKey.load(args.key)
        for line in show_lines(args.log.read_bytes(), key):
            print(line)
        return 0
    if args.audit_command == "unseal":
        key = RecipientPrivateKey.load(args.key)
        try:
            print(open_sealed(args.text.strip(), key).decode("utf-8", "replace"))
        except (SealedFormatError, EvidenceError) as exc:
            raise HeadArgumentError(f"cannot open the sealed value: {exc}") from None
        return 0
    return _check(args)


def show_lines(data: bytes, key: RecipientPrivateKey | None) -> list[str]:
    """One line per entry: seq, time, event and fields; a sealed field opened with `key`
    (`officer_id_sealed=` becomes `officer_id=`), or shown as `(sealed)` without it."""
    lines = []
    for raw in split_lines(data)[0]:
        try:
            entry = parse_line(raw)
        except ValueError as exc:
            lines.append(f"unreadable line: {exc}")
            continue
        fields = []
        for name, value in entry.fields.items():
            if is_sealed(value):
                fields.append(_opened(name, str(value), key))
            else:
                fields.append(f"{name}={json.dumps(value, ensure_ascii=False)}")
        moment = datetime.datetime.fromtimestamp(entry.at_ms / 1000, tz=datetime.UTC)
        when = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lines.append(" ".join([str(entry.seq), when, entry.event, *fields]))
    return lines


def _opened(name: str, value: str, key: RecipientPrivateKey | None) -> str:
    shown = name.removesuffix("_sealed")
    if key is None:
        return f"{shown}=(sealed)"
    try:
        plain = open_sealed(value, key).decode("utf-8", "replace")
    except (SealedFormatError, EvidenceError) as exc:
        return f"{shown}=(sealed, not opened: {type(exc).__name__})"
    return f"{shown}={json.dumps(plain, ensure_ascii=False)}"


def _verify(args: argparse.Namespace) -> int:
    public_key = DevicePublicKey.load(args.device_key)
    data = args.log.read_bytes()
    if args.head is None:
        report = verify_audit_log(data, public_key)
        print(format_head_report(report, None))
        return 0 if report.ok else 1
    try:
        parsed = parse_head(args.head.strip())
    except HeadFormatError as exc:
        raise HeadArgumentError(f"--head: {exc}") from None
    if isinstance(parsed, SignedHead):  # a signed head's signature is checked too
        if not parsed.verifies(public_key):
            raise HeadArgumentError("--head: its signature does not verify with --device-key")
        head = parsed.head
    else:
        head = parsed
    report = verify_against_head(data, public_key, head)
    print(format_head_report(report, head))
    return 0 if report.ok else 1


def _check(args: argparse.Namespace) -> int:
    if BOX_ID.fullmatch(args.box_id) is None or args.box_id in (".", ".."):
        raise HeadArgumentError(f"--box-id {args.box_id!r} is not a box id")
    key = None if args.device_key is None else DevicePublicKey.load(args.device_key)
    result = check_box(args.store / AUDIT_DIR / args.box_id, args.box_id, key)
    print("\n".join(result.lines))
    return 0 if result.ok else 1
