"""The fleet admin page and the scrape endpoint of the real `mvb-admin serve` (issue 17 item 5;
docs/fleet-admin.md 7.2, 7.3): one back office for the module (backoffice/admin_rig.py), a box
paired by `mvb pair` whose signed health report carries an alarm.

In Debian's Chromium (Playwright, executable_path; trusting the back office's key by its pin
only): an admin logs in, sees the box with its alarm translated, its group's versions, issues a
pairing code (shown once) and reads it all in Dutch and in English, with no English left on the
Dutch page and no CSP violation; five wrong passwords lock the account out from that client,
even for the right password. Over HTTP: a POST without the CSRF token or from another origin is
refused; the session cookie is Secure, HttpOnly and SameSite=Strict, and a removed account's
session ends at its next request; the scrape endpoint wants its bearer token and its text
parses strictly.

Left out: a second client address (the lockout per client and account is the officer page's
pure core, tested in tests/common/test_login_throttle.py and over the network in
tests/gateway/web/test_lockout_clients.py); a restart (sessions are in memory by design)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, expect

from backoffice.admin_access import CSP
from backoffice.admin_accounts import add_account, remove_account
from backoffice.check_now import CHECK_NOW_DIR
from backoffice.pairing import CODE_VALIDITY_S
from tests.backoffice.admin_rig import (
    ALARM,
    GROUP,
    METRICS_TOKEN,
    PASSWORDS,
    VERSION,
    AdminOffice,
    admin_back_office,
)
from tests.backoffice.prometheus_text import parse
from tests.gateway.fleet_rig import BOX
from tests.gateway.web.browser_rig import PageWatch, chromium, output_root, spki_pin
from tests.tls_helpers import TestPki

I18N = Path(__file__).parents[2] / "backoffice" / "admin_static" / "i18n"
NEW_BOX = "MVB-0099"


@pytest.fixture(scope="module")
def office(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminOffice]:
    with admin_back_office(pki, tmp_path_factory.mktemp("admin-office")) as running:
        yield running


def words(lang: str) -> dict[str, str]:
    loaded: dict[str, str] = json.loads((I18N / f"{lang}.json").read_text())
    return loaded


async def log_in(page: Page, name: str, password: str) -> None:
    await page.fill("#username", name)
    await page.fill("#password", password)
    await page.click("#login-form button[type=submit]")


async def test_an_admin_sees_the_fleet_and_issues_a_pairing_code_in_dutch_and_english(
    office: AdminOffice,
) -> None:
    nl, en = words("nl"), words("en")
    async with chromium(spki_pin(office.pki.server_cert)) as browser:
        context = await browser.new_context(locale="nl-NL")
        page = await context.new_page()
        watch = PageWatch()
        watch.allow("/api/pairing-codes", 409)  # the refused pairing below, on purpose
        await watch.attach(page)
        await page.goto(office.url + "/")
        await expect(page.locator("h1")).to_have_text(nl["title"])
        await log_in(page, "alice", PASSWORDS["alice"])

        row = page.locator(f'#boxes tr[data-box="{BOX}"]')
        await expect(row).to_contain_text(VERSION)
        await expect(row).to_contain_text(nl[f"alarm.{ALARM}"])
        await expect(row).to_contain_text(nl["class.P0"])
        await expect(row).to_contain_text("75% vol")
        await expect(page.locator(f'#alarms li[data-box="{BOX}"]')).to_contain_text(
            nl[f"alarm.{ALARM}"]
        )
        await expect(page.locator("#versions")).to_contain_text(GROUP)
        await expect(page.locator("#versions")).to_contain_text(f"{VERSION}: 1")

        await expect(page.locator("#checknow")).to_have_text(nl["checknow.none"])
        await row.locator("button.check-now").click()
        await expect(page.locator("#checknow")).to_have_text(BOX)
        assert (office.uploads / CHECK_NOW_DIR / f"{BOX}.json").exists()

        await page.fill("#pair-box", NEW_BOX)
        await page.click("#pair-button")
        await expect(page.locator("#pair-result")).to_be_visible()
        code = (await page.locator("#pair-code").text_content() or "").strip()
        assert len(code) > 20, code
        minutes = CODE_VALIDITY_S // 60
        await expect(page.locator("#pair-for")).to_have_text(
            nl["pair.for"].format(box=NEW_BOX, minutes=minutes)
        )
        # Already paired without re-pair: refused with a code the page words in Dutch.
        await page.fill("#pair-box", BOX)
        await page.click("#pair-button")
        await expect(page.locator("#pair-error")).to_have_text(nl["error.already_paired"])

        dutch = await page.locator("body").inner_text()
        english_only = {
            text
            for key, text in en.items()
            if text != nl[key] and len(text) >= 6 and "{" not in text
        }
        assert [text for text in english_only if text in dutch] == []
        shots = output_root() / "admin_page"
        shots.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=shots / "fleet-nl.png", full_page=True)

        await page.click("#lang-en")
        await expect(page.locator("h1")).to_have_text(en["title"])
        await expect(row).to_contain_text(en[f"alarm.{ALARM}"])
        await expect(row).to_contain_text(en["class.P0"])
        await expect(page.locator("#pair-error")).to_have_text(en["error.already_paired"])
        await page.screenshot(path=shots / "fleet-en.png", full_page=True)
        await page.click("#logout")
        await expect(page.locator("#login-form")).to_be_visible()
        await expect(page.locator("#fleet")).to_be_hidden()
        watch.assert_clean()
        await context.close()

        # The lockout: five wrong passwords from this client, then even the right one waits.
        context = await browser.new_context(locale="nl-NL")
        page = await context.new_page()
        watch = PageWatch()
        await watch.attach(page)
        watch.allow("/api/session", 423)
        await page.goto(office.url + "/")
        for attempt in range(5):
            await log_in(page, "carol", f"wrong guess {attempt}")
            expected = nl["error.wrong_credentials"] if attempt < 4 else None
            if expected is not None:
                await expect(page.locator("#login-error")).to_have_text(expected)
                await page.locator("#login-error").evaluate("e => e.textContent = ''")
        locked = nl["error.locked"].format(minutes=15)
        await expect(page.locator("#login-error")).to_have_text(locked)
        await log_in(page, "carol", PASSWORDS["carol"])
        await expect(page.locator("#login-error")).to_have_text(locked)
        assert await page.locator("#fleet").is_hidden()
        watch.assert_clean()
        await context.close()


async def logged_in(session: aiohttp.ClientSession, office: AdminOffice) -> str:
    async with session.post(
        office.url + "/api/session",
        json={"username": "alice", "password": PASSWORDS["alice"]},
        ssl=office.ssl_context(),
    ) as answer:
        assert answer.status == 200
        token: str = (await answer.json())["csrf_token"]
        return token


async def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(
    office: AdminOffice,
) -> None:
    url = office.url + "/api/pairing-codes"
    body = {"box_id": "MVB-0100", "re_pair": False}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        csrf = await logged_in(session, office)
        tls = office.ssl_context()
        async with session.post(url, json=body, ssl=tls) as answer:
            assert answer.status == 403
            assert (await answer.json())["error"] == "csrf"
        wrong = {"X-CSRF-Token": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")}
        async with session.post(url, json=body, headers=wrong, ssl=tls) as answer:
            assert answer.status == 403
        foreign = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
        async with session.post(url, json=body, headers=foreign, ssl=tls) as answer:
            assert answer.status == 403
            assert (await answer.json())["error"] == "csrf"
        good = {"X-CSRF-Token": csrf, "Origin": office.url}
        async with session.post(url, json=body, headers=good, ssl=tls) as answer:
            assert answer.status == 200
            assert (await answer.json())["box_id"] == "MVB-0100"
        async with session.get(office.url + "/", ssl=tls) as answer:
            assert answer.headers["Content-Security-Policy"] == CSP
            assert "script-src 'self'" in CSP
            assert "unsafe-inline" not in CSP
            assert answer.headers["X-Frame-Options"] == "DENY"
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(office.url + "/api/fleet", ssl=office.ssl_context()) as answer,
    ):
        assert answer.status == 401
        assert (await answer.json())["error"] == "login_required"


async def test_the_scrape_endpoint_wants_its_token_and_speaks_the_text_format(
    office: AdminOffice,
) -> None:
    url = office.url + "/metrics"
    async with aiohttp.ClientSession() as session:
        tls = office.ssl_context()
        for headers in (
            {},
            {"Authorization": "Bearer not-the-token"},
            {"Authorization": "Basic x"},
        ):
            async with session.get(url, headers=headers, ssl=tls) as answer:
                assert answer.status == 401
        bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        async with session.get(url, headers=bearer, ssl=tls) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await answer.text()
    types, samples = parse(text)
    assert set(types.values()) == {"gauge"}
    by_name = {
        (s.name, s.labels.get("class", "")): s for s in samples if s.labels.get("box") == BOX
    }
    assert by_name[("mvb_fleet_box_alarms", "")].value == 1
    assert by_name[("mvb_fleet_box_alarms", "")].labels["group"] == GROUP
    assert by_name[("mvb_fleet_box_queue_bytes", "P1")].value == 30_000_000
    assert by_name[("mvb_fleet_box_card_used_ratio", "")].value == 0.75
    assert by_name[("mvb_fleet_box_info", "")].labels["version"] == VERSION
    versions = [s for s in samples if s.name == "mvb_fleet_group_version_boxes"]
    assert [(s.labels, s.value) for s in versions] == [({"group": GROUP, "version": VERSION}, 1)]
    for sample in samples:
        assert set(sample.labels) <= {"box", "group", "class", "version"}


async def test_a_removed_account_loses_its_session_at_once(office: AdminOffice) -> None:
    add_account(office.root / "admin", "erin", "erin's admin passphrase")
    tls = office.ssl_context()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(
            office.url + "/api/session",
            json={"username": "erin", "password": "erin's admin passphrase"},
            ssl=tls,
        ) as answer:
            assert answer.status == 200
            cookie = answer.cookies["mvb_admin_session"]
            assert cookie["secure"]
            assert cookie["httponly"]
            assert cookie["samesite"] == "Strict"
        async with session.get(office.url + "/api/fleet", ssl=tls) as answer:
            assert answer.status == 200
            fleet = await answer.json()
            assert [box["box_id"] for box in fleet["boxes"]] == [BOX]
        remove_account(office.root / "admin", "erin")
        async with session.get(office.url + "/api/fleet", ssl=tls) as answer:
            assert answer.status == 401
