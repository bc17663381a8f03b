"""`mvb-admin release build`: the offline release bundle (docs/releases.md 2); `release
rollout|status|pause|resume|promote|rollback`: staged rollouts (backoffice/rollout_cli.py)."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from backoffice.release_build import build_release
from backoffice.rollout_cli import COMMANDS as ROLLOUT_COMMANDS
from backoffice.rollout_cli import add_rollout_parsers, run_rollout
from protocol.release_manifest import PLATFORMS, Manifest


def add_release_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = sub.add_parser("release", help="software releases for the fleet")
    actions = release.add_subparsers(dest="release_command", required=True)
    build = actions.add_parser("build", help="build the offline bundle of HEAD for one platform")
    build.add_argument("--out", type=Path, required=True, help="directory for the bundle")
    build.add_argument("--repository", type=Path, default=Path(), help="a git checkout")
    build.add_argument(
        "--version",
        dest="release_version",
        help="release this version instead of pyproject.toml's (a candidate, or N+1 for a test)",
    )
    build.add_argument(
        "--platform",
        choices=PLATFORMS,
        default=platform.machine() if platform.machine() in PLATFORMS else PLATFORMS[0],
    )
    add_rollout_parsers(actions)


def run_release(args: argparse.Namespace) -> int:
    if args.release_command in ROLLOUT_COMMANDS:
        return run_rollout(args)
    bundle, manifest = build_release(
        args.repository.resolve(), args.out, args.platform, version=args.release_version
    )
    print(_summary(bundle, manifest))
    return 0


def _summary(bundle: Path, manifest: Manifest) -> str:
    size_mib = bundle.stat().st_size / 1024**2
    wheels = len(manifest.files) - 1
    commit = manifest.source_commit[:12]
    return (
        f"built {bundle} ({size_mib:.1f} MiB): release {manifest.version} for "
        f"{manifest.platform}, {wheels} wheels, commit {commit}, lock {manifest.lock_sha256[:12]}"
    )
