"""`mvb-admin release rollout|status|pause|resume|promote|rollback` (docs/fleet-admin.md 11).

The steps of backoffice/rollout_io.py as commands. Steps that sign (rollout, promote, rollback)
take the admin's trust and targets key like `config sign`; pause, resume and status sign nothing.
Publishing stays `mvb-admin config publish`. A refusal (a step the rollout's phase does not
allow, an unhealthy canary without --force, metadata the trust does not vouch for) exits 1 with
the reason and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from backoffice.config_keys_cli import add_passphrase_file, signer_from
from backoffice.fleet_health import FleetHealthStore
from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_status import DEFAULT_STALE_AFTER_MS
from backoffice.fleet_trust import UntrustedMetadata
from backoffice.fleet_trust_io import AdminTrust
from backoffice.rollout import Event, Phase, Rollout, RolloutRefused, RolloutStateDamaged, Signed
from backoffice.rollout_io import (
    RolloutBook,
    mark,
    now_ms,
    plan,
    plan_config,
    promote,
    rollback,
    signed_docs,
    start,
)
from backoffice.rollout_progress import Progress, canary_healthy, progress

COMMANDS = frozenset({"rollout", "status", "pause", "resume", "promote", "rollback"})
_SIGNING = frozenset({"rollout", "promote", "rollback"})
_TRUST_HELP = "the admin's trusted fleet root (config init --trust, or config trust)"


def add_rollout_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollout = actions.add_parser("rollout", help="pin a release to a group, a canary or boxes")
    _signing(rollout, starts=True)
    rollout.add_argument("--version", dest="release_version", required=True)
    rollout.add_argument("--group", help="every box the group's document names")
    rollout.add_argument(
        "--canary-percent", type=int, help="with --group: this share of it first (1-100)"
    )
    rollout.add_argument("--box", action="append", default=[], help="a single box (repeatable)")
    rollout.add_argument(
        "--previous-version",
        help="what a rollback pins (default: the version the documents pin now, else the one "
        "the boxes report)",
    )
    rollout.add_argument("--dir", type=Path, help="the back office's store (health reports)")
    status = actions.add_parser("status", help="a rollout's progress, from the boxes' health")
    _naming(status)
    _health(status)
    status.add_argument(
        "--trust", type=Path, help=f"{_TRUST_HELP}; with it, a rollout done is recorded"
    )
    status.add_argument("--json", action="store_true")
    for name, what in (("pause", "hold the canary back"), ("resume", "let a paused canary go on")):
        step = actions.add_parser(name, help=what)
        _naming(step)
        step.add_argument("--trust", type=Path, required=True, help=_TRUST_HELP)
    promote_parser = actions.add_parser("promote", help="the canary's release to the whole group")
    _signing(promote_parser)
    _health(promote_parser)
    promote_parser.add_argument(
        "--force", action="store_true", help="promote even while the canary is not healthy"
    )
    _signing(actions.add_parser("rollback", help="pin the previous version again"))


def _naming(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument(
        "--rollout", help="the rollout's id (default: the active one, else the newest)"
    )


def _signing(parser: argparse.ArgumentParser, *, starts: bool = False) -> None:
    """The signing options; a step on a rollout also names it, a start makes one."""
    if starts:
        parser.add_argument("--repo", type=Path, required=True)
    else:
        _naming(parser)
    parser.add_argument("--trust", type=Path, required=True, help=_TRUST_HELP)
    parser.add_argument("--targets-key", type=Path, required=True)
    add_passphrase_file(parser)


def _health(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, required=True, help="the back office's store")
    parser.add_argument(
        "--stale-after-s",
        type=int,
        default=DEFAULT_STALE_AFTER_MS // 1000,
        help="a box without a report this long is stale (default 900)",
    )


def run_rollout(args: argparse.Namespace) -> int:
    command: str = args.release_command
    try:
        book = RolloutBook(args.repo, args.trust)
        code = _run(command, args, book)
        for name in book.repaired:
            print(f"rollouts/{name} on the server differed from the admin's: written again")
        return code
    except (RolloutRefused, UntrustedMetadata) as exc:
        nothing = "nothing signed" if command in _SIGNING else "nothing changed"
        print(f"mvb-admin release {command}: refused, {nothing}: {exc}", file=sys.stderr)
        return 1
    except RolloutStateDamaged as exc:
        print(f"mvb-admin release {command}: {exc}", file=sys.stderr)
        return 2


def _run(command: str, args: argparse.Namespace, book: RolloutBook) -> int:
    if command == "rollout":
        return _start(args, book)
    rollout = book.choose(args.rollout)
    if command in ("pause", "resume"):
        after = mark(book, rollout, Event.PAUSE if command == "pause" else Event.RESUME)
        print(f"rollout {after.rollout_id}: {after.phase.value}")
        return 0
    if command == "status":
        return _status(args, book, rollout)
    repo, now = _repository(args), datetime.now(UTC)
    signer = signer_from(args.targets_key, args)
    if command == "promote":
        state = _progress(args, rollout)
        healthy, problems = canary_healthy(rollout, state)
        if not healthy and not args.force:
            rollout.after(Event.PROMOTE, 0)  # a phase refusal first: it says more
            for problem in problems:
                print(f"mvb-admin release promote: {problem}", file=sys.stderr)
            print(
                "mvb-admin release promote: refused, nothing signed: the canary is not healthy "
                "(--force to promote anyway)",
                file=sys.stderr,
            )
            return 1
        after = promote(repo, book, rollout, signer, now)
    else:
        after, left = rollback(repo, book, rollout, signer, now)
        for box in left:
            print(f"{box}: its document no longer pins {rollout.version}; left as it is")
    _print_step(after, after.signed[len(rollout.signed) :])
    return 0


def _start(args: argparse.Namespace, book: RolloutBook) -> int:
    repo = _repository(args)
    reports = [] if args.dir is None else FleetHealthStore(args.dir).all()
    planned = plan(
        book,
        signed_docs(repo),
        version=args.release_version,
        group=args.group,
        boxes=args.box,
        canary_percent=args.canary_percent,
        previous_version=args.previous_version,
        reports=reports,
        at_ms=now_ms(),
    )
    after = start(repo, book, planned, signer_from(args.targets_key, args), datetime.now(UTC))
    if after.canary:
        print(f"canary ({after.canary_percent}%): {', '.join(after.canary)}")
    _print_step(after, after.signed)
    return 0


def add_config_rollout_parser(config: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollout = config.add_parser(
        "rollout", help="a group's new document to a canary share first (then `release promote`)"
    )
    _signing(rollout, starts=True)
    rollout.add_argument("--group", required=True)
    rollout.add_argument("--file", type=Path, required=True, help="the group's new document")
    rollout.add_argument("--canary-percent", type=int, help="this share of the group first (1-100)")


def run_config_rollout(args: argparse.Namespace, problems: list[str]) -> int:
    """`config rollout`, after the same lint as `config sign` (`problems`)."""
    for problem in problems:
        print(f"mvb-admin config rollout: {problem}", file=sys.stderr)
    if problems:
        print("mvb-admin config rollout: refused, nothing signed", file=sys.stderr)
        return 1
    book = RolloutBook(args.repo, args.trust)
    try:
        repo = _repository(args)
        planned = plan_config(
            book,
            signed_docs(repo),
            group=args.group,
            new_text=args.file.read_text(encoding="utf-8"),
            canary_percent=args.canary_percent,
            at_ms=now_ms(),
        )
        after = start(repo, book, planned, signer_from(args.targets_key, args), datetime.now(UTC))
    except (RolloutRefused, UntrustedMetadata) as exc:
        print(f"mvb-admin config rollout: refused, nothing signed: {exc}", file=sys.stderr)
        return 1
    except RolloutStateDamaged as exc:
        print(f"mvb-admin config rollout: {exc}", file=sys.stderr)
        return 2
    for name in book.repaired:
        print(f"rollouts/{name} on the server differed from the admin's: written again")
    if after.canary:
        print(f"canary ({after.canary_percent}%): {', '.join(after.canary)}")
    _print_step(after, after.signed)
    steps = "status|pause|resume|promote|rollback"
    print(f"its steps: mvb-admin release {steps} --rollout {after.rollout_id}")
    return 0


def _print_step(rollout: Rollout, signed: tuple[Signed, ...]) -> None:
    for doc in signed:
        print(f"signed {doc.path} as config_serial {doc.config_serial}: version {doc.version}")
    if not signed:
        print("nothing to sign: the documents already say so")
    print(
        f"rollout {rollout.rollout_id}: {rollout.phase.value}; run `config publish` to release it"
    )


def _status(args: argparse.Namespace, book: RolloutBook, rollout: Rollout) -> int:
    state = _progress(args, rollout)
    if rollout.phase == Phase.PROMOTED and state.all_on_version and book.writable:
        rollout = mark(book, rollout, Event.COMPLETE)
    healthy, problems = canary_healthy(rollout, state)
    if args.json:
        document = {
            "rollout_id": rollout.rollout_id,
            "kind": rollout.kind,
            "phase": rollout.phase.value,
            "version": rollout.version,
            "previous_version": rollout.previous_version,
            "group": rollout.group,
            "canary": list(rollout.canary),
            "canary_healthy": healthy if rollout.canary else None,
            "canary_problems": problems if rollout.canary else [],
            **state.to_json_object(),
        }
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(_text(rollout, state, healthy, problems), end="")
    return 0


def _text(rollout: Rollout, state: Progress, healthy: bool, problems: list[str]) -> str:
    where = f"group {rollout.group}" if rollout.group else "boxes"
    lines = [
        f"rollout {rollout.rollout_id}: {rollout.phase.value} ({rollout.kind} {rollout.version}, "
        f"previous {rollout.previous_version}, {where})",
        f"targeted {len(state.boxes)}, on {rollout.version}: {state.count('on_version')}, "
        f"failed {state.count('failed')}, waiting {state.count('waiting')}",
    ]
    if state.stale:
        lines.append(f"stale: {', '.join(state.stale)}")
    if rollout.canary:
        verdict = "healthy" if healthy else "not healthy: " + "; ".join(problems)
        lines.append(f"canary ({', '.join(rollout.canary)}): {verdict}")
    width = max(len(b.box_id) for b in state.boxes) if state.boxes else 0
    for box in state.boxes:
        mark_ = " STALE" if box.stale else ""
        version = box.software_version or "-"
        lines.append(
            f"  {box.box_id.ljust(width)}  {box.bucket:<10}  {version:<12}  {box.reason}{mark_}"
        )
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _progress(args: argparse.Namespace, rollout: Rollout) -> Progress:
    reports = FleetHealthStore(args.dir).all()
    return progress(rollout, reports, now_ms(), args.stale_after_s * 1000)


def _repository(args: argparse.Namespace) -> FleetRepository:
    return FleetRepository(args.repo, trust=AdminTrust.load(args.trust))
