"""One real box and one Debian Chromium for every officer's-page module in this package
(browser_rig.py has the rig's parts; test_browser*.py use it).

The box (`box`) and the browser (`browser`) start once for the package and stop after its last
module; every test gets a fresh browser context (cookies, localStorage) from `page`, and after
each test the box is brought back to standby without a shift (`settle`) and the page must have
logged no console error and no Content-Security-Policy violation (`PageWatch`). What a module
changes on the box beyond that (a lockout of `carol`, the web access clock) it undoes or keeps
to accounts and ids of its own, so the modules do not depend on their order.

The tests run on the package's event loop: each module says `loop_scope="package"`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from tests.gateway.web.browser_rig import (
    CAMERA,
    PHONE,
    PageWatch,
    Screens,
    WebBox,
    account_hashes,
    chromium,
    settle,
    spki_pin,
    wait_until,
    web_box,
)


@pytest.fixture(scope="package")
def hashes() -> dict[str, str]:
    return account_hashes()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def box(
    tmp_path_factory: pytest.TempPathFactory, hashes: dict[str, str]
) -> AsyncIterator[WebBox]:
    async with web_box(tmp_path_factory.mktemp("browser-box"), hashes) as running:
        camera = running.running.service.cameras[CAMERA]
        await wait_until(lambda: camera.ring.gops > 0, "the camera to deliver")
        yield running


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def browser(box: WebBox) -> AsyncIterator[Browser]:
    async with chromium(spki_pin(box.cert_path)) as launched:
        yield launched


@pytest.fixture
def watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def context_options() -> dict[str, Any]:
    """Options of each test's browser context beyond the phone's width and English (a module
    overrides this fixture, e.g. for a time zone)."""
    return {}


@pytest_asyncio.fixture(loop_scope="package")
async def page(
    browser: Browser, box: WebBox, watch: PageWatch, context_options: dict[str, Any]
) -> AsyncIterator[Page]:
    """A fresh context per test (no cookie, no stored language), English by the browser's
    language; afterwards the box is settled and the page must have said nothing wrong."""
    context = await browser.new_context(
        **{"viewport": PHONE.size(), "locale": "en-GB", **context_options},
        ignore_https_errors=False,
    )
    opened = await context.new_page()
    await watch.attach(opened)
    try:
        yield opened
    finally:
        await context.close()
        await settle(box)
    watch.assert_clean()


@pytest.fixture
def screens(request: pytest.FixtureRequest) -> Screens:
    return Screens(request.node.name)
