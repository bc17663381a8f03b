"""`mvb`: the box's command line. Every command prints what it did in plain words."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config.local import ConfigError, LocalConfig, load_config
from gateway.box import Box, open_box
from gateway.hold_cli import add_hold_parser, hold_command
from gateway.importer import ClipError, attribute_clip, import_clip, recorded_at_ms
from gateway.logfmt import configure_logging
from gateway.pairing import BoxIdInvalid, PairingFailed
from gateway.pairing_client import officer_message, pair, pairing_files
from gateway.release_cli import add_release_parser, run_release
from gateway.report_cli import add_report_parsers, report_command, warning_command
from gateway.run_service import run
from protocol.pairing_code import CodeFormatError
from storage.devicekey import DeviceKey, DeviceKeyError
from storage.errors import RecordingRefused, StoreError
from storage.trusted_time import describe

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
    imp.add_argument(
        "--bodycam",
        metavar="SERIAL",
        help="the bodycam's serial: the clip is attributed to the officer who held it then",
    )
    imp.add_argument(
        "--recorded-at",
        metavar="ISO8601",
        help="when the clip was shot (default: its creation_time tag, else the file's mtime)",
    )
    sub.add_parser("catalog", help="list evidence files and their state")
    add_release_parser(sub)
    sub.add_parser("recover", help="recover the card (also done at every start)")
    sub.add_parser("retention", help="delete what retention allows now")
    sub.add_parser("device-key", help="print the box's public device key (for audit verify)")
    run_parser = sub.add_parser("run", help="run the box: every subsystem, until SIGTERM")
    run_parser.add_argument(  # `mvb run --config FILE` as the unit and the docs write it
        "--config", type=Path, default=argparse.SUPPRESS, help="as --config before the command"
    )
    status = sub.add_parser("status", help="the running box's status (local API)")
    shape = status.add_mutually_exclusive_group()
    shape.add_argument(
        "--json", action="store_true", help="the status document as JSON (default when piped)"
    )
    shape.add_argument(
        "--text", action="store_true", help="a readable summary (default on a terminal)"
    )
    _add_shift_parsers(sub)
    rec = sub.add_parser("record", help="start or stop a recording on the running box")
    rec.add_argument("action", choices=["start", "stop"])
    pairing = sub.add_parser("pair", help="pair the box with the back office (a one-time code)")
    pairing.add_argument(
        "code", nargs="+", help="the code from the admin: ADDRESS/XXXX-XXXX-... (spaces allowed)"
    )
    pairing.add_argument(
        "--re-pair", action="store_true", help="replace this box's pairing (needs a re-pair code)"
    )
    add_hold_parser(sub)  # `mvb hold` (gateway/hold_cli.py)
    uploads = sub.add_parser(
        "uploads", help="files waiting to upload, and why; `retry` releases blocked ones"
    )
    uploads.add_argument("action", nargs="?", choices=["retry"], help="release files")
    uploads.add_argument("file_ids", nargs="*", metavar="FILE_ID", help="with retry")
    uploads.add_argument(
        "--all-blocked", action="store_true", help="with retry: every blocked file"
    )
    uploads.add_argument("--json", action="store_true", help="the list as JSON")
    push = sub.add_parser("config", help="signed fleet configuration on the running box")
    push.add_argument("action", choices=["push"])
    push.add_argument("bundle", type=Path, help="a bundle from `mvb-admin config bundle`")
    return parser


def _add_shift_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`mvb shift start|leave|end` and `mvb report` (docs/webui.md 2, RULES R4 and R5)."""
    shift = sub.add_parser("shift", help="the officer's shift on the running box")
    actions = shift.add_subparsers(dest="shift_action", required=True)
    start = actions.add_parser(
        "start",
        help="bind an officer and bodycams to the box; a second officer joins the running shift",
    )
    start.add_argument("--officer-id", required=True, help="the officer's service number")
    start.add_argument(
        "--bodycam", action="extend", nargs="+", default=[], metavar="SERIAL", help="at most 8"
    )
    leave = actions.add_parser("leave", help="one officer of a duo goes off duty")
    leave.add_argument("--officer-id", required=True, help="the leaving officer's service number")
    end = actions.add_parser("end", help="end the shift (every recording needs its report)")
    end.add_argument(
        "--acknowledge-missing-reports",
        action="store_true",
        help="end it although reports are missing (audited)",
    )
    add_report_parsers(sub)  # `mvb report`, `mvb warning` (gateway/report_cli.py)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "release":  # beside the running box: no configuration needed
        return run_release(args)
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
    facts: dict[str, Any] = dict(box.facts)
    try:
        if args.bodycam is not None:
            at_ms = None if args.recorded_at is None else recorded_at_ms(args.recorded_at)
            attribution = attribute_clip(
                box.config.state_dir, box.device_key.sign, args.file, args.bodycam, at_ms
            )
            facts.update(attribution.facts)
            print(f"mvb import: {attribution.note}")
        sealed = import_clip(box.store, args.file, camera=args.camera, facts=facts)
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
    for refused in report.refused:
        # Not a power cut of this box (storage/recovery.py): kept aside, alarmed, audited.
        print(f"REFUSED {refused.file_id}: {refused.reason}; kept as {refused.quarantined.name}")
    print(
        f"recovery: {len(report.recovered)} file(s) recovered, {len(report.discarded)} empty "
        f"file(s) discarded, {len(report.swept_tmp)} temp file(s) swept"
        + (f", {len(report.refused)} file(s) refused" if report.refused else "")
    )
    return 1 if report.refused else 0


def _retention(box: Box, _args: argparse.Namespace) -> int:
    """One pass now, on the trusted time the running box saved (docs/retention.md); this
    command never writes trusted time back."""
    deletions = box.store.apply_retention()
    for d in deletions:
        print(f"deleted {d.file_id}: {d.reason.value}")
    print(f"retention: {len(deletions)} file(s) deleted")
    plan = box.store.last_retention
    if plan is not None:
        print(describe(plan.now))
        if plan.time_unknown:
            print(
                f"kept: {len(plan.time_unknown)} file(s) not uploaded whose age cannot be "
                "judged (the time was or is unknown)"
            )
        if plan.due_soon:
            first_days = plan.due_soon[0].left_ms / 86_400_000
            print(
                f"due: {len(plan.due_soon)} file(s) not uploaded reach the limit within 7 "
                f"days (the first in {first_days:.1f} days)"
            )
    return 0


def _device_key(box: Box, _args: argparse.Namespace) -> int:
    sys.stdout.write(box.device_key.public_pem().decode())
    return 0


def _run(config: LocalConfig, _args: argparse.Namespace) -> int:
    configure_logging()
    try:
        return asyncio.run(run(config))
    except OSError as exc:  # e.g. the API port is taken; everything started was stopped again
        print(f"mvb run: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _api_call(
    config: LocalConfig, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """One call to the loopback API: (HTTP status, the JSON answer). OSError: not running."""
    url = f"http://{config.api.host}:{config.api.port}{path}"
    data = None if body is None else json.dumps(body).encode()
    if data is None and method in ("POST", "PUT"):
        data = b""
    headers = {} if body is None else {"Content-Type": "application/json"}
    request = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            answer = {"error": raw.decode("utf-8", "replace").strip() or str(exc.code)}
        return exc.code, answer if isinstance(answer, dict) else {"error": str(answer)}


def _config_push(config: LocalConfig, args: argparse.Namespace) -> int:
    """`mvb config push BUNDLE`: hand a signed bundle to the running box; exit 1 if refused."""
    url = f"http://{config.api.host}:{config.api.port}/api/config/bundle"
    request = urllib.request.Request(url, method="POST", data=args.bundle.read_bytes())
    try:
        # A bundle with a release waits for its install too (minutes on a slow card).
        with urllib.request.urlopen(request, timeout=900) as response:  # noqa: S310 (loopback)
            document = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        document = json.loads(exc.read() or b"{}")
    except OSError as exc:
        print(f"mvb config push: the box is not running ({exc})", file=sys.stderr)
        return 1
    if document.get("deferred"):
        print(
            f"configuration serial {document['config_serial']} is kept, not applied yet "
            f"({document['reason']}); the box applies it by itself once that is fixed"
        )
        return 0
    if not document.get("applied"):
        reason = document.get("reason") or document.get("error")
        print(f"mvb config push: {reason}", file=sys.stderr)
        return 1
    print(f"applied configuration serial {document['config_serial']}")
    return 0


def _status(config: LocalConfig, args: argparse.Namespace) -> int:
    """A readable summary on a terminal (or with --text); the JSON document with --json and
    whenever stdout is not a terminal, so scripts and tests read one JSON document."""
    try:
        _, document = _api_call(config, "GET", "/api/status")
    except OSError as exc:
        print(f"mvb status: the box is not running ({exc})", file=sys.stderr)
        return 1
    if args.text or (not args.json and sys.stdout.isatty()):
        print("\n".join(status_summary(document)))
        return 0
    print(json.dumps(document, indent=2, sort_keys=True))
    web_line = _web_summary(document.get("web"))
    if web_line:
        print(web_line, file=sys.stderr)  # for people; stdout stays one JSON document
    return 0


def _mib(n_bytes: object) -> str:
    return f"{float(n_bytes) / 2**20:,.1f} MiB" if isinstance(n_bytes, int | float) else "?"


def _summary_recording(document: dict[str, Any]) -> str:
    recording = document.get("recording") or {}
    state = str(document.get("state", "?"))
    if state == "standby":
        return "recorder: standby"
    flagged = ", flagged as incident (P0)" if recording.get("flagged") else ""
    return (
        f"recorder: {state.upper()} for {document.get('recording_for_s')} s "
        f"(trigger {recording.get('trigger_source')}{flagged})"
    )


def _summary_storage(document: dict[str, Any]) -> str:
    storage = document.get("storage") or {}
    oldest_s = storage.get("oldest_waiting_age_s")
    oldest = "" if oldest_s is None else f", oldest waiting {oldest_s / 3600:.1f} h"
    retention_days = int(storage.get("retention_s", 0)) // 86_400
    return (
        f"card: {_mib(storage.get('card_free_bytes'))} free of "
        f"{_mib(storage.get('card_total_bytes'))}; {storage.get('files_on_card')} file(s) on "
        f"the card, {storage.get('waiting_files')} waiting to upload "
        f"({_mib(storage.get('waiting_bytes'))}){oldest}; retention {retention_days} days"
        f"{_held(storage)}"
    )


def _held(storage: dict[str, Any]) -> str:
    held = storage.get("held_recordings") or 0
    return f"; {held} recording(s) held (mvb hold --list)" if held else ""


def _summary_uplink(document: dict[str, Any]) -> str:
    uplink = document.get("uplink") or {}
    if "links" not in uplink:
        return f"uplink: {uplink.get('state')} ({uplink.get('reason', '')})"
    queue = ", ".join(
        f"{name} {item['files']}" for name, item in (uplink.get("queue") or {}).items()
    )
    line = f"uplink: {uplink.get('state')}; queue {queue}"
    if uplink.get("active_link"):
        rate = _mib(uplink.get("throughput_bytes_per_s"))
        line += f"; on {uplink['active_link']} ({uplink.get('transport')}) at {rate}/s"
    if uplink.get("eta_s") is not None:
        line += f", empty in about {uplink['eta_s']:.0f} s"
    return line


def _summary_people(document: dict[str, Any]) -> list[str]:
    shift = document.get("shift") or {}
    reports = document.get("reports") or {}
    pairing = document.get("pairing") or {}
    fleet = document.get("fleet")
    paired = f"paired as {pairing.get('box_id')}" if pairing.get("paired") else "not paired"
    serial = "" if fleet is None else f"; configuration serial {fleet.get('applied_serial')}"
    if shift.get("active") and not shift.get("officers"):
        people = "shift: running since a restart, its officers not known here (start it to resume)"
    elif shift.get("active"):
        people = "shift: " + shift_officers_text(shift)
    else:
        people = "shift: none (recordings carry no officer)"
    return [f"{people}; reports missing: {reports.get('missing', 0)}", f"pairing: {paired}{serial}"]


def shift_officers_text(shift: dict[str, Any]) -> str:
    """`officer BOA-1 (bodycams BC-1), officer BOA-2 (no bodycams)`: one or two officers."""
    parts = []
    for officer in shift.get("officers") or []:
        bodycams = ", ".join(officer.get("bodycam_serials") or [])
        carried = f"bodycams {bodycams}" if bodycams else "no bodycams"
        parts.append(f"officer {officer.get('officer_id')} ({carried})")
    return ", ".join(parts)


def status_summary(document: dict[str, Any]) -> list[str]:
    """The status document in a few lines for the person at the box (no position: a terminal
    is no place for it)."""
    box = document.get("box") or {}
    gps = document.get("gps") or {}
    lines = [
        f"box {box.get('device_serial')} (vehicle {box.get('vehicle_id')}), "
        f"software {box.get('software_version')}, up {box.get('uptime_s')} s",
        _summary_recording(document),
    ]
    for name, camera in sorted((document.get("cameras") or {}).items()):
        state = "connected" if camera.get("connected") else "NOT delivering"
        lines.append(
            f"camera {name}: {state}, {camera.get('bitrate_bps', 0) / 1000:,.0f} kbit/s, "
            f"pre-record {camera.get('prerecord_filled_s')} of {camera.get('prerecord_s')} s"
        )
    age = "" if gps.get("fix_age_s") is None else f", last fix {gps['fix_age_s']} s ago"
    lines += [_summary_storage(document), _summary_uplink(document)]
    lines.append(f"gps: {gps.get('status')}{age}")
    lines += _summary_people(document)
    for alert in document.get("alerts") or []:
        lines.append(f"ALERT {alert['severity']} {alert['code']}: {alert['detail']}")
    if not document.get("alerts"):
        lines.append("alerts: none")
    web_line = _web_summary(document.get("web"))
    if web_line:
        lines.append(web_line)
    return lines


def _web_summary(web: object) -> str:
    """One line for the installer: where the officer's page is and which certificate the
    tablet must trust (docs/webui.md 1.3); empty when the web UI is off."""
    if not isinstance(web, dict):
        return ""
    if web.get("state") != "listening":
        return f"web UI: not running ({web.get('reason', 'unknown')})"
    fingerprint = web.get("certificate_sha256", "")
    return f"web UI: {web.get('url')} (certificate SHA-256 {fingerprint})"


def _record(config: LocalConfig, args: argparse.Namespace) -> int:
    try:
        code, document = _api_call(config, "POST", f"/api/record/{args.action}")
    except OSError as exc:
        print(f"mvb record: the box is not running ({exc})", file=sys.stderr)
        return 1
    if code != 200:
        print(f"mvb record {args.action}: {_refusal(document, code)}", file=sys.stderr)
        return 1
    print(f"recorder: {document['state']}")
    return 0


def _pair(config: LocalConfig, args: argparse.Namespace) -> int:
    """`mvb pair CODE`: the box id is the configured device serial; the credentials go to the
    state directory. Any refusal is exit code 1 with one line saying what to do."""
    box_id = config.box.device_serial
    typed_code = " ".join(args.code)
    try:
        # The key the box signs with (made now if the box never ran): the pairing enrolls it.
        device_key = DeviceKey.load_or_create(config.state_dir).public_key().raw()
        credentials = asyncio.run(
            pair(typed_code, box_id, config.state_dir, device_key, re_pair=args.re_pair)
        )
    except BoxIdInvalid as exc:
        print(f"mvb pair: box.device_serial in {config.source}: {exc}", file=sys.stderr)
        return 2
    except DeviceKeyError as exc:
        print(f"mvb pair: the device key in {config.state_dir}: {exc}", file=sys.stderr)
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


def _hold(config: LocalConfig, args: argparse.Namespace) -> int:
    return hold_command(config, args, _api_call)


def _uploads(config: LocalConfig, args: argparse.Namespace) -> int:
    """`mvb uploads [--json]` lists every file waiting on the card with its reason;
    `mvb uploads retry FILE_ID... | --all-blocked` releases (audited by the box)."""
    if args.action is None and (args.file_ids or args.all_blocked):
        print("mvb uploads: FILE_ID and --all-blocked go with `retry`", file=sys.stderr)
        return 2
    if args.action == "retry" and bool(args.file_ids) == args.all_blocked:
        print("mvb uploads retry: name FILE_IDs or give --all-blocked", file=sys.stderr)
        return 2
    try:
        if args.action == "retry":
            body: dict[str, Any] = {"file_ids": args.file_ids}
            if args.all_blocked:
                body = {"all_blocked": True}
            code, document = _api_call(config, "POST", "/api/uploads/retry", body)
        else:
            code, document = _api_call(config, "GET", "/api/uploads")
    except OSError as exc:
        print(f"mvb uploads: the box is not running ({exc})", file=sys.stderr)
        return 1
    if code != 200:
        print(f"mvb uploads: {_refusal(document, code)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    elif args.action == "retry":
        for item in document["released"]:
            what = "released (was blocked)" if item["was_blocked"] else "tried again now"
            print(f"{item['file_id']}: {what}")
        print(f"{len(document['released'])} file(s) released")
    else:
        print("\n".join(uploads_summary(document)))
    return 0


def uploads_summary(document: dict[str, Any]) -> list[str]:
    """The upload queue in lines for the person at the box: one per file, oldest first."""
    lines = []
    if document.get("credentials_withdrawn"):
        lines.append("the back office refuses this box's certificate: pair it again")
    elif document.get("waiting_for_back_office"):
        lines.append(f"every upload waits: {document['waiting_for_back_office']}")
    for row in document.get("files", []):
        retry = "" if row.get("retry_in_s") is None else f" (retry in {row['retry_in_s']:.0f} s)"
        lines.append(
            f"{row['file_id']}  {row['upload_class']}  {row['state']:10}  "
            f"{_mib(row['size_bytes']):>11}  {row['reason']}{retry}"
        )
    blocked = sum(1 for row in document.get("files", []) if row["state"] == "blocked")
    lines.append(f"{len(document.get('files', []))} file(s) waiting, {blocked} blocked")
    if blocked:
        lines.append("release: mvb uploads retry FILE_ID... | --all-blocked")
    return lines


def _refusal(document: dict[str, Any], code: int) -> str:
    return str(document.get("message") or document.get("error") or f"HTTP {code}")


def _shift(config: LocalConfig, args: argparse.Namespace) -> int:
    """`mvb shift start|end` over the loopback channel (the officer id comes from the command
    line there, RULES R5); exit 1 with the box's reason when it refuses."""
    if args.shift_action == "start":
        body: dict[str, Any] = {"officer_id": args.officer_id, "bodycam_serials": args.bodycam}
    elif args.shift_action == "leave":
        body = {"officer_id": args.officer_id}
    else:
        body = {"acknowledge_missing_reports": args.acknowledge_missing_reports}
    try:
        code, document = _api_call(config, "POST", f"/api/shift/{args.shift_action}", body)
    except OSError as exc:
        print(f"mvb shift: the box is not running ({exc})", file=sys.stderr)
        return 1
    if code != 200:
        print(f"mvb shift {args.shift_action}: {_refusal(document, code)}", file=sys.stderr)
        for recording_id in document.get("missing", []):
            print(f"  no report yet: recording {recording_id}", file=sys.stderr)
        if document.get("error") == "reports_missing":
            print("  file them (mvb report) or add --acknowledge-missing-reports", file=sys.stderr)
        return 1
    if args.shift_action in ("start", "leave"):
        print(f"shift: {shift_officers_text(document)}")
    else:
        acknowledged = document.get("reports_missing_acknowledged", 0)
        note = f" ({acknowledged} missing report(s) acknowledged)" if acknowledged else ""
        print(f"shift ended{note}")
    return 0


def _report(config: LocalConfig, args: argparse.Namespace) -> int:
    return report_command(config, args, _api_call)


def _warning(config: LocalConfig, args: argparse.Namespace) -> int:
    return warning_command(config, args, _api_call)


_SERVICE_COMMANDS = {
    "run": _run,
    "status": _status,
    "record": _record,
    "shift": _shift,
    "report": _report,
    "warning": _warning,
    "pair": _pair,
    "config": _config_push,
    "hold": _hold,
    "uploads": _uploads,
}

_COMMANDS = {
    "import": _import,
    "catalog": _catalog,
    "recover": _recover,
    "retention": _retention,
    "device-key": _device_key,
}
