"""Lockout cannot be turned against the officer (issue 16 item 3; docs/webui.md 1.1): the real
HTTPS listener on 127.0.0.1, clients from different source addresses on loopback (127.0.0.2,
127.0.0.3, ...: Linux routes all of 127/8 to lo), each with its own cookie jar as separate
devices would have. The clock is the rig's hand-driven one.

Left out: addresses behind a NAT (every client of the car's network reaches the box directly)
and IPv6 (the /64 grouping is tested in test_login_throttle.py)."""

from __future__ import annotations

import hashlib

import aiohttp

from tests.gateway.web.conftest import PASSWORDS, WebRig, login

ATTACKER = "127.0.0.2"
TABLET = "127.0.0.3"


def device(rig: WebRig, source: str) -> aiohttp.ClientSession:
    """A browser on the car's network at `source`, with its own cookies."""
    connector = aiohttp.TCPConnector(ssl=rig.context, local_addr=(source, 0))
    return aiohttp.ClientSession(base_url=rig.base, connector=connector)


async def test_five_wrong_passwords_from_one_client_do_not_lock_the_officer_out_of_another(
    web_rig: WebRig,
) -> None:
    async with device(web_rig, ATTACKER) as attacker, device(web_rig, TABLET) as tablet:
        answers = [(await login(attacker, "alice", f"guess {n}"))[0] for n in range(5)]
        assert answers == [401, 401, 401, 401, 423]
        assert (await login(attacker, "alice"))[0] == 423, "the attacker is banned, even right"
        status, body = await login(tablet, "alice")
        assert status == 200, body
        assert body["user"] == "alice"
    tag = hashlib.sha256(ATTACKER.encode()).hexdigest()[:12]
    locks = [e for e in web_rig.audit_events() if e["event"].endswith("_locked")]
    assert [(e["event"], e["fields"]["client"]) for e in locks] == [("web.client_locked", tag)]


async def test_the_same_client_is_banned_after_five_for_the_officer_too(web_rig: WebRig) -> None:
    """U2's 5 tries hold per client: the officer's own device typing wrong 5 times waits."""
    async with device(web_rig, TABLET) as tablet:
        answers = [(await login(tablet, "alice", "typo"))[0] for _ in range(5)]
        assert answers[-1] == 423
        assert (await login(tablet, "alice"))[0] == 423
        web_rig.clock.advance(900)
        assert (await login(tablet, "alice"))[0] == 200


async def test_guesses_from_many_addresses_ban_new_devices_but_not_the_officer_s_tablet(
    web_rig: WebRig,
) -> None:
    """An attacker who takes address after address gets at most spread_max_failures guesses
    per lockout for the account in all; then a device that never logged in as alice waits,
    while the tablet that did (its known-device cookie) logs in."""
    async with device(web_rig, TABLET) as tablet:
        assert (await login(tablet, "alice"))[0] == 200
        tablet.cookie_jar.clear(lambda cookie: cookie.key == "mvb_session")  # logged out
        spread = 4 * 5  # SPREAD_FACTOR x max_failed_logins of the rig's [webui]
        for n in range(spread // 4):
            async with device(web_rig, f"127.0.1.{n + 1}") as attacker:
                answers = [(await login(attacker, "alice", "guess"))[0] for _ in range(4)]
        assert answers[-1] == 423, "the last guess banned the account for new devices"
        async with device(web_rig, "127.0.2.1") as stranger:
            assert (await login(stranger, "alice"))[0] == 423
        status, body = await login(tablet, "alice", PASSWORDS["alice"])
        assert status == 200, body
    assert [e["event"] for e in web_rig.audit_events()].count("web.account_locked") == 1
