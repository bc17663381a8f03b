"""`mvb-admin pki web-ca` and `mvb-admin pki issue-web`: the page CA of backoffice/web_pki.py
and a box's page certificate from it (docs/webui.md 1.3; installing the CA on Android and iOS:
docs/deploy-box.md "The page's certificate on the tablets")."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from backoffice.pki import Issued
from backoffice.web_pki import create_web_ca, fingerprint_sha256, issue_page_cert
from common.durable import atomic_write_bytes, make_dirs

COMMANDS = frozenset({"web-ca", "issue-web"})
CA_STEM = "web-ca"


def add_parsers(pki: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = pki.add_parser(
        "web-ca", help="create the CA the tablets install once to trust the boxes' pages"
    )
    ca.add_argument("--dir", type=Path, required=True, help="where the CA is kept (offline)")
    ca.add_argument(
        "--permit",
        nargs="+",
        required=True,
        help="the only names (a domain: mvb.local) and networks (10.42.0.0/16) it may vouch for",
    )
    issue = pki.add_parser("issue-web", help="issue a box's page certificate from the page CA")
    issue.add_argument("--dir", type=Path, required=True, help="the directory of `pki web-ca`")
    issue.add_argument("--host", nargs="+", required=True, help="the page's DNS names / IPs")
    issue.add_argument("--out", type=Path, required=True, help="where web.crt and web.key go")


def run(args: argparse.Namespace) -> int:
    now = datetime.datetime.now(datetime.UTC)
    if args.pki_command == "web-ca":
        return _web_ca(args.dir, args.permit, now)
    return _issue_web(args.dir, args.host, args.out, now)


def _web_ca(directory: Path, permit: list[str], now: datetime.datetime) -> int:
    key_path = directory / f"{CA_STEM}.key"
    if key_path.exists():
        raise FileExistsError(f"{key_path} exists; refusing to replace the page CA")
    ca = create_web_ca(permit, now)
    cert_path, _ = ca.write(directory, CA_STEM)
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    der_path = directory / f"{CA_STEM}.der"  # what Android's installer asks for
    atomic_write_bytes(der_path, cert.public_bytes(serialization.Encoding.DER), mode=0o644)
    print(f"created the page CA in {directory} for {', '.join(permit)}")
    print(f"install {cert_path} (iOS) or {der_path} (Android) on each tablet once")
    print(f"its SHA-256: {fingerprint_sha256(cert)}")
    return 0


def _issue_web(directory: Path, hosts: list[str], out: Path, now: datetime.datetime) -> int:
    ca = Issued(
        (directory / f"{CA_STEM}.crt").read_bytes(), (directory / f"{CA_STEM}.key").read_bytes()
    )
    page = issue_page_cert(ca, hosts, now)
    make_dirs(out)
    cert_path, key_path = out / "web.crt", out / "web.key"
    atomic_write_bytes(key_path, page.key_pem, mode=0o600)
    atomic_write_bytes(cert_path, page.chain_pem, mode=0o644)
    print(f"issued {cert_path} and {key_path} for {', '.join(hosts)}")
    print(f"certificate SHA-256: {fingerprint_sha256(page.leaf)}")
    print(f'box.toml: [web] tls_cert_file = "{cert_path}"  tls_key_file = "{key_path}"')
    return 0
