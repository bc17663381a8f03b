"""The box's alarms (common/alarms.py): one owner, audited once per episode, sticky ones kept
across a restart, callers never blocked by the audit log or the disk."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from common.alarms import ALARMS_FILE, MAX_MESSAGE_CHARS, Alarms


class Audit:
    """An audit sink that remembers what it was given (and can be made slow or failing)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, str | bool]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, event: str, /, **fields: str | bool) -> None:
        self.gate.wait(10)
        if self.fail:
            raise OSError(5, "Input/output error")
        self.entries.append((event, dict(fields)))


def test_an_alarm_is_audited_once_per_episode(tmp_path: Path) -> None:
    audit = Audit()
    alarms = Alarms.load(tmp_path, audit)
    alarms.raise_("card_full", "recording refused: card full")
    alarms.raise_("card_full", "recording refused: card full")
    alarms.raise_("card_full", "recording refused: card full (0 bytes free)")
    alarms.clear("card_full")
    alarms.clear("card_full")
    alarms.raise_("card_full", "again")
    alarms.close()
    assert audit.entries == [
        ("alarm.raised", {"code": "card_full"}),
        ("alarm.cleared", {"code": "card_full"}),
        ("alarm.raised", {"code": "card_full"}),
    ]
    assert alarms.snapshot() == {"card_full": "again"}


def test_reading_a_raised_alarm(tmp_path: Path) -> None:
    alarms = Alarms()
    alarms.raise_("camera_dashcam", "x" * (MAX_MESSAGE_CHARS + 50))
    assert "camera_dashcam" in alarms
    assert "card_full" not in alarms
    assert alarms["camera_dashcam"] == "x" * MAX_MESSAGE_CHARS
    assert alarms.get("card_full", "none") == "none"
    assert len(alarms) == 1
    assert alarms.codes() == ["camera_dashcam"]
    with pytest.raises(KeyError):
        _ = alarms["card_full"]
    alarms.close()


def test_sticky_alarms_survive_a_restart_in_the_same_episode(tmp_path: Path) -> None:
    audit = Audit()
    alarms = Alarms.load(tmp_path, audit)
    alarms.raise_("fleet_config", "fleet configuration refused: bad signature", sticky=True)
    alarms.raise_("clock_offset", "the clock is 40 s off")
    alarms.close()

    again = Alarms.load(tmp_path, audit)
    assert again.snapshot() == {"fleet_config": "fleet configuration refused: bad signature"}
    again.raise_("fleet_config", "fleet configuration refused: bad signature", sticky=True)
    again.clear("fleet_config")
    again.close()
    assert [e for e, f in audit.entries if f["code"] == "fleet_config"] == [
        "alarm.raised",
        "alarm.cleared",
    ]
    assert Alarms.load(tmp_path, None).snapshot() == {}


def test_the_file_holds_the_sticky_set_after_the_last_change(tmp_path: Path) -> None:
    alarms = Alarms.load(tmp_path, None)
    for index in range(50):
        alarms.raise_(f"uplink_file_{index}", f"blocked {index}", sticky=True)
        if index % 2:
            alarms.clear(f"uplink_file_{index}")
    alarms.flush()
    stored = json.loads((tmp_path / ALARMS_FILE).read_text())
    assert stored["sticky"] == {f"uplink_file_{i}": f"blocked {i}" for i in range(0, 50, 2)}
    alarms.close()


def test_a_slow_audit_log_never_blocks_the_caller(tmp_path: Path) -> None:
    audit = Audit()
    audit.gate.clear()  # the audit log hangs (an fsync stall)
    alarms = Alarms.load(tmp_path, audit)
    alarms.raise_("card_full", "full", sticky=True)  # returns although the writer waits
    alarms.clear("card_full")
    assert alarms.snapshot() == {}
    assert audit.entries == []
    audit.gate.set()
    alarms.close()
    assert [event for event, _ in audit.entries] == ["alarm.raised", "alarm.cleared"]


def test_a_failing_audit_log_keeps_the_alarm_and_the_writer(tmp_path: Path) -> None:
    audit = Audit()
    audit.fail = True
    alarms = Alarms.load(tmp_path, audit)
    alarms.raise_("card_read_only", "the card turned read-only")
    alarms.flush()
    assert "card_read_only" in alarms
    audit.fail = False
    alarms.raise_("camera_bodycam", "no packets")
    alarms.close()
    assert audit.entries == [("alarm.raised", {"code": "camera_bodycam"})]


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"version": 2, "sticky": {}}', b'{"version": 1, "sticky": {"a": 1}}'],
)
def test_a_damaged_file_carries_nothing_over(tmp_path: Path, content: bytes) -> None:
    (tmp_path / ALARMS_FILE).write_bytes(content)
    alarms = Alarms.load(tmp_path, None)
    assert alarms.snapshot() == {}
    alarms.raise_("fleet_config", "refused", sticky=True)
    alarms.close()
    assert Alarms.load(tmp_path, None).snapshot() == {"fleet_config": "refused"}


def test_raising_from_many_threads_keeps_one_episode_each(tmp_path: Path) -> None:
    audit = Audit()
    alarms = Alarms.load(tmp_path, audit)

    def churn(code: str) -> None:
        for _ in range(200):
            alarms.raise_(code, "up")

    threads = [threading.Thread(target=churn, args=(f"camera_{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alarms.close()
    assert sorted(f["code"] for _, f in audit.entries) == sorted(f"camera_{i}" for i in range(8))
