"""The officer's page end to end (issue 6): Debian's Chromium, driven by Playwright, against a
real running box on 127.0.0.1 (browser_rig.py): log in, lockout, recording, incident, shift,
report, CSRF, language, pairing and bundle refusals, and screenshots of every screen at phone
and tablet width under the test run's output.

The box, Chromium and each test's fresh page come from this package's conftest.py (one box and
one Chromium for the package's modules).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, FilePayload, Page, expect

from gateway.web.access import account_tag
from tests.cameras import free_port
from tests.gateway.web import browser_rig
from tests.gateway.web.browser_rig import (
    ACCOUNTS,
    CAMERA,
    MIN_PNG_BYTES,
    NARROW_PHONE,
    PHONE,
    SLOW_MS,
    TABLET,
    PageWatch,
    Screens,
    WebBox,
    by,
    chromium,
    hold_stop,
    log_in,
    open_page,
    password_of,
    try_login,
    unpinned_chromium,
    wait_until,
)
from tests.gateway.web.feature_rig import files_containing

pytestmark = pytest.mark.asyncio(loop_scope="package")

# What the page must show within a second of the click (docs/webui.md 6, issue 6), measured by
# the browser's own clock through Playwright's expect.
STATE_CHANGE_MS = 1000


async def go_to(page: Page, screen: str) -> None:
    await by(page, f"nav-{screen}").click()
    await expect(by(page, f"screen-{screen}")).to_be_visible()


# -- login and lockout -------------------------------------------------------------------------


async def test_login_with_a_wrong_then_the_right_password(
    page: Page, box: WebBox, screens: Screens
) -> None:
    await open_page(page, box)
    await expect(by(page, "login-submit")).to_have_text("Sign in")
    await screens.shoot(page, "login")

    assert await try_login(page, "alice", "not her password") == 401
    await expect(by(page, "login-error")).to_have_text("Wrong user name or password.")
    await expect(by(page, "login-password")).to_have_value("")
    assert await try_login(page, "nobody-here", "whatever") == 401
    await expect(by(page, "login-error")).to_have_text("Wrong user name or password.")

    assert await try_login(page, "alice", password_of("alice")) == 200
    await expect(by(page, "screen-overview")).to_be_visible()
    await expect(by(page, "screen-login")).to_be_hidden()
    await expect(by(page, "nav-settings")).to_be_visible()
    await go_to(page, "settings")
    await expect(by(page, "settings-user")).to_have_text("alice")

    cookies = await page.context.cookies()
    (session,) = [c for c in cookies if c["name"] == "mvb_session"]
    assert (session["secure"], session["httpOnly"], session["sameSite"]) == (True, True, "Strict")
    kinds = box.audit_kinds()
    assert "web.login_failed" in kinds
    assert "web.login" in kinds


async def test_five_wrong_passwords_lock_the_account_on_this_device_even_for_the_right_one(
    page: Page, box: WebBox, watch: PageWatch, screens: Screens
) -> None:
    watch.allow("/api/session", 423)
    wrong = [f"carol guess {n}" for n in range(5)]
    await open_page(page, box)
    for guess in wrong[:4]:
        assert await try_login(page, "carol", guess) == 401
        await expect(by(page, "login-error")).to_have_text("Wrong user name or password.")
    assert await try_login(page, "carol", wrong[4]) == 423  # the fifth locks at once
    locked = (
        "Too many wrong passwords: this account cannot sign in from this device for now."
        " Try again in 15 minutes."
    )
    await expect(by(page, "login-error")).to_have_text(locked)

    assert await try_login(page, "carol", password_of("carol")) == 423
    await expect(by(page, "login-error")).to_have_text(locked)
    await expect(by(page, "screen-login")).to_be_visible()
    await expect(by(page, "screen-overview")).to_be_hidden()
    await screens.shoot(page, "login-locked")

    events = box.audit_events()
    tag = account_tag("carol")
    assert tag == hashlib.sha256(b"carol").hexdigest()[:12]
    locks = [e["fields"] for e in events if e["event"].endswith("_locked")]
    assert locks == [
        {"account": tag, "client": locks[0]["client"], "scope": "pair", "lockout_s": 900}
    ], "this device is banned for carol; the account is not (one client's guesses)"
    failed = [
        e for e in events if e["event"] == "web.login_failed" and e["fields"]["account"] == tag
    ]
    assert len(failed) == 5
    assert not [e for e in events if e["event"] == "web.login" and e["fields"]["account"] == tag]
    audit = box.audit_text()
    for secret in ("carol", password_of("carol"), *wrong):
        assert secret not in audit


# -- recording ---------------------------------------------------------------------------------


async def test_recording_starts_within_a_second_is_flagged_and_stops(
    page: Page, box: WebBox, screens: Screens
) -> None:
    await log_in(page, box)
    await expect(by(page, "rec-panel")).to_have_attribute("data-state", "standby")
    await expect(by(page, "btn-record-stop")).to_be_hidden()  # stand-by offers Start only
    await expect(page.locator(f"[data-testid=camera][data-camera={CAMERA}]")).to_have_count(1)
    await screens.shoot(page, "overview-standby")

    await by(page, "btn-record-start").click()
    await expect(by(page, "rec-state")).to_have_text("RECORDING", timeout=STATE_CHANGE_MS)
    await expect(by(page, "rec-panel")).to_have_attribute("data-state", "recording")
    assert box.recorder_state() == "recording"
    await expect(by(page, "rec-trigger")).to_have_text("Started by: officer")

    recording = box.running.service.recording
    assert recording is not None
    # the overview follows the recording on its way (issue 16): being written, on this card
    row = page.locator(f"[data-testid=recording][data-recording-id='{recording.recording_id}']")
    await expect(row).to_have_attribute("data-delivery", "recording", timeout=SLOW_MS)
    await by(page, "btn-record-flag").click()
    await expect(by(page, "rec-flagged")).to_be_visible(timeout=SLOW_MS)
    await screens.shoot(page, "overview-recording")

    await hold_stop(page)
    assert box.recorder_state() == "standby"
    await expect(by(page, "reports-badge")).to_have_text("1", timeout=SLOW_MS)
    # not paired: sealed, it stays on the card; an incident
    await expect(row).to_have_attribute("data-delivery", "on_card", timeout=SLOW_MS)
    await expect(row).to_contain_text("incident")

    # The incident uploads first: every file of the recording, also those sealed after the
    # flag, is P0.
    book = box.features().reports.book
    await wait_until(
        lambda: (
            (entry := book.get(recording.recording_id)) is not None and entry.duration_s is not None
        ),
        "the recording to be sealed",
    )
    files = box.running.box.store.catalog.by_recording(recording.recording_id)
    assert files
    assert {record.upload_class for record in files} == {"P0"}
    flags = [e["fields"] for e in box.audit_events() if e["event"] == "storage.recording_flagged"]
    assert flags[-1]["recording_id"] == recording.recording_id


# -- shift and report --------------------------------------------------------------------------

WHAT = "A man in a grey coat shouted at the officer at the ferry quay (marker 5c1e)."
REASON = "He came at the officer before there was time to say it (marker 5c1e)."
HOLD_REASON = "Complaint 2024-77 by the man in the grey coat"


async def test_a_shift_with_a_recording_and_its_report(
    page: Page, box: WebBox, screens: Screens
) -> None:
    await log_in(page, box)
    await go_to(page, "shift")
    await expect(by(page, "shift-status")).to_have_text("No shift is running.")
    await by(page, "shift-serial-0").fill("BC-1001")
    await by(page, "shift-serial-add").click()
    await by(page, "shift-serial-1").fill("BC-1002")
    await by(page, "shift-start-submit").click()
    await expect(by(page, "shift-status")).to_have_text("A shift is running.")
    await expect(by(page, "shift-officer-item")).to_have_count(1)
    await expect(by(page, "shift-officer-item")).to_contain_text(ACCOUNTS["alice"][1])
    await expect(by(page, "shift-officer-bodycams")).to_have_text("BC-1001, BC-1002")
    await expect(by(page, "shift-start-title")).to_have_text("Change your bodycams")
    await screens.shoot(page, "shift")

    await go_to(page, "overview")
    await by(page, "btn-record-start").click()
    await expect(by(page, "rec-state")).to_have_text("RECORDING", timeout=STATE_CHANGE_MS)
    recording = box.running.service.recording
    assert recording is not None
    recording_id = recording.recording_id
    await hold_stop(page)

    reminder = page.locator("[data-testid=alert][data-code=report_missing]")
    await expect(reminder).to_have_text(
        "Attention1 recording still needs a report before the end of your shift.",
        timeout=SLOW_MS,
    )
    await expect(by(page, "reports-badge")).to_have_text("1")
    # The admin holds it (`mvb hold`, the loopback channel): the officer sees that, never why.
    async with box.local_client() as local:
        held = await local.put(f"/api/holds/{recording_id}", json={"reason": HOLD_REASON})
        assert held.status == 200, await held.text()
    await expect(by(page, "card-held")).to_have_text(
        "1 recording: not deleted until released", timeout=SLOW_MS
    )

    await go_to(page, "reports")
    item = page.locator(f"[data-testid=report-item][data-recording-id='{recording_id}']")
    await expect(item).to_have_count(1)
    await expect(item).to_contain_text("held")
    assert HOLD_REASON not in await page.content()
    async with box.local_client() as local:
        released = await local.delete(f"/api/holds/{recording_id}")
        assert released.status == 200, await released.text()
    await item.click()
    await expect(by(page, "report-form")).to_be_visible()
    await by(page, "report-what").fill(WHAT)
    await page.get_by_text("No", exact=True).click()
    await expect(by(page, "report-reason-row")).to_be_visible()
    await by(page, "report-reason").fill(REASON)
    await expect(by(page, "report-informed-row")).to_be_visible()
    await page.get_by_text("No, not told", exact=True).click()
    await page.get_by_text("Public place", exact=True).click()
    await screens.shoot(page, "reports-form")
    async with page.expect_response(
        lambda r: r.url.endswith(f"/api/reports/{recording_id}"), timeout=SLOW_MS
    ) as filed_answer:
        await by(page, "report-submit").click()
    filed = await (await filed_answer.value).json()
    await expect(by(page, "report-done")).to_contain_text("Report filed")
    await expect(by(page, "reports-empty")).to_be_visible()
    await expect(reminder).to_have_count(0, timeout=SLOW_MS)
    await expect(by(page, "reports-badge")).to_be_hidden()

    # Sealed on the card as evidence of that recording: the back office's key reads it, and
    # neither text is anywhere on the card or in the state directory in plaintext.
    sealed = box.running.box.store.catalog.by_recording(recording_id)
    assert filed["file_id"] in [record.file_id for record in sealed]
    (report,) = [r for r in box.filed_reports() if r.get("recording_id") == recording_id]
    assert (report["what"], report["warned_beforehand"]) == (WHAT, False)
    assert report["not_warned_reason"] == REASON
    assert (report["informed_afterwards"], report["premises"]) == (False, "public")
    roots = [box.config.card_dir, box.config.state_dir]
    for text in (WHAT, REASON, "marker 5c1e"):
        assert files_containing(roots, text.encode()) == []

    await go_to(page, "shift")
    await by(page, "shift-end-submit").click()
    await expect(by(page, "shift-end-message")).to_have_text("Shift ended.")
    await expect(by(page, "shift-status")).to_have_text("No shift is running.")
    ended = [e["fields"] for e in box.audit_events() if e["event"] == "shift.ended"]
    assert ended[-1]["reports_missing"] == 0
    assert ended[-1]["channel"] == "web"


async def test_a_duo_shift_two_officers_on_their_own_phones(
    browser: Browser, page: Page, box: WebBox, watch: PageWatch, screens: Screens
) -> None:
    """Issue 15, item 4: alice starts the shift, dave joins it from his own phone with his own
    bodycam; each page lists both officers; the dashcam's recording names both; dave leaves and
    alice ends it. Before the shift the page says that recordings carry no name."""
    alice, dave = ACCOUNTS["alice"][1], ACCOUNTS["dave"][1]
    no_shift = page.locator("[data-testid=alert][data-code=no_shift]")
    await log_in(page, box)
    await expect(no_shift).to_have_text(
        "AttentionStart your shift: recordings now carry no name.", timeout=SLOW_MS
    )
    await go_to(page, "shift")
    await by(page, "shift-serial-0").fill("BC-1001")
    await by(page, "shift-start-submit").click()
    await expect(by(page, "shift-officer-item")).to_have_count(1)

    context = await browser.new_context(viewport=PHONE.size(), locale="nl-NL")
    partner = await context.new_page()
    await watch.attach(partner)
    try:
        watch.allow("/api/shift/start", 409)  # the partner's bodycam
        watch.allow("/api/shift/end", 409)  # a report is missing
        await log_in_nl(partner, box, "dave")
        await by(partner, "nav-shift").click()
        await expect(by(partner, "shift-start-title")).to_have_text("Aansluiten bij de dienst")
        await by(partner, "shift-serial-0").fill("BC-1001")  # alice's: refused, in Dutch
        await by(partner, "shift-start-submit").click()
        await expect(by(partner, "shift-start-error")).to_have_text(
            "Die bodycam draagt je collega in deze dienst al."
        )
        await by(partner, "shift-serial-0").fill("BC-2001")
        await by(partner, "shift-start-submit").click()
        await expect(by(partner, "shift-officer-item")).to_have_count(2, timeout=SLOW_MS)
        await expect(by(partner, "shift-start-title")).to_have_text("Bodycams wijzigen")
        await expect(by(partner, "shift-officer-bodycams")).to_have_text(["BC-1001", "BC-2001"])
        await screens.shoot(partner, "shift-duo")

        # alice's page, open on the shift screen all along, shows her partner live
        await expect(by(page, "shift-officer-item")).to_have_count(2, timeout=SLOW_MS)
        await expect(by(page, "shift-officer-item").nth(1)).to_contain_text(dave)
        await expect(by(page, "shift-start-title")).to_have_text("Change your bodycams")
        await expect(by(page, "shift-serial-0")).to_have_value("BC-1001")
        await expect(by(page, "shift-leave-submit")).to_be_visible()
        await go_to(page, "overview")
        await expect(no_shift).to_have_count(0, timeout=SLOW_MS)

        await go_to(page, "overview")
        await by(page, "btn-record-start").click()
        await expect(by(page, "rec-state")).to_have_text("RECORDING", timeout=STATE_CHANGE_MS)
        recording = box.running.service.recording
        assert recording is not None
        await hold_stop(page)

        await by(partner, "shift-leave-submit").click()  # dave goes off duty, alice works on
        await expect(by(partner, "shift-end-message")).to_have_text(
            "Je hebt de dienst verlaten. Je collega werkt door.", timeout=SLOW_MS
        )
        await expect(by(partner, "shift-start-title")).to_have_text("Aansluiten bij de dienst")
    finally:
        await context.close()

    await go_to(page, "shift")
    await expect(by(page, "shift-officer-item")).to_have_count(1, timeout=SLOW_MS)
    await expect(by(page, "shift-leave-submit")).to_be_hidden()  # the last officer ends it
    await by(page, "shift-end-submit").click()
    await expect(by(page, "shift-end-message")).to_contain_text("report", timeout=SLOW_MS)
    await by(page, "shift-ack").check()
    await by(page, "shift-end-submit").click()
    await expect(by(page, "shift-status")).to_have_text("No shift is running.")

    (camera_facts,) = [
        m
        for r in box.decrypted_recordings(recording.recording_id)
        for m in r
        if m["type"] == "recording"
    ]
    assert camera_facts["officer_ids"] == [alice, dave], "the dashcam names both officers"
    assert camera_facts["shift_officers"] == [
        {"officer_id": alice, "bodycam_serials": ["BC-1001"]},
        {"officer_id": dave, "bodycam_serials": ["BC-2001"]},
    ]
    events = [(e["event"], e["fields"]) for e in box.audit_events()]
    shift_events = [name for name, _ in events if name.startswith("shift.")]
    assert shift_events[-4:] == ["shift.started", "shift.joined", "shift.left", "shift.ended"]
    (joined,) = [f for name, f in events if name == "shift.joined"][-1:]
    assert (joined["officers"], joined["channel"]) == (2, "web")
    (started,) = [
        f for name, f in events if name == "gateway.trigger" and f.get("channel") == "page"
    ][-1:]
    assert started["account"] == account_tag("alice"), "the trigger names the page's account"
    stopped = [f for name, f in events if name == "gateway.stop"][-1]
    assert stopped == {
        "source": "officer",
        "postrecord_s": 0.0,  # stop means stop (issue 15, item 5)
        "channel": "page",
        "account": account_tag("alice"),
    }
    assert dave not in box.audit_text()
    assert alice not in box.audit_text()


async def log_in_nl(page: Page, box: WebBox, name: str) -> None:
    await page.goto(box.base + "/")
    await expect(by(page, "screen-login")).to_be_visible()
    assert await try_login(page, name, password_of(name)) == 200
    await expect(by(page, "screen-overview")).to_be_visible()


# -- CSRF --------------------------------------------------------------------------------------


async def test_a_state_change_without_the_csrf_token_is_refused(
    page: Page, box: WebBox, watch: PageWatch
) -> None:
    watch.allow("/api/record/start", 403)
    await log_in(page, box)
    before = box.audit_kinds()
    answer = await page.evaluate(
        """async () => {
            const plain = await fetch("/api/record/start", {method: "POST"});
            const forged = await fetch("/api/record/start", {
                method: "POST", headers: {"X-CSRF-Token": "not-the-token"}});
            return [plain.status, (await plain.json()).error, forged.status];
        }"""
    )
    assert answer == [403, "csrf", 403]
    assert box.recorder_state() == "standby"
    await expect(by(page, "rec-state")).to_have_text("Standby")
    assert box.audit_kinds() == before


ATTACKER_PAGE = """<!doctype html>
<html><body>
<form id="f" method="post" action="{target}"><input name="x" value="1"></form>
<script>document.getElementById("f").submit();</script>
</body></html>"""


async def test_a_form_posted_from_another_origin_changes_nothing(
    page: Page, box: WebBox, watch: PageWatch
) -> None:
    """Another site (here http://127.0.0.1:OTHER) auto-submits a form to the box while the
    officer is logged in. The browser withholds the SameSite=Strict session cookie on that
    cross-site request, so the box answers 401; had it been sent, the Origin check would
    answer 403. Either way the recorder does not start."""
    watch.allow("/api/record/start", 401)
    watch.allow("/favicon.ico", 404)  # Chromium asks for it when it shows the JSON answer
    await log_in(page, box)
    target = f"{box.base}/api/record/start"

    async def attacker(_request: web.Request) -> web.Response:
        return web.Response(text=ATTACKER_PAGE.format(target=target), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", attacker)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    before = box.audit_kinds()
    try:
        async with page.expect_response(target, timeout=SLOW_MS) as posted:
            await page.goto(f"http://127.0.0.1:{port}/")
        answer = await posted.value
        assert answer.request.method == "POST"
        assert answer.status == 401
        assert (await answer.json())["error"] == "login_required"
    finally:
        await runner.cleanup()
    assert box.recorder_state() == "standby"
    assert box.audit_kinds() == before


# -- language ----------------------------------------------------------------------------------


async def test_the_language_switch_changes_the_texts_and_survives_a_reload(
    page: Page, box: WebBox
) -> None:
    await open_page(page, box)
    await expect(by(page, "login-submit")).to_have_text("Sign in")
    await by(page, "lang-nl").click()
    await expect(by(page, "login-submit")).to_have_text("Inloggen")
    await expect(by(page, "lang-nl")).to_have_attribute("aria-pressed", "true")
    await expect(by(page, "lang-en")).to_have_attribute("aria-pressed", "false")
    await page.reload()
    await expect(by(page, "login-submit")).to_have_text("Inloggen")

    assert await try_login(page, "alice", password_of("alice")) == 200
    await expect(by(page, "btn-record-start")).to_have_text("Opname starten")
    await expect(by(page, "rec-state")).to_have_text("Stand-by", timeout=SLOW_MS)
    # the camera's sound (issue 15): this synthetic camera sends none, and the page says so
    await expect(by(page, "camera-audio")).to_have_text("Camera levert geen geluid")
    await by(page, "lang-en").click()
    await expect(by(page, "btn-record-start")).to_have_text("Start recording")
    await expect(by(page, "camera-audio")).to_have_text("Camera sends no sound")
    await page.reload()
    await expect(by(page, "screen-overview")).to_be_visible()  # the session survives too
    await expect(by(page, "btn-record-start")).to_have_text("Start recording")
    await expect(by(page, "lang-en")).to_have_attribute("aria-pressed", "true")
    assert await page.evaluate("() => localStorage.getItem('mvb.language')") == "en"


# -- settings ----------------------------------------------------------------------------------


async def test_a_malformed_pairing_code_and_a_garbage_bundle_are_refused_in_plain_words(
    page: Page, box: WebBox, watch: PageWatch, screens: Screens
) -> None:
    watch.allow("/api/pair", 422)
    watch.allow("/api/config/bundle", 409)
    await log_in(page, box, "bob")
    await go_to(page, "settings")
    await expect(by(page, "settings-paired")).to_have_text("Not paired")

    typed = "mvb.example/ABCD-EFGH"  # an address, but far too few symbols
    await by(page, "pair-code").fill(typed)
    await by(page, "pair-submit").click()
    result = by(page, "pair-result")
    await expect(result).to_contain_text("Pairing refused: ", timeout=SLOW_MS)
    await expect(result).to_have_attribute("data-tone", "critical")
    shown = await result.text_content() or ""
    assert typed not in shown
    assert "ABCD" not in shown
    assert len(shown) > len("Pairing refused: ") + 10, shown

    garbage: FilePayload = {
        "name": "bundle.tar",
        "mimeType": "application/x-tar",
        "buffer": b"\x00garbage",
    }
    await by(page, "bundle-file").set_input_files(files=[garbage])
    await by(page, "bundle-submit").click()
    # This box is not paired: there is no trust root to check any bundle against (409).
    await expect(by(page, "bundle-result")).to_have_text(
        "The box is not paired with the back office.", timeout=SLOW_MS
    )
    await expect(by(page, "bundle-result")).to_have_attribute("data-tone", "critical")
    await screens.shoot(page, "settings")

    assert not (box.config.state_dir / "pairing").exists()
    kinds = box.audit_kinds()
    assert "gateway.paired" not in kinds
    assert not [kind for kind in kinds if kind.startswith("fleet.")]


# -- screens -----------------------------------------------------------------------------------

SCREENS = ("login", "overview-standby", "overview-recording", "shift", "reports-form", "settings")


async def test_every_screen_at_phone_and_tablet_width(
    page: Page, box: WebBox, screens: Screens
) -> None:
    """Screenshots of every screen; at the contract's narrowest phone (360 px) no screen is
    wider than the display (usable with one thumb, webui.md 6)."""
    await open_page(page, box)
    await screens.shoot(page, "login")
    await log_in(page, box, "alice")
    await screens.shoot(page, "overview-standby")
    await by(page, "btn-record-start").click()
    await expect(by(page, "rec-state")).to_have_text("RECORDING", timeout=STATE_CHANGE_MS)
    await screens.shoot(page, "overview-recording")
    await hold_stop(page)
    await go_to(page, "shift")
    await expect(by(page, "shift-status")).to_have_text("No shift is running.")
    await screens.shoot(page, "shift")
    await go_to(page, "reports")
    await by(page, "report-item").first.click()
    await by(page, "report-what").fill("Shown for the screenshot only.")
    await screens.shoot(page, "reports-form")
    await go_to(page, "settings")
    await expect(by(page, "settings-user")).to_have_text("alice")
    await screens.shoot(page, "settings")

    await page.set_viewport_size(NARROW_PHONE.size())
    for screen in ("overview", "shift", "reports", "settings"):
        await go_to(page, screen)
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= NARROW_PHONE.width, (screen, width)
        await screens.shoot(page, screen, (NARROW_PHONE,))

    expected = [
        screens.directory / f"{screen}-{viewport.name}.png"
        for screen in SCREENS
        for viewport in (PHONE, TABLET)
    ]
    for path in expected:
        assert path.is_file(), path
        assert path.stat().st_size > MIN_PNG_BYTES, path
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in expected)


# -- the certificate ---------------------------------------------------------------------------


async def test_a_browser_without_the_pin_refuses_the_box(box: WebBox) -> None:
    """The pin is what makes the browser trust the box: without it, the same Chromium refuses
    the self-signed certificate (so the tests above do not ignore certificate errors)."""
    async with unpinned_chromium() as other:
        context = await other.new_context(ignore_https_errors=False)
        try:
            page = await context.new_page()
            with pytest.raises(Exception, match="ERR_CERT_AUTHORITY_INVALID"):
                await page.goto(box.base + "/")
        finally:
            await context.close()


# -- the rig's own checks ----------------------------------------------------------------------


async def test_the_watch_catches_a_csp_violation_and_a_script_error(
    page: Page, box: WebBox, watch: PageWatch
) -> None:
    """What every test relies on: a blocked resource and an uncaught error are noticed. The
    image is a data: URL, which img-src 'self' refuses before anything is fetched."""
    await open_page(page, box)
    await page.evaluate(
        """() => {
            const img = document.createElement("img");
            img.src = "data:image/gif;base64,R0lGODlhAQABAAAAACw=";
            document.body.append(img);
            setTimeout(() => { throw new Error("planted by the test"); }, 0);
        }"""
    )
    await wait_until(lambda: len(watch.problems) >= 2, "the watch to see both")
    assert any("CSP violation: img-src" in problem for problem in watch.problems), watch.problems
    assert any("planted by the test" in problem for problem in watch.problems), watch.problems
    watch.problems.clear()  # provoked here on purpose


async def test_a_missing_chromium_fails_and_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(browser_rig, "CHROMIUM", tmp_path / "chromium")
    with pytest.raises(pytest.fail.Exception, match=r"`make test` installs it"):
        async with chromium("unused"):
            pass


async def test_screenshots_go_where_the_run_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(browser_rig.OUTPUT_ENV, str(tmp_path / "out"))
    assert Screens("test_x[tablet 1024]").directory == tmp_path / "out" / "test_x_tablet_1024"
    monkeypatch.delenv(browser_rig.OUTPUT_ENV)
    assert browser_rig.output_root() == browser_rig.REPO / "tests" / "output" / "webui"
