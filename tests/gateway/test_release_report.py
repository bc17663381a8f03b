"""The box tells of the last release switch once (gateway/release_report.py): an audit entry for
each outcome, a sticky alarm after a rollback that a later good switch clears."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from common.alarms import Alarms
from gateway.release_report import ALARM, release_root_of, report_switch_outcome
from gateway.release_switch import Outcome, Phase, SwitchState
from gateway.release_switch_io import STATE_FILE, state_to_json

Entries = list[tuple[str, dict[str, str | bool]]]


def recorder(entries: Entries) -> Callable[..., None]:
    def audit(event: str, /, **fields: str | bool) -> None:
        entries.append((event, fields))

    return audit


def write_outcome(root: Path, last: Outcome, serial: int, good: str, version: str) -> None:
    state = SwitchState(
        phase=Phase.IDLE,
        good=good,
        last=last,
        last_version=version,
        last_reason="camera_not_delivering:bodycam" if last is Outcome.ROLLED_BACK else "",
        serial=serial,
    )
    (root / STATE_FILE).write_bytes(state_to_json(state))


def test_each_outcome_is_audited_once_and_a_rollback_is_alarmed(tmp_path: Path) -> None:
    root, state_dir = tmp_path / "opt", tmp_path / "state"
    root.mkdir()
    state_dir.mkdir()
    entries: Entries = []
    audit = recorder(entries)
    alarms = Alarms(state_dir / "alarms.json")
    report_switch_outcome(root, state_dir, audit, alarms)
    assert entries == [], "no switch.json: nothing to tell"
    write_outcome(root, Outcome.ROLLED_BACK, 1, good="1.0.0", version="1.0.2")
    for _ in range(2):  # the second start of the box tells nothing new
        report_switch_outcome(root, state_dir, audit, alarms)
    assert entries == [
        (
            "release.rolled_back",
            {"version": "1.0.2", "running": "1.0.0", "reason": "camera_not_delivering:bodycam"},
        )
    ]
    alarms.flush()
    assert "1.0.2" in Alarms.load(state_dir, None)[ALARM], "sticky: survives a restart"
    write_outcome(root, Outcome.SWITCHED, 2, good="1.0.1", version="1.0.1")
    report_switch_outcome(root, state_dir, audit, alarms)
    assert entries[-1] == ("release.switched", {"version": "1.0.1"})
    assert ALARM not in alarms
    alarms.close()


def test_an_unreadable_switch_state_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b'{"format": 9}')
    entries: Entries = []
    alarms = Alarms()
    report_switch_outcome(tmp_path, tmp_path, recorder(entries), alarms)
    assert (entries, alarms.snapshot()) == ([], {})
    alarms.close()


def test_the_release_root_is_where_the_current_link_started_the_box() -> None:
    assert release_root_of("/opt/mvb/current/bin/mvb") == Path("/opt/mvb")
    assert release_root_of("/work/checkout/.venv/bin/mvb") is None
    assert release_root_of("mvb") is None
