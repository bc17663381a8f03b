"""Trust on tablets (issue 16 item 6; docs/webui.md 1.3): the page CA of `mvb-admin pki web-ca`,
a box's page certificate from `pki issue-web`, served by a real `mvb run` that prints the page's
URL and the certificate's fingerprint; a client that trusts only the CA (as a tablet that
installed it once) verifies the page over real TLS, and OpenSSL refuses a certificate the CA
signed outside its name constraints.

Left out: Chromium trusting the CA (it reads its roots from an NSS database, not from a flag;
the Chromium tests trust the page by its pin, the other option) and the tablets' own installers
(documented in docs/deploy-box.md)."""

from __future__ import annotations

import asyncio
import datetime
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from backoffice.pki import Issued
from backoffice.web_pki import (
    LEAF_VALIDITY,
    WebPkiRefused,
    create_web_ca,
    fingerprint_sha256,
    issue_page_cert,
)
from gateway.web.certs import server_context
from tests.cameras import free_port
from tests.gateway.web.conftest import web_box_config

MVB = Path(sys.executable).with_name("mvb")
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
NOW = datetime.datetime.now(datetime.UTC)
PERMIT = ["mvb.local", "127.0.0.0/8"]


def test_the_ca_is_constrained_and_its_leaf_is_a_short_lived_server_certificate() -> None:
    ca = create_web_ca(PERMIT, NOW)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    constraints = ca_cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    page = issue_page_cert(ca, ["box-7.mvb.local", "127.0.0.1"], NOW)
    chain = x509.load_pem_x509_certificates(page.chain_pem)
    assert [c.subject for c in chain] == [page.leaf.subject, ca_cert.subject]
    assert page.leaf.not_valid_after_utc - page.leaf.not_valid_before_utc <= LEAF_VALIDITY
    usage = page.leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [oid.dotted_string for oid in usage] == ["1.3.6.1.5.5.7.3.1"]  # serverAuth only


@pytest.mark.parametrize("host", ["evil.example.com", "mvb.local.example.com", "10.0.0.1"])
def test_a_name_outside_the_constraints_is_refused(host: str) -> None:
    ca = create_web_ca(PERMIT, NOW)
    with pytest.raises(WebPkiRefused, match="outside the CA's name constraints"):
        issue_page_cert(ca, ["box-7.mvb.local", host], NOW)


@pytest.mark.parametrize("entry", ["", "not a name!", "10.0.0.1/8"])
def test_a_constraint_that_is_no_name_or_network_is_refused(entry: str) -> None:
    with pytest.raises(WebPkiRefused):
        create_web_ca([entry], NOW)


def forged_leaf(ca: Issued, host: str) -> tuple[bytes, bytes]:
    """What a thief with the CA's key could sign for another site (bypassing issue_page_cert)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return leaf.public_bytes(serialization.Encoding.PEM) + ca.cert_pem, key_pem


async def handshake(tmp_path: Path, chain: bytes, key: bytes, ca_pem: bytes, name: str) -> None:
    """A real TLS server with `chain`/`key` on loopback; a client that trusts only `ca_pem`
    connects and checks the certificate for `name`."""
    (tmp_path / "s.crt").write_bytes(chain)
    (tmp_path / "s.key").write_bytes(key)
    context = server_context(tmp_path / "s.crt", tmp_path / "s.key")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cadata=ca_pem.decode())
    try:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=name
        )
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_that_trusts_the_ca_accepts_the_page_and_refuses_a_forgery(
    tmp_path: Path,
) -> None:
    ca = create_web_ca(PERMIT, NOW)
    page = issue_page_cert(ca, ["box-7.mvb.local"], NOW)
    await handshake(tmp_path, page.chain_pem, page.key_pem, ca.cert_pem, "box-7.mvb.local")
    chain, key = forged_leaf(ca, "bank.example.com")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)name constraint|permitted"):
        await handshake(tmp_path, chain, key, ca.cert_pem, "bank.example.com")


def admin(*args: str) -> str:
    done = subprocess.run(
        [str(MVB_ADMIN), "pki", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_mvb_run_prints_the_page_url_and_the_ca_issued_certificate_s_fingerprint(
    tmp_path: Path, password_hashes: dict[str, str]
) -> None:
    admin("web-ca", "--dir", str(tmp_path / "ca"), "--permit", *PERMIT)
    issued = admin(
        "issue-web",
        "--dir",
        str(tmp_path / "ca"),
        "--host",
        "127.0.0.1",
        "--out",
        str(tmp_path / "w"),
    )
    leaf = x509.load_pem_x509_certificates((tmp_path / "w" / "web.crt").read_bytes())[0]
    assert f"certificate SHA-256: {fingerprint_sha256(leaf)}" in issued
    https_port = free_port()
    config = web_box_config(
        tmp_path,
        password_hashes,
        f"enabled = true\nhttps_port = {https_port}\nhttp_port = 0\n"
        f'tls_cert_file = "{tmp_path / "w" / "web.crt"}"\n'
        f'tls_key_file = "{tmp_path / "w" / "web.key"}"',
    )
    process = await asyncio.create_subprocess_exec(
        str(MVB), "--config", str(config), "run", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        banner = ""
        while "officer's page" not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, "mvb run ended before it printed the page"
            banner = line.decode()
        assert f"https://127.0.0.1:{https_port}/" in banner
        assert f"certificate SHA-256 {fingerprint_sha256(leaf)}" in banner
        assert "configured certificate" in banner
        ca_pem = (tmp_path / "ca" / "web-ca.crt").read_bytes()
        client = ssl.create_default_context(cadata=ca_pem.decode())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", https_port, ssl=client, server_hostname="127.0.0.1"
        )
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"HTTP/1.1 401")
        writer.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
