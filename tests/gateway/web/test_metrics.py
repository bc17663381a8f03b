"""GET /metrics (docs/webui.md 5): Prometheus text with counts, bytes, states and ages only;
loopback clients, or a Bearer token whose SHA-256 is configured. Served for real: the loopback
channel, a unix-socket listener of the same API (a peer that is not loopback), the web channel."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from config.local import load_config
from gateway.web.app import api_application
from gateway.web.metrics import CONTENT_TYPE, may_read_metrics, render_metrics
from gateway.web.status_view import with_alerts
from tests.gateway.web.conftest import WebRig
from tests.gateway.web.fake_box import FakeLocal, fake_local
from tests.gateway.web.feature_rig import feature_box_config
from tests.gateway.web.test_alerts import quiet

TOKEN = secrets.token_urlsafe(24)  # what a monitoring system would be given
TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()
SAMPLE = re.compile(r'^(mvb_[a-z0-9_]+)(\{[a-z_]+="[^"\\\n]*"(,[a-z_]+="[^"\\\n]*")*\})? (\S+)$')


def parse(text: str) -> dict[str, list[tuple[str, float]]]:
    """The exposition's samples by family; checks HELP/TYPE come first for every family."""
    families: dict[str, list[tuple[str, float]]] = {}
    described: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            described.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            assert line.split()[3] in ("gauge", "counter"), line
            continue
        match = SAMPLE.match(line)
        assert match is not None, line
        name = match[1]
        assert name in described, f"{name} without HELP"
        families.setdefault(name, []).append((match[2] or "", float(match[4])))
    return families


def test_the_exposition_carries_no_personal_data() -> None:
    document = quiet()
    document["shift"] = {"active": True, "officer_id": "BOA-1234", "bodycam_serials": ["BC-77"]}
    document["gps"]["position"] = {"lat": 52.47351, "lon": 6.05891}
    document["reports"]["missing"] = 2
    document["cameras"]["dashcam"]["refused"] = 3
    text = render_metrics(with_alerts(document), open_streams=3)
    for secret in ("BOA-1234", "BC-77", "52.47", "6.058", "MVB-1", "veh-1", "dashcam"):
        assert secret not in text
    families = parse(text)
    assert families["mvb_shift_active"] == [("", 1.0)]
    assert families["mvb_reports_missing"] == [("", 2.0)]
    assert families["mvb_event_streams"] == [("", 3.0)]
    assert families["mvb_cameras_connected"] == [("", 1.0)]
    assert families["mvb_camera_senders_refused"] == [("", 3.0)]
    assert ('{code="report_missing"}', 1.0) in families["mvb_alert"]
    assert ('{code="card_full"}', 0.0) in families["mvb_alert"]
    assert ('{upload_class="P0"}', 0.0) in families["mvb_upload_queue_files"]
    assert families["mvb_uplink_link_usable"] == [('{link="wifi"}', 1.0)]
    assert "mvb_gps_fix_age_seconds" in families
    assert text.endswith("\n")


@pytest.mark.parametrize(
    ("remote", "authorization", "configured", "allowed"),
    [
        ("127.0.0.1", None, "", True),
        ("127.8.9.10", None, "", True),
        ("::1", None, "", True),
        ("192.0.2.7", None, TOKEN_SHA256, False),
        ("192.0.2.7", f"Bearer {TOKEN}", TOKEN_SHA256, True),
        ("192.0.2.7", f"bearer {TOKEN}", TOKEN_SHA256.upper(), True),
        ("192.0.2.7", f"Bearer {TOKEN}x", TOKEN_SHA256, False),
        ("192.0.2.7", f"Basic {TOKEN}", TOKEN_SHA256, False),
        ("192.0.2.7", "Bearer ", TOKEN_SHA256, False),
        ("192.0.2.7", f"Bearer {TOKEN}", "", False),  # no token configured: loopback only
        ("", f"Bearer {TOKEN}", TOKEN_SHA256, True),
        (None, None, TOKEN_SHA256, False),
        ("not-an-address", None, "", False),
    ],
    # Named, not shown: the token is random per run (and xdist's workers must see the same ids).
    ids=[
        "loopback",
        "loopback-127/8",
        "loopback-v6",
        "remote-no-header",
        "remote-bearer",
        "remote-bearer-any-case",
        "remote-token-plus-a-byte",
        "remote-basic",
        "remote-empty-bearer",
        "remote-no-token-configured",
        "empty-address-with-token",
        "no-address",
        "garbage-address",
    ],
)
def test_who_may_read_the_metrics(
    remote: str | None, authorization: str | None, configured: str, allowed: bool
) -> None:
    assert may_read_metrics(remote, authorization, configured) is allowed


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[FakeLocal]:
    config = feature_box_config(tmp_path, extra=f'[webui]\nmetrics_token_sha256 = "{TOKEN_SHA256}"')
    async with fake_local(load_config(config)) as local:
        yield local


async def test_loopback_clients_read_the_metrics(box: FakeLocal) -> None:
    async with box.client() as client:
        reply = await client.get("/metrics")
        assert reply.status == 200
        assert reply.headers["Content-Type"] == CONTENT_TYPE
        families = parse(await reply.text())
    assert families["mvb_recorder_state"] == [
        ('{state="standby"}', 1.0),
        ('{state="recording"}', 0.0),
        ('{state="postrecord"}', 0.0),
    ]
    assert families["mvb_paired"] == [("", 0.0)]
    assert families["mvb_uplink_running"] == [("", 0.0)]
    assert families["mvb_card_free_bytes"][0][1] > 0


async def test_a_peer_that_is_not_loopback_needs_the_token(box: FakeLocal, tmp_path: Path) -> None:
    """The same API on a unix socket: its peer has no loopback address."""
    runner = web.AppRunner(api_application(box.box, box.status, []))
    await runner.setup()
    socket_path = tmp_path / "api.sock"
    await web.UnixSite(runner, str(socket_path)).start()
    try:
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with aiohttp.ClientSession(connector=connector) as client:
            refused = await client.get("http://box/metrics")
            assert refused.status == 401
            assert (await refused.json())["error"] == "unauthorized"
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            wrong = await client.get("http://box/metrics", headers={"Authorization": "Bearer no"})
            assert wrong.status == 401
            right = await client.get(
                "http://box/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert right.status == 200
            assert "mvb_recorder_state" in await right.text()
    finally:
        await runner.cleanup()


async def test_the_web_channel_serves_metrics_without_a_session(web_rig: WebRig) -> None:
    async with web_rig.client() as client:
        reply = await client.get("/metrics")
        assert reply.status == 200, await reply.text()
        assert "mvb_cameras_configured 0" in await reply.text()
        assert (await client.get("/api/status")).status == 401  # the API itself needs one
