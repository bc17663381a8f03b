"""A real box with its web channel on 127.0.0.1, and Debian's Chromium that trusts exactly its key.

Used by the officer's-page tests (browser/: their conftest.py shares one box and one Chromium)
and the API fuzz (test_api_fuzz.py):

- `web_box(root, hashes)`: `start_box` on a temporary card and state directory with the web
  listener (HTTPS on a free port, no redirect port), the loopback API, one small synthetic camera
  (cheap: 320x180 at 5 fps), a gpsd port nobody listens on, and four accounts: `alice` (officer
  with a service number), `bob` (admin), `carol` (officer, spent by the lockout test) and `dave`
  (officer, alice's partner in a duo patrol).
  `BoxThread` runs the same box on an event loop of its own, for synchronous callers.
- `chromium(pin)`: /usr/bin/chromium through Playwright, trusting the box's self-signed
  certificate by its SPKI pin only (see `chromium`); a missing Chromium fails, never skips.
- `PageWatch`: every console error, page error and Content-Security-Policy violation of a page;
  HTTP errors the test provokes on purpose are allowed by path and status, nothing else is.
- `by`, `open_page`, `try_login`, `log_in`, `hold_stop`: the page's steps every module takes.
- `Screens`: screenshots `<output>/<test>/<screen>-<viewport>.png`, output being
  `$MVB_TEST_OUTPUT` or `tests/output/webui/` of the checkout.

Everything binds to and connects to loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from backoffice.keys import create_recording_keys
from common.passwords import hash_password
from config.local import LocalConfig, load_config
from gateway.officer.desks import OfficerDesks
from gateway.run import RunningBox, start_box, stop_box
from storage.envelope import RecipientPrivateKey
from storage.reader import read_evidence
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config

REPO = Path(__file__).resolve().parents[3]
OUTPUT_ENV = "MVB_TEST_OUTPUT"
DEFAULT_OUTPUT = REPO / "tests" / "output" / "webui"

CHROMIUM = Path("/usr/bin/chromium")
# Quiet, deterministic Chromium: no sandbox (CI runs as root), no GPU, no QUIC, and none of the
# background traffic (updates, sync, first-run pages) a test must not depend on or cause.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

ACCOUNTS = {
    # name: (role, officer_id, password)
    "alice": ("officer", "BOA-1234", "correct horse battery"),
    "bob": ("admin", "", "bob's own secret"),
    "carol": ("officer", "BOA-5678", "carol's staple gun"),
    "dave": ("officer", "BOA-2468", "dave's patrol partner"),  # alice's partner in a duo
}
CAMERA = "dashcam"
MIN_PNG_BYTES = 4096  # a rendered screen is tens of KB; a blank or broken capture is far less
# A box round trip that may include PBKDF2 (login) or sealing a file: generous, never asserted
# as a duration, only a bound that keeps a broken box from hanging the run.
SLOW_MS = 15_000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Viewport:
    name: str
    width: int
    height: int

    def size(self) -> ViewportSize:
        return {"width": self.width, "height": self.height}


PHONE = Viewport("phone", 390, 844)
NARROW_PHONE = Viewport("phone360", 360, 780)  # the contract's narrowest width (webui.md 6)
TABLET = Viewport("tablet", 1024, 768)


def password_of(name: str) -> str:
    return ACCOUNTS[name][2]


def account_hashes() -> dict[str, str]:
    """PBKDF2 hashes at the schema's minimum cost (~0.2-0.5 s each on this machine)."""
    return {name: hash_password(password) for name, (_, _, password) in ACCOUNTS.items()}


def accounts_toml(hashes: dict[str, str]) -> str:
    tables = []
    for name, (role, officer_id, _) in ACCOUNTS.items():
        officer = f'officer_id = "{officer_id}"\n' if officer_id else ""
        tables.append(
            f'[[accounts]]\nname = "{name}"\nrole = "{role}"\n'
            f'password_hash = "{hashes[name]}"\n{officer}'
        )
    return "\n".join(tables)


def box_config(root: Path, hashes: dict[str, str]) -> tuple[Path, Path]:
    """The box's file and the back office's private recording key. The file: web channel on a
    free loopback port, the officer's trigger without post-record (a stop is at once standby), a
    short pre-record, one small synthetic camera."""
    private, public = create_recording_keys(root / "keys")
    config = write_box_config(
        root / "box",
        public,
        storage_lines=f"""
[recording]
prerecord_s = 5
postrecord_s = 0
[triggers.officer]
postrecord_s = 0
may_stop = true
[gps]
port = {free_port()}
[api]
port = {free_port()}
[web]
host = "127.0.0.1"
https_port = {free_port()}
http_port = 0
[webui]
max_failed_logins = 5
lockout_s = 900
session_idle_s = 600
session_max_s = 3600
[[cameras]]
name = "{CAMERA}"
kind = "synthetic"
serial = "DC-1"
width = 320
height = 180
fps = 5
bitrate_bps = 200000
{accounts_toml(hashes)}
""",
    )
    return config, private


def spki_pin(cert_path: Path) -> str:
    """Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (Chromium's pin form)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@dataclass
class WebBox:
    """A running box and how to reach it: `base` is its web origin, `local_base` its loopback
    API, `cert_path` the self-signed certificate it made at start."""

    running: RunningBox
    config: LocalConfig
    base: str  # https://localhost:PORT
    local_base: str  # http://127.0.0.1:PORT
    cert_path: Path
    recipient_key_path: Path  # the back office's private key: only it reads the evidence

    def local_client(self) -> aiohttp.ClientSession:
        """The loopback channel (no authentication: processes on the box)."""
        return aiohttp.ClientSession(base_url=self.local_base)

    def features(self) -> OfficerDesks:
        return self.running.officer

    def recorder_state(self) -> str:
        return self.running.service.recorder.state.value

    def audit_text(self) -> str:
        return (self.config.state_dir / "audit.jsonl").read_text()

    def audit_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_text().splitlines()]

    def audit_kinds(self) -> list[str]:
        return [str(entry["event"]) for entry in self.audit_events()]

    def decrypted_recordings(self, recording_id: str) -> list[list[dict[str, Any]]]:
        """The metadata of each sealed file of one recording, read with the back office's key."""
        key = RecipientPrivateKey.load(self.recipient_key_path)
        found = []
        for path in sorted(self.running.box.store.layout.sealed_files()):
            with path.open("rb") as handle:
                evidence = read_evidence(handle, key, media_out=io.BytesIO())
            if evidence.header.recording_id.hex() == recording_id:
                found.append(list(evidence.metadata))
        return found

    def filed_reports(self) -> list[dict[str, Any]]:
        """The report metadata of every sealed file on the card, read with the back office's
        private key (the box itself cannot: it holds only the public one)."""
        key = RecipientPrivateKey.load(self.recipient_key_path)
        found = []
        for path in sorted(self.running.box.store.layout.sealed_files()):
            with path.open("rb") as handle:
                evidence = read_evidence(handle, key, media_out=io.BytesIO())
            found += [m for m in evidence.metadata if m.get("type") == "report"]
        return found


@contextlib.asynccontextmanager
async def web_box(root: Path, hashes: dict[str, str]) -> AsyncIterator[WebBox]:
    config_path, private_key = box_config(root, hashes)
    config = load_config(config_path)
    running = await start_box(config)
    try:
        web = running.web
        assert web is not None
        assert web.state == "listening", web.reason
        yield WebBox(
            running,
            config,
            f"https://localhost:{config.web.https_port}",
            f"http://{config.api.host}:{config.api.port}",
            config.state_dir / "web" / "web.crt",
            private_key,
        )
    finally:
        await stop_box(running)


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll until `condition` holds; fail naming `what` after `timeout_s` (never a timed assert:
    the deadline only keeps a broken box from hanging the run)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def settle(box: WebBox) -> None:
    """Back to a quiet box between tests: no recording, no shift, an empty report book. Through
    the loopback API, as `mvb` would: a shift of the box's own officer is started if none runs,
    so that ending it (acknowledging what is missing) clears the book."""
    async with box.local_client() as local:
        if box.recorder_state() == "recording":
            await local.post("/api/record/stop")
        await wait_until(lambda: box.recorder_state() == "standby", "the recorder to stand by")
        book = box.features().reports.book
        await wait_until(
            lambda: all(e.duration_s is not None for e in book.missing()),
            "every recording to be sealed",
        )
        if box.features().shift.shift is None:
            reply = await local.post("/api/shift/start", json={"officer_id": ACCOUNTS["alice"][1]})
            assert reply.status == 200, await reply.text()
        reply = await local.post("/api/shift/end", json={"acknowledge_missing_reports": True})
        assert reply.status == 200, await reply.text()


# -- the browser -----------------------------------------------------------------------------


def require_chromium() -> Path:
    """Debian's Chromium; its absence is a broken test machine, so the test fails (no skip)."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs it (Debian package chromium). "
            "Never `playwright install`: the tests drive Debian's browser.",
            pytrace=False,
        )
    return CHROMIUM


@contextlib.asynccontextmanager
async def chromium(pin: str) -> AsyncIterator[Browser]:
    """Chromium trusting one key. `--ignore-certificate-errors-spki-list` accepts a certificate
    chain only if it contains that exact SubjectPublicKeyInfo (SHA-256, base64): the box's own
    self-signed key, as a tablet told to trust exactly its fingerprint (webui.md 1.3). Every
    other certificate is still checked, unlike `ignore_https_errors`, which would accept any."""
    executable = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable),
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pin}"],
        )
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def unpinned_chromium() -> AsyncIterator[Browser]:
    """Chromium without the pin: what any other browser would make of the box's certificate."""
    executable = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


# Runs before any script of the page (Playwright injects it outside the page's CSP): every
# violation is also said on the console, where PageWatch collects it.
CSP_REPORTER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}`);
});
"""
_HTTP_ERROR = re.compile(r"the server responded with a status of (\d{3})")


@dataclass
class PageWatch:
    """What went wrong on a page. A failed request shows on Chromium's console as "Failed to
    load resource ... status of N"; those a test provokes are allowed by (path, status), e.g.
    the page's own GET /api/session before login (401 means: show the login screen)."""

    allowed: set[tuple[str, int]] = field(default_factory=lambda: {("/api/session", 401)})
    problems: list[str] = field(default_factory=list)

    def allow(self, path: str, status: int) -> None:
        self.allowed.add((path, status))

    async def attach(self, page: Page) -> None:
        await page.add_init_script(CSP_REPORTER)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        status = _HTTP_ERROR.search(message.text)
        url = str(message.location.get("url", ""))
        path = re.sub(r"^https?://[^/]+", "", url).split("?", 1)[0]
        if status is not None and (path, int(status.group(1))) in self.allowed:
            return
        self.problems.append(f"console error: {message.text} ({url})")

    def assert_clean(self) -> None:
        assert self.problems == [], "\n".join(self.problems)


def output_root() -> Path:
    configured = os.environ.get(OUTPUT_ENV)
    return Path(configured) if configured else DEFAULT_OUTPUT


def dir_name_of(node_name: str) -> str:
    """A test's name as a directory name (parametrised ids have brackets and more)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", node_name).strip("_")


class Screens:
    """Screenshots of one test: `<output>/<test>/<screen>-<viewport>.png` (the test's directory
    is emptied first, so a shot that was not taken in this run cannot pass for one)."""

    def __init__(self, test_name: str) -> None:
        self.directory = output_root() / dir_name_of(test_name)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)

    async def shoot(
        self, page: Page, screen: str, viewports: tuple[Viewport, ...] = (PHONE, TABLET)
    ) -> list[Path]:
        """The whole page at each width, then the viewport it had before. The window is made as
        tall as the page instead of using Playwright's full-page capture, which paints the fixed
        top bar and navigation in the middle of the picture."""
        before = page.viewport_size
        paths = []
        for viewport in viewports:
            await page.set_viewport_size(viewport.size())
            height = await page.evaluate("() => document.documentElement.scrollHeight")
            await page.set_viewport_size(
                {"width": viewport.width, "height": max(viewport.height, int(height))}
            )
            path = self.directory / f"{screen}-{viewport.name}.png"
            await page.screenshot(path=str(path))
            assert path.stat().st_size > MIN_PNG_BYTES, f"{path} is nearly empty"
            paths.append(path)
        if before is not None:
            await page.set_viewport_size({"width": before["width"], "height": before["height"]})
        return paths


# -- the page's common steps --------------------------------------------------------------------


def by(page: Page, test_id: str) -> Locator:
    return page.get_by_test_id(test_id)


async def open_page(page: Page, box: WebBox) -> None:
    await page.goto(box.base + "/")
    await expect(by(page, "screen-login")).to_be_visible()


async def try_login(page: Page, name: str, password: str) -> int:
    """Submit the login form once; the box's HTTP status for it."""
    await by(page, "login-username").fill(name)
    await by(page, "login-password").fill(password)
    async with page.expect_response(
        lambda r: r.url.endswith("/api/session") and r.request.method == "POST", timeout=SLOW_MS
    ) as answer:
        await by(page, "login-submit").click()
    return (await answer.value).status


async def log_in(page: Page, box: WebBox, name: str = "alice") -> None:
    """Open the page, sign in as `name` (200), and wait for the overview in stand-by."""
    await open_page(page, box)
    assert await try_login(page, name, password_of(name)) == 200
    await expect(by(page, "screen-overview")).to_be_visible(timeout=SLOW_MS)
    await expect(by(page, "rec-state")).to_have_text("Standby", timeout=SLOW_MS)


async def hold_stop(page: Page) -> None:
    """Stop is held, not tapped (docs/webui.md 6.1): press, wait until the page shows stand-by,
    let go."""
    await by(page, "btn-record-stop").hover()
    await page.mouse.down()
    try:
        await expect(by(page, "rec-state")).to_have_text("Standby", timeout=SLOW_MS)
    finally:
        await page.mouse.up()


# -- a box for synchronous callers -----------------------------------------------------------


class BoxThread:
    """`web_box` on an event loop of its own thread, so that synchronous clients (schemathesis'
    requests) can call it while it serves. `call` runs a coroutine on the box's loop; every read
    of the box's state goes through it."""

    def __init__(self, root: Path, hashes: dict[str, str]) -> None:
        self._root = root
        self._hashes = hashes
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="box", daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self.box: WebBox | None = None

    def __enter__(self) -> WebBox:
        self._thread.start()
        self.box = self.call(self._stack.enter_async_context(web_box(self._root, self._hashes)))
        return self.box

    def __exit__(self, *_exc: object) -> None:
        try:
            self.call(self._stack.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()

    def call(self, work: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout_s)

    def read(self, read: Callable[[], T]) -> T:
        """`read()` on the box's loop (between two of its steps, never in the middle of one)."""

        async def on_loop() -> T:
            return read()

        return self.call(on_loop())
