"""Trusted time's shell: the boot identity and clock it reads, the file it keeps across a
service restart (and only its floor across a reboot), the conflict alarm and the audit log."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from pathlib import Path

from common.alarms import Alarms
from storage.trusted_time import Verdict
from storage.trusted_time_io import (
    CONFLICT_ALARM,
    STATE_FILE,
    TrustedClock,
    boottime_ms,
    read_boot_id,
)

T0 = 1_800_000_000_000
DAY_MS = 86_400_000


class Audit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, object]]] = []

    def __call__(self, event: str, /, **fields: object) -> None:
        self.entries.append((event, fields))


class Mono:
    def __init__(self) -> None:
        self.ms = 3_600_000

    def __call__(self) -> int:
        return self.ms


def test_the_kernel_gives_a_boot_id_and_a_clock_that_counts_since_boot() -> None:
    boot_id = read_boot_id()
    assert boot_id == read_boot_id()
    assert len(boot_id) == 36  # a UUID
    first = boottime_ms()
    assert 0 < first <= boottime_ms()
    assert first >= time.monotonic_ns() // 1_000_000  # suspend included, so never behind


def test_an_unreadable_boot_id_is_this_process_alone(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    one, two = read_boot_id(missing), read_boot_id(missing)
    assert one.startswith("process-")
    assert one != two


def test_a_restart_in_the_same_boot_keeps_trusted_time(tmp_path: Path) -> None:
    mono = Mono()
    clock = TrustedClock.open(tmp_path, boot_id="boot-a", mono_ms=mono)
    clock.observe_gps(T0, mono.ms)
    assert clock.needs_save
    clock.save()
    assert not clock.needs_save
    mono.ms += 60_000
    restarted = TrustedClock.open(tmp_path, boot_id="boot-a", mono_ms=mono)
    now = restarted.now()
    assert now.known
    assert now.source == "gps"
    assert now.low_ms is not None
    assert now.low_ms <= T0 + 60_000 <= (now.high_ms or 0)
    stored = json.loads((tmp_path / STATE_FILE).read_text())
    assert stored["boot_id"] == "boot-a"


def test_a_power_cut_keeps_only_the_floor(tmp_path: Path) -> None:
    mono = Mono()
    clock = TrustedClock.open(tmp_path, boot_id="boot-a", mono_ms=mono)
    clock.observe_gps(T0, mono.ms)
    clock.passed(clock.now())
    clock.save()
    mono.ms = 5_000  # the clock restarted with the new boot
    rebooted = TrustedClock.open(tmp_path, boot_id="boot-b", mono_ms=mono)
    now = rebooted.now()
    assert not now.known
    assert now.source == "floor"
    assert now.low_ms is not None
    assert T0 - 10 <= now.low_ms <= T0
    assert rebooted.stamp()[1] is None  # a recording now has no trusted time


def test_an_unreadable_file_means_nothing_known(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    clock = TrustedClock.open(tmp_path, boot_id="boot-a", mono_ms=Mono())
    assert not clock.now().known


def test_a_conflict_raises_an_alarm_that_is_audited_and_cleared(tmp_path: Path) -> None:
    mono = Mono()
    audit = Audit()
    alarms = Alarms(None, audit)
    clock = TrustedClock.open(tmp_path, boot_id="boot-a", mono_ms=mono, alarms=alarms, audit=audit)
    assert clock.observe_gps(T0 + 40 * DAY_MS, mono.ms) is Verdict.FIRST  # GPS 40 days ahead
    sent = formatdate((T0 + 100) // 1000, usegmt=True)
    mono.ms += 100
    clock.observe_server_date(sent, 0.05)  # the back office says otherwise, and wins
    assert CONFLICT_ALARM in alarms
    assert alarms[CONFLICT_ALARM].startswith("GPS time and the back office's time disagree by")
    assert clock.now().source == "back_office"
    clock.save()
    restarted = TrustedClock.open(tmp_path, boot_id="boot-a", mono_ms=mono, alarms=Alarms())
    assert restarted.state.conflict_ms is not None  # a restart does not forget it

    mono.ms += 1000
    assert clock.observe_gps(T0 + 1100, mono.ms) is Verdict.FIRST  # GPS agrees again
    assert CONFLICT_ALARM not in alarms
    clock.close()
    alarms.close()
    # Two writers (the alarms', trusted time's): each in order, together in any order.
    assert [e for e, _ in audit.entries if e.startswith("alarm.")] == [
        "alarm.raised",
        "alarm.cleared",
    ]
    assert [e for e, _ in audit.entries if e.startswith("time.")] == [
        "time.anchored",
        "time.anchored",
        "time.conflict",
        "time.anchored",
    ]
    anchored = [fields for event, fields in audit.entries if event == "time.anchored"]
    assert anchored[0]["source"] == "gps"
    assert anchored[1]["source"] == "back_office"
    conflict = next(fields for event, fields in audit.entries if event == "time.conflict")
    assert conflict["source"] == "back_office"
    assert int(str(conflict["apart_s"])) > 39 * 86_400


def test_the_audit_says_how_far_off_the_wall_clock_was() -> None:
    audit = Audit()
    clock = TrustedClock.open(
        None, boot_id="boot-a", mono_ms=Mono(), wall_ms=lambda: T0 - 40 * DAY_MS, audit=audit
    )
    clock.observe_gps(T0, 3_600_000)
    clock.close()
    ((event, fields),) = audit.entries
    assert event == "time.anchored"
    assert fields["wall_clock_off_s"] == -40 * 86_400 - 1
    assert fields["doubt_ms"] == 2000


def test_a_bad_date_from_the_uplink_is_ignored_and_never_raises() -> None:
    clock = TrustedClock.open(None, boot_id="boot-a", mono_ms=Mono())
    for date in (None, "", "garbage", "Sun, 06 Nov 1994 08:49:37 GMT"):  # the last: before 2025
        clock.observe_server_date(date, 0.1)
    clock.observe_server_date(formatdate(T0 // 1000, usegmt=True), float("nan"))
    assert not clock.now().known


def test_a_command_reads_trusted_time_and_never_writes_it(tmp_path: Path) -> None:
    mono = Mono()
    service = TrustedClock.open(tmp_path, boot_id="boot-a", mono_ms=mono)
    service.observe_gps(T0, mono.ms)
    service.save()
    before = (tmp_path / STATE_FILE).read_bytes()
    command = TrustedClock.open(tmp_path, boot_id="boot-a", mono_ms=mono)
    command.passed(command.now())
    command.close()
    assert (tmp_path / STATE_FILE).read_bytes() == before


def test_only_a_change_worth_it_asks_for_a_write_at_once(tmp_path: Path) -> None:
    """A fix a second must not become a write a second (the card wears): a first anchor asks
    for a write now, a refresh waits for the retention timer's save."""
    mono = Mono()
    clock = TrustedClock.open(tmp_path, boot_id="boot-a", mono_ms=mono)
    clock.observe_gps(T0, mono.ms)
    assert clock.needs_save
    clock.save()
    mono.ms += 1000
    clock.observe_gps(T0 + 1000, mono.ms)
    assert not clock.needs_save
    assert clock.dirty
    clock.save()
    assert not clock.dirty


def test_a_lasting_conflict_is_audited_once(tmp_path: Path) -> None:
    """A receiver stuck 40 days ahead offers a fix every second: one conflict episode."""
    mono = Mono()
    audit = Audit()
    alarms = Alarms(None, audit)
    clock = TrustedClock.open(tmp_path, boot_id="boot-a", mono_ms=mono, alarms=alarms, audit=audit)
    clock.observe_server_date(formatdate(T0 // 1000, usegmt=True), 0.05)
    for second in range(1, 30):
        mono.ms += 1000
        verdict = clock.observe_gps(T0 + 40 * DAY_MS + second * 1000, mono.ms)
        assert verdict is Verdict.REFUSED
    clock.close()
    alarms.close()
    assert [e for e, _ in audit.entries if e == "time.conflict"] == ["time.conflict"]
    assert [e for e, _ in audit.entries if e == "alarm.raised"] == ["alarm.raised"]
    assert alarms[CONFLICT_ALARM].startswith("GPS time is ")
