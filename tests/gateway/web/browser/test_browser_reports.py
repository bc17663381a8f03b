"""The report book on the officer's page (RULES R7, R8; docs/webui.md 4, 6): Debian's Chromium,
driven by Playwright, against a real running box (browser_rig.py). A warning without a recording
and its correction, in English; a recording's report with informing afterwards and a warrant to
enter, in Dutch. What the page sent is read back from the sealed files with the back office's
key. GPS is absent here (the warning is sealed without a position, and the page says so); the
position from a real gpsd is proven over the API (test_report_book.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, expect

from gateway.caller import account_tag
from tests.gateway.web.browser_rig import (
    SLOW_MS,
    Screens,
    WebBox,
    by,
    log_in,
)
from tests.gateway.web.feature_rig import files_containing

pytestmark = pytest.mark.asyncio(loop_scope="package")

TIMEZONE = "Europe/Amsterdam"
WARNING = "Warned a man at the harbour gate that I would record (marker 3f7a)."
CORRECTED = "Warned a man in the harbour master's yard that I would record (marker 3f7a)."
WHY = "It was in the yard, not at the gate (marker 3f7a)."
REPORT = "Een man schreeuwde in zijn woning tegen de collega (marker 3f7a)."
REASON = "Hij viel direct aan (marker 3f7a)."


@pytest.fixture
def context_options() -> dict[str, Any]:
    return {"timezone_id": TIMEZONE}  # the page shows times in the box's zone


async def submit(page: Page, path_end: str) -> None:
    async with page.expect_response(lambda r: r.url.endswith(path_end), timeout=SLOW_MS) as reply:
        await by(page, "report-submit").click()
    assert (await reply.value).status == 200, await (await reply.value).text()


async def test_a_warning_without_a_recording_and_its_correction(
    page: Page, box: WebBox, screens: Screens
) -> None:
    await log_in(page, box)
    await by(page, "nav-reports").click()
    await by(page, "report-warning-new").click()
    form = by(page, "report-form")
    await expect(form).to_have_attribute("data-mode", "warning")
    await expect(by(page, "report-title")).to_have_text("Warning without a recording")
    await expect(by(page, "report-warned-row")).to_be_hidden()
    await expect(by(page, "report-premises-optional")).to_be_hidden()  # strictest: required
    await by(page, "report-submit").click()
    await expect(by(page, "report-error")).to_have_text(
        "Describe what happened. Choose where it happened."
    )
    await by(page, "report-what").fill(WARNING)
    await page.get_by_text("In a home", exact=True).click()
    await expect(by(page, "report-ground-row")).to_be_visible()
    await by(page, "report-submit").click()
    await expect(by(page, "report-error")).to_have_text(
        "Choose on what ground you were in the home or on the premises."
    )
    await page.get_by_text("Consent of the occupant", exact=True).click()
    await screens.shoot(page, "reports-warning")
    await submit(page, "/api/warnings")
    await expect(by(page, "report-done")).to_contain_text("without a GPS position")
    filed = page.locator("[data-testid=report-filed][data-kind=warning]")
    await expect(filed).to_have_count(1)
    await expect(filed).to_contain_text("Warning without a recording")

    await filed.get_by_test_id("report-correct").click()
    await expect(form).to_have_attribute("data-mode", "correction")
    await expect(by(page, "report-hint")).to_contain_text("The first report stays as it is")
    await by(page, "report-what").fill(CORRECTED)
    await page.get_by_text("Other private premises", exact=True).click()
    await page.get_by_text("Consent of the occupant", exact=True).click()
    await by(page, "report-submit").click()
    await expect(by(page, "report-error")).to_have_text("Explain what you correct and why.")
    await by(page, "report-correction-reason").fill(WHY)
    await screens.shoot(page, "reports-correction")
    await submit(page, "/corrections")
    await expect(by(page, "report-done")).to_contain_text("Correction filed.")
    await expect(filed).to_contain_text("1 correction")

    warning_id = await filed.get_attribute("data-recording-id")
    first, later = sorted(
        (r for r in box.filed_reports() if r["recording_id"] == warning_id),
        key=lambda r: r["filed_at_ms"],
    )
    assert (first["entry_kind"], first["what"]) == ("warning", WARNING)
    assert (first["premises"], first["premises_ground"]) == ("home", "consent")
    assert (first["gps_status"], first["position"]) == ("no_gpsd", None)
    entry = box.features().reports.book.get(str(warning_id))
    assert entry is not None
    assert later["corrects_file_id"] == entry.report_file_id
    assert (later["what"], later["correction_reason"]) == (CORRECTED, WHY)
    assert (later["premises"], later["premises_ground"]) == ("private_premises", "consent")
    audited = [e["fields"] for e in box.audit_events() if e["event"] == "report.filed"]
    assert [(f["kind"], f["channel"], f["by"]) for f in audited[-2:]] == [
        ("warning", "web", account_tag("alice")),
        ("correction", "web", account_tag("alice")),
    ]
    roots = [box.config.card_dir, box.config.state_dir]
    assert files_containing(roots, b"marker 3f7a") == []


async def test_a_report_in_dutch_informed_afterwards_in_a_home_with_a_warrant(
    page: Page, box: WebBox
) -> None:
    await log_in(page, box)
    await by(page, "lang-nl").click()
    await by(page, "btn-record-start").click()
    await expect(by(page, "rec-state")).to_have_text("OPNAME LOOPT", timeout=SLOW_MS)
    recording = box.running.service.recording
    assert recording is not None
    await by(page, "btn-record-stop").hover()  # Stop is held, not tapped (docs/webui.md 6.1)
    await page.mouse.down()
    try:
        await expect(by(page, "rec-state")).to_have_text("Stand-by", timeout=SLOW_MS)
    finally:
        await page.mouse.up()
    await by(page, "nav-reports").click()
    item = page.locator(f"[data-testid=report-item][data-recording-id='{recording.recording_id}']")
    await item.click()
    await expect(by(page, "report-title")).to_have_text("Verslag")
    await by(page, "report-what").fill(REPORT)
    await page.get_by_text("Nee", exact=True).click()
    await by(page, "report-reason").fill(REASON)
    await expect(by(page, "report-informed-at-row")).to_be_hidden()
    await page.get_by_text("Ja, verteld", exact=True).click()
    await by(page, "report-submit").click()
    await expect(by(page, "report-error")).to_contain_text(
        "Vul datum en tijd in waarop je het de betrokkene hebt verteld."
    )
    await by(page, "report-informed-at").fill("2026-05-28T14:30")
    await page.get_by_text("In een woning", exact=True).click()
    await page.get_by_text("Machtiging tot binnentreden", exact=True).click()
    await submit(page, f"/api/reports/{recording.recording_id}")
    await expect(by(page, "report-done")).to_contain_text("Verslag vastgelegd.")
    await expect(by(page, "reports-empty")).to_be_visible()

    (report,) = [r for r in box.filed_reports() if r["recording_id"] == recording.recording_id]
    told = datetime(2026, 5, 28, 14, 30, tzinfo=ZoneInfo(TIMEZONE))
    assert (report["warned_beforehand"], report["not_warned_reason"]) == (False, REASON)
    assert report["informed_afterwards"] is True
    assert report["informed_at_ms"] == int(told.timestamp() * 1000)
    assert (report["premises"], report["premises_ground"]) == ("home", "warrant")
