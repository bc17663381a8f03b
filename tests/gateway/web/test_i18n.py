"""The page's translations (docs/webui.md 6): Dutch and English say the same things.

Every visible string of the page comes from gateway/web/static/i18n/<language>.json. Keys are
written as literals (app code: the first argument of `t`, `tn` or `key`; index.html: the
`data-i18n` and `data-i18n-label` attributes), so this test can check, without a JavaScript
runtime, that both files hold the same keys with the same placeholders, that every key the page
uses exists, that every key in the files is used, and that every alert code of the contract
has its text.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STATIC = ROOT / "gateway" / "web" / "static"
LANGUAGES = ("nl", "en")
PLURAL_FORMS = ("one", "other")  # what `tn` picks from for both languages (Intl.PluralRules)

# `t("key"`, `key("key"` and `tn("key"`, also with the literal on the next line.
KEY_CALL = re.compile(r"\b(t|tn|key)\(\s*\"([^\"\n]+)\"")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
I18N_ATTRIBUTES = frozenset({"data-i18n", "data-i18n-label"})
# A row of the alert table in docs/webui.md section 3: | `code` | critical | ...
ALERT_ROW = re.compile(r"^\| `([a-z_]+)` \| (?:critical|warning) \|", re.MULTILINE)


def load(language: str) -> dict[str, str]:
    data = json.loads((STATIC / "i18n" / f"{language}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


class _I18nAttributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        del tag
        for name, value in attrs:
            if name in I18N_ATTRIBUTES and value is not None:
                self.keys.add(value)


def html_keys() -> set[str]:
    parser = _I18nAttributes()
    parser.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    return parser.keys


def script_keys() -> set[str]:
    """Keys the app code uses; a `tn` key stands for its plural forms."""
    keys: set[str] = set()
    for script in sorted(STATIC.glob("*.js")):
        for function, name in KEY_CALL.findall(script.read_text(encoding="utf-8")):
            if function == "tn":
                keys.update(f"{name}.{form}" for form in PLURAL_FORMS)
            else:
                keys.add(name)
    return keys


def used_keys() -> set[str]:
    return html_keys() | script_keys()


def test_both_languages_have_the_same_keys() -> None:
    dutch, english = load("nl"), load("en")
    assert sorted(set(dutch) ^ set(english)) == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_value_is_non_empty_text(language: str) -> None:
    bad = [k for k, v in load(language).items() if not isinstance(v, str) or not v.strip()]
    assert bad == []


def test_both_languages_fill_the_same_placeholders() -> None:
    dutch, english = load("nl"), load("en")
    differing = [
        name
        for name in english
        if set(PLACEHOLDER.findall(english[name])) != set(PLACEHOLDER.findall(dutch[name]))
    ]
    assert differing == []


def test_the_page_is_translated_not_just_copied() -> None:
    """Most sentences differ between the languages (names, units and codes may not)."""
    dutch, english = load("nl"), load("en")
    same = [name for name in english if english[name] == dutch[name]]
    assert len(same) < len(english) // 10, same


def test_the_scan_finds_the_keys_of_html_and_code() -> None:
    """Guards the checks below against a scan that silently finds nothing."""
    assert {"rec.start", "login.password", "nav.reports"} <= html_keys()
    assert {"alert.pin_mismatch", "rec.state.recording", "error.wrong_credentials"} <= script_keys()
    assert {"alert.report_missing.one", "alert.report_missing.other"} <= script_keys()


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_key_the_page_uses_exists(language: str) -> None:
    assert sorted(used_keys() - set(load(language))) == []


def test_every_key_in_the_files_is_used() -> None:
    """A key nobody uses is a typo's twin or a leftover: either way a text that never shows."""
    assert sorted(set(load("en")) - used_keys()) == []


def test_every_alert_code_of_the_contract_has_its_text() -> None:
    contract = (ROOT / "docs" / "webui.md").read_text(encoding="utf-8")
    codes = ALERT_ROW.findall(contract)
    assert len(codes) >= 9  # the table of docs/webui.md section 3
    english = load("en")
    missing = [
        code
        for code in codes
        if f"alert.{code}" not in english and f"alert.{code}.other" not in english
    ]
    assert missing == []


def test_the_alert_texts_say_what_the_contract_says() -> None:
    """The English alert texts are the contract's sentences (placeholders for X and N)."""
    english = load("en")
    assert english["alert.pin_mismatch"] == (
        "The connection to the back office is not trusted. Evidence stays on the box. "
        "Tell the fleet admin."
    )
    assert english["alert.camera_down"] == (
        "Camera {camera} sends no video. Check its cable and power."
    )
    assert english["alert.report_missing.other"] == (
        "{count} recordings still need a report before the end of your shift."
    )
