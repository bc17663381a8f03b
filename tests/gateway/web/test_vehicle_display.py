"""The car display stays signed in while it matters (issue 16 item 2; docs/webui.md 1.1, 1.4):
no idle logout while the box records, and a vehicle display bound for the shift that keeps the
status and the record buttons without a session. The real HTTPS listener in front of the
in-memory box; the rig's hand-driven clock (the idle ticker runs on real time: waited for by
polling what it changed)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.web.displays import DISPLAY_MAX_S, DisplayTable
from gateway.web.server import DISPLAYS_FILE, start_web
from gateway.web.status_source import StatusSource
from tests.gateway.web.conftest import WebRig, login

ALICE_TAG = hashlib.sha256(b"alice").hexdigest()[:12]
TICK_DEADLINE_S = 15.0  # IDLE_HOLD_TICK_S is 5 s: three ticks on a loaded machine


def csrf(token: str) -> dict[str, str]:
    return {"X-CSRF-Token": token}


@pytest.fixture
async def alice(web_rig: WebRig) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with web_rig.client() as client:
        status, body = await login(client, "alice")
        assert status == 200, body
        yield client, str(body["csrf_token"])


def tick(rig: WebRig) -> None:
    """What the idle ticker does every IDLE_HOLD_TICK_S (test_the_idle_ticker_runs shows it
    runs), at once."""
    access = rig.listener.access
    assert access is not None
    assert access.hold_idle_while_recording() is True, "the box records"


async def wait_for_idle_hold(rig: WebRig) -> None:
    """Until the ticker has restarted every session's idle clock at the rig's current time."""
    access = rig.listener.access
    assert access is not None
    deadline = time.monotonic() + TICK_DEADLINE_S
    while time.monotonic() < deadline:
        seen = [s.last_seen_s for s in access.sessions._sessions.values()]
        if seen and all(s == rig.clock.now_s for s in seen):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the idle ticker did not run")


async def test_a_recording_keeps_the_session_past_the_idle_timeout(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, token = alice
    assert (await client.post("/api/record/start", headers=csrf(token))).status == 200
    web_rig.clock.advance(599)
    await wait_for_idle_hold(web_rig)  # the ticker itself, once
    for _ in range(2):  # 1800 s of recording, nobody touching the tablet (idle_s is 600)
        web_rig.clock.advance(599)
        tick(web_rig)
    web_rig.clock.advance(599)
    assert (await client.get("/api/status")).status == 200, "no idle logout while recording"
    assert (await client.post("/api/record/stop", headers=csrf(token))).status == 200
    web_rig.clock.advance(599)
    assert (await client.get("/api/status")).status == 200
    web_rig.clock.advance(1)
    assert (await client.get("/api/status")).status == 401, "idle 600 s after the recording"


async def test_the_maximum_session_age_holds_even_while_recording(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, token = alice
    assert (await client.post("/api/record/start", headers=csrf(token))).status == 200
    for _ in range(6):
        web_rig.clock.advance(599)
        tick(web_rig)
    web_rig.clock.advance(6)  # 3600 s after login
    assert (await client.get("/api/status")).status == 401


async def test_a_display_needs_a_running_shift(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, token = alice
    reply = await client.post("/api/display", headers=csrf(token))
    assert (reply.status, (await reply.json())["error"]) == (409, "no_shift")


async def bind(client: aiohttp.ClientSession, token: str) -> str:
    """Start a shift and bind this browser; the display's CSRF token."""
    started = await client.post(
        "/api/shift/start", json={"bodycam_serials": []}, headers=csrf(token)
    )
    assert started.status == 200, await started.text()
    reply = await client.post("/api/display", headers=csrf(token))
    assert reply.status == 200, await reply.text()
    body = await reply.json()
    assert body["bound"] is True
    cookie = reply.headers["Set-Cookie"]
    assert "mvb_display=" in cookie
    assert all(part in cookie for part in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/api"))
    return str(body["csrf_token"])


async def test_a_bound_display_records_without_a_session_and_nothing_more(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, token = alice
    display_token = await bind(client, token)
    assert (await client.delete("/api/session", headers=csrf(token))).status == 200
    assert (await client.get("/api/session")).status == 401, "logged out"
    web_rig.clock.advance(3 * 3600)  # far past session_max_s: the display is for the shift
    assert (await client.get("/api/display")).status == 200
    status = await client.get("/api/status")
    assert status.status == 200
    start = await client.post("/api/record/start", headers=csrf(display_token))
    assert start.status == 200, await start.text()
    flag = await client.post("/api/record/flag", headers=csrf(display_token))
    assert flag.status == 200
    stop = await client.post("/api/record/stop", headers=csrf(display_token))
    assert stop.status == 200
    assert (await client.post("/api/record/start")).status == 403, "CSRF holds for a display"
    for method, path in (
        ("GET", "/api/shift"),
        ("GET", "/api/reports"),
        ("POST", "/api/shift/end"),
        ("POST", "/api/display"),
        ("POST", "/api/pair"),
    ):
        reply = await client.request(method, path, json={}, headers=csrf(display_token))
        assert reply.status == 401, (method, path)


async def test_a_display_ends_with_its_shift(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, token = alice
    await bind(client, token)
    ended = await client.post(
        "/api/shift/end", json={"acknowledge_missing_reports": True}, headers=csrf(token)
    )
    assert ended.status == 200, await ended.text()
    assert (await (await client.get("/api/display")).json()) == {"bound": False}
    await client.delete("/api/session", headers=csrf(token))
    assert (await client.get("/api/status")).status == 401


async def test_a_display_ends_when_unbound_or_the_password_changes(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, token = alice
    display_token = await bind(client, token)
    await client.delete("/api/session", headers=csrf(token))
    reply = await client.delete("/api/display", headers=csrf(display_token))
    assert (reply.status, await reply.json()) == (200, {"bound": False})
    assert (await client.get("/api/status")).status == 401
    events = [(e["event"], e["fields"]) for e in web_rig.audit_events()]
    assert ("web.display_bound", {"account": ALICE_TAG}) in events
    assert ("web.display_unbound", {"account": ALICE_TAG}) in events


async def test_another_browser_without_the_cookie_sees_nothing(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, token = alice
    await bind(client, token)
    async with web_rig.client() as stranger:
        assert (await stranger.get("/api/status")).status == 401
        reply = await stranger.get("/api/display")
        assert (reply.status, await reply.json()) == (200, {"bound": False})
        stranger.cookie_jar.update_cookies({"mvb_display": "forged"})
        assert (await stranger.get("/api/status")).status == 401


async def test_a_binding_outlives_a_restart_of_the_box_and_keeps_no_secret(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    """A power cut mid-shift must not drop the car's display to a login screen. The state holds
    the token's digest and the account's tag: neither the token, its CSRF token nor the name."""
    client, token = alice
    display_token = await bind(client, token)
    cookie = next(c.value for c in client.cookie_jar if c.key == "mvb_display")
    stored = (web_rig.config.state_dir / "web" / DISPLAYS_FILE).read_text()
    for secret in (cookie, display_token, "alice"):
        assert secret not in stored
    assert ALICE_TAG in stored
    await web_rig.listener.stop()
    status = StatusSource(web_rig.box)
    restarted = await start_web(web_rig.box, status, web_rig.config, clock=web_rig.clock)
    assert restarted is not None
    try:
        client.cookie_jar.clear(lambda c: c.key == "mvb_session")  # a restart ends sessions
        binding = await (await client.get("/api/display")).json()
        assert binding["bound"] is True
        assert binding["csrf_token"] == display_token
        start = await client.post("/api/record/start", headers=csrf(display_token))
        assert start.status == 200, await start.text()
    finally:
        await restarted.stop()


def test_a_displays_file_that_is_not_one_binds_nothing() -> None:
    table = DisplayTable()
    for raw in (b"", b"[]", b'{"format": 2}', b'{"format": 1, "displays": [{"account": 1}]}'):
        with pytest.raises(ValueError, match=r"Expecting value|not a displays file|display entry"):
            table.load_json(raw, 0.0)
    assert len(table) == 0
    token = table.bind("tag", "grant", 5, 0.0)
    copy = DisplayTable()
    copy.load_json(table.to_json(), 100.0)
    display = copy.lookup(token, 100.0 + DISPLAY_MAX_S - 1, 5, "grant")
    assert display is not None, "a restored binding lives DISPLAY_MAX_S from the restart"
    assert copy.lookup(token, 101.0, 6, "grant") is None, "another shift: gone"
