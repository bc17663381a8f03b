"""`mvb release install BUNDLE --releases DIR`: the box's offline install (docs/releases.md 3).

Needs no box configuration: it only adds a venv beside the running release and never touches
the running one (switching to it is issue 17's A/B switch)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from gateway.release_install import install_release
from protocol.release_manifest import BundleError

DEFAULT_RELEASES: Final = Path("/opt/mvb/releases")


def add_release_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = sub.add_parser("release", help="software releases on this box")
    actions = release.add_subparsers(dest="release_command", required=True)
    install = actions.add_parser("install", help="install a release bundle offline, beside")
    install.add_argument("bundle", type=Path, help="mvb-<version>-<platform>.tar")
    install.add_argument("--releases", type=Path, default=DEFAULT_RELEASES)


def run_release(args: argparse.Namespace) -> int:
    try:
        target = install_release(args.bundle, args.releases)
    except (BundleError, OSError) as exc:
        print(f"mvb release: {exc}", file=sys.stderr)
        return 2
    print(f"installed release {target.name} at {target}")
    return 0
