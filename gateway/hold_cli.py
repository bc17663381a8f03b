"""`mvb hold`: hold a recording on the running box, release it, list the holds (RULES S4;
docs/webui.md 7). Over the loopback API, whose caller is the box's admin; the box decides and
audits. The reason is sent to the box, which seals it as encrypted evidence: this command
prints it nowhere."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

from config.local import LocalConfig

ApiCall = Callable[..., tuple[int, dict[str, Any]]]
"""gateway/cli.py `_api_call(config, method, path, body=None)`: (HTTP status, JSON answer)."""


def add_hold_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hold = sub.add_parser(
        "hold",
        help="keep a recording from retention until released (RULES S4)",
        description="mvb hold RECORDING_ID --reason TEXT | mvb hold --release RECORDING_ID | "
        "mvb hold --list",
    )
    hold.add_argument("recording_id", nargs="?", help="32 hex digits")
    hold.add_argument("--reason", help="why (sealed as encrypted evidence, never logged)")
    hold.add_argument("--release", metavar="RECORDING_ID", help="release this box's hold")
    hold.add_argument("--list", action="store_true", help="every hold on the box")


def hold_command(config: LocalConfig, args: argparse.Namespace, api_call: ApiCall) -> int:
    """Exit 0 done, 1 refused or the box not running, 2 a wrong command line."""
    modes = [args.recording_id is not None, args.release is not None, args.list]
    if sum(modes) != 1 or (args.recording_id is not None) != (args.reason is not None):
        print(
            "mvb hold: give RECORDING_ID --reason TEXT, or --release RECORDING_ID, or --list",
            file=sys.stderr,
        )
        return 2
    try:
        if args.list:
            return _list(api_call(config, "GET", "/api/holds"))
        if args.release is not None:
            answer = api_call(config, "DELETE", _path(args.release))
            return _released(args.release, answer)
        answer = api_call(config, "PUT", _path(args.recording_id), {"reason": args.reason})
        return _held(args.recording_id, answer)
    except OSError as exc:
        print(f"mvb hold: the box is not running ({exc})", file=sys.stderr)
        return 1


def _path(recording_id: str) -> str:
    return f"/api/holds/{urllib.parse.quote(recording_id, safe='')}"


def _refused(answer: tuple[int, dict[str, Any]]) -> bool:
    code, document = answer
    if code == 200:
        return False
    reason = document.get("message") or document.get("error") or f"HTTP {code}"
    print(f"mvb hold: {reason}", file=sys.stderr)
    return True


def _held(recording_id: str, answer: tuple[int, dict[str, Any]]) -> int:
    if _refused(answer):
        return 1
    document = answer[1]
    if document["reason_sealed"]:
        note = f"the reason is sealed as encrypted evidence file {document['note_file_id']}"
    else:
        note = "the card is full: the reason could NOT be kept; give it to the back office"
    print(
        f"held recording {recording_id} ({document['files_on_card']} file(s) on the card); {note}"
    )
    return 0


def _released(recording_id: str, answer: tuple[int, dict[str, Any]]) -> int:
    if _refused(answer):
        return 1
    still = " (still held by the fleet)" if answer[1]["held"] else ""
    print(f"released this box's hold of recording {recording_id}{still}")
    return 0


def _list(answer: tuple[int, dict[str, Any]]) -> int:
    if _refused(answer):
        return 1
    holds = answer[1]["holds"]
    for item in holds:
        ground = f", ground {item['ground']}" if item["ground"] else ""
        print(
            f"{item['recording_id']}  held by {'+'.join(item['sources'])}{ground}, "
            f"{item['files_on_card']} file(s) on the card"
        )
    print(f"{len(holds)} recording(s) held")
    return 0
