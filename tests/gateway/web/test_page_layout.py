"""The officer's page fit for a moving car (issue 16, items 1 and 5): Debian's Chromium through
Playwright, at phone (390x844) and tablet (1024x768) size, Dutch and English, light and dark.

- On every screen (overview, shift, reports, settings), with 0, 2 and 5 alerts, in stand-by and
  while recording: the recording indicator and the state's primary action are inside the
  viewport, not covered by anything (the element under their centre is theirs: no alert, no
  navigation on top), the action full width under the indicator; also scrolled to the bottom.
- Alerts beyond two fold behind one button; a card-full refusal shows right under the action.
- Stop is held, not tapped; an action's answer updates the page with the status feed blocked.
- Plain words: incident / evidence / routine, each recording's way to the back office, the
  hours the card still records, "no shift", "held"; no "all sent in: unknown" when nothing waits.

The box is the port's in-memory implementation (fake_box.py) behind the real web channel
(start_web, TLS, sessions, CSRF): these tests are about the page, whose facts the test sets.
The same page on a real box is browser/test_browser.py's. One Chromium and one page for the module;
a viewport screenshot of every screen in every combination lands under the test output
(browser_rig.Screens' directory).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, expect

from config.local import load_config
from gateway.caller import Identity
from gateway.officer.shift import ShiftStart, decide_start
from gateway.status_facts import GpsFacts, RecordingFiles, UplinkFacts
from gateway.web.server import WebListener, start_web
from gateway.web.status_source import StatusSource
from tests.cameras import free_port
from tests.gateway.web.browser_rig import (
    MIN_PNG_BYTES,
    PHONE,
    TABLET,
    PageWatch,
    Screens,
    Viewport,
    chromium,
    spki_pin,
)
from tests.gateway.web.conftest import PASSWORDS, web_box_config
from tests.gateway.web.fake_box import FakeBox

pytestmark = pytest.mark.asyncio(loop_scope="module")

SCREENS = ("overview", "shift", "reports", "settings")
ALERT_COUNTS = (0, 2, 5)
# Alarms of the box's own that the status document turns into alerts (status_view.py).
ALARMS = (
    "card_full",
    "card_write_failed",
    "retention_imminent",
    "evidence_suspect",
    "time_conflict",
)
SLOW_MS = 10_000
# Which screens are photographed in which condition, in every viewport, language and scheme:
# every screen while recording with two alerts, the overview also in stand-by and with five.
SHOT: dict[tuple[int, str], tuple[str, ...]] = {
    (0, "standby"): ("overview",),
    (0, "recording"): (),
    (2, "standby"): (),
    (2, "recording"): SCREENS,
    (5, "standby"): (),
    (5, "recording"): ("overview",),
}
RID = [f"{n:032x}" for n in range(1, 6)]

TEXTS = {
    "en": {
        "standby": "Standby",
        "recording": "RECORDING",
        "start": "Start recording",
        "more3": "Show 3 more alerts",
        "less": "Show fewer alerts",
        "short": "Not stopped: hold the button for 1.5 s.",
        "card_full": "The memory card is full",
        "queues": ("Incidents", "Evidence", "Routine"),
        "no_shift": "No shift started: recordings carry no officer",
        "uploading": "uploading: 40%",
        "hours": "about 18 h 29 min at the current cameras",
    },
    "nl": {
        "standby": "Stand-by",
        "recording": "OPNAME LOOPT",
        "start": "Opname starten",
        "more3": "Nog 3 meldingen tonen",
        "less": "Minder meldingen tonen",
        "short": "Nog niet gestopt: houd de knop 1,5 s vast.",
        "card_full": "De geheugenkaart is vol",
        "queues": ("Incidenten", "Bewijs", "Routine"),
        "no_shift": "Geen dienst gestart: opnamen krijgen geen boa-nummer",
        "uploading": "wordt verzonden: 40%",
        "hours": "nog ongeveer 18 u 29 min bij de huidige camera's",
    },
}


class Rig:
    def __init__(self, box: FakeBox, listener: WebListener, base: str, cert: Path) -> None:
        self.box = box
        self.listener = listener
        self.base = base
        self.cert = cert


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(
    tmp_path_factory: pytest.TempPathFactory, password_hashes: dict[str, str]
) -> AsyncIterator[Rig]:
    root = tmp_path_factory.mktemp("page-layout")
    https_port = free_port()
    config = load_config(
        web_box_config(
            root, password_hashes, f"enabled = true\nhttps_port = {https_port}\nhttp_port = 0"
        )
    )
    config.state_dir.mkdir(parents=True, exist_ok=True)
    box = FakeBox(config)
    listener = await start_web(box, StatusSource(box), config)
    assert listener is not None
    assert listener.state == "listening", listener
    try:
        yield Rig(
            box, listener, f"https://localhost:{https_port}", config.state_dir / "web" / "web.crt"
        )
    finally:
        await listener.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(rig: Rig) -> AsyncIterator[Browser]:
    async with chromium(spki_pin(rig.cert)) as launched:
        yield launched


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(browser: Browser, rig: Rig) -> AsyncIterator[Page]:
    """One page for the module, signed in as the officer (each test leaves the box calm)."""
    context = await browser.new_context(viewport=PHONE.size(), locale="en-GB")
    opened = await context.new_page()
    watch = PageWatch()
    watch.allow("/api/record/start", 409)
    await watch.attach(opened)
    await opened.goto(rig.base + "/")
    await opened.get_by_test_id("login-username").fill("alice")
    await opened.get_by_test_id("login-password").fill(PASSWORDS["alice"])
    await opened.get_by_test_id("login-submit").click()
    await expect(opened.get_by_test_id("command")).to_be_visible(timeout=SLOW_MS)
    try:
        yield opened
    finally:
        await context.close()
    watch.assert_clean()


@pytest.fixture(scope="module")
def screens() -> Screens:
    return Screens("test_page_layout")


def by(page: Page, test_id: str) -> Locator:
    return page.get_by_test_id(test_id)


# -- the box's condition ------------------------------------------------------------------------


def calm(box: FakeBox) -> None:
    """No alert: paired, a GPS fix, a camera delivering, no alarm, no recording, a shift."""
    box.alarms.clear()
    box.book.clear()  # recordings of earlier tests would ask for their reports
    box.card_full = False
    box.paired = True
    box.gps = GpsFacts("fix", mode=3, fix_age_s=0.5, lat=52.1, lon=5.1, speed_mps=0.0)
    box.cameras = {
        "dashcam": {
            "connected": True,
            "bitrate_bps": 4_000_000,
            "last_packet_age_s": 0.1,
            "prerecord_s": 5,
            "prerecord_filled_s": 5.0,
        }
    }
    box.shift = decide_start(None, ShiftStart("BOA-1234", ("BC-1",)), int(time.time() * 1000)).shift


def with_alerts(box: FakeBox, count: int) -> None:
    for code in ALARMS[:count]:
        box.raise_alarm(code, f"{code} (set by the test)")


async def alerts_shown(page: Page, box: FakeBox, count: int) -> None:
    for code in ALARMS:
        box.clear_alarm(code)
    with_alerts(box, count)
    await expect(by(page, "alert")).to_have_count(count, timeout=SLOW_MS)


async def set_state(page: Page, box: FakeBox, recording: bool) -> None:
    if recording and box.recording_id is None:
        box._record("officer")
    if not recording and box.recording_id is not None:
        await box.stop_recording(box_identity())
        box.book.clear()  # its report reminder is not one of the alerts counted here
    want = "recording" if recording else "standby"
    await expect(by(page, "rec-panel")).to_have_attribute("data-state", want, timeout=SLOW_MS)


def box_identity() -> Identity:
    return Identity(channel="local", user="", role="admin", officer_id="")


# -- geometry -------------------------------------------------------------------------------------

UNCOVERED = """(element) => {
    const box = element.getBoundingClientRect();
    const x = box.left + box.width / 2, y = box.top + box.height / 2;
    const top = document.elementFromPoint(x, y);
    return {
        top: box.top, bottom: box.bottom, left: box.left, right: box.right,
        width: box.width, height: box.height,
        mine: top !== null && (top === element || element.contains(top)),
        vw: window.innerWidth, vh: window.innerHeight,
    };
}"""

# The indicator and the shown action, measured at the top of the screen and scrolled to its
# bottom, in one trip to the page.
STATE_AND_ACTION = (
    """() => {
    const measure = """
    + UNCOVERED
    + """;
    const indicator = document.getElementById("rec-panel");
    const actions = [...document.querySelectorAll("#btn-record-start, #btn-record-stop")]
        .filter((button) => !button.hidden);
    const both = () => ({indicator: measure(indicator), actions: actions.map(measure)});
    window.scrollTo(0, 0);
    const atTop = both();
    window.scrollTo(0, document.documentElement.scrollHeight);
    const scrolled = both();
    window.scrollTo(0, 0);
    return {"at the top": atTop, "scrolled down": scrolled};
}"""
)


async def geometry(locator: Locator) -> dict[str, Any]:
    return dict(await locator.evaluate(UNCOVERED))


def assert_in_view(rect: dict[str, Any], where: str) -> None:
    assert rect["top"] >= 0, (where, rect)
    assert rect["bottom"] <= rect["vh"], (where, rect)
    assert rect["left"] >= 0, (where, rect)
    assert rect["right"] <= rect["vw"], (where, rect)
    assert rect["mine"], (where, "covered by another element", rect)


async def assert_state_and_action_in_view(page: Page, where: str) -> None:
    """The indicator and the one visible primary action: inside the viewport and uncovered, at
    the top of the screen and scrolled to its bottom; the action under the indicator and as
    wide as it."""
    for position, found in (await page.evaluate(STATE_AND_ACTION)).items():
        here = f"{where}, {position}"
        indicator = found["indicator"]
        assert len(found["actions"]) == 1, (here, found["actions"])
        (button,) = found["actions"]
        assert_in_view(indicator, f"{here}: indicator")
        assert_in_view(button, f"{here}: action")
        assert button["top"] >= indicator["bottom"], (here, indicator, button)
        assert button["width"] >= indicator["width"] - 1, (here, "the action is not full width")


async def shoot(page: Page, screens: Screens, name: str) -> Path:
    path = screens.directory / f"{name}.png"
    await page.screenshot(path=str(path))
    assert path.stat().st_size > MIN_PNG_BYTES, path
    return path


async def use_language(page: Page, language: str) -> None:
    await by(page, f"lang-{language}").click()
    await expect(by(page, f"lang-{language}")).to_have_attribute("aria-pressed", "true")


async def go_to(page: Page, screen: str) -> None:
    await by(page, f"nav-{screen}").click()
    await expect(by(page, f"screen-{screen}")).to_be_visible()


# -- the proof ------------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [PHONE, TABLET], ids=lambda v: v.name)
async def test_state_and_action_stay_in_view_on_every_screen(
    page: Page, rig: Rig, screens: Screens, viewport: Viewport
) -> None:
    calm(rig.box)
    await page.set_viewport_size(viewport.size())
    # The box's condition changes least often (each change waits for a status); language and
    # scheme are the page's own and switch at once.
    for count in ALERT_COUNTS:
        await alerts_shown(page, rig.box, count)
        for recording in (False, True):
            await set_state(page, rig.box, recording)
            state = "recording" if recording else "standby"
            for language in ("nl", "en"):
                await use_language(page, language)
                await expect(by(page, "rec-state")).to_have_text(TEXTS[language][state])
                for scheme in ("light", "dark"):
                    await page.emulate_media(color_scheme=scheme)
                    for screen in SCREENS:
                        await go_to(page, screen)
                        combination = f"{viewport.name}-{language}-{scheme}"
                        where = f"{combination} {count} alerts {state} {screen}"
                        await assert_state_and_action_in_view(page, where)
                        if screen in SHOT[count, state]:
                            name = f"{screen}-{state}-{count}alerts-{combination}"
                            await shoot(page, screens, name)
    await set_state(page, rig.box, False)
    shots = sorted(screens.directory.glob(f"*alerts-{viewport.name}-*.png"))
    per_combination = sum(len(names) for names in SHOT.values())
    assert len(shots) == 2 * 2 * per_combination, [p.name for p in shots]


async def test_alerts_beyond_two_fold_and_a_refusal_shows_under_the_action(
    page: Page, rig: Rig, screens: Screens
) -> None:
    calm(rig.box)
    await page.set_viewport_size(PHONE.size())
    await page.emulate_media(color_scheme="dark")
    for language in ("nl", "en"):
        await use_language(page, language)
        await go_to(page, "overview")
        await alerts_shown(page, rig.box, 5)
        texts = TEXTS[language]
        visible = page.locator("[data-testid=alert]:not([hidden])")
        await expect(visible).to_have_count(2)
        # the most urgent first: critical before warning, in the box's order
        await expect(visible.first).to_have_attribute("data-code", "card_full")
        more = by(page, "alerts-more")
        await expect(more).to_have_text(texts["more3"])
        await expect(more).to_have_attribute("aria-expanded", "false")
        await more.click()
        await expect(visible).to_have_count(5)
        await expect(more).to_have_text(texts["less"])
        await expect(more).to_have_attribute("aria-expanded", "true")
        await assert_state_and_action_in_view(page, f"{language} 5 alerts unfolded")
        await shoot(page, screens, f"alerts-unfolded-phone-{language}")
        await more.click()
        await expect(visible).to_have_count(2)

        rig.box.card_full = True
        await by(page, "btn-record-start").click()
        message = by(page, "record-message")
        await expect(message).to_contain_text(texts["card_full"])
        rect = await geometry(message)
        start = await geometry(by(page, "btn-record-start"))
        assert rect["top"] >= start["bottom"], (rect, start)
        assert rect["bottom"] <= rect["vh"], (rect, start)
        assert rect["mine"], rect
        await shoot(page, screens, f"card-full-refused-phone-{language}")
        rig.box.card_full = False
        assert rig.box.recording_id is None


async def test_stop_is_held_not_tapped(page: Page, rig: Rig, screens: Screens) -> None:
    calm(rig.box)
    await page.set_viewport_size(PHONE.size())
    await use_language(page, "nl")
    await alerts_shown(page, rig.box, 0)
    await set_state(page, rig.box, True)
    # the running recording is not asked for yet: no reminder, no badge while it runs
    await expect(by(page, "reports-badge")).to_be_hidden()
    await expect(by(page, "alert")).to_have_count(0)
    stop = by(page, "btn-record-stop")
    await expect(stop).to_have_attribute("data-hold-ms", "1500")
    await expect(by(page, "hold-hint")).to_have_text("Houd 1,5 s vast")
    await stop.click()  # a tap (a bump in the car) does not stop the recording
    await expect(by(page, "record-message")).to_have_text(TEXTS["nl"]["short"])
    assert rig.box.recording_id is not None
    await shoot(page, screens, "stop-tapped-phone-nl")

    await stop.hover()
    await page.mouse.down()
    await expect(stop).to_have_attribute("data-holding", "true")
    await expect(by(page, "rec-state")).to_have_text(TEXTS["nl"]["standby"], timeout=SLOW_MS)
    await page.mouse.up()
    assert rig.box.recording_id is None
    await expect(by(page, "record-message")).to_be_hidden()
    await expect(by(page, "reports-badge")).to_have_text("1")  # ended: now it is asked for
    await expect(page.locator("[data-testid=alert][data-code=report_missing]")).to_have_count(1)

    # the keyboard holds too: Space held down, not pressed
    rig.box.book.clear()
    await set_state(page, rig.box, True)
    await stop.focus()
    await page.keyboard.press("Space")
    await expect(by(page, "record-message")).to_have_text(TEXTS["nl"]["short"])
    assert rig.box.recording_id is not None
    await page.keyboard.down("Space")
    await expect(by(page, "rec-state")).to_have_text(TEXTS["nl"]["standby"], timeout=SLOW_MS)
    await page.keyboard.up("Space")
    assert rig.box.recording_id is None
    rig.box.book.clear()


async def test_an_action_answer_shows_without_the_status_feed(browser: Browser, rig: Rig) -> None:
    """With /api/events and /api/status blocked, only the POST's answer can change the page."""
    calm(rig.box)
    context = await browser.new_context(viewport=PHONE.size(), locale="en-GB")
    try:
        fresh = await context.new_page()
        await fresh.goto(rig.base + "/")
        await by(fresh, "login-username").fill("alice")
        await by(fresh, "login-password").fill(PASSWORDS["alice"])
        await by(fresh, "login-submit").click()
        await expect(by(fresh, "rec-state")).to_have_text("Standby", timeout=SLOW_MS)
        await fresh.route("**/api/events", lambda route: route.abort())
        await fresh.route("**/api/status", lambda route: route.abort())
        await fresh.evaluate("() => undefined")  # the routes are in place before the click
        await by(fresh, "btn-record-start").click()
        await expect(by(fresh, "rec-state")).to_have_text("RECORDING", timeout=SLOW_MS)
        await expect(by(fresh, "btn-record-stop")).to_be_visible()
    finally:
        await context.close()
        if rig.box.recording_id is not None:
            await rig.box.stop_recording(box_identity())


def uplink_uploading() -> UplinkFacts:
    link = {
        "name": "lte",
        "cost_class": "metered",
        "state": "up",
        "usable": True,
        "pin_blocked": False,
        "udp_blocked": False,
        "rtt_ms": 80,
        "goodput_mbit_s": 0.2,
        "budget_remaining_bytes": None,
        "uploads": 1,
    }
    uploading = {
        "file_id": "f" * 32,
        "link": "lte",
        "transport": "https",
        "offset_bytes": 400,
        "size_bytes": 1000,
    }
    status = {
        "links": [link],
        "uploading": [uploading],
        "waiting": [],
        "uploaded_files": 0,
        "uploaded_unattested": {"files": 0},
    }
    return UplinkFacts(status=status, budgets={})


def deliveries() -> tuple[RecordingFiles, ...]:
    now_ms = int(time.time() * 1000)
    return (
        RecordingFiles(
            RID[0],
            now_ms,
            files=1,
            size_bytes=1000,
            sealed_files=0,
            uploading_file_ids=frozenset({"f" * 32}),
            flagged=True,
        ),
        RecordingFiles(RID[1], now_ms - 60_000, files=2, size_bytes=2000, sealed_files=2),
        RecordingFiles(
            RID[2],
            now_ms - 120_000,
            files=1,
            size_bytes=500,
            uploading_file_ids=frozenset({"e" * 32}),
            held=True,
        ),
        RecordingFiles(
            RID[3], now_ms - 180_000, files=1, size_bytes=500, attested_files=1, attested_bytes=500
        ),
    )


async def test_plain_words_for_the_officer(page: Page, rig: Rig, screens: Screens) -> None:
    box = rig.box
    calm(box)
    box.uplink = uplink_uploading()
    box.recent_recordings = deliveries()
    await page.set_viewport_size(PHONE.size())
    try:
        for language in ("nl", "en"):
            texts = TEXTS[language]
            await use_language(page, language)
            await go_to(page, "overview")
            await alerts_shown(page, box, 0)
            labels = page.locator("#uplink-details dt")
            for label in texts["queues"]:
                await expect(labels.filter(has_text=label)).to_have_count(1)
            assert "P0" not in await page.locator("body").inner_text()
            # nothing waits on the card: no "all sent in: unknown"
            await expect(by(page, "uplink-eta-label")).to_be_hidden()
            await expect(by(page, "uplink-eta")).to_be_hidden()
            # 31 GiB above the reserve at 4 Mbit/s: about 18 h 29 min
            await expect(by(page, "card-hours")).to_have_text(texts["hours"])
            rows = by(page, "recording")
            await expect(rows).to_have_count(4)
            expected = {
                RID[0]: ("uploading", texts["uploading"]),
                RID[1]: ("on_card", None),
                RID[2]: ("at_back_office", None),
                RID[3]: ("verified", None),
            }
            for rid, (delivery, text) in expected.items():
                row = page.locator(f"[data-testid=recording][data-recording-id='{rid}']")
                await expect(row).to_have_attribute("data-delivery", delivery)
                if text is not None:
                    await expect(row.get_by_test_id("recording-delivery")).to_have_text(text)
            held = page.locator(f"[data-testid=recording][data-recording-id='{RID[2]}']")
            await expect(held).to_contain_text("vastgehouden" if language == "nl" else "held")
            await expect(by(page, "rec-noshift")).to_be_hidden()
            box.shift = None
            await expect(by(page, "rec-noshift")).to_be_visible(timeout=SLOW_MS)
            await expect(by(page, "rec-noshift")).to_have_text(texts["no_shift"])
            await shoot(page, screens, f"overview-no-shift-uploading-phone-{language}")
            calm(box)
            await expect(by(page, "rec-noshift")).to_be_hidden(timeout=SLOW_MS)
    finally:
        box.uplink = None
        box.recent_recordings = ()
