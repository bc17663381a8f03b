"""The web certificate: made once, kept, made again when expired or renamed; served TLS 1.2+."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from backoffice.pki import create_ca, issue_server_cert
from common.durable import atomic_write_bytes
from gateway.web.certs import (
    VALIDITY,
    WebCertificateError,
    ensure_self_signed,
    fingerprint_sha256,
    load_configured,
    names_of,
    server_context,
    wanted_names,
)

NOW = datetime.datetime(2026, 5, 1, tzinfo=datetime.UTC)
NAMES = wanted_names("mvb-0042", ["10.20.0.1", "box.vehicle.lan"])


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_names_are_the_host_localhost_loopback_and_the_configured_ones() -> None:
    assert NAMES == ("mvb-0042", "localhost", "127.0.0.1", "10.20.0.1", "box.vehicle.lan")
    assert wanted_names("not_a_dns_name", ["LOCALHOST", "::0001"]) == (
        "localhost",
        "127.0.0.1",
        "::1",
    )


def test_first_start_makes_a_p256_pair_with_a_private_key(tmp_path: Path) -> None:
    made = ensure_self_signed(tmp_path / "web", NAMES, NOW)
    cert = load(made.cert_path)
    assert made.key_path.stat().st_mode & 0o777 == 0o600
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert names_of(cert) == frozenset(NAMES)
    assert cert.not_valid_after_utc - NOW == VALIDITY
    assert made.self_signed
    assert sorted(p.name for p in (tmp_path / "web").iterdir()) == ["web.crt", "web.key"]


def test_the_fingerprint_is_what_openssl_shows(tmp_path: Path) -> None:
    made = ensure_self_signed(tmp_path, NAMES, NOW)
    shown = subprocess.run(
        ["openssl", "x509", "-in", str(made.cert_path), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.strip().split("=", 1)[1] == made.fingerprint_sha256
    assert fingerprint_sha256(load(made.cert_path)) == made.fingerprint_sha256


def test_the_certificate_is_kept_across_starts(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, NAMES, NOW)
    again = ensure_self_signed(tmp_path, NAMES, NOW + datetime.timedelta(days=800))
    assert again.fingerprint_sha256 == first.fingerprint_sha256


def test_a_changed_name_list_makes_a_new_certificate(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, NAMES, NOW)
    renamed = ensure_self_signed(tmp_path, (*NAMES, "10.20.0.2"), NOW)
    assert renamed.fingerprint_sha256 != first.fingerprint_sha256
    assert "10.20.0.2" in names_of(load(renamed.cert_path))


def test_an_expired_certificate_is_made_again(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, NAMES, NOW)
    later = NOW + VALIDITY
    renewed = ensure_self_signed(tmp_path, NAMES, later)
    assert renewed.fingerprint_sha256 != first.fingerprint_sha256
    assert load(renewed.cert_path).not_valid_after_utc == later + VALIDITY


def test_a_cut_between_key_and_certificate_is_repaired(tmp_path: Path) -> None:
    """The key is renamed first: a power cut before the certificate leaves a mismatched pair."""
    first = ensure_self_signed(tmp_path, NAMES, NOW)
    other = ensure_self_signed(tmp_path / "other", NAMES, NOW)
    atomic_write_bytes(first.key_path, other.key_path.read_bytes())
    repaired = ensure_self_signed(tmp_path, NAMES, NOW)
    assert repaired.fingerprint_sha256 not in (first.fingerprint_sha256, other.fingerprint_sha256)
    server_context(repaired.cert_path, repaired.key_path)  # the pair loads: key matches


def test_unreadable_files_are_replaced(tmp_path: Path) -> None:
    (tmp_path / "web.crt").write_text("not a certificate")
    (tmp_path / "web.key").write_text("not a key")
    made = ensure_self_signed(tmp_path, NAMES, NOW)
    assert names_of(load(made.cert_path)) == frozenset(NAMES)


def test_a_configured_certificate_is_used_as_it_is(tmp_path: Path) -> None:
    ca = create_ca("Gemeente CA")
    cert_path, key_path = issue_server_cert(ca, ["mvb.gemeente.nl"]).write(tmp_path, "own")
    configured = load_configured(cert_path, key_path)
    assert not configured.self_signed
    assert configured.fingerprint_sha256 == fingerprint_sha256(load(cert_path))


def test_a_configured_certificate_with_the_wrong_key_is_refused(tmp_path: Path) -> None:
    ca = create_ca("Gemeente CA")
    cert_path, _ = issue_server_cert(ca, ["a.example"]).write(tmp_path, "one")
    _, other_key = issue_server_cert(ca, ["b.example"]).write(tmp_path, "two")
    with pytest.raises(WebCertificateError, match=r"web\.tls_key_file"):
        load_configured(cert_path, other_key)
    with pytest.raises(WebCertificateError, match=r"web\.tls_cert_file"):
        load_configured(tmp_path / "missing.crt", other_key)


async def handshake(port: int, client: ssl.SSLContext) -> str:
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client, server_hostname="localhost"
    )
    version = writer.get_extra_info("ssl_object").version()
    writer.close()
    await writer.wait_closed()
    return str(version)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
async def test_the_server_speaks_tls_1_2_and_1_3_only(tmp_path: Path) -> None:
    made = ensure_self_signed(tmp_path, NAMES, datetime.datetime.now(datetime.UTC))
    context = server_context(made.cert_path, made.key_path)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client has seen the handshake through and closes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        versions = []
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            client = ssl.create_default_context(cafile=str(made.cert_path))
            client.minimum_version = client.maximum_version = version
            versions.append(await handshake(port, client))
        assert versions == ["TLSv1.2", "TLSv1.3"]
        old = ssl.create_default_context(cafile=str(made.cert_path))
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.1 at all
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, ConnectionResetError)):  # alert or reset: refused
            await handshake(port, old)
    finally:
        server.close()
        await server.wait_closed()
