"""The back office's certificate judged by trusted time, not by a wall clock that may be days
wrong (transport/cert_validity.py): the pure rule, and real pinned mutual-TLS connections to a
server whose certificate is valid only from the day after tomorrow (what a box whose clock stands
two days behind sees of a certificate issued today)."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from storage.trusted_time import Reading, TrustedNow
from tests.tls_helpers import SERVER_HOSTS, SERVER_NAME
from tests.tls_helpers import TestPki as Pki  # aliased: pytest would try to collect Test*
from transport.cert_validity import check_validity
from transport.errors import PinMismatch
from transport.http import HttpRequest
from transport.https import HttpsTransport
from transport.tls import ClientTlsSettings

DAY = datetime.timedelta(days=1)
NOW = datetime.datetime.now(datetime.UTC)
OPTIONS = HttpRequest("OPTIONS", "/files/", headers=(("Tus-Resumable", "1.0.0"),))


def trusted(low: datetime.datetime | None, high: datetime.datetime | None) -> TrustedNow:
    def ms(moment: datetime.datetime | None) -> int | None:
        return None if moment is None else int(moment.timestamp() * 1000)

    return TrustedNow(Reading("boot", 1), ms(low), ms(high), "test")


def certificate(pki: Pki, not_before: datetime.datetime, not_after: datetime.datetime) -> bytes:
    """The pinned server key, certified by the pairing CA for [not_before, not_after]; PEM."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    server_key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    assert isinstance(server_key, ec.EllipticCurvePrivateKey)
    names = [x509.DNSName(h) for h in SERVER_HOSTS if not h[0].isdigit()]
    built = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return built.public_bytes(serialization.Encoding.PEM)


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


# -- the rule -------------------------------------------------------------------------------------


def test_refused_only_when_trusted_time_is_certainly_outside_the_window(pki: Pki) -> None:
    valid_now = der(certificate(pki, NOW - DAY, NOW + DAY))
    check_validity(valid_now, trusted(NOW - 60 * DAY, NOW + 60 * DAY))  # it may be valid
    check_validity(valid_now, trusted(None, None))
    future = der(certificate(pki, NOW + 2 * DAY, NOW + 30 * DAY))
    check_validity(future, trusted(NOW, None))  # no upper bound: cannot say "not yet"
    with pytest.raises(PinMismatch, match="valid only from"):
        check_validity(future, trusted(NOW - DAY, NOW + DAY))
    expired = der(certificate(pki, NOW - 30 * DAY, NOW - 2 * DAY))
    check_validity(expired, trusted(None, NOW))  # no lower bound: cannot say "expired"
    with pytest.raises(PinMismatch, match="expired"):
        check_validity(expired, trusted(NOW - DAY, None))  # the floor alone is enough


# -- on the wire ----------------------------------------------------------------------------------


@pytest.fixture
async def future_server(pki: Pki, tmp_path: Path) -> AsyncIterator[int]:
    """A mutual-TLS server with the pinned key, certified from the day after tomorrow."""
    cert = tmp_path / "future.crt"
    cert.write_bytes(certificate(pki, NOW + 2 * DAY, NOW + 90 * DAY))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, pki.server_key)
    context.load_verify_locations(pki.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Tus-Resumable": "1.0.0"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def options(port: int, settings: ClientTlsSettings) -> int:
    transport = await HttpsTransport.connect("127.0.0.1", port, settings)
    try:
        return (await transport.request(OPTIONS, None)).status
    finally:
        await transport.aclose()


async def test_a_wrong_wall_clock_no_longer_cuts_the_box_off(pki: Pki, future_server: int) -> None:
    """The wall clock (the TLS stack's judge by default) says not yet valid; trusted time that
    knows nothing yet lets the pin and the chain decide; trusted time that knows refuses."""
    by_wall_clock = pki.client_settings()
    with pytest.raises(PinMismatch, match="verification"):
        await options(future_server, by_wall_clock)

    unknown = replace(by_wall_clock, validity_time=lambda: trusted(None, None))
    assert await options(future_server, unknown) == 204

    known = replace(by_wall_clock, validity_time=lambda: trusted(NOW - DAY, NOW + DAY))
    with pytest.raises(PinMismatch, match="valid only from"):
        await options(future_server, known)


async def test_trusted_time_keeps_every_other_check(pki: Pki, future_server: int) -> None:
    """Not judging time in the handshake judges nothing else less: an unpinned key and a
    foreign CA are refused as before."""

    def unknown() -> TrustedNow:
        return trusted(None, None)

    unpinned = replace(pki.client_settings([pki.backup_pin]), validity_time=unknown)
    with pytest.raises(PinMismatch, match="not pinned"):
        await options(future_server, unpinned)
    foreign_ca = replace(pki.client_settings(), ca_file=pki.rogue_ca_cert, validity_time=unknown)
    with pytest.raises(PinMismatch, match="verification"):
        await options(future_server, foreign_ca)
