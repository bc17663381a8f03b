"""The back office's Date as trusted time: read by the uplink's probe over the pinned mutual-TLS
link (real TLS, the reference back office), never from a server that fails the pin."""

from __future__ import annotations

import time
from pathlib import Path

from storage.envelope import RecipientPrivateKey
from tests.tls_helpers import TestPki
from tests.transport.uplink_rig import uplink_rig, wifi


async def test_the_probe_gives_trusted_time_the_back_offices_date(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        trusted = rig.store.trusted
        assert not trusted.now().known
        rig.service.on_server_date = trusted.observe_server_date  # as `mvb run` wires it
        before_ms = time.time_ns() // 1_000_000
        await rig.probe()
        after_ms = time.time_ns() // 1_000_000
    now = trusted.now()
    assert now.source == "back_office"
    assert now.low_ms is not None
    assert now.high_ms is not None
    assert now.low_ms <= after_ms + 1000  # the back office's clock is this machine's
    assert now.high_ms >= before_ms
    assert now.high_ms - now.low_ms < 5_000  # a second of Date resolution plus the round trip


async def test_a_server_that_fails_the_pin_gives_no_time(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    impostor = (pki.impostor_server_cert, pki.impostor_server_key)
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),), server_cert=impostor) as rig:
        trusted = rig.store.trusted
        rig.service.on_server_date = trusted.observe_server_date
        await rig.probe()
        assert rig.service.status()["links"][0]["pin_blocked"] is True
    assert not trusted.now().known
