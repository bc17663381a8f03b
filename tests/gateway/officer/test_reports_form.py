"""The report's new members (RULES R7, R8; docs/webui.md 4): informed afterwards, premises and
their ground, warnings without a recording, corrections, and the municipality's rules for which
members are required. The pure core, no box."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import config
from config.fleet_schema import apply_fleet_document
from config.local import ConfigError, parse_config
from gateway.caller import RefusalKind, Refused
from gateway.officer.reports import BookEntry, entry_metadata
from gateway.officer.reports_form import (
    MOMENT_MAX_MS,
    MOMENT_MIN_MS,
    Premises,
    ReportRules,
    parse_correction,
    parse_report,
    parse_warning,
    report_rules,
)

WHAT = "Verbal threat at the market square."
REASON = "He came at the officer at once."
AT_MS = 1_780_000_000_000
STRICT = ReportRules()
LENIENT = ReportRules(require_informed_afterwards=False, require_premises=False)
WARNED = {"what": WHAT, "warned_beforehand": True, "premises": "public"}
NOT_WARNED = {
    "what": WHAT,
    "warned_beforehand": False,
    "not_warned_reason": REASON,
    "informed_afterwards": True,
    "informed_at_ms": AT_MS,
    "premises": "home",
    "premises_ground": "consent",
}


def refused_field(call: Any) -> str:
    with pytest.raises(Refused) as raised:
        call()
    assert (raised.value.kind, raised.value.code) == (RefusalKind.INVALID, "invalid")
    field: str = raised.value.extra["field"]
    return field


def test_a_full_report_keeps_every_member() -> None:
    report = parse_report(NOT_WARNED, STRICT)
    assert report.fields() == {
        "what": WHAT,
        "warned_beforehand": False,
        "not_warned_reason": REASON,
        "informed_afterwards": True,
        "informed_at_ms": AT_MS,
        "premises": "home",
        "premises_ground": "consent",
    }
    not_informed = {**NOT_WARNED, "informed_afterwards": False, "informed_at_ms": None}
    assert parse_report(not_informed, STRICT).informed_afterwards is False


def drop(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in names}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # informed afterwards: required when not warned (H2O art. 2.4), with its moment
        (drop(NOT_WARNED, "informed_afterwards", "informed_at_ms"), "informed_afterwards"),
        ({**NOT_WARNED, "informed_afterwards": "yes"}, "informed_afterwards"),
        (drop(NOT_WARNED, "informed_at_ms"), "informed_at_ms"),
        ({**NOT_WARNED, "informed_at_ms": True}, "informed_at_ms"),
        ({**NOT_WARNED, "informed_at_ms": 12.5}, "informed_at_ms"),
        ({**NOT_WARNED, "informed_at_ms": MOMENT_MIN_MS - 1}, "informed_at_ms"),
        ({**NOT_WARNED, "informed_at_ms": MOMENT_MAX_MS}, "informed_at_ms"),
        ({**NOT_WARNED, "informed_afterwards": False}, "informed_at_ms"),
        ({**WARNED, "informed_afterwards": True}, "informed_afterwards"),
        ({**WARNED, "informed_at_ms": AT_MS}, "informed_at_ms"),
        # premises (Borsele 3.2.2): where, and in a home or private premises on what ground
        (drop(WARNED, "premises"), "premises"),
        ({**WARNED, "premises": "street"}, "premises"),
        ({**WARNED, "premises": "public", "premises_ground": "consent"}, "premises_ground"),
        (drop(NOT_WARNED, "premises_ground"), "premises_ground"),
        ({**NOT_WARNED, "premises_ground": "asked nicely"}, "premises_ground"),
        (
            {**NOT_WARNED, "premises": "private_premises", "premises_ground": None},
            "premises_ground",
        ),
    ],
)
def test_a_report_missing_or_misusing_a_member_names_it(body: dict[str, Any], field: str) -> None:
    assert refused_field(lambda: parse_report(body, STRICT)) == field


def test_lenient_rules_make_members_optional_but_still_check_them() -> None:
    bare = drop(NOT_WARNED, "informed_afterwards", "informed_at_ms", "premises", "premises_ground")
    report = parse_report(bare, LENIENT)
    assert (report.informed_afterwards, report.place) == (None, Premises())
    assert refused_field(lambda: parse_report(bare, STRICT)) == "informed_afterwards"
    only_informed = ReportRules(require_informed_afterwards=True, require_premises=False)
    assert refused_field(lambda: parse_report(bare, only_informed)) == "informed_afterwards"
    only_premises = ReportRules(require_informed_afterwards=False, require_premises=True)
    assert refused_field(lambda: parse_report(bare, only_premises)) == "premises"
    # given although not required: checked all the same
    wrong = {**bare, "premises": "home"}
    assert refused_field(lambda: parse_report(wrong, LENIENT)) == "premises_ground"
    wrong = {**bare, "informed_afterwards": True}
    assert refused_field(lambda: parse_report(wrong, LENIENT)) == "informed_at_ms"
    assert parse_report(drop(WARNED, "premises"), LENIENT).place == Premises()


def test_a_warning_holds_what_and_where_nothing_else() -> None:
    warning = parse_warning(
        {"what": WHAT, "premises": "private_premises", "premises_ground": "warrant"}, STRICT
    )
    assert warning.fields() == {
        "what": WHAT,
        "premises": "private_premises",
        "premises_ground": "warrant",
    }
    assert refused_field(lambda: parse_warning({"what": WHAT}, STRICT)) == "premises"
    assert parse_warning({"what": WHAT}, LENIENT).place == Premises()
    assert refused_field(lambda: parse_warning({"what": " ", "premises": "public"})) == "what"
    body = {**WARNED}
    assert refused_field(lambda: parse_warning(body, STRICT)) == "warned_beforehand"


def test_a_correction_needs_its_reason_and_a_whole_report() -> None:
    reason, corrected = parse_correction(
        {**NOT_WARNED, "correction_reason": "wrong ground"}, "recording", STRICT
    )
    assert reason == "wrong ground"
    assert corrected.fields()["premises_ground"] == "consent"
    assert refused_field(lambda: parse_correction(NOT_WARNED, "recording", STRICT)) == (
        "correction_reason"
    )
    partial = {"correction_reason": "typo", "premises": "public"}
    assert refused_field(lambda: parse_correction(partial, "recording", STRICT)) == "what"
    reason, warning = parse_correction(
        {"correction_reason": "typo", "what": WHAT, "premises": "public"}, "warning", STRICT
    )
    assert warning.fields()["what"] == WHAT
    with_report_member = {"correction_reason": "x", "what": WHAT, "warned_beforehand": True}
    assert refused_field(lambda: parse_correction(with_report_member, "warning", LENIENT)) == (
        "warned_beforehand"
    )


def test_the_sealed_metadata_names_the_entry_and_links_a_correction() -> None:
    rid = "ab" * 16
    entry = BookEntry(rid, 1000, "officer", 9.0, 2000, "recording", "cd" * 16, 0)
    fields = parse_report(WARNED, STRICT).fields()
    first = entry_metadata(entry, fields, officer_id="B-7", filed_at_ms=2000)
    assert first["entry_kind"] == "recording"
    assert (first["recording_started_at_ms"], first["trigger_source"]) == (1000, "officer")
    assert first["corrects_file_id"] is None
    link = {"corrects_file_id": "cd" * 16, "correction_no": 1, "correction_reason": "typo"}
    later = entry_metadata(entry, fields, officer_id="B-7", filed_at_ms=3000, correction=link)
    assert later["corrects_file_id"] == "cd" * 16
    assert later["correction_no"] == 1
    warning = BookEntry("ef" * 16, 5000, "", None, 5000, "warning", "aa" * 16)
    sealed = entry_metadata(warning, {"what": WHAT}, officer_id=None, filed_at_ms=5000)
    assert (sealed["entry_kind"], sealed["warned_at_ms"]) == ("warning", 5000)
    assert "trigger_source" not in sealed


def test_the_rules_come_from_the_reports_section() -> None:
    assert report_rules(parse_config({"box": {"recipient_keys": ["k"]}}, "t")) == STRICT
    raw = {
        "box": {"recipient_keys": ["k"]},
        "reports": {"require_informed_afterwards": False, "require_premises": False},
    }
    assert report_rules(parse_config(raw, "t")) == LENIENT
    assert LENIENT.required() == []
    assert STRICT.required() == ["informed_afterwards", "premises"]
    with pytest.raises(ConfigError, match=r"reports\.require_premises"):
        parse_config({"box": {"recipient_keys": ["k"]}, "reports": {"require_premises": 1}}, "t")
    with pytest.raises(ConfigError, match=r"reports\.require_place"):
        parse_config({"box": {"recipient_keys": ["k"]}, "reports": {"require_place": True}}, "t")


@pytest.mark.parametrize(
    ("example", "rules"),
    [
        ("borsele.toml", ReportRules(require_informed_afterwards=False, require_premises=True)),
        ("h2o.toml", ReportRules(require_informed_afterwards=True, require_premises=False)),
        ("westerkwartier.toml", ReportRules(require_informed_afterwards=False)),
    ],
)
def test_each_municipality_sets_its_required_members_by_fleet_document(
    example: str, rules: ReportRules
) -> None:
    local = parse_config({"box": {"recipient_keys": ["k"]}}, "box.toml")
    text = (Path(config.__file__).parent / "examples" / example).read_text()
    assert report_rules(apply_fleet_document(local, text, example)) == rules
    with pytest.raises(ConfigError, match=r"reports\.require_place is not a fleet setting"):
        apply_fleet_document(local, "[reports]\nrequire_place = true\n", "fleet")
