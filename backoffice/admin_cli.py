"""`mvb-admin admin add|remove|metrics-token` and the admin listener of `mvb-admin serve`
(`--admin-port`): the fleet admin page and the scrape endpoint (backoffice/admin_web.py,
docs/fleet-admin.md 7.2, 7.3)."""

from __future__ import annotations

import argparse
import getpass
import logging
import secrets
from collections.abc import Mapping
from pathlib import Path

from backoffice.admin_access import AdminAccess
from backoffice.admin_accounts import AdminAccountRefused, add_account, remove_account
from backoffice.admin_web import AdminSite, Pairing, start_admin_server, token_digest
from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_versions import RolloutTargets, no_rollout_targets
from backoffice.pairing_service import LedgerStore, back_office_pins
from backoffice.rollout import RolloutStateDamaged, release_targets
from backoffice.rollout_io import RolloutBook
from backoffice.server import RunningServer
from common.durable import atomic_write_bytes, make_dirs

METRICS_TOKEN_BYTES = 32

log = logging.getLogger(__name__)


def add_admin_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser("admin", help="the fleet admin page's accounts and metrics token")
    actions = admin.add_subparsers(dest="admin_command", required=True)
    add = actions.add_parser("add", help="add an admin account, or set its password")
    remove = actions.add_parser("remove", help="remove an admin account (its sessions end)")
    for action in (add, remove):
        action.add_argument("--state", type=Path, required=True, help="serve --admin-state")
        action.add_argument("--name", required=True, help="the account's name (a-z 0-9 . _ -)")
    add.add_argument(
        "--password-file", type=Path, help="read the password from this file (default: prompt)"
    )
    token = actions.add_parser("metrics-token", help="a new bearer token for GET /metrics")
    token.add_argument("--out", type=Path, required=True, help="the token file (0600)")


def run_admin(args: argparse.Namespace) -> int:
    if args.admin_command == "metrics-token":
        make_dirs(args.out.parent)
        token = secrets.token_urlsafe(METRICS_TOKEN_BYTES)
        atomic_write_bytes(args.out, token.encode() + b"\n", mode=0o600)
        print(f"wrote a metrics token to {args.out}: serve --metrics-token-file, and Prometheus's")
        print("authorization credentials_file, read the same file")
        return 0
    if args.admin_command == "remove":
        remove_account(args.state, args.name)
        print(f"removed admin account {args.name}; its sessions end at their next request")
        return 0
    password = _password(args.password_file)
    new = add_account(args.state, args.name, password)
    print(f"{'added' if new else 'changed the password of'} admin account {args.name}")
    return 0


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        return password_file.read_text(encoding="utf-8").rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AdminAccountRefused("the two passwords differ")
    return first


def add_admin_serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="also serve the fleet admin page and GET /metrics over HTTPS on this TCP port "
        "(0: any free port; no client certificate; needs --admin-state); off by default",
    )
    serve.add_argument("--admin-host", help="its address (default: --host)")
    serve.add_argument(
        "--admin-state", type=Path, help="the admin accounts' directory (mvb-admin admin add)"
    )
    serve.add_argument("--admin-cert", type=Path, help="its certificate (default: --cert)")
    serve.add_argument("--admin-key", type=Path, help="its key (default: --key)")
    serve.add_argument(
        "--metrics-token-file",
        type=Path,
        help="GET /metrics answers a bearer token equal to this file's (mvb-admin admin "
        "metrics-token); without it /metrics is off",
    )
    serve.add_argument(
        "--pair-address",
        help="HOST:PORT boxes reach the pairing listener at, in the page's codes (default: the "
        "service host and --pair-port)",
    )


def admin_arguments_missing(args: argparse.Namespace) -> list[str]:
    if args.admin_port is None:
        return []
    return [] if args.admin_state is not None else ["--admin-state"]


async def start_admin_listener(
    args: argparse.Namespace,
    store: LedgerStore | None,
    fleet: FleetRepository | None,
    pair_address: str | None,
) -> RunningServer | None:
    """The admin listener when `--admin-port` is given (None otherwise); the pairing button works
    when the pairing listener runs (`pair_address`)."""
    if args.admin_port is None:
        return None
    pairing = None
    if store is not None and pair_address is not None:
        pairing = Pairing(store, back_office_pins(args.pki_dir), args.pair_address or pair_address)
    digest = None if args.metrics_token_file is None else token_digest(args.metrics_token_file)
    rollouts = no_rollout_targets if fleet is None else _rollout_targets(fleet.repo_dir)
    site = AdminSite(args.dir, fleet, pairing, digest, rollout_targets=rollouts)
    return await start_admin_server(
        AdminAccess(args.admin_state),
        site,
        host=args.admin_host or args.host,
        port=args.admin_port,
        cert_file=args.admin_cert or args.cert,
        key_file=args.admin_key or args.key,
    )


def _rollout_targets(repo_dir: Path) -> RolloutTargets:
    """The page's rollout hook: the served rollout records (read-only, no trust) as group ->
    the version being rolled out; a damaged record shows as no rollout (logged), never a 500."""

    def targets() -> Mapping[str, str]:
        try:
            return release_targets(RolloutBook(repo_dir).all())
        except (OSError, RolloutStateDamaged) as exc:
            log.error("rollout records unreadable: %s", exc)
            return {}

    return targets
