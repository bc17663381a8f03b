"""The pure rules of releases as targets (config/release_targets.py, docs/releases.md 7): the
version order a downgrade is judged by, the path and signed custom fields of a release, and
the `[release]` pin of a fleet document (config/fleet_schema.py)."""

from __future__ import annotations

import pytest

from config.fleet_schema import release_pin, unknown_fleet_keys
from config.local import ConfigError
from config.release_targets import (
    PinVerdict,
    ReleaseMismatch,
    SwitchHistory,
    judge_pin,
    parse_release_custom,
    release_target_path,
    version_key,
)

ASCENDING = [
    "0.9", "1.0.dev1", "1.0a1.dev2", "1.0a1", "1.0a2", "1.0b1", "1.0rc1", "1.0", "1.0.post1",
    "1.0.1", "1.1", "1.10", "2",
]  # fmt: skip
DIGEST = "ab" * 32


def test_versions_are_ordered_as_pep_440_orders_them() -> None:
    assert sorted(ASCENDING, key=version_key) == ASCENDING
    assert version_key("1.0") == version_key("1.0.0")


@pytest.mark.parametrize(
    ("pinned", "running", "verdict"),
    [
        ("1.0.1", "1.0.0", PinVerdict.UPGRADE),
        ("1.0.0", "1.0", PinVerdict.CURRENT),
        ("1.0.0", "1.0.1", PinVerdict.DOWNGRADE),
        ("1.0.0rc1", "1.0.0", PinVerdict.DOWNGRADE),
        ("1.10.0", "1.9.9", PinVerdict.UPGRADE),
    ],
)
def test_a_pin_is_judged_against_the_running_version(
    pinned: str, running: str, verdict: PinVerdict
) -> None:
    assert judge_pin(pinned, running, SwitchHistory()) is verdict


NONE = SwitchHistory()


@pytest.mark.parametrize(
    ("pinned", "running", "history", "verdict"),
    [
        # the release this box ran before: a fleet's rollback, a switch back with no fetch
        ("1.0.0", "1.0.1", SwitchHistory(previous="1.0.0"), PinVerdict.SWITCH_BACK),
        ("1.0", "1.0.1", SwitchHistory(previous="1.0.0"), PinVerdict.SWITCH_BACK),  # PEP 440 equal
        # any other lower pin is a downgrade, whatever the box ran before
        ("0.9.0", "1.0.1", SwitchHistory(previous="1.0.0"), PinVerdict.DOWNGRADE),
        ("1.0.0", "1.0.1", NONE, PinVerdict.DOWNGRADE),
        (
            "1.0.0",
            "1.0.1",
            SwitchHistory(previous="1.0.1"),
            PinVerdict.DOWNGRADE,
        ),  # after a rollback
        ("1.0.0", "1.0.1", SwitchHistory(previous="garbage"), PinVerdict.DOWNGRADE),
        # a higher pin that is the box's previous is still just an upgrade (fetched, verified)
        ("1.0.2", "1.0.1", SwitchHistory(previous="1.0.2"), PinVerdict.UPGRADE),
        # the box's own health check rolled this one back: not fetched again in a loop
        ("1.0.2", "1.0.1", SwitchHistory(rolled_back="1.0.2"), PinVerdict.FAILED_HEALTH),
        ("1.0.2", "1.0.1", SwitchHistory("1.0.0", "1.0.2"), PinVerdict.FAILED_HEALTH),
        ("1.0.0", "1.0.1", SwitchHistory("1.0.0", "1.0.0"), PinVerdict.FAILED_HEALTH),
        # another rolled-back version leaves this pin alone; the running one is current
        ("1.0.3", "1.0.1", SwitchHistory(rolled_back="1.0.2"), PinVerdict.UPGRADE),
        ("1.0.1", "1.0.1", SwitchHistory("1.0.0", "1.0.1"), PinVerdict.CURRENT),
    ],
)
def test_a_lower_pin_is_taken_only_as_a_switch_back_and_a_failed_one_not_again(
    pinned: str, running: str, history: SwitchHistory, verdict: PinVerdict
) -> None:
    assert judge_pin(pinned, running, history) is verdict


@pytest.mark.parametrize("bad", ["", "v1.0", "1.0-beta", "latest", "1..0", "1.0 "])
def test_what_is_not_a_version_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="version"):
        version_key(bad)


def test_the_custom_fields_must_be_exactly_the_releases_and_agree_with_the_path() -> None:
    path = release_target_path("1.0.1", "x86_64")
    assert path == "releases/mvb-1.0.1-x86_64.sealed"
    custom = {"version": "1.0.1", "platform": "x86_64", "manifest_sha256": DIGEST}
    assert parse_release_custom(path, custom).manifest_sha256 == DIGEST
    for wrong in (
        {**custom, "version": "1.0.2"},  # another version than the path says
        {**custom, "platform": "aarch64"},
        {**custom, "manifest_sha256": "AB" * 32},
        {**custom, "extra": 1},
        {k: v for k, v in custom.items() if k != "platform"},
        None,
    ):
        with pytest.raises(ReleaseMismatch):
            parse_release_custom(path, wrong)


def test_a_fleet_document_pins_a_release_by_version() -> None:
    assert release_pin('[release]\nversion = "1.2.0"\n', "doc") == "1.2.0"
    assert release_pin("[recording]\nprerecord_s = 30\n", "doc") is None
    assert unknown_fleet_keys({"release": {"version": "1.2.0"}}) == []
    assert unknown_fleet_keys({"release": {"channel": "beta"}}) == ["release.channel"]
    for bad in ('[release]\nversion = "latest"\n', "[release]\nversion = 1\n", 'release = "1"\n'):
        with pytest.raises(ConfigError, match="release"):
            release_pin(bad, "doc")
