"""[webui] hold_to_stop_ms (issue 16; docs/webui.md 6.1): how long the officer holds the page's
Stop. A default that is a deliberate hold, a range, and a fleet document may change it."""

from __future__ import annotations

from typing import Any

import pytest

from config.fleet_schema import apply_fleet_document
from config.local import ConfigError, parse_config

MINIMAL: dict[str, Any] = {"box": {"recipient_keys": ["recording.pub"]}}


def test_the_default_is_a_deliberate_hold() -> None:
    assert parse_config(MINIMAL, "box.toml").webui.hold_to_stop_ms == 1500


@pytest.mark.parametrize("value", [0, 800, 10_000])
def test_a_hold_in_range_is_taken_and_0_means_a_tap(value: int) -> None:
    config = parse_config({**MINIMAL, "webui": {"hold_to_stop_ms": value}}, "box.toml")
    assert config.webui.hold_to_stop_ms == value


@pytest.mark.parametrize("value", [-1, 10_001, "1500", True])
def test_a_hold_out_of_range_or_not_a_number_is_refused_by_name(value: object) -> None:
    with pytest.raises(ConfigError, match="hold_to_stop_ms"):
        parse_config({**MINIMAL, "webui": {"hold_to_stop_ms": value}}, "box.toml")


def test_a_fleet_document_sets_it() -> None:
    local = parse_config(MINIMAL, "box.toml")
    effective = apply_fleet_document(local, "[webui]\nhold_to_stop_ms = 3000\n", "fleet")
    assert effective.webui.hold_to_stop_ms == 3000
