"""`mvb-admin`: the back office's and fleet admin's tools."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import re
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509

from backoffice import web_pki_cli
from backoffice.admin_accounts import AdminAccountRefused, AdminAccountsUnreadable
from backoffice.admin_cli import (
    add_admin_parser,
    add_admin_serve_arguments,
    admin_arguments_missing,
    run_admin,
    start_admin_listener,
)
from backoffice.audit_cli import HeadArgumentError, add_audit_parser, run_audit
from backoffice.audit_routes import HeadTappingTusApp
from backoffice.audit_store import AuditStore
from backoffice.blocked_log import BLOCKED_FILE, BlockedLog
from backoffice.check_now import CheckNowBook, CheckNowRefused
from backoffice.config_cli import add_config_parser, run_config
from backoffice.fleet_access import FleetAccess
from backoffice.fleet_cli import add_fleet_parser, run_fleet
from backoffice.fleet_health import FleetHealthStore
from backoffice.fleet_metadata import FleetRepoError
from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_reports import ReportLog
from backoffice.fleet_routes import FleetFiles
from backoffice.h3_server import RunningH3Server, start_h3_server
from backoffice.in_flight import InFlight, cut_withdrawn_periodically
from backoffice.keys import KeyHolderError
from backoffice.pair_codes import issue_pair_code
from backoffice.pairing import (
    CODE_VALIDITY_S,
    AdminInputError,
    AlreadyPaired,
    NotPaired,
    TooManyOpenCodes,
    unpair,
)
from backoffice.pairing_ledger import LedgerFormatError, PairedBox, PairingLedger
from backoffice.pairing_service import (
    LedgerGate,
    LedgerStore,
    LedgerUnavailable,
    PairingService,
    back_office_pins,
    load_back_office_ca,
    start_pairing_server,
)
from backoffice.pki import (
    create_ca,
    issue_client_cert,
    issue_server_cert,
    load_issued,
)
from backoffice.release_cli import add_release_parser, run_release
from backoffice.serve_limits import (
    ServeLimits,
    add_limit_arguments,
    ensure_descriptors,
    positive_float,
    positive_int,
)
from backoffice.server import (
    DEFAULT_IDLE_TIMEOUT_S,
    RunningServer,
    start_https_server,
)
from backoffice.tus_app import TusApp
from backoffice.upload_expiry import DEFAULT_UPLOAD_EXPIRY_S, expire_periodically
from backoffice.upload_store import DEFAULT_RESERVE_BYTES, UploadStore, UploadStoreError
from backoffice.viewing import ViewingInputError
from backoffice.viewing_cli import add_key_holder_parsers, run_decrypt, run_keys, run_viewing
from backoffice.viewing_io import ViewingLogError
from backoffice.web_pki import WebPkiRefused
from common.faults import ConfigurationFault, MisuseFault
from protocol.pairing_code import PAIR_PATH, CodeFormatError, normalise_server_name
from protocol.pairing_messages import ServiceEndpoint
from protocol.release_manifest import BundleError
from storage.audit_io import AuditLogError
from storage.devicekey import DeviceKeyError
from storage.envelope import RecipientKeyError
from transport.pinning import pin_of_pem_file

DEFAULT_MAX_UPLOAD_BYTES: Final = 16 * 1024**3
DEFAULT_MAX_CHUNK_BYTES: Final = 64 * 1024**2
"""The box's largest chunk (transport/tus_session.py MAX_CHUNK_BYTES)."""
SERIAL_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""A device serial becomes a certificate CN, the server's client id and a file name."""


class CliError(MisuseFault):
    """An operator's request that cannot be carried out as given (exit code 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvb-admin", description="MVB back-office tools")
    sub = parser.add_subparsers(dest="command", required=True)

    add_key_holder_parsers(sub)  # keys, decrypt, viewing (backoffice/viewing_cli.py)

    add_audit_parser(sub)
    add_release_parser(sub)
    add_fleet_parser(sub)
    add_admin_parser(sub)

    _add_serve(sub)
    _add_pki(sub)
    _add_pairing(sub)
    add_config_parser(sub)
    return parser


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the reference tus back office (HTTPS, mutual TLS)")
    serve.add_argument("--dir", type=Path, required=True, help="upload store directory")
    serve.add_argument("--cert", type=Path, required=True, help="server certificate (PEM)")
    serve.add_argument("--key", type=Path, required=True, help="server private key (PEM)")
    serve.add_argument("--client-ca", type=Path, required=True, help="CA of box certificates")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443, help="HTTPS port (0: any free port)")
    serve.add_argument("--max-upload-bytes", type=positive_int, default=DEFAULT_MAX_UPLOAD_BYTES)
    serve.add_argument("--max-chunk-bytes", type=positive_int, default=DEFAULT_MAX_CHUNK_BYTES)
    serve.add_argument("--reserve-bytes", type=_non_negative_int, default=DEFAULT_RESERVE_BYTES)
    serve.add_argument(
        "--idle-timeout", type=positive_float, default=DEFAULT_IDLE_TIMEOUT_S, help="seconds"
    )
    serve.add_argument(
        "--upload-expiry",
        type=positive_float,
        default=DEFAULT_UPLOAD_EXPIRY_S,
        help="seconds an unfinished upload may stay idle before it is removed (tus expiration)",
    )
    serve.add_argument(
        "--h3-port",
        type=int,
        default=None,
        help="also serve HTTP/3 (QUIC) on this UDP port (0: any free port); off by default",
    )
    serve.add_argument(
        "--pair-port",
        type=int,
        default=None,
        help="also serve pairing (POST /pair/v1, no client certificate) on this TCP port "
        "(0: any free port); needs --pairing-state, --pki-dir and --fleet-repo",
    )
    serve.add_argument(
        "--pairing-state",
        type=Path,
        help="the pairing ledger's directory; withdrawn box certificates are refused",
    )
    serve.add_argument("--pki-dir", type=Path, help="the directory of `pki init` (CA, pins)")
    serve.add_argument(
        "--service-host",
        help="with --pair-port: the host boxes connect to for uploads and fleet configuration, "
        "handed out at pairing (default: --host, or --server-name when --host is a wildcard)",
    )
    serve.add_argument(
        "--server-name",
        help="with --pair-port: the name of --cert that boxes check (default: its first "
        "subjectAltName)",
    )
    serve.add_argument(
        "--fleet-repo", type=Path, help="serve this fleet TUF repository at /fleet/ (mutual TLS)"
    )
    serve.add_argument(
        "--release-key",
        type=Path,
        help="with --fleet-repo: the fleet's release sealing key (`release seal-keygen`), "
        "handed to paired boxes (docs/releases.md 6)",
    )
    add_limit_arguments(serve)
    add_admin_serve_arguments(serve)


def _add_pairing(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    code = sub.add_parser("pair-code", help="make a one-time pairing code for a box")
    code.add_argument("--state", type=Path, required=True, help="the pairing ledger's directory")
    code.add_argument("--pki", type=Path, required=True, help="the directory of `pki init`")
    code.add_argument("--box-id", required=True, help="the box's device serial")
    code.add_argument(
        "--address", required=True, help="HOST:PORT where boxes reach the pairing listener"
    )
    code.add_argument(
        "--re-pair", action="store_true", help="the box is paired: replace its certificate"
    )
    withdraw = sub.add_parser("unpair", help="withdraw a box: its certificate stops working")
    withdraw.add_argument(
        "--state", type=Path, required=True, help="the pairing ledger's directory"
    )
    withdraw.add_argument("--box-id", required=True)


def _add_pki(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pki = sub.add_parser("pki", help="the back office CA and certificates").add_subparsers(
        dest="pki_command", required=True
    )
    init = pki.add_parser("init", help="create the CA and the server certificate")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--host", nargs="+", required=True, help="server DNS names / IPs")
    client = pki.add_parser("issue-client", help="issue a box's client certificate")
    client.add_argument("--dir", type=Path, required=True, help="the directory of `pki init`")
    client.add_argument("--serial", required=True, help="the box's device serial (the CN)")
    web_pki_cli.add_parsers(pki)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "keys":
            return run_keys(args)
        if args.command == "decrypt":
            return run_decrypt(args)
        if args.command == "viewing":
            return run_viewing(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "pki":
            if args.pki_command in web_pki_cli.COMMANDS:
                return web_pki_cli.run(args)
            return _pki_init(args) if args.pki_command == "init" else _pki_issue_client(args)
        if args.command == "config":
            return run_config(args)
        if args.command in ("pair-code", "unpair"):
            return _pairing_command(args)
        if args.command == "release":
            return run_release(args)
        if args.command == "fleet":
            return run_fleet(args)
        if args.command == "admin":
            return run_admin(args)
        return run_audit(args)
    except (
        HeadArgumentError,
        RecipientKeyError,
        DeviceKeyError,
        OSError,
        UploadStoreError,
        CliError,
        FleetRepoError,
        AdminInputError,
        LedgerFormatError,
        LedgerUnavailable,
        KeyHolderError,
        ViewingInputError,
        ViewingLogError,
        AuditLogError,
        BundleError,
        ConfigurationFault,  # a limit of `serve` that cannot hold (backoffice/serve_limits.py)
        WebPkiRefused,
        CheckNowRefused,
        AdminAccountRefused,
        AdminAccountsUnreadable,
    ) as exc:
        print(f"mvb-admin: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(_serve_until_signalled(args))


async def _serve_until_signalled(args: argparse.Namespace) -> int:
    _check_serve_arguments(args)
    args.limits = ServeLimits.from_args(args)
    ensure_descriptors(args.limits.descriptors_needed(pairing=args.pair_port is not None))
    args.in_flight = InFlight(args.limits.client_max_requests)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with UploadStore.open(args.dir, reserve_bytes=args.reserve_bytes) as store:
        app = HeadTappingTusApp(
            store,
            audit_store=AuditStore(args.dir),
            max_upload_bytes=args.max_upload_bytes,
            max_chunk_bytes=args.max_chunk_bytes,
            upload_expiry_s=args.upload_expiry,
            **args.limits.tus_app_options(args.dir, args.max_upload_bytes),
        )
        assert app.expiration is not None
        app.expiration.expire_uploads()  # at start, before a box asks (each one is logged)
        tasks = [asyncio.create_task(expire_periodically(app.expiration), name="expiry")]
        if args.pairing_state is not None:  # an unpair cuts the box's requests in flight
            gate = LedgerGate(LedgerStore(args.pairing_state))
            cut = cut_withdrawn_periodically(args.in_flight, gate.withdrawn_among)
            tasks.append(asyncio.create_task(cut, name="withdrawals"))
        listeners = await _start_listeners(app, args)
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for listener in listeners:
                await listener.close()
    return 0


REPORTS_FILE = "fleet-reports.jsonl"
"""Beside the uploads: each box's signed statement of the configuration it applied."""


def _check_serve_arguments(args: argparse.Namespace) -> None:
    missing_for_admin = admin_arguments_missing(args)
    if missing_for_admin:
        raise CliError(f"--admin-port needs {', '.join(missing_for_admin)}")
    if args.pair_port is None:
        return
    missing = [
        option
        for option, value in (
            ("--pairing-state", args.pairing_state),
            ("--pki-dir", args.pki_dir),
            ("--fleet-repo", args.fleet_repo),
        )
        if value is None
    ]
    if missing:
        raise CliError(f"--pair-port needs {', '.join(missing)}")
    _service_endpoint(args, https_port=443, h3_port=0)  # refuse bad names before any listener


def _certificate_names(cert_file: Path) -> list[str]:
    """The DNS names and IP addresses of a certificate's subjectAltName, in its order."""
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    addresses = [str(address) for address in names.get_values_for_type(x509.IPAddress)]
    return [*names.get_values_for_type(x509.DNSName), *addresses]


def _exact_names(names: list[str]) -> list[str]:
    """The names a box can check exactly, canonical, in order (`*.example` is not one)."""
    exact: list[str] = []
    for name in names:
        with contextlib.suppress(CodeFormatError):
            exact.append(normalise_server_name(name))
    return exact


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host in ("", "*")


def _service_endpoint(
    args: argparse.Namespace, *, https_port: int, h3_port: int
) -> ServiceEndpoint:
    """Where paired boxes reach the mutual-TLS listener (docs/pairing.md 3.2): the host they
    connect to, the port it listens on, the name its certificate carries, its HTTP/3 port."""
    names = _certificate_names(args.cert)
    exact = _exact_names(names)
    server_name: str | None = args.server_name or (exact[0] if exact else None)
    if server_name is None:
        raise CliError("--cert carries no exact subjectAltName: pass --server-name")
    try:
        if normalise_server_name(server_name) not in exact:
            raise CliError(f"--server-name {server_name} is not a name of --cert ({names})")
        host = args.service_host or (server_name if _is_wildcard(args.host) else args.host)
        bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return ServiceEndpoint.of(f"{bracketed}:{https_port}", server_name, h3_port)
    except CodeFormatError as exc:
        raise CliError(f"the service endpoint handed out at pairing: {exc}") from None


async def _start_listeners(
    app: TusApp, args: argparse.Namespace
) -> list[RunningServer | RunningH3Server]:
    """Every listener of one TusApp (HTTPS, and HTTP/3 and pairing when asked). Prints one line
    each. If one cannot start, those already started are closed again."""
    fleet = None if args.fleet_repo is None else FleetRepository(args.fleet_repo)
    store = None if args.pairing_state is None else LedgerStore(args.pairing_state)
    listeners: list[RunningServer | RunningH3Server] = []
    try:
        https = await _start_https(app, args, store, fleet)
        listeners.append(https)
        print(f"serving https://{args.host}:{https.port}/files/ from {args.dir}", flush=True)
        h3_port = 0  # none: what the grant says when there is no HTTP/3 listener
        pair_address = None  # where the admin page's codes send boxes (with pairing only)
        if args.h3_port is not None:
            h3 = await start_h3_server(
                app,
                host=args.host,
                port=args.h3_port,
                cert_file=args.cert,
                key_file=args.key,
                client_ca_file=args.client_ca,
                idle_timeout_s=args.idle_timeout,
                client_gate=None if store is None else LedgerGate(store),
                in_flight=args.in_flight,
                **args.limits.h3_options(),
            )
            listeners.append(h3)
            h3_port = h3.port
            print(f"serving h3://{args.host}:{h3.port}/files/ from {args.dir}", flush=True)
        if fleet is not None:
            print(
                f"serving https://{args.host}:{https.port}/fleet/ from {args.fleet_repo}",
                flush=True,
            )
        if args.pair_port is not None and store is not None and fleet is not None:
            service = _service_endpoint(args, https_port=https.port, h3_port=h3_port)
            pairing = await _start_pairing(args, store, fleet, service)
            listeners.append(pairing)
            print(f"serving pairing at https://{args.host}:{pairing.port}{PAIR_PATH}", flush=True)
            pair_address = f"{service.address.rpartition(':')[0]}:{pairing.port}"
        admin = await start_admin_listener(args, store, fleet, pair_address)
        if admin is not None:
            listeners.append(admin)
            host = args.admin_host or args.host
            print(f"serving the fleet admin page at https://{host}:{admin.port}/", flush=True)
    except BaseException:
        for listener in listeners:
            await listener.close()
        raise
    return listeners


async def _start_https(
    app: TusApp,
    args: argparse.Namespace,
    store: LedgerStore | None,
    fleet: FleetRepository | None,
) -> RunningServer:
    gate = None if store is None else LedgerGate(store)
    fleet_files: FleetFiles | None = (
        None if fleet is None else FleetAccess(fleet, release_key=args.release_key)
    )
    reports = None if fleet is None else ReportLog(args.dir / REPORTS_FILE)
    return await start_https_server(
        app,
        host=args.host,
        port=args.port,
        cert_file=args.cert,
        key_file=args.key,
        client_ca_file=args.client_ca,
        idle_timeout_s=args.idle_timeout,
        client_gate=gate,
        fleet_files=fleet_files,
        fleet_reports=reports,
        enrolled_keys=None if gate is None else gate.enrolled_device_key,
        blocked_log=BlockedLog(args.dir / BLOCKED_FILE),
        audit_store=app.audit_store if isinstance(app, HeadTappingTusApp) else None,
        fleet_health=None if fleet is None else FleetHealthStore(args.dir),
        check_now=None if fleet is None else CheckNowBook(args.dir),
        in_flight=args.in_flight,
        **args.limits.https_options(),
    )


async def _start_pairing(
    args: argparse.Namespace,
    store: LedgerStore,
    fleet: FleetRepository,
    service: ServiceEndpoint,
) -> RunningServer:
    pins = back_office_pins(args.pki_dir)
    if pin_of_pem_file(args.cert.read_bytes()) != pins[0]:
        raise CliError(
            f"--cert is not {args.pki_dir / 'server.crt'}'s key: pairing codes name that key"
        )
    ca = load_back_office_ca(args.pki_dir)
    pairing = PairingService(store, ca, pins, fleet.trust_root_bytes, service=service)
    return await start_pairing_server(
        pairing,
        host=args.host,
        port=args.pair_port,
        cert_file=args.cert,
        key_file=args.key,
        **args.limits.pairing_options(),
    )


def _pairing_command(args: argparse.Namespace) -> int:
    """`pair-code` and `unpair`: a refusal of the pairing rules is exit code 1."""
    store = LedgerStore(args.state)
    try:
        if args.command == "pair-code":
            return _pair_code(args, store)
        return _unpair(args, store)
    except (AlreadyPaired, NotPaired, TooManyOpenCodes) as exc:
        print(f"mvb-admin {args.command}: {exc}", file=sys.stderr)
        return 1


def _pair_code(args: argparse.Namespace, store: LedgerStore) -> int:
    pins = back_office_pins(args.pki)
    now_s = time.time()
    code, replaces_serial = issue_pair_code(
        store, args.box_id, args.address, pins, now_s, re_pair=args.re_pair
    )
    expiry = datetime.fromtimestamp(now_s + CODE_VALIDITY_S, tz=UTC)
    what = "pairing code" if replaces_serial is None else "re-pair code"
    replaces = "" if replaces_serial is None else f" (replaces certificate {replaces_serial:x})"
    print(
        f"{what} for box {args.box_id}{replaces}, single use, valid until "
        f"{expiry:%Y-%m-%d %H:%M:%S} UTC ({CODE_VALIDITY_S // 60} minutes):"
    )
    print(code.text())
    return 0


def _unpair(args: argparse.Namespace, store: LedgerStore) -> int:
    now_s = time.time()

    def withdraw(ledger: PairingLedger) -> tuple[PairingLedger, PairedBox | None]:
        return unpair(ledger, args.box_id, now_s), ledger.pairing_of(args.box_id)

    withdrawn = store.transact(withdraw)
    assert withdrawn is not None  # unpair raises NotPaired otherwise
    print(
        f"unpaired box {args.box_id}: certificate {withdrawn.serial:x} is refused from now on, "
        "its open codes are withdrawn"
    )
    return 0


def _pki_init(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if (directory / "ca.key").exists():
        raise FileExistsError(f"{directory / 'ca.key'} exists; refusing to replace the CA")
    ca = create_ca()
    ca.write(directory, "ca")
    server_cert, _ = issue_server_cert(ca, args.host).write(directory, "server")
    # A second key, kept offline, whose pin the boxes carry too: the key can roll without
    # re-pairing the fleet.
    backup_cert, _ = issue_server_cert(ca, args.host).write(directory, "backup")
    server_pin = pin_of_pem_file(server_cert.read_bytes())
    backup_pin = pin_of_pem_file(backup_cert.read_bytes())
    print(f"created CA and server certificate in {directory}; pins {server_pin} {backup_pin}")
    return 0


def _pki_issue_client(args: argparse.Namespace) -> int:
    serial: str = args.serial
    if not SERIAL_PATTERN.fullmatch(serial):
        raise CliError(f"serial {serial!r} must be 1-64 of A-Z a-z 0-9 . _ -")
    directory: Path = args.dir
    clients = directory / "clients"
    if (clients / f"{serial}.key").exists():
        raise FileExistsError(f"{clients / serial}.key exists; refusing to replace it")
    ca = load_issued(directory / "ca.crt", directory / "ca.key")
    cert_path, key_path = issue_client_cert(ca, serial).write(clients, serial)
    print(f"issued {cert_path} and {key_path} for {serial}")
    return 0
