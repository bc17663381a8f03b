"""The web channel's access layer over real HTTPS on 127.0.0.1 (docs/webui.md 1.1, 1.2, 2):
login, lockout, sessions and their expiry, CSRF, headers, and accounts changed by a fleet
document. The clock is the rig's hand-driven one: nothing here sleeps."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from common.passwords import MIN_ITERATIONS, hash_password, parse_password_hash
from config.fleet_schema import apply_fleet_document
from config.local import parse_config
from gateway.web.access import CSP, MAX_WAITING_LOGINS, LoginBusy, WebAccess
from tests.gateway.web.conftest import PASSWORDS, WebRig, accounts_toml, login

ALICE_TAG = hashlib.sha256(b"alice").hexdigest()[:12]
LOOPBACK_TAG = hashlib.sha256(b"127.0.0.1").hexdigest()[:12]  # the audit's name for the client


def csrf(token: str) -> dict[str, str]:
    return {"X-CSRF-Token": token}


def events(rig: WebRig, prefix: str = "web.") -> list[tuple[str, dict[str, object]]]:
    return [(e["event"], e["fields"]) for e in rig.audit_events() if e["event"].startswith(prefix)]


@pytest.fixture
async def alice(web_rig: WebRig) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A browser logged in as alice, and its CSRF token."""
    async with web_rig.client() as client:
        status, body = await login(client, "alice")
        assert status == 200, body
        yield client, str(body["csrf_token"])


async def test_login_gives_a_strict_session_cookie_and_who_am_i(web_rig: WebRig) -> None:
    async with web_rig.client() as client:
        reply = await client.post(
            "/api/session", json={"username": "alice", "password": PASSWORDS["alice"]}
        )
        assert reply.status == 200
        body = await reply.json()
        cookie = reply.headers["Set-Cookie"]
        session_id = reply.cookies["mvb_session"].value
        whoami = await client.get("/api/session")
        assert whoami.status == 200
        assert await whoami.json() == body
    assert (body["user"], body["role"], body["officer_id"]) == ("alice", "officer", "BOA-1234")
    assert body["expires_in_s"] == 600  # the idle limit of the rig's [webui]
    assert len(session_id) >= 43  # 256 bits, urlsafe base64
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert sorted(attributes) == ["httponly", "path=/", "samesite=strict", "secure"]
    assert events(web_rig) == [("web.login", {"account": ALICE_TAG, "role": "officer"})]
    audit = web_rig.box.audit_text()
    assert "alice" not in audit
    assert PASSWORDS["alice"] not in audit


async def test_a_wrong_password_and_an_unknown_name_get_the_same_answer(web_rig: WebRig) -> None:
    async with web_rig.client() as client:
        wrong = await login(client, "alice", "not the password")
        unknown = await login(client, "mallory", "anything")
        assert not any(cookie.key == "mvb_session" for cookie in client.cookie_jar)
    assert wrong == unknown
    assert wrong == (
        401,
        {"error": "wrong_credentials", "message": "The username or the password is wrong."},
    )


async def test_five_wrong_passwords_ban_the_client_even_for_the_right_one_until_lockout_passes(
    web_rig: WebRig,
) -> None:
    async with web_rig.client() as client:
        for _ in range(4):
            assert (await login(client, "alice", "guess"))[0] == 401
        fifth = await client.post("/api/session", json={"username": "alice", "password": "x"})
        assert fifth.status == 423
        assert fifth.headers["Retry-After"] == "900"
        assert (await fifth.json())["error"] == "locked"
        refused = await client.post(
            "/api/session", json={"username": "alice", "password": PASSWORDS["alice"]}
        )
        assert refused.status == 423
        web_rig.clock.advance(899)
        still = await client.post(
            "/api/session", json={"username": "alice", "password": PASSWORDS["alice"]}
        )
        assert (still.status, still.headers["Retry-After"]) == (423, "1")
        web_rig.clock.advance(1)
        assert (await login(client, "alice"))[0] == 200
    ban = {"account": ALICE_TAG, "client": LOOPBACK_TAG, "scope": "pair", "lockout_s": 900}
    assert events(web_rig) == [
        *[("web.login_failed", {"account": ALICE_TAG, "client": LOOPBACK_TAG})] * 5,
        ("web.client_locked", ban),
        ("web.login", {"account": ALICE_TAG, "role": "officer"}),
    ]


async def test_an_unknown_name_locks_like_a_real_one(web_rig: WebRig) -> None:
    async with web_rig.client() as client:
        answers = [(await login(client, "mallory", "guess"))[0] for _ in range(6)]
    assert answers == [401, 401, 401, 401, 423, 423]


async def test_a_success_resets_the_count_of_wrong_passwords(web_rig: WebRig) -> None:
    async with web_rig.client() as client:
        for _ in range(4):
            assert (await login(client, "bob", "guess"))[0] == 401
        assert (await login(client, "bob"))[0] == 200
        answers = [(await login(client, "bob", "guess"))[0] for _ in range(4)]
    assert answers == [401] * 4


async def test_logout_ends_the_session_and_clears_the_cookie(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, token = alice
    assert (await client.delete("/api/session")).status == 403, "DELETE needs the CSRF token"
    reply = await client.delete("/api/session", headers=csrf(token))
    assert (reply.status, await reply.json()) == (200, {"logged_out": True})
    assert "Max-Age=0" in reply.headers["Set-Cookie"]
    assert (await client.get("/api/session")).status == 401
    assert events(web_rig)[-1] == ("web.logout", {"account": ALICE_TAG})


async def test_a_session_ends_after_idle_time(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, _ = alice
    web_rig.clock.advance(599)
    assert (await client.get("/api/session")).status == 200, "a request restarts the idle timer"
    web_rig.clock.advance(599)
    assert (await client.get("/api/session")).status == 200
    web_rig.clock.advance(600)
    reply = await client.get("/api/session")
    assert (reply.status, (await reply.json())["error"]) == (401, "login_required")


async def test_the_page_s_status_reads_do_not_keep_an_unattended_session_alive(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, _ = alice
    for _ in range(5):  # a tablet left polling: 500 s of status reads, then 100 s more
        web_rig.clock.advance(100)
        assert (await client.get("/api/status")).status == 200
    web_rig.clock.advance(100)
    assert (await client.get("/api/status")).status == 401, "idle 600 s despite the polling"


async def test_an_event_stream_ends_when_its_session_expires(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, _ = alice
    async with client.get("/api/events") as stream:
        assert stream.status == 200
        first = await stream.content.readuntil(b"\n\n")
        assert first.startswith(b"retry:")
        web_rig.clock.advance(601)  # idle past session_idle_s: the stream itself is passive
        rest = await asyncio.wait_for(stream.content.read(), 10)  # ends: EOF, not a hang
    assert rest.count(b"event: status") <= 2, "at most the events already on their way"
    assert (await client.get("/api/status")).status == 401


async def test_a_session_ends_at_its_maximum_age_however_busy(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, _ = alice
    for _ in range(7):
        web_rig.clock.advance(500)
        assert (await client.get("/api/session")).status == 200
    web_rig.clock.advance(100)  # 3600 s after login
    assert (await client.get("/api/session")).status == 401


async def test_a_state_change_needs_the_csrf_token_and_the_box_s_origin(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, token = alice
    missing = await client.post("/api/record/start")
    assert (missing.status, (await missing.json())["error"]) == (403, "csrf")
    wrong = await client.post("/api/record/start", headers=csrf("x" * len(token)))
    assert wrong.status == 403
    foreign = await client.post(
        "/api/record/start", headers={**csrf(token), "Origin": "https://evil.example"}
    )
    assert (foreign.status, (await foreign.json())["error"]) == (403, "csrf")
    assert web_rig.box.state == "standby"
    own_origin = {**csrf(token), "Origin": web_rig.base}
    started = await client.post("/api/record/start", headers=own_origin)
    answer = await started.json()
    assert (started.status, answer["state"]) == (200, "recording")
    assert answer["status"]["recording"]["state"] == "recording"  # the page shows it at once


async def test_a_login_from_a_foreign_page_is_refused(web_rig: WebRig) -> None:
    async with web_rig.client() as client:
        reply = await client.post(
            "/api/session",
            json={"username": "alice", "password": PASSWORDS["alice"]},
            headers={"Origin": "https://evil.example"},
        )
        assert (reply.status, (await reply.json())["error"]) == (403, "csrf")
    assert events(web_rig) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/record/start"),
        ("POST", "/api/record/stop"),
        ("POST", "/api/record/flag"),
        ("POST", "/api/shift/start"),
        ("POST", "/api/shift/end"),
        ("POST", "/api/pair"),
        ("POST", "/api/config/bundle"),
        ("PUT", "/api/reports/0123456789abcdef"),
        ("GET", "/api/status"),
        ("GET", "/api/events"),
        ("GET", "/api/no-such-route"),
        ("DELETE", "/api/session"),
    ],
)
async def test_nothing_behind_api_answers_without_a_session(
    web_rig: WebRig, method: str, path: str
) -> None:
    async with web_rig.client() as client:
        reply = await client.request(method, path, json={"code": "X", "bodycam_serials": []})
        assert reply.status == 401
        assert await reply.json() == {"error": "login_required", "message": "Log in first."}
    assert web_rig.box.state == "standby"


async def test_a_forged_session_cookie_is_not_a_session(web_rig: WebRig) -> None:
    async with web_rig.client(cookies={"mvb_session": "A" * 43}) as client:
        assert (await client.get("/api/status")).status == 401


async def test_a_local_only_route_is_refused_on_the_web_channel(
    alice: tuple[aiohttp.ClientSession, str],
) -> None:
    client, token = alice
    reply = await client.post("/api/trigger", json={"source": "bodycam"}, headers=csrf(token))
    assert (reply.status, (await reply.json())["error"]) == (403, "forbidden")


async def test_every_response_carries_the_security_headers(
    web_rig: WebRig, alice: tuple[aiohttp.ClientSession, str]
) -> None:
    client, _ = alice
    async with web_rig.client() as anonymous:
        replies = [
            await client.get("/api/session"),
            await client.get("/api/status"),
            await client.get("/api/nothing"),
            await client.get("/"),
            await client.get("/static/no-such-file.js"),
            await anonymous.get("/api/status"),
            await anonymous.post("/api/session", data=b"{"),
        ]
        for reply in replies:
            headers = reply.headers
            assert headers["Content-Security-Policy"] == CSP
            assert "'unsafe-inline'" not in CSP
            assert headers["Strict-Transport-Security"].startswith("max-age=")
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["Permissions-Policy"] == "camera=(), microphone=(), geolocation=()"
            assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
            if reply.url.path.startswith("/api/"):
                assert headers["Cache-Control"] == "no-store"
    assert CSP == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'["alice", "pw"]', "application/json"),
        (b'{"username": "alice"}', "application/json"),
        (b'{"username": 7, "password": "x"}', "application/json"),
        (b'{"username": "' + b"a" * 65 + b'", "password": "x"}', "application/json"),
        (b"\xff\xfe", "application/json"),
    ],
)
async def test_a_malformed_login_is_400_and_counts_nothing(
    web_rig: WebRig, body: bytes, content_type: str
) -> None:
    async with web_rig.client() as client:
        reply = await client.post("/api/session", data=body, headers={"Content-Type": content_type})
        assert (reply.status, (await reply.json())["error"]) == (400, "bad_request")
    assert events(web_rig) == []


async def test_bodies_are_bounded_except_a_configuration_bundle(
    alice: tuple[aiohttp.ClientSession, str],
) -> None:
    client, token = alice
    big = b"x" * (64 * 1024 + 1)
    declared = await client.post("/api/session", data=big)
    assert (declared.status, (await declared.json())["error"]) == (413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b"y" * 1024

    chunked = await client.post("/api/trigger", data=chunks(), headers=csrf(token))
    assert chunked.status == 403, "local-only: refused before the body is read"
    streamed = await client.post("/api/session", data=chunks())
    assert (streamed.status, (await streamed.json())["error"]) == (413, "too_large")
    bundle = await client.post("/api/config/bundle", data=big, headers=csrf(token))
    assert bundle.status == 409, "a bundle may be large; this box is not paired"


async def test_an_account_removed_or_changed_by_a_fleet_document_loses_its_sessions(
    web_rig: WebRig, password_hashes: dict[str, str]
) -> None:
    """A fleet document applied while the box runs (the port's effective configuration
    changes): accounts and roles count from the next request."""
    box, config = web_rig.box, web_rig.config
    async with web_rig.client() as alice, web_rig.client() as bob:
        assert (await login(alice, "alice"))[0] == 200
        assert (await login(bob, "bob"))[0] == 200
        only_bob = accounts_toml(password_hashes, ("bob",)) + 'officer_id = "BOA-7"\n'
        box.config = apply_fleet_document(config, only_bob, "fleet document serial 1")
        assert (await alice.get("/api/session")).status == 401
        assert (await login(alice, "alice"))[0] == 401
        mine = await bob.get("/api/session")
        assert (await mine.json())["officer_id"] == "BOA-7", "the identity follows the config"
        demoted = only_bob.replace('role = "admin"', 'role = "officer"')
        box.config = apply_fleet_document(config, demoted, "fleet document serial 2")
        assert (await bob.get("/api/session")).status == 401, "a changed role logs out"
        assert (await login(bob, "bob"))[1]["role"] == "officer"
    web_access = web_rig.listener.access
    assert web_access is not None
    assert len(web_access.sessions) == 1


def _access_for(hashes: dict[str, str]) -> WebAccess:
    raw = {
        "box": {"recipient_keys": ["recording.pub"]},
        "accounts": [
            {"name": name, "role": "officer", "password_hash": text}
            for name, text in hashes.items()
        ],
    }
    config = parse_config(raw, "box.toml")

    async def no_audit(_event: str, **_fields: object) -> None:
        return None

    return WebAccess(lambda: config, no_audit)


async def test_an_unknown_name_costs_a_verification_as_dear_as_the_dearest_account(
    password_hashes: dict[str, str],
) -> None:
    dear = hash_password("x", iterations=MIN_ITERATIONS + 1)
    access = _access_for({**password_hashes, "carol": dear})
    assert parse_password_hash(access.dummy_hash()).iterations == MIN_ITERATIONS + 1
    assert await access.verify(None, "") is False
    assert await access.verify(None, PASSWORDS["alice"]) is False


async def test_a_login_flood_is_answered_busy_beyond_the_waiting_bound(
    password_hashes: dict[str, str],
) -> None:
    access = _access_for(password_hashes)
    attempts = [access.verify(None, "guess") for _ in range(MAX_WAITING_LOGINS + 1)]
    outcomes = await asyncio.gather(*attempts, return_exceptions=True)
    assert sum(isinstance(o, LoginBusy) for o in outcomes) == 1
    assert outcomes.count(False) == MAX_WAITING_LOGINS
