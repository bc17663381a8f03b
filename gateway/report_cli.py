"""`mvb report` and `mvb warning`: the report book from the command line (RULES R4, R7, R8;
docs/webui.md 4), over the loopback API; the box decides, seals and audits. What the officer
writes is sent to the box, which seals it as encrypted evidence: this command prints it nowhere.

`mvb report RECORDING_ID --what TEXT (--warned | --not-warned REASON [--informed-at TIME |
--not-informed]) [--premises CODE [--premises-ground CODE]] [--correction REASON]`;
`mvb warning --what TEXT [--premises CODE [--premises-ground CODE]]`. TIME is ISO 8601 (a time
without a zone is the machine's local time).
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Any

from config.local import LocalConfig

ApiCall = Callable[..., tuple[int, dict[str, Any]]]
"""gateway/cli.py `_api_call(config, method, path, body=None)`: (HTTP status, JSON answer)."""

PREMISES = ("public", "home", "private_premises")
GROUNDS = ("consent", "warrant", "none")


def _add_place(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--premises", choices=PREMISES, help="where it happened (RULES R8)")
    parser.add_argument(
        "--premises-ground", choices=GROUNDS, help="in a home or private premises: on what ground"
    )


def add_report_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser("report", help="file (or correct) the report of a recording")
    report.add_argument("recording_id", help="32 hex digits (see `mvb status` / GET /api/reports)")
    report.add_argument("--what", required=True, help="what happened: facts and circumstances")
    warned = report.add_mutually_exclusive_group(required=True)
    warned.add_argument("--warned", action="store_true", help="the person was warned beforehand")
    warned.add_argument("--not-warned", metavar="REASON", help="not warned beforehand, and why")
    informed = report.add_mutually_exclusive_group()
    informed.add_argument("--informed-at", metavar="TIME", help="not warned: informed afterwards")
    informed.add_argument("--not-informed", action="store_true", help="not informed afterwards")
    _add_place(report)
    report.add_argument(
        "--correction", metavar="REASON", help="a correction of the filed report, and why"
    )
    warning = sub.add_parser("warning", help="register a warning given without a recording")
    warning.add_argument("--what", required=True, help="what happened")
    _add_place(warning)


def _place(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.premises is not None:
        body["premises"] = args.premises
    if args.premises_ground is not None:
        body["premises_ground"] = args.premises_ground
    return body


def _moment_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def report_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request body of `mvb report`; ValueError for a time that is not ISO 8601."""
    body: dict[str, Any] = {"what": args.what, "warned_beforehand": args.warned, **_place(args)}
    if not args.warned:
        body["not_warned_reason"] = args.not_warned
        if args.informed_at is not None:
            body["informed_afterwards"] = True
            body["informed_at_ms"] = _moment_ms(args.informed_at)
        elif args.not_informed:
            body["informed_afterwards"] = False
    if args.correction is not None:
        body["correction_reason"] = args.correction
    return body


def report_command(config: LocalConfig, args: argparse.Namespace, api_call: ApiCall) -> int:
    """Exit 0 filed, 1 refused or the box not running, 2 a wrong command line."""
    try:
        body = report_body(args)
    except ValueError:
        print("mvb report: --informed-at takes an ISO 8601 time", file=sys.stderr)
        return 2
    path = f"/api/reports/{urllib.parse.quote(args.recording_id, safe='')}"
    method = "PUT"
    if args.correction is not None:
        method, path = "POST", path + "/corrections"
    answer = _call("report", api_call, config, method, path, body)
    if answer is None:
        return 1
    what = "correction" if args.correction is not None else "report"
    print(
        f"{what} filed for recording {answer['recording_id']}: encrypted as evidence file "
        f"{answer['file_id']}"
    )
    return 0


def warning_command(config: LocalConfig, args: argparse.Namespace, api_call: ApiCall) -> int:
    body = {"what": args.what, **_place(args)}
    answer = _call("warning", api_call, config, "POST", "/api/warnings", body)
    if answer is None:
        return 1
    where = "with" if answer.get("position_known") else "without"
    print(
        f"warning registered {where} a GPS position as {answer['recording_id']}: encrypted as "
        f"evidence file {answer['file_id']}"
    )
    return 0


def _call(
    name: str, api_call: ApiCall, config: LocalConfig, method: str, path: str, body: Any
) -> dict[str, Any] | None:
    """The box's answer when it did it; None (and the reason on stderr) otherwise."""
    try:
        code, document = api_call(config, method, path, body)
    except OSError as exc:
        print(f"mvb {name}: the box is not running ({exc})", file=sys.stderr)
        return None
    if code != 200:
        reason = document.get("message") or document.get("error") or f"HTTP {code}"
        print(f"mvb {name}: {reason}", file=sys.stderr)
        return None
    return document
