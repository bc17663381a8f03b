"""No English in the Dutch page across every refusal the API can give (issue 16 item 4), in
Debian's Chromium against a real running box (browser_rig.py), the browser's language Dutch.

Refusals the real box gives here (a wrong password, a code that is not a pairing code, a bundle
for an unpaired box) come from it. The rest of every code the box's code can send (api_codes.py:
found in the code, not listed by hand), every 422 field, pairing reason and configuration reason,
are answered to the page's own request by Playwright's router with the box's shape and an
English `message` / `reason` that must never show: that tests the page's translation of each
code; that the box sends exactly these codes is test_refusal_codes.py's part.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, FilePayload, Page, Route, expect

from gateway.fleet_refusals import reason_codes
from gateway.pairing_client import officer_reasons
from tests.gateway.web.api_codes import error_codes, invalid_fields
from tests.gateway.web.browser_rig import (
    PHONE,
    SLOW_MS,
    PageWatch,
    Screens,
    WebBox,
    by,
    password_of,
    settle,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")

STATIC = Path(__file__).resolve().parents[4] / "gateway" / "web" / "static"
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
ENGLISH_MARK = "ENGLISH FROM THE BOX"  # in every message the router answers with
NL = json.loads((STATIC / "i18n" / "nl.json").read_text(encoding="utf-8"))
EN = json.loads((STATIC / "i18n" / "en.json").read_text(encoding="utf-8"))


@pytest_asyncio.fixture(loop_scope="package")
async def page(browser: Browser, box: WebBox) -> AsyncIterator[Page]:
    """The package's Chromium with Dutch as the browser's language (instead of the package's
    English page: this module watches its page itself); the box settled afterwards."""
    context = await browser.new_context(viewport=PHONE.size(), locale="nl-NL")
    try:
        yield await context.new_page()
    finally:
        await context.close()
        await settle(box)


def english_only_texts() -> list[str]:
    """The longest fixed part of each English text of the page whose Dutch does not hold it
    (short parts such as "GPS", "P0" or a unit are the same in both and tell nothing)."""
    found = []
    for name, text in EN.items():
        longest = max(PLACEHOLDER.split(text), key=len).strip()
        if len(longest) >= 12 and longest not in NL.get(name, ""):
            found.append(longest)
    return found


async def assert_no_english(page: Page) -> None:
    shown = await page.locator("body").inner_text()
    assert ENGLISH_MARK not in shown
    found = [text for text in english_only_texts() if text in shown]
    assert found == []


def refusal(status: int, body: dict[str, object]) -> dict[str, object]:
    return {"status": status, "content_type": "application/json", "body": json.dumps(body)}


async def answer_with(page: Page, path: str, answers: list[dict[str, object]]) -> None:
    """The next requests to `path` get `answers`, one each (then the box again)."""
    pending = list(answers)

    async def handle(route: Route) -> None:
        if pending:
            await route.fulfill(**pending.pop(0))  # type: ignore[arg-type]
        else:
            await route.continue_()

    await page.route(f"**{path}", handle)


async def test_every_refusal_reaches_the_dutch_page_in_dutch(box: WebBox, page: Page) -> None:
    watch = PageWatch()
    refused = ((409, "/api/record/start"), (422, "/api/pair"), (422, "/api/config/bundle"))
    for status, path in (*refused, (409, "/api/config/bundle")):
        watch.allow(path, status)  # the refusals this test provokes
    await watch.attach(page)
    screens = Screens("test_every_refusal_reaches_the_dutch_page_in_dutch")
    await page.goto(box.base + "/")
    await expect(by(page, "login-submit")).to_have_text(NL["login.submit"])

    # -- from the real box ------------------------------------------------------------------
    await by(page, "login-username").fill("alice")
    await by(page, "login-password").fill("niet haar wachtwoord")
    await by(page, "login-submit").click()
    await expect(by(page, "login-error")).to_have_text(NL["error.wrong_credentials"])
    await by(page, "login-password").fill(password_of("alice"))
    await by(page, "login-submit").click()
    await expect(by(page, "rec-state")).to_have_text(NL["rec.state.standby"], timeout=SLOW_MS)
    await assert_no_english(page)

    await by(page, "nav-settings").click()
    await by(page, "pair-code").fill("dit is geen code")
    await by(page, "pair-submit").click()
    not_a_code = NL["pair.refused"].replace("{reason}", NL["pair.reason.not_a_code"])
    await expect(by(page, "pair-result")).to_have_text(not_a_code, timeout=SLOW_MS)
    await by(page, "bundle-file").set_input_files(
        FilePayload(name="bundle.tar", mimeType="application/x-tar", buffer=b"not a tar")
    )
    await by(page, "bundle-submit").click()
    await expect(by(page, "bundle-result")).to_have_text(NL["error.not_paired"], timeout=SLOW_MS)
    await assert_no_english(page)
    await screens.shoot(page, "settings-refusals-nl", (PHONE,))

    # -- every other code the box's code can send ----------------------------------------------
    codes = sorted(error_codes() - {"locked"})
    reasons = sorted(officer_reasons())
    bundles = sorted(reason_codes())
    fields = sorted(invalid_fields())
    for status, path in (
        (409, "/api/record/start"),
        (422, "/api/pair"),
        (422, "/api/config/bundle"),
    ):
        watch.allow(path, status)
    await answer_with(
        page,
        "/api/pair",
        [
            refusal(422, {"error": "pairing_failed", "message": ENGLISH_MARK, "reason": r})
            for r in reasons
        ],
    )
    for reason in reasons:
        await by(page, "pair-code").fill("AAAA-BBBB")
        await by(page, "pair-submit").click()
        expected = NL["pair.refused"].replace("{reason}", NL[f"pair.reason.{reason}"])
        await expect(by(page, "pair-result")).to_have_text(expected)
    await answer_with(
        page,
        "/api/config/bundle",
        [
            refusal(422, {"applied": False, "reason": ENGLISH_MARK, "reason_code": code})
            for code in bundles
        ],
    )
    for code in bundles:
        await by(page, "bundle-submit").click()
        expected = NL["bundle.refused"].replace("{reason}", NL[f"bundle.reason.{code}"])
        await expect(by(page, "bundle-result")).to_have_text(expected)
    await assert_no_english(page)

    await by(page, "nav-overview").click()
    await answer_with(
        page,
        "/api/record/start",
        [refusal(409, {"error": code, "message": ENGLISH_MARK}) for code in codes]
        + [
            refusal(409, {"error": "invalid", "message": ENGLISH_MARK, "field": field})
            for field in fields
        ]
        + [refusal(409, {"error": "code_from_a_newer_box", "message": ENGLISH_MARK})],
    )
    expectations = [NL[f"error.{code}"] for code in codes]
    expectations += [NL[f"error.invalid.{field}"] for field in fields]
    expectations += [NL["error.untranslated"].replace("{code}", "code_from_a_newer_box")]
    for expected in expectations:
        await by(page, "btn-record-start").click()
        await expect(by(page, "record-message")).to_have_text(expected)
        await assert_no_english(page)
    await screens.shoot(page, "overview-refusal-nl", (PHONE,))
    watch.assert_clean()
    assert len(expectations) > 40, "the scan found the box's codes"
