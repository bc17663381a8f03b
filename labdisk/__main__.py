"""`python -m labdisk serve BACKING MOUNTPOINT --control SOCKET ...`: the daemon (foreground);
`python -m labdisk ctl SOCKET COMMAND ...`: control a running one from a shell.

    python -m labdisk ctl /tmp/labdisk-x/ctl cut --torn
    python -m labdisk ctl /tmp/labdisk-x/ctl fail EIO --ops write,fsync --path 'evidence/*'
    python -m labdisk ctl /tmp/labdisk-x/ctl stall 0.05:2 --ops fsync
    python -m labdisk ctl /tmp/labdisk-x/ctl stats
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from labdisk.control_io import ControlError, LabDiskClient
from labdisk.durability import MODES, check_mode
from labdisk.faults import Delay


def _class(text: str) -> tuple[str, str]:
    name, sep, glob = text.partition("=")
    if not sep or not name or not glob:
        raise argparse.ArgumentTypeError(f"a class is NAME=GLOB, not {text!r}")
    return name, glob


def _delay(text: str) -> Delay:
    """`2` (fixed), `0.05:2` (uniform), `0.1,0.5,2` (one of)."""
    if ":" in text:
        low, high = text.split(":", 1)
        return Delay.uniform(float(low), float(high))
    if "," in text:
        return Delay.choice([float(value) for value in text.split(",")])
    return Delay.fixed(float(text))


def _ops(text: str) -> list[str]:
    return [op for op in text.split(",") if op]


def _serve(args: argparse.Namespace) -> None:
    from labdisk.control_io import ControlServer
    from labdisk.fs_io import LabDiskFs, libfuse_version, serve

    fs = LabDiskFs(args.backing, mode=check_mode(args.mode), seed=args.seed, classes=args.cls)
    server = ControlServer(args.control, fs)
    server.start()
    print(f"labdisk: libfuse {libfuse_version()}, mode {args.mode}", file=sys.stderr, flush=True)
    try:
        serve(fs, args.mountpoint, allow_other=args.allow_other)
    finally:
        server.close()


def _ctl(args: argparse.Namespace) -> Any:
    client = LabDiskClient(args.socket)
    match args.command:
        case "cut":
            return client.cut(torn=args.torn)
        case "pull":
            return client.pull(args.error, torn=args.torn)
        case "read-only":
            return client.read_only(not args.off)
        case "fail":
            return client.fail(
                args.error, ops=args.ops, path=args.path, after=args.after, times=args.times
            )
        case "stall":
            return client.stall(
                args.delay, ops=args.ops, path=args.path, after=args.after, times=args.times
            )
        case "clear":
            return client.clear_faults(args.id)
        case "mode":
            return client.set_mode(args.mode)
        case "stats":
            return client.stats(reset=args.reset)
        case other:
            return client.call(other)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m labdisk", description=__doc__.split("\n")[0])
    commands = top.add_subparsers(dest="what", required=True)
    serve = commands.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("backing", type=Path)
    serve.add_argument("mountpoint", type=Path)
    serve.add_argument("--control", type=Path, required=True, help="the control socket's path")
    serve.add_argument("--mode", choices=MODES, default="strict")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--class", dest="cls", type=_class, action="append", default=[])
    serve.add_argument("--allow-other", action="store_true")
    ctl = commands.add_parser("ctl", help="send a command to a running labdisk")
    ctl.add_argument("socket", type=Path)
    sub = ctl.add_subparsers(dest="command", required=True)
    for simple in ("ping", "status", "reinsert", "commit"):
        sub.add_parser(simple)
    cut = sub.add_parser("cut")
    cut.add_argument("--torn", action="store_true")
    pull = sub.add_parser("pull")
    pull.add_argument("--error", default="ENODEV", choices=["ENODEV", "ENOTCONN", "EIO"])
    pull.add_argument("--torn", action="store_true")
    read_only = sub.add_parser("read-only")
    read_only.add_argument("--off", action="store_true")
    for name, first, first_type, default_ops in (
        ("fail", "error", str, "*"),
        ("stall", "delay", _delay, "fsync"),
    ):
        rule = sub.add_parser(name)
        rule.add_argument(first, type=first_type)
        rule.add_argument("--ops", type=_ops, default=_ops(default_ops))
        rule.add_argument("--path", default="*")
        rule.add_argument("--after", type=int, default=0)
        rule.add_argument("--times", type=int, default=None)
    clear = sub.add_parser("clear")
    clear.add_argument("--id", type=int, default=None)
    mode = sub.add_parser("mode")
    mode.add_argument("mode", choices=MODES)
    stats = sub.add_parser("stats")
    stats.add_argument("--reset", action="store_true")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.what == "serve":
        _serve(args)
        return 0
    try:
        result = _ctl(args)
    except (ControlError, OSError) as error:
        print(f"labdisk: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
