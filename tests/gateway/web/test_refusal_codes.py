"""Every word in the officer's language (issue 16 item 4): each code the box can send to the page
(refusals, 422 fields, pairing and configuration reasons, upload wait reasons, why no uplink
runs) is found in the box's code (api_codes.py, the modules that decide them), and the page has
a text for it in its table and in both languages. A code added to the box without its texts
fails here; the page then shows "refused (code X)" in the officer's language, never the box's
English (browser/test_browser_dutch.py shows that in Chromium)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from tuf.api.exceptions import RepositoryError

from gateway.fleet_refusals import reason_codes, refusal_code
from gateway.pairing import GrantMalformed, RefusedByBackOffice, WrongServerKey
from gateway.pairing_client import (
    AlreadyPairedHere,
    PairingUnreachable,
    officer_reason,
    officer_reasons,
)
from gateway.status_facts import NOT_PAIRED, UPLINK_OFF
from gateway.uplink_from_config import NO_SERVICE_ENDPOINT, PAIRING_UNREADABLE
from gateway.web.status_view import ALERT_CODES
from protocol.pairing_code import CodeFormatError, CodeTypo
from tests.gateway.web.api_codes import error_codes, invalid_fields, unliteral_calls
from transport.wait_reasons import WaitCode

STATIC = Path(__file__).resolve().parents[3] / "gateway" / "web" / "static"
LANGUAGES = ("nl", "en")
HANDLED_BY_STATUS = frozenset({"locked"})  # 423: the page words it with the minutes left
ENTRY = re.compile(r'^\s*("[^"]+"|[a-z_]+): key\("([^"]+)"\),?$', re.MULTILINE)


def js_table(script: str, name: str) -> dict[str, str]:
    """`const NAME = Object.freeze({ code: key("text.key"), ... })` of a page script."""
    text = (STATIC / script).read_text(encoding="utf-8")
    match = re.search(rf"const {name} = Object\.freeze\(\{{(.*?)\n\}}\);", text, re.DOTALL)
    assert match is not None, f"{script} has no table {name}"
    return {code.strip('"'): key for code, key in ENTRY.findall(match.group(1))}


def texts(language: str) -> dict[str, str]:
    data = json.loads((STATIC / "i18n" / f"{language}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def assert_covered(table: dict[str, str], codes: frozenset[str], prefix: str) -> None:
    """Each code has its own entry, `prefix + code`, present in both languages."""
    assert sorted(codes - set(table)) == [], "codes the page has no text for"
    wrong = {code: table[code] for code in codes if table[code] != prefix + code}
    assert wrong == {}
    for language in LANGUAGES:
        missing = sorted(table[code] for code in codes if table[code] not in texts(language))
        assert missing == [], language


def test_the_scan_finds_the_codes_and_fields_of_the_box() -> None:
    """Guards the checks below against a scan that silently finds nothing."""
    assert {
        "card_full",
        "wrong_credentials",
        "pairing_failed",
        "csrf",
        "not_found",
    } <= error_codes()
    assert {"reports_missing", "uplink_not_running", "busy", "locked"} <= error_codes()
    assert {"what", "code", "bodycam_serials", "reason", "warned_beforehand"} <= invalid_fields()


def test_every_refusal_code_is_a_literal_the_scan_can_see() -> None:
    assert unliteral_calls() == ()


def test_every_refusal_code_has_its_text_in_both_languages() -> None:
    codes = error_codes() - HANDLED_BY_STATUS
    assert_covered(js_table("messages.js", "ERROR_TEXTS"), codes, "error.")
    for language in LANGUAGES:
        assert {"error.locked", "error.untranslated"} <= set(texts(language))


def test_every_field_a_422_can_name_has_its_text_in_both_languages() -> None:
    assert_covered(js_table("messages.js", "FIELD_TEXTS"), invalid_fields(), "error.invalid.")


def test_every_pairing_reason_has_its_text_in_both_languages() -> None:
    assert_covered(js_table("messages.js", "PAIR_REASON_TEXTS"), officer_reasons(), "pair.reason.")


@pytest.mark.parametrize(
    "error",
    [
        AlreadyPairedHere("paired"),
        CodeTypo("typo"),
        CodeFormatError("not a code"),
        ValueError("unreadable"),
        WrongServerKey("other key"),
        GrantMalformed("bad grant"),
        PairingUnreachable("down"),
        RefusedByBackOffice("code-expired", "expired", 410),
        RefusedByBackOffice("something-new", "?", 400),
        RuntimeError("anything else"),
    ],
)
def test_every_pairing_failure_gets_one_of_the_known_reasons(error: Exception) -> None:
    assert officer_reason(error) in officer_reasons()


def test_every_bundle_reason_has_its_text_in_both_languages() -> None:
    table = js_table("messages.js", "BUNDLE_REASON_TEXTS")
    assert_covered(table, reason_codes(), "bundle.reason.")
    for language in LANGUAGES:
        assert "bundle.reason.other" in texts(language)


def test_the_api_spec_names_exactly_the_bundle_reasons() -> None:
    """docs/api.yaml's BundleReasonCode (the status's `last_refusal_code`) is reason_codes()."""
    spec = yaml.safe_load((STATIC.parents[2] / "docs" / "api.yaml").read_text(encoding="utf-8"))
    assert set(spec["components"]["schemas"]["BundleReasonCode"]["enum"]) == reason_codes()


def _subclasses(kind: type[Exception]) -> list[type[Exception]]:
    found = []
    for sub in kind.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_repository_fault_the_box_knows_has_a_bundle_reason() -> None:
    import config.fleet_client
    import config.fleet_targets

    del config
    faults = _subclasses(RepositoryError)
    assert len(faults) >= 8
    for fault in faults:
        assert refusal_code(fault.__new__(fault)) in reason_codes(), fault


def test_every_wait_reason_has_its_text_in_both_languages() -> None:
    codes = frozenset(code.value for code in WaitCode)
    assert_covered(js_table("words.js", "WAIT_TEXTS"), codes, "wait.")


def test_every_reason_no_uplink_runs_has_its_text_in_both_languages() -> None:
    states = {NOT_PAIRED, UPLINK_OFF, NO_SERVICE_ENDPOINT, PAIRING_UNREADABLE}
    table = js_table("words.js", "UPLINK_IDLE_TEXTS")
    assert sorted(states - set(table)) == []
    for language in LANGUAGES:
        assert sorted(table[state] for state in states if table[state] not in texts(language)) == []


def test_every_alert_code_the_status_can_raise_has_its_text_in_both_languages() -> None:
    """The alert codes come from the one pure function's rules (status_view.ALERT_CODES); three
    take a camera name or a count and are worded in alerts.js itself."""
    worded_with_a_value = {"camera_down", "camera_refused", "report_missing"}
    table = js_table("alerts.js", "TEXTS")
    assert_covered(table, frozenset(ALERT_CODES) - worded_with_a_value, "alert.")
    for language in LANGUAGES:
        names = {"alert.camera_down", "alert.camera_refused", "alert.report_missing.other"}
        assert names | {"alert.other", "alert.report_missing_unknown"} <= set(texts(language))
