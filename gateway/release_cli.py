"""`mvb release ...`: releases on this box (docs/releases.md sections 3 to 5).

Needs no box configuration. `install` adds a venv beside the running release and never touches
the running one; `install-inbox` verifies again, from root's own anchor (`trust-fleet`), and
installs the releases the box's service left in its inbox (docs/releases.md 7.6); `activate`,
`request`, `switch`, `resume` and `boot` drive the A/B switch
(gateway/release_switch_io.py) as root: on a box through the systemd units in systemd/, by hand
only to install the first release or to switch while watching."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from tuf.api.exceptions import RepositoryError

from gateway.release_inbox_install import default_platform, install_inbox, trust_fleet
from gateway.release_install import install_release
from gateway.release_switch import Event, EventKind, Outcome, Phase, SwitchRefused, step
from gateway.release_switch_io import (
    DEFAULT_API_URL,
    ReleaseRoot,
    ServiceError,
    Switcher,
    SwitchStateError,
    Systemctl,
    Timing,
    activate_first,
    state_to_json,
)
from gateway.release_verdict import DEFAULT_VERDICTS_DIR
from protocol.release_manifest import BundleError

DEFAULT_ROOT: Final = Path("/opt/mvb")
DEFAULT_RELEASES: Final = DEFAULT_ROOT / "releases"
DEFAULT_INBOX: Final = Path("/var/lib/mvb/release-inbox")
EXIT_REFUSED: Final = 2
EXIT_ROLLED_BACK: Final = 3
EXIT_PENDING: Final = 4


def add_release_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = sub.add_parser("release", help="software releases on this box")
    actions = release.add_subparsers(dest="release_command", required=True)
    install = actions.add_parser("install", help="install a release bundle offline, beside")
    install.add_argument("bundle", type=Path, help="mvb-<version>-<platform>.tar")
    install.add_argument("--releases", type=Path, default=DEFAULT_RELEASES)
    inbox = actions.add_parser(
        "install-inbox", help="verify again and install the releases the box left (root)"
    )
    inbox.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    inbox.add_argument("--inbox", type=Path, default=DEFAULT_INBOX)
    inbox.add_argument("--platform", default=default_platform())
    inbox.add_argument(
        "--verdicts", type=Path, default=DEFAULT_VERDICTS_DIR, help="root's verdicts, for the box"
    )
    trust = actions.add_parser("trust-fleet", help="pin the fleet's root.json as root's anchor")
    trust.add_argument("root_json", type=Path, help="the fleet's root.json (as at pairing)")
    trust.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    trust.add_argument("--replace", action="store_true", help="replace a pinned anchor")
    helps = {
        "activate": "make the first installed release current (a fresh box)",
        "request": "ask for a switch to an installed release (the switch unit carries it out)",
        "switch": "switch to an installed release now: wait for stand-by, start, judge, commit "
        "or roll back",
        "resume": "carry on with a switch under way (the switch unit runs this)",
        "boot": "count a start of a release under trial, before the box starts (boot unit)",
        "status": "print the switch's state",
    }
    for name, text in helps.items():
        command = actions.add_parser(name, help=text)
        if name in ("activate", "request", "switch"):
            command.add_argument("version")
        command.add_argument("--root", type=Path, default=DEFAULT_ROOT)
        if name in ("switch", "resume"):
            command.add_argument("--api-url", default=DEFAULT_API_URL)
            command.add_argument("--unit", default="mvb.service")
            command.add_argument("--health-deadline-s", type=float, default=120.0)


def run_release(args: argparse.Namespace) -> int:
    try:
        return _dispatch(args)
    except (
        BundleError,
        SwitchRefused,
        SwitchStateError,
        ServiceError,
        OSError,
        RepositoryError,
    ) as exc:
        print(f"mvb release: {exc}", file=sys.stderr)
        return EXIT_REFUSED


def _dispatch(args: argparse.Namespace) -> int:
    if args.release_command == "install-inbox":
        install_inbox(args.root, args.inbox, platform=args.platform, verdicts=args.verdicts)
        return 0  # refusals are logged per item: the path unit keeps watching
    if args.release_command == "trust-fleet":
        version = trust_fleet(args.root, args.root_json.read_bytes(), replace=args.replace)
        print(f"the fleet's root version {version} is root's release anchor")
        return 0
    if args.release_command == "install":
        target = install_release(args.bundle, args.releases)
        print(f"installed release {target.name} at {target}")
        return 0
    root = ReleaseRoot(args.root)
    if args.release_command == "activate":
        activate_first(root, args.version)
        print(f"release {args.version} is current")
        return 0
    if args.release_command == "status":
        sys.stdout.write(state_to_json(root.load()).decode() + "\n")
        return 0
    if args.release_command == "request":
        root.check_installed(args.version)
        state, _ = step(root.load(), Event(EventKind.REQUEST, version=args.version))
        root.save(state)
        print(f"release {args.version}: switch requested")
        return 0
    if args.release_command == "boot":
        Switcher(root, Systemctl()).run(Event(EventKind.BOOT))
        return 0
    switcher = Switcher(
        root,
        Systemctl(args.unit),
        api_url=args.api_url,
        timing=Timing(health_deadline_s=args.health_deadline_s),
    )
    before = root.load() if root.state_file.exists() else None
    if args.release_command == "switch":
        state = switcher.run(Event(EventKind.REQUEST, version=args.version))
    else:
        state = switcher.run(Event(EventKind.RESUME))
    if state.phase is Phase.PENDING:
        return EXIT_PENDING
    finished = before is None or state.serial != before.serial
    return EXIT_ROLLED_BACK if finished and state.last is Outcome.ROLLED_BACK else 0
