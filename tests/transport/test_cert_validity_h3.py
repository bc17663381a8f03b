"""HTTP/3 judges the back office's certificate by trusted time too (transport/cert_validity.py):
aioquic would judge every date by the wall clock, so with trusted time the box verifies the
chain, host name and dates itself, inside the handshake, before its own certificate goes out.

Real QUIC servers on 127.0.0.1: the back office's HTTP/3 shell (tests/transport/test_h3.py) and
the witness that records whether the box's certificate arrived
(tests/transport/test_serial_before_pin.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from storage.trusted_time import TrustedNow
from tests.tls_helpers import SERVER_NAME
from tests.tls_helpers import TestPki as Pki  # aliased: pytest would try to collect Test*
from tests.transport.test_cert_validity import DAY, NOW, certificate, der, trusted
from tests.transport.test_h3 import GUARD_S, HEAD_FILE, RecordingHandler, serving
from tests.transport.test_serial_before_pin import quic_witness, until_seen
from transport.cert_validity import verify_chain_by_trusted_time
from transport.errors import PinMismatch
from transport.h3_io import H3Transport
from transport.tls import ClientTlsSettings


def unknown() -> TrustedNow:
    return trusted(None, None)


def around_now() -> TrustedNow:
    return trusted(NOW - DAY, NOW + DAY)


def future_cert(pki: Pki, tmp_path: Path) -> Path:
    """The pinned key, certified from the day after tomorrow: what a box whose clock stands two
    days behind sees of a certificate issued today."""
    path = tmp_path / "future.crt"
    path.write_bytes(certificate(pki, NOW + 2 * DAY, NOW + 90 * DAY))
    return path


async def head_status(port: int, settings: ClientTlsSettings) -> int:
    transport = await asyncio.wait_for(H3Transport.connect("127.0.0.1", port, settings), GUARD_S)
    try:
        return (await transport.request(HEAD_FILE, None)).status
    finally:
        await transport.aclose()


# -- the rule -------------------------------------------------------------------------------------


def test_the_chain_is_verified_at_a_moment_trusted_time_allows(pki: Pki) -> None:
    ca_pem = pki.ca_cert.read_bytes()
    future = der(certificate(pki, NOW + 2 * DAY, NOW + 90 * DAY))
    verify_chain_by_trusted_time(future, [], ca_pem, SERVER_NAME, unknown())
    verify_chain_by_trusted_time(future, [], ca_pem, "localhost", trusted(NOW, None))
    with pytest.raises(PinMismatch, match="valid only from"):
        verify_chain_by_trusted_time(future, [], ca_pem, SERVER_NAME, around_now())
    minute = DAY / (24 * 60)  # an expired leaf still inside its CA's window (made minutes ago)
    expired = der(certificate(pki, NOW - 4 * minute, NOW - minute))
    verify_chain_by_trusted_time(expired, [], ca_pem, SERVER_NAME, trusted(None, NOW))
    with pytest.raises(PinMismatch, match="expired"):
        verify_chain_by_trusted_time(expired, [], ca_pem, SERVER_NAME, trusted(NOW, NOW + DAY))


def test_time_aside_the_chain_and_the_name_are_verified(pki: Pki) -> None:
    ours, theirs = pki.ca_cert.read_bytes(), pki.rogue_ca_cert.read_bytes()
    leaf = der(pki.server_cert.read_bytes())
    verify_chain_by_trusted_time(leaf, [], ours, SERVER_NAME, around_now())
    verify_chain_by_trusted_time(leaf, [], theirs + ours, SERVER_NAME, around_now())  # any CA
    refused = "chain or host name did not verify"
    with pytest.raises(PinMismatch, match=refused):
        verify_chain_by_trusted_time(leaf, [], theirs, SERVER_NAME, unknown())
    with pytest.raises(PinMismatch, match=refused):
        verify_chain_by_trusted_time(leaf, [], ours, "elsewhere.test", unknown())
    rogue = der(pki.rogue_server_cert.read_bytes())
    with pytest.raises(PinMismatch, match=refused):
        verify_chain_by_trusted_time(rogue, [], ours, SERVER_NAME, unknown())


# -- real QUIC servers ---------------------------------------------------------------------------


async def test_a_wrong_wall_clock_no_longer_cuts_the_box_off_over_http3(
    pki: Pki, tmp_path: Path
) -> None:
    """The wall clock (aioquic's judge) says not yet valid; trusted time that knows nothing
    lets the chain and the pin decide; trusted time that knows refuses."""
    handler = RecordingHandler()
    async with serving(handler, pki, cert=future_cert(pki, tmp_path)) as server:
        by_wall_clock = pki.client_settings()
        with pytest.raises(PinMismatch, match="chain or host name did not verify"):
            await head_status(server.port, by_wall_clock)
        assert await head_status(server.port, replace(by_wall_clock, validity_time=unknown)) == 204
        with pytest.raises(PinMismatch, match="valid only from"):
            await head_status(server.port, replace(by_wall_clock, validity_time=around_now))
    assert len(handler.requests) == 1, "only the connection trusted time allowed made a request"


async def test_a_server_refused_by_trusted_time_never_receives_the_box_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    settings = replace(pki.client_settings(), validity_time=around_now)
    async with quic_witness(future_cert(pki, tmp_path), pki.server_key) as (port, seen):
        with pytest.raises(PinMismatch, match="valid only from"):
            await asyncio.wait_for(H3Transport.connect("127.0.0.1", port, settings), GUARD_S)
        await until_seen(seen)
    assert seen == [None]


async def test_with_trusted_time_every_other_check_stands(pki: Pki) -> None:
    """aioquic's verification is off with trusted time: the box's own refuses a foreign CA, a
    wrong host name and an unpinned key, each before its certificate goes out."""
    settings = replace(pki.client_settings(), validity_time=unknown)
    cases = [
        (pki.rogue_server_cert, pki.rogue_server_key, settings, "chain or host name"),
        (pki.server_cert, pki.server_key, replace(settings, server_name="elsewhere.test"), "host"),
        (pki.impostor_server_cert, pki.impostor_server_key, settings, "is not pinned"),
    ]
    for cert, key, client, refusal in cases:
        async with quic_witness(cert, key) as (port, seen):
            with pytest.raises(PinMismatch, match=refusal):
                await asyncio.wait_for(H3Transport.connect("127.0.0.1", port, client), GUARD_S)
            await until_seen(seen)
        assert seen == [None], refusal
    async with quic_witness(pki.server_cert, pki.server_key) as (port, seen):  # the witness works
        await (await H3Transport.connect("127.0.0.1", port, settings)).aclose()
        await until_seen(seen)
    assert seen[0] is not None
