"""`mvb`: the box's command line. Every command prints what it did in plain words."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backoffice.pairing import CodeFormatError
from config.local import ConfigError, LocalConfig, load_config
from gateway.box import Box, open_box
from gateway.importer import ClipError, import_clip
from gateway.pairing import BoxIdInvalid, PairingFailed
from gateway.pairing_client import officer_message, pair, pairing_files
from gateway.run import run
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
    sub.add_parser("run", help="run the box: cameras, recorder, GPS, inputs, local API")
    sub.add_parser("status", help="the running box's status (local API)")
    rec = sub.add_parser("record", help="start or stop a recording on the running box")
    rec.add_argument("action", choices=["start", "stop"])
    pairing = sub.add_parser("pair", help="pair the box with the back office (a one-time code)")
    pairing.add_argument(
        "code", nargs="+", help="the code from the admin: ADDRESS/XXXX-XXXX-... (spaces allowed)"
    )
    pairing.add_argument(
        "--re-pair", action="store_true", help="replace this box's pairing (needs a re-pair code)"
    )
    push = sub.add_parser("config", help="signed fleet configuration on the running box")
    push.add_argument("action", choices=["push"])
    push.add_argument("bundle", type=Path, help="a bundle from `mvb-admin config bundle`")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command in _SERVICE_COMMANDS:
            return _SERVICE_COMMANDS[args.command](config, args)
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


def _run(config: LocalConfig, _args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(config))
    except OSError as exc:  # e.g. the API port is taken; everything started was stopped again
        print(f"mvb run: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _api_call(config: LocalConfig, method: str, path: str) -> tuple[int, dict[str, Any]]:
    url = f"http://{config.api.host}:{config.api.port}{path}"
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _config_push(config: LocalConfig, args: argparse.Namespace) -> int:
    """`mvb config push BUNDLE`: hand a signed bundle to the running box; exit 1 if refused."""
    url = f"http://{config.api.host}:{config.api.port}/api/config/bundle"
    request = urllib.request.Request(url, method="POST", data=args.bundle.read_bytes())
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 (loopback)
            document = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        document = json.loads(exc.read() or b"{}")
    except OSError as exc:
        print(f"mvb config push: the box is not running ({exc})", file=sys.stderr)
        return 1
    if not document.get("applied"):
        reason = document.get("reason") or document.get("error")
        print(f"mvb config push: {reason}", file=sys.stderr)
        return 1
    print(f"applied configuration serial {document['config_serial']}")
    return 0


def _status(config: LocalConfig, _args: argparse.Namespace) -> int:
    try:
        _, document = _api_call(config, "GET", "/api/status")
    except OSError as exc:
        print(f"mvb status: the box is not running ({exc})", file=sys.stderr)
        return 1
    print(json.dumps(document, indent=2, sort_keys=True))
    return 0


def _record(config: LocalConfig, args: argparse.Namespace) -> int:
    try:
        code, document = _api_call(config, "POST", f"/api/record/{args.action}")
    except OSError as exc:
        print(f"mvb record: the box is not running ({exc})", file=sys.stderr)
        return 1
    if code != 200:
        print(f"mvb record {args.action}: {document.get('error', code)}", file=sys.stderr)
        return 1
    print(f"recorder: {document['state']}")
    return 0


def _pair(config: LocalConfig, args: argparse.Namespace) -> int:
    """`mvb pair CODE`: the box id is the configured device serial; the credentials go to the
    state directory. Any refusal is exit code 1 with one line saying what to do."""
    box_id = config.box.device_serial
    typed_code = " ".join(args.code)
    try:
        credentials = asyncio.run(pair(typed_code, box_id, config.state_dir, re_pair=args.re_pair))
    except BoxIdInvalid as exc:
        print(f"mvb pair: box.device_serial in {config.source}: {exc}", file=sys.stderr)
        return 2
    except (PairingFailed, CodeFormatError) as exc:
        print(f"mvb pair: {officer_message(exc)}", file=sys.stderr)
        return 1
    directory = pairing_files(config.state_dir).directory
    print(
        f"paired box {box_id} with the back office at {credentials.address}: "
        f"credentials in {directory}, fleet trust root installed"
    )
    return 0


_SERVICE_COMMANDS = {
    "run": _run,
    "status": _status,
    "record": _record,
    "pair": _pair,
    "config": _config_push,
}

_COMMANDS = {
    "import": _import,
    "catalog": _catalog,
    "recover": _recover,
    "retention": _retention,
    "device-key": _device_key,
}
