"""`mvb-admin audit ...`: a box's audit log at the back office (docs/audit-custody.md).

- `verify LOG --device-key PUB [--head HEAD]`: a copy of a box's log (from the box, a card, a
  colleague): chain and signatures; with a head the back office received (`audit check` prints
  it), also that the copy reaches it with the same entry, so a copy cut short, emptied or
  rewritten and signed again fails. Without `--head` it says what it cannot know.
- `check --store DIR --box-id ID`: what the back office holds of the box
  (backoffice/audit_check.py); prints the last head.
Exit codes: 0 verified, 1 not (or alarms), 2 the command could not run.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from backoffice.audit_check import check_box
from backoffice.audit_store import AUDIT_DIR
from common.faults import MisuseFault
from storage.audit import verify_audit_log
from storage.audit_head import (
    HeadFormatError,
    SignedHead,
    format_head_report,
    parse_head,
    verify_against_head,
)
from storage.devicekey import DevicePublicKey

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


def run_audit(args: argparse.Namespace) -> int:
    if args.audit_command == "verify":
        return _verify(args)
    return _check(args)


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
