"""The page's static files keep the rules the CSP and RULES S2 set (docs/webui.md 1.2, 6).

The box serves `Content-Security-Policy: default-src 'none'; script-src 'self'; style-src
'self'; ...`: an inline script, an event-handler attribute or a style attribute would simply
not work there, and markup built from strings would be an injection path for data from the
box. S2: the page never shows footage (no video, audio, canvas, thumbnails or downloads).
These tests read the files as text and parse the HTML; they need no browser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STATIC = ROOT / "gateway" / "web" / "static"
SCRIPTS = sorted(STATIC.glob("*.js"))
TEXT_FILES = sorted(
    p for p in STATIC.rglob("*") if p.suffix in {".html", ".js", ".css", ".json", ".svg"}
)

MEDIA_TAGS = frozenset(
    {"video", "audio", "source", "track", "canvas", "picture", "object", "embed", "iframe"}
)
URL_ATTRIBUTES = frozenset({"src", "href", "action", "formaction", "poster", "srcset", "data"})
# Namespace names are identifiers that look like URLs; nothing fetches them.
XML_NAMESPACES = frozenset({"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"})
FORBIDDEN_IN_SCRIPTS = {
    "innerHTML": re.compile(r"\binnerHTML\b"),
    "outerHTML": re.compile(r"\bouterHTML\b"),
    "insertAdjacentHTML": re.compile(r"\binsertAdjacentHTML\b"),
    "document.write": re.compile(r"\bdocument\.write(ln)?\b"),
    "eval": re.compile(r"\beval\s*\("),
    "new Function": re.compile(r"\bnew\s+Function\b"),
    "timer with a string": re.compile(r"\bset(Timeout|Interval)\(\s*[\"'`]"),
    "javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
    "inline style": re.compile(r"\.style\b|setAttribute\(\s*[\"']style[\"']"),
    "a media element": re.compile(
        r"createElement\(\s*[\"'](video|audio|img|source|canvas|iframe|object|embed)[\"']"
    ),
    "a media object URL": re.compile(r"\bcreateObjectURL\b|\bMediaSource\b"),
    "a download link": re.compile(r"\bdownload\b"),
    "a cookie": re.compile(r"\bdocument\.cookie\b"),
    "session storage": re.compile(r"\bsessionStorage\b"),
    "a dynamic import": re.compile(r"\bimport\s*\("),
}
IMPORT = re.compile(r"^\s*import\b[^;]*?\bfrom\s+\"([^\"]+)\"", re.MULTILINE | re.DOTALL)
ABSOLUTE_URL = re.compile(r"https?://[^\s\"'<>)]+", re.IGNORECASE)


@dataclass
class PageScan(HTMLParser):
    """What index.html holds that the rules are about."""

    scripts: list[dict[str, str | None]] = field(default_factory=list)
    script_bodies: list[str] = field(default_factory=list)
    handlers: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    media: list[str] = field(default_factory=list)
    images: list[str | None] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    testids: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    interactive_without_testid: list[str] = field(default_factory=list)
    _in_script: bool = False

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append(f"<{tag} {name}>")
            if name == "style":
                self.styles.append(f"<{tag} style>")
            if name in URL_ATTRIBUTES and value is not None:
                self.urls.append(value)
            if name == "download":
                self.downloads.append(tag)
        if tag == "style":
            self.styles.append("<style>")
        if tag in MEDIA_TAGS:
            self.media.append(tag)
        if tag == "img":
            self.images.append(values.get("src"))
        if tag == "script":
            self.scripts.append(values)
            self._in_script = True
        if "data-testid" in values:
            self.testids.append(str(values["data-testid"]))
        if "id" in values:
            self.ids.append(str(values["id"]))
        if tag in {"button", "input", "textarea", "select", "a"} and "data-testid" not in values:
            self.interactive_without_testid.append(f"<{tag} id={values.get('id')}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_bodies.append(data)


@pytest.fixture(scope="module")
def page() -> PageScan:
    scan = PageScan()
    scan.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    scan.close()
    return scan


def test_the_page_has_its_files() -> None:
    for name in ("index.html", "app.js", "app.css", "i18n/nl.json", "i18n/en.json"):
        assert (STATIC / name).is_file(), name


def test_scripts_are_files_of_the_box_never_inline(page: PageScan) -> None:
    assert page.scripts, "index.html loads no script"
    for script in page.scripts:
        src = script.get("src")
        assert src is not None, script
        assert src.startswith("/static/"), src
        assert (STATIC / src.removeprefix("/static/")).is_file(), src
    assert [body for body in page.script_bodies if body.strip()] == []


def test_no_event_handler_attributes(page: PageScan) -> None:
    assert page.handlers == []


def test_no_inline_styles(page: PageScan) -> None:
    assert page.styles == []


def test_no_footage_in_the_page(page: PageScan) -> None:
    """S2: no video or audio element, no picture but the page's own SVG icon, no download."""
    assert page.media == []
    assert page.downloads == []
    for src in page.images:
        assert src is not None
        assert re.fullmatch(r"/static/[a-z0-9_-]+\.svg", src), src


def test_links_and_sources_stay_on_the_box(page: PageScan) -> None:
    for url in page.urls:
        local = url.startswith(("/", "#")) and not url.startswith("//")
        assert local, url
        if url.startswith("/static/"):
            assert (STATIC / url.removeprefix("/static/")).is_file(), url


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: str(p.relative_to(STATIC)))
def test_no_external_urls(path: Path) -> None:
    urls = set(ABSOLUTE_URL.findall(path.read_text(encoding="utf-8"))) - XML_NAMESPACES
    assert sorted(urls) == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_build_no_markup_and_run_no_strings(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    found = [name for name, pattern in FORBIDDEN_IN_SCRIPTS.items() if pattern.search(text)]
    assert found == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_import_only_the_page_own_modules(script: Path) -> None:
    """No third-party code and no CDN: every import is a sibling file that exists."""
    for target in IMPORT.findall(script.read_text(encoding="utf-8")):
        assert re.fullmatch(r"\./[a-z0-9_]+\.js", target), target
        assert (STATIC / target.removeprefix("./")).is_file(), target


def test_the_session_token_is_kept_in_memory_only() -> None:
    """localStorage holds the language choice and nothing else: only i18n.js may touch it."""
    storage = re.compile(r"\blocalStorage\s*\.")
    users = [p.name for p in SCRIPTS if storage.search(p.read_text(encoding="utf-8"))]
    assert users == ["i18n.js"]
    assert "csrf" not in (STATIC / "i18n.js").read_text(encoding="utf-8").lower()


def test_the_stylesheet_loads_nothing() -> None:
    css = (STATIC / "app.css").read_text(encoding="utf-8")
    assert "@import" not in css
    assert "url(" not in css


def test_every_interactive_element_has_a_unique_test_id(page: PageScan) -> None:
    assert page.interactive_without_testid == []
    assert len(page.testids) == len(set(page.testids))
    assert len(page.ids) == len(set(page.ids))


def test_the_test_ids_are_documented_at_the_top(page: PageScan) -> None:
    """Browser tests find elements by these ids: the comment block at the top lists them."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    comment = html[html.index("<!--") : html.index("-->")]
    undocumented = [t for t in page.testids if not re.search(rf"\b{re.escape(t)}\b", comment)]
    # the eight serial inputs are documented as the range shift-serial-0 .. shift-serial-7
    assert [t for t in undocumented if not re.fullmatch(r"shift-serial-[1-6]", t)] == []
