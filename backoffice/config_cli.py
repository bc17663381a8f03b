"""`mvb-admin config ...`: the fleet admin's steps on the signed configuration repository.

init (offline: all keys made, root signed, the admin's trust written), trust (start a trust from
a root handed over out of band), sign (the admin's targets key signs a document for boxes or
groups with the next config_serial), hold / release (the document signed at a path, with one
`[[holds]]` table more or less, signed again for the same boxes and groups:
backoffice/fleet_holds.py), publish (the back office's online keys sign a new snapshot and
timestamp), bundle (metadata + documents in one file for a box without a link), check-now (the
box checks its configuration at its next health report: backoffice/check_now.py).
See docs/fleet-config.md for where each key lives (11 for holds).

Every step that signs takes `--trust DIR`, the admin's own copy of the fleet's root
(backoffice/fleet_trust_io.py), and verifies the repository against it first: metadata the
trust does not vouch for (a forged targets file on the server) is refused, exit 1, with the
file named, and nothing is signed.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path

from backoffice.check_now import CheckNowBook
from backoffice.config_keys_cli import (
    add_key_parsers,
    add_passphrase_file,
    new_passphrase,
    run_key_command,
    signer_from,
)
from backoffice.config_lint import DEFAULTS_SOURCE, built_in_defaults, lint_document
from backoffice.fleet_holds import HoldEditError, with_hold, without_hold
from backoffice.fleet_repo import FleetRepository, init_repository, load_signer
from backoffice.fleet_trust import UntrustedMetadata
from backoffice.fleet_trust_io import AdminTrust
from backoffice.rollout_cli import add_config_rollout_parser, run_config_rollout
from config.local import LocalConfig, load_config
from storage.holds import HOLD_GROUNDS


def add_config_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="signed fleet configuration (TUF)").add_subparsers(
        dest="config_command", required=True
    )
    trust_help = "the admin's trusted fleet root (config init --trust, or config trust)"
    init = config.add_parser("init", help="make the fleet's keys and the repository (offline)")
    init.add_argument("--repo", type=Path, required=True)
    init.add_argument("--keys", type=Path, required=True, help="where the new keys are written")
    init.add_argument("--trust", type=Path, required=True, help="where the admin's trust goes")
    add_passphrase_file(init)  # encrypts the root and targets keys
    trust = config.add_parser("trust", help="start a trust from a fleet root given out of band")
    trust.add_argument("--trust", type=Path, required=True)
    trust.add_argument("--root", type=Path, required=True, help="an N.root.json of the fleet")
    sign = config.add_parser("sign", help="sign a configuration document for boxes or groups")
    sign.add_argument("--repo", type=Path, required=True)
    sign.add_argument("--trust", type=Path, required=True, help=trust_help)
    sign.add_argument("--targets-key", type=Path, required=True)
    sign.add_argument("--path", required=True, help="boxes/<box id>.toml or groups/<group>.toml")
    sign.add_argument("--file", type=Path, required=True, help="the document")
    sign.add_argument("--box", action="append", default=[], help="a box it applies to")
    sign.add_argument("--group", action="append", default=[], help="a group it applies to")
    _add_against(sign)
    add_passphrase_file(sign)
    lint = config.add_parser("lint", help="check a document as the boxes will, before signing")
    lint.add_argument("--file", type=Path, required=True, help="the document")
    lint.add_argument("--box", action="append", default=[], help="a box it is for")
    lint.add_argument("--group", action="append", default=[], help="a group it is for")
    _add_against(lint)
    for name, what in (("hold", "hold a recording"), ("release", "release a recording's hold")):
        edit = config.add_parser(
            name, help=f"{what} in the document signed at --path (signed again, next serial)"
        )
        edit.add_argument("--repo", type=Path, required=True)
        edit.add_argument("--trust", type=Path, required=True, help=trust_help)
        edit.add_argument("--targets-key", type=Path, required=True)
        edit.add_argument("--path", required=True, help="the document the box runs (its report)")
        edit.add_argument("--recording", required=True, help="the recording id (32 hex)")
        if name == "hold":
            edit.add_argument("--ground", required=True, choices=HOLD_GROUNDS)
        add_passphrase_file(edit)
    publish = config.add_parser("publish", help="new snapshot and timestamp (online keys)")
    publish.add_argument("--repo", type=Path, required=True)
    publish.add_argument("--trust", type=Path, required=True, help=trust_help)
    publish.add_argument("--snapshot-key", type=Path, required=True)
    publish.add_argument("--timestamp-key", type=Path, required=True)
    bundle = config.add_parser("bundle", help="metadata + documents for a box without a link")
    bundle.add_argument("--repo", type=Path, required=True)
    bundle.add_argument("--out", type=Path, required=True)
    bundle.add_argument("paths", nargs="+", help="target paths to include")
    check_now = config.add_parser(
        "check-now", help="the box checks its configuration at its next health report (<= 5 min)"
    )
    check_now.add_argument("--dir", type=Path, required=True, help="the back office's store")
    check_now.add_argument("--box", required=True, help="the box's id")
    add_key_parsers(config)
    add_config_rollout_parser(config)
    _add_against(config.choices["rollout"])


def _add_against(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--against",
        type=Path,
        help="a box.toml of the fleet to check the values against (default: built-in defaults)",
    )


def _lint(args: argparse.Namespace, *, groups: list[str] | None = None) -> list[str]:
    if args.against is not None:
        against: LocalConfig | None = load_config(args.against)
    else:  # lint checks values against the defaults; sign checks them only when told against what
        against = built_in_defaults() if args.config_command == "lint" else None
    return lint_document(
        args.file.read_text(encoding="utf-8"),
        str(args.file),
        boxes=getattr(args, "box", []),
        groups=args.group if groups is None else groups,
        against=against,
    )


def run_config(args: argparse.Namespace) -> int:
    command: str = args.config_command
    try:
        return _run(command, args, datetime.now(UTC))
    except UntrustedMetadata as exc:
        print(f"mvb-admin config {command}: refused, nothing signed: {exc}", file=sys.stderr)
        return 1


def _run(command: str, args: argparse.Namespace, now: datetime) -> int:
    if command == "init":
        passphrase = new_passphrase(args, "passphrase of the root and targets keys (empty: none): ")
        repo = init_repository(
            args.repo, args.keys, now=now, trust_dir=args.trust, passphrase=passphrase or None
        )
        print(f"created the fleet repository in {args.repo} (root v{repo.root().signed.version})")
        state = "encrypted with the passphrase" if passphrase else "NOT encrypted"
        print(f"keys in {args.keys} (root and targets keys {state}): move each root key offline,")
        print("targets.key to the fleet admin, snapshot.key and timestamp.key to the back office")
        print(f"the admin's trust in {args.trust}: keep it with targets.key, never on the server")
        return 0
    if command == "trust":
        return _start_trust(args)
    if command == "check-now":
        CheckNowBook(args.dir).request(args.box)
        print(
            f"box {args.box} checks its fleet configuration when it next reports its health "
            "(within one report interval, 5 minutes, of being on line)"
        )
        return 0
    if command in ("keygen", "resign", "rotate-root"):
        return run_key_command(command, args, now)
    if command == "rollout":  # linted as `sign` lints a document for the group
        return run_config_rollout(args, _lint(args, groups=[args.group]))
    if command in ("lint", "sign"):
        problems = _lint(args)
        for problem in problems:
            print(f"mvb-admin config {command}: {problem}", file=sys.stderr)
        if problems:
            if command == "sign":
                print("mvb-admin config sign: refused, nothing signed", file=sys.stderr)
            return 1
        if command == "lint":
            base = DEFAULTS_SOURCE if args.against is None else str(args.against)
            print(f"{args.file}: a box would apply it (values checked against {base})")
            return 0
    # A bundle signs nothing (the box verifies it as it verifies a download): no trust needed.
    trust = None if command == "bundle" else AdminTrust.load(args.trust)
    repo = FleetRepository(args.repo, trust=trust)
    if command == "sign":
        serial = repo.next_config_serial()
        repo.add_config(
            args.path,
            args.file.read_bytes(),
            boxes=args.box,
            groups=args.group,
            config_serial=serial,
            targets_signer=signer_from(args.targets_key, args),
            now=now,
        )
        print(f"signed {args.path} as config_serial {serial}; run `publish` to release it")
        return 0
    if command in ("hold", "release"):
        return _edit_hold(repo, args, now)
    if command == "publish":
        version = repo.publish(
            load_signer(args.snapshot_key), load_signer(args.timestamp_key), now=now
        )
        print(f"published timestamp v{version}")
        return 0
    args.out.write_bytes(repo.export_bundle(args.paths))
    print(f"wrote {args.out} with {len(args.paths)} document(s)")
    return 0


def _edit_hold(repo: FleetRepository, args: argparse.Namespace, now: datetime) -> int:
    """The document at --path with one hold more (hold) or less (release), signed for the same
    boxes and groups with the next serial. Exit 1, nothing signed, when it cannot be done."""
    current = repo.signed_document(args.path)
    if current is None:
        message = f"no document is signed at {args.path}: sign one first"
        print(f"mvb-admin config {args.config_command}: {message}", file=sys.stderr)
        return 1
    document, custom = current
    try:
        text = document.decode("utf-8")
        if args.config_command == "hold":
            edited = with_hold(text, args.recording, args.ground)
        else:
            edited = without_hold(text, args.recording)
    except (UnicodeDecodeError, HoldEditError, ValueError) as exc:
        print(f"mvb-admin config {args.config_command}: {exc}", file=sys.stderr)
        return 1
    serial = repo.next_config_serial()
    repo.add_config(
        args.path,
        edited.encode(),
        boxes=custom.boxes,
        groups=custom.groups,
        config_serial=serial,
        targets_signer=signer_from(args.targets_key, args),
        now=now,
    )
    done = "holds" if args.config_command == "hold" else "no longer holds"
    print(
        f"signed {args.path} as config_serial {serial}: it {done} recording {args.recording}; "
        "run `publish` to release it"
    )
    return 0


def _start_trust(args: argparse.Namespace) -> int:
    """A trust from a root file handed over out of band; prints what to compare with the root
    key holders before relying on it."""
    data = args.root.read_bytes()
    trust = AdminTrust.start(args.trust, data)
    root = trust.root.signed
    print(f"trusting fleet root v{root.version} in {args.trust}")
    print(f"sha256 of {args.root.name}: {hashlib.sha256(data).hexdigest()}")
    for role in ("root", "targets", "snapshot", "timestamp"):
        keyids = ", ".join(keyid[:16] for keyid in sorted(root.roles[role].keyids))
        print(f"  {role}: {root.roles[role].threshold} of [{keyids}]")
    print("compare these with the root key holders' before you sign or publish anything")
    return 0
