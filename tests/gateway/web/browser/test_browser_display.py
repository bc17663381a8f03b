"""The car display stays signed in while it matters (issue 16 item 2), in Debian's Chromium against
a real running box (browser_rig.py): a recording outlives the idle timeout with the page still
showing it and Stop working; after the session ends the page says why; a tablet bound as the
vehicle display keeps the state and the record buttons after signing out.

Time: the box's web access clock is moved forward by hand (`jump`: the box's monotonic clock
plus an offset), so 600 s of idle time pass at once; the recorder keeps real time. Left out: a
real 30-minute idle wait (the same rule, with `session_idle_s` 600 and a moved clock).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, Page, expect

from gateway.web.access import WebAccess
from tests.gateway.web.browser_rig import (
    PHONE,
    SLOW_MS,
    TABLET,
    PageWatch,
    Screens,
    WebBox,
    by,
    hold_stop,
    log_in,
    settle,
    wait_until,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")

IDLE_S = 600  # the rig's [webui] session_idle_s


class MovedClock:
    """The box's monotonic clock plus what the test added."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset_s


def web_access(box: WebBox) -> WebAccess:
    web = box.running.web
    assert web is not None
    assert web.access is not None
    return web.access


@pytest.fixture
def clock(box: WebBox) -> Iterator[MovedClock]:
    """The box's web access clock, moved by the test; the box's own clock again afterwards
    (the package's other modules share the box)."""
    access = web_access(box)
    before = access.clock
    moved = MovedClock()
    access.clock = moved
    try:
        yield moved
    finally:
        access.clock = before


@pytest.fixture
def watch() -> PageWatch:
    watched = PageWatch()
    watched.allow("/api/status", 401)  # the session ends on purpose here
    watched.allow("/api/events", 401)
    return watched


async def open_context(browser: Browser, watch: PageWatch, width: str) -> Page:
    viewport = PHONE if width == "phone" else TABLET
    context = await browser.new_context(viewport=viewport.size(), locale="en-GB")
    page = await context.new_page()
    await watch.attach(page)
    return page


async def jump(box: WebBox, clock: MovedClock, seconds: float) -> None:
    """Move the web clock; then wait until a request or the ticker saw the new time while the
    box records (every session's idle clock restarted at it), when it records."""
    clock.offset_s += seconds
    if box.recorder_state() == "standby":
        return
    access = web_access(box)
    moved_to = clock()
    await wait_until(
        lambda: all(s.last_seen_s >= moved_to for s in access.sessions._sessions.values()),
        "the idle clocks to restart while recording",
    )


async def test_a_recording_outlives_the_idle_timeout_with_the_page_showing_it(
    browser: Browser, box: WebBox, clock: MovedClock, watch: PageWatch
) -> None:
    page = await open_context(browser, watch, "phone")
    screens = Screens("test_a_recording_outlives_the_idle_timeout")
    try:
        await log_in(page, box)
        await by(page, "btn-record-start").click()
        await expect(by(page, "rec-panel")).to_have_attribute("data-state", "recording")
        for _ in range(3):  # 1500 s of recording without a tap (idle timeout 600 s)
            await jump(box, clock, IDLE_S - 100)
        await page.wait_for_timeout(1000)  # two event ticks: still the live page
        await expect(by(page, "rec-panel")).to_have_attribute("data-state", "recording")
        await expect(by(page, "screen-overview")).to_be_visible()
        await screens.shoot(page, "recording-after-idle", (PHONE,))
        await hold_stop(page)

        await jump(box, clock, IDLE_S + 1)  # now idle: the session ends
        await expect(by(page, "screen-login")).to_be_visible(timeout=SLOW_MS)
        await expect(by(page, "login-signed-out")).to_have_text(
            "You were signed out because the page was not used for a while. Sign in again."
        )
        await expect(by(page, "screen-overview")).to_be_hidden()
        await screens.shoot(page, "signed-out-after-idle", (PHONE,))
    finally:
        await page.context.close()
        await settle(box)
    watch.assert_clean()


async def test_a_bound_vehicle_display_keeps_state_and_record_buttons_after_sign_out(
    browser: Browser, box: WebBox, clock: MovedClock, watch: PageWatch
) -> None:
    page = await open_context(browser, watch, "tablet")
    screens = Screens("test_a_bound_vehicle_display")
    try:
        await log_in(page, box)
        await by(page, "nav-shift").click()
        await by(page, "shift-serial-0").fill("BC-2001")
        await by(page, "shift-start-submit").click()
        await expect(by(page, "shift-status")).to_have_text("A shift is running.")
        await by(page, "nav-settings").click()
        await by(page, "display-bind").click()
        await expect(by(page, "display-result")).to_have_text(
            "This device is the vehicle display until the shift ends."
        )
        await expect(by(page, "display-unbind")).to_be_visible()
        await by(page, "logout").click()

        await expect(by(page, "display-banner")).to_be_visible(timeout=SLOW_MS)
        await expect(by(page, "screen-overview")).to_be_visible()
        await expect(by(page, "nav-settings")).to_be_hidden()
        await expect(by(page, "command")).to_be_visible()  # the top bar: state and its action
        await expect(by(page, "rec-state")).to_have_text("Standby", timeout=SLOW_MS)
        await screens.shoot(page, "display-signed-out", (TABLET, PHONE))
        await by(page, "btn-record-start").click()
        await expect(by(page, "rec-panel")).to_have_attribute("data-state", "recording")
        assert box.recorder_state() == "recording"
        await jump(box, clock, 2 * 3600)  # past session_max_s: the display is for the shift
        await hold_stop(page)
        assert box.recorder_state() == "standby"
        kinds = box.audit_kinds()
        assert "web.display_bound" in kinds

        await by(page, "display-sign-in").click()
        await expect(by(page, "screen-login")).to_be_visible()
    finally:
        await page.context.close()
        await settle(box)  # ends the shift: the binding with it
    watch.assert_clean()
