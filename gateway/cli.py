"""`mvb`: the box's command line. Every command prints what it did in plain words."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from config.local import ConfigError, load_config
from gateway.box import Box, open_box
from gateway.importer import ClipError, import_clip
from storage.errors import StoreError
from storage.store import RecordingRefused

DEFAULT_CONFIG = Path("/etc/mvb/box.toml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvb", description="Mobile Video Box")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("MVB_CONFIG", DEFAULT_CONFIG)),
        help="box configuration (TOML); default $MVB_CONFIG or /etc/mvb/box.toml",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="record an existing clip (docked bodycam) as evidence")
    imp.add_argument("file", type=Path)
    imp.add_argument("--camera", default="bodycam")
    sub.add_parser("catalog", help="list evidence files and their state")
    sub.add_parser("recover", help="recover the card (also done at every start)")
    sub.add_parser("retention", help="delete what retention allows now")
    sub.add_parser("device-key", help="print the box's public device key (for audit verify)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        box = open_box(config)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"mvb: {exc}", file=sys.stderr)
        return 2
    try:
        return _COMMANDS[args.command](box, args)
    finally:
        box.close()


def _import(box: Box, args: argparse.Namespace) -> int:
    try:
        sealed = import_clip(box.store, args.file, camera=args.camera, facts=box.facts)
    except (ClipError, RecordingRefused, StoreError, OSError) as exc:
        print(f"mvb import: {exc}", file=sys.stderr)
        return 1
    for item in sealed:
        sc = item.sidecar
        print(
            f"imported {args.file.name} as {args.camera}: recording {sc.recording_id} "
            f"file {sc.file_id} ({sc.size_bytes} bytes encrypted, sha256 {sc.sha256_hex[:16]}...)"
        )
    return 0


def _catalog(box: Box, _args: argparse.Namespace) -> int:
    records = sorted(box.store.catalog.all(), key=lambda r: (r.created_at_ms, r.file_seq))
    print(f"{'file':32}  {'recording':32}  seq  {'state':9}  {'bytes':>10}  sha256")
    for r in records:
        note = ""
        if r.interrupted_at_chunk is not None:
            note = f"  interrupted at chunk {r.interrupted_at_chunk}"
        held = "  HELD" if r.held else ""
        sha = (r.sha256_hex or "-")[:16]
        print(
            f"{r.file_id:32}  {r.recording_id:32}  {r.file_seq:3}  {r.state.value:9}  "
            f"{r.size_bytes:10}  {sha}{note}{held}"
        )
    print(f"{len(records)} file(s)")
    return 0


def _recover(box: Box, _args: argparse.Namespace) -> int:
    report = box.recovery
    for sidecar in report.recovered:
        state = (
            f"interrupted at chunk {sidecar.interrupted_at_chunk}"
            if sidecar.interrupted_at_chunk is not None
            else "sealed"
        )
        print(f"recovered {sidecar.file_id}: {state}")
    print(
        f"recovery: {len(report.recovered)} file(s) recovered, {len(report.discarded)} empty "
        f"file(s) discarded, {len(report.swept_tmp)} temp file(s) swept"
    )
    return 0


def _retention(box: Box, _args: argparse.Namespace) -> int:
    deletions = box.store.apply_retention()
    for d in deletions:
        print(f"deleted {d.file_id}: {d.reason.value}")
    print(f"retention: {len(deletions)} file(s) deleted")
    return 0


def _device_key(box: Box, _args: argparse.Namespace) -> int:
    sys.stdout.write(box.device_key.public_pem().decode())
    return 0


_COMMANDS = {
    "import": _import,
    "catalog": _catalog,
    "recover": _recover,
    "retention": _retention,
    "device-key": _device_key,
}
