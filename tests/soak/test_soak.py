"""The whole-box soak, short version (issues 7, 12): at least 20 power cuts of the real `mvb run`
among WiFi flaps, a 200 kbit/s WiFi, an LTE budget running out, back-office restarts and the
box's wall clock stepped 40 days forward and back; then every file the audit
log says was recorded is at the back office, decrypts and verifies, the card is empty and the
audit chain verifies from its first entry to its last. `make soak` runs the long version.

Every power cut is a SIGKILL plus a labdisk cut (issue 14): the box's card and state directory
live on a labdisk, in strict POSIX mode unless MVB_SOAK_POWER says `ext4` (or `none`: SIGKILL
only); the long runs cover both modes (docs/soak.md).

Also here: the script and the oracle on their own (fast), so that a soak that passes is known
to be able to fail.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from labdisk.durability import Mode
from tests.soak import soak_rig
from tests.soak.oracle import AuditFacts, StoredFile, find_problems, media_span_ns, totals
from tests.soak.script import (
    BACK_OFFICE_CRASH_CYCLE,
    BACK_OFFICE_RESTART_CYCLE,
    CLOCK_STEP_EVERY,
    CLOCK_STEP_FIRST_CYCLE,
    CLOCK_STEPS,
    LTE_EPISODE_CYCLE,
    BackOfficeFault,
    CycleScript,
    KillPhase,
    Wifi,
)
from tests.soak.soak_rig import run_soak
from tests.soak.soak_settings import CELLULAR_LINKS, CLASSES_BY_SOURCE, SoakSettings
from tests.tls_helpers import TestPki

SHORT_SOAK_KILLS = 22


def soak_power() -> Mode | None:
    """MVB_SOAK_POWER: strict (the default), ext4, or none (SIGKILL only)."""
    name = os.environ.get("MVB_SOAK_POWER", "strict")
    if name not in ("strict", "ext4", "none"):
        raise ValueError(f"MVB_SOAK_POWER={name!r}: strict, ext4 or none")
    return None if name == "none" else "strict" if name == "strict" else "ext4"


def soak_seed() -> int:
    """MVB_SOAK_SEED replays a run; otherwise every run draws a new script (printed)."""
    fixed = os.environ.get("MVB_SOAK_SEED")
    return int(fixed) if fixed else random.SystemRandom().randrange(1 << 31)


@pytest.mark.slow
@pytest.mark.root
async def test_short_soak_loses_nothing(tmp_path: Path, pki: TestPki) -> None:
    settings = SoakSettings(seed=soak_seed(), min_kills=SHORT_SOAK_KILLS, power=soak_power())
    report = await run_soak(settings, tmp_path / "soak", pki)
    print(report.summary())
    replay = f"(replay: MVB_SOAK_SEED={settings.seed} MVB_SOAK_POWER={settings.power or 'none'})"
    assert report.problems == [], f"{report.summary()}\n{replay}"
    stats, got = report.stats, report.totals
    assert sum(stats.kills.values()) >= 20, replay
    if settings.power is not None:
        assert stats.disk_cuts == sum(stats.kills.values()), "every SIGKILL is a labdisk cut"
        assert stats.disk_bytes_lost > 0, "the cuts must throw away what was not durable"
    assert {KillPhase.RECORDING, KillPhase.UPLOAD, KillPhase.IDLE} <= set(stats.kills), replay
    assert stats.back_office_restarts >= 2, replay
    assert stats.back_office_crashes >= 1, replay
    assert stats.lte_budget_used_up_seen, replay
    assert stats.lte_p0_after_budget, replay
    assert got.interrupted_files >= 1, f"no power cut interrupted a recording {replay}"
    assert {"+40d", "-40d"} <= set(stats.clock_steps), replay
    assert got.recorded_ns == got.arrived_ns > 0, replay


# -- the script -----------------------------------------------------------------------------------


def test_script_is_a_function_of_its_seed() -> None:
    first, again = CycleScript(7), CycleScript(7)
    assert [first.cycle(i) for i in range(30)] == [again.cycle(i) for i in range(30)]


@pytest.mark.parametrize("seed", [0, 1, 2026, 99991])
def test_script_kills_in_every_phase_and_schedules_every_fault(seed: int) -> None:
    script = CycleScript(seed)
    cycles = [script.cycle(i) for i in range(SHORT_SOAK_KILLS)]
    for block in range(SHORT_SOAK_KILLS // 3):
        three = cycles[block * 3 : block * 3 + 3]
        if not any(c.lte_episode for c in three):
            assert {c.kill_phase for c in three} == set(KillPhase)
    episode = cycles[LTE_EPISODE_CYCLE]
    assert episode.lte_episode
    assert episode.wifi is Wifi.DOWN
    assert episode.trigger == "officer"
    assert cycles[BACK_OFFICE_RESTART_CYCLE].back_office is BackOfficeFault.RESTART
    faults = [c.back_office for c in cycles]
    assert faults.count(BackOfficeFault.CRASH) == 1
    assert faults[BACK_OFFICE_CRASH_CYCLE] is BackOfficeFault.CRASH


def test_script_steps_the_clock_forward_true_back_true_on_schedule() -> None:
    script = CycleScript(5)
    steps = {i: c.clock_step for i in range(40) if (c := script.cycle(i)).clock_step}
    first = CLOCK_STEP_FIRST_CYCLE
    assert list(steps) == list(range(first, 40, CLOCK_STEP_EVERY))
    assert list(steps.values())[: len(CLOCK_STEPS)] == list(CLOCK_STEPS)
    assert {"+40d", "-40d"} <= set(list(steps.values())[:SHORT_SOAK_KILLS])


def test_script_has_slow_wifi_cycles_now_and_then() -> None:
    script = CycleScript(11)
    assert Wifi.SLOW in {script.cycle(i).wifi for i in range(60)}


def test_script_refuses_cycles_out_of_order() -> None:
    with pytest.raises(ValueError, match="in order"):
        CycleScript(1).cycle(3)


# -- the oracle -----------------------------------------------------------------------------------

SHA_A = "a" * 64
SHA_B = "b" * 64


def audit(*events: tuple[str, dict[str, object]]) -> AuditFacts:
    facts = AuditFacts()
    for event, fields in events:
        facts.note(event, fields)
    return facts


def stored(file_id: str, sha256: str, recording: str = "r1", **changes: object) -> StoredFile:
    fields: dict[str, object] = {
        "file_id": file_id,
        "recording_id": recording,
        "size_bytes": 100,
        "sha256_hex": sha256,
        "interrupted_at_chunk": None,
        "signature_checked": False,
        "segments": 2,
        "media_ns": 2_000_000_000,
    }
    fields.update(changes)
    return StoredFile(**fields)  # type: ignore[arg-type]


def uploaded(file_id: str, sha256: str, link: str = "wifi") -> list[tuple[str, dict[str, object]]]:
    return [
        ("storage.file_attested", {"file_id": file_id, "sha256": sha256}),
        ("uplink.uploaded", {"file_id": file_id, "link": link, "transport": "https"}),
        ("storage.file_deleted", {"file_id": file_id, "recording_id": "r1", "reason": "x"}),
    ]


def problems(facts: AuditFacts, holdings: dict[str, StoredFile]) -> list[str]:
    return find_problems(facts, holdings, CLASSES_BY_SOURCE, CELLULAR_LINKS)


def sealed(file_id: str, sha256: str, recording: str = "r1") -> tuple[str, dict[str, object]]:
    fields = {"file_id": file_id, "recording_id": recording, "size_bytes": 100, "sha256": sha256}
    return ("storage.file_sealed", fields)


def test_oracle_accepts_a_complete_back_office() -> None:
    facts = audit(
        ("storage.recording_started", {"recording_id": "r1", "trigger_source": "officer"}),
        sealed("f1", SHA_A),
        *uploaded("f1", SHA_A),
        (
            "storage.recording_interrupted",
            {"file_id": "f2", "recording_id": "r1", "interrupted_at_chunk": 3, "torn_bytes": 9},
        ),
        *uploaded("f2", SHA_B),
    )
    holdings = {
        "f1": stored("f1", SHA_A),
        "f2": stored("f2", SHA_B, interrupted_at_chunk=3, signature_checked=True),
    }
    assert problems(facts, holdings) == []
    summed = totals(facts, holdings)
    assert (summed.recorded_files, summed.interrupted_files) == (2, 1)
    assert summed.recorded_ns == summed.arrived_ns == 4_000_000_000


def test_oracle_names_a_missing_file_other_bytes_and_an_unaudited_arrival() -> None:
    facts = audit(sealed("f1", SHA_A), *uploaded("f1", SHA_A), sealed("f2", SHA_A))
    holdings = {"f1": stored("f1", SHA_B), "f3": stored("f3", SHA_A)}
    found = problems(facts, holdings)
    assert any("f1" in p and "other bytes" in p for p in found)
    assert any("f2" in p and "not at the back office" in p for p in found)
    assert any("f3" in p and "never names it as recorded" in p for p in found)


def test_oracle_wants_attestation_deletion_and_a_signed_power_cut() -> None:
    facts = audit(
        (
            "storage.recording_interrupted",
            {"file_id": "f1", "recording_id": "r1", "interrupted_at_chunk": 3, "torn_bytes": 0},
        ),
    )
    found = problems(facts, {"f1": stored("f1", SHA_A, interrupted_at_chunk=2)})
    assert any("no audited attestation" in p for p in found)
    assert any("deletion from the card is not audited" in p for p in found)
    assert any("interrupted at chunk 2 at the back office, 3 per the audit log" in p for p in found)
    assert any("device's signature" in p for p in found)


def test_oracle_refuses_routine_files_over_cellular_and_trouble_events() -> None:
    facts = audit(
        ("storage.recording_started", {"recording_id": "r1", "trigger_source": "patrol"}),
        ("storage.recording_started", {"recording_id": "r2", "trigger_source": "patrol"}),
        ("storage.recording_flagged", {"recording_id": "r2", "files": 1}),
        sealed("f1", SHA_A),
        *uploaded("f1", SHA_A, link="lte"),
        sealed("f2", SHA_B, recording="r2"),
        *uploaded("f2", SHA_B, link="lte"),
        ("uplink.upload_blocked", {"file_id": "f9", "link": "wifi", "reason": "HostileServer"}),
    )
    holdings = {"f1": stored("f1", SHA_A), "f2": stored("f2", SHA_B, recording="r2")}
    found = problems(facts, holdings)
    assert [p for p in found if "cellular" in p] == [
        "file f1 (routine, P2) went over cellular link lte"
    ]
    assert any(p.startswith("uplink.upload_blocked") for p in found)


def test_oracle_counts_a_file_recorded_twice() -> None:
    completed_other = {"file_id": "f1", "chunks": 2, "sha256": SHA_B}
    facts = audit(sealed("f1", SHA_A), ("storage.seal_completed", completed_other))
    assert any("became evidence twice" in p for p in facts.troubles)
    facts = audit(sealed("f1", SHA_A), sealed("f1", SHA_A))
    assert any("became evidence twice" in p for p in facts.troubles)


def test_oracle_accepts_a_seal_recovery_completed_after_its_audit() -> None:
    """A cut between the seal's audit entry and its rename: recovery completes the same bytes."""
    completed = {"file_id": "f1", "chunks": 2, "sha256": SHA_A}
    facts = audit(sealed("f1", SHA_A), ("storage.seal_completed", completed))
    assert facts.troubles == []
    assert facts.recorded["f1"].how == "sealed"


def test_media_time_sums_the_segments_only() -> None:
    metadata: list[dict[str, object]] = [
        {"type": "recording"},
        {"type": "segment", "start_mono_ns": 0, "end_mono_ns": 1_500_000_000},
        {"type": "gps"},
        {"type": "segment", "start_mono_ns": 2_000_000_000, "end_mono_ns": 2_900_000_000},
    ]
    assert media_span_ns(metadata) == (2, 2_400_000_000)


def test_the_log_check_catches_errors_in_both_log_formats(tmp_path: Path) -> None:
    log = tmp_path / "box.log"
    log.write_text(
        "level=info logger=gateway.gps msg=connected\n"
        'level=error logger=transport.uplink msg="uplink round failed" exc="Traceback ..."\n'
        "2026-11-23 08:00:00,000 ERROR backoffice.server boom\n"
        "level=warning logger=gateway.run msg=slow\n"
    )
    errors = soak_rig._logged_errors(log)
    assert len(errors) == 2
    assert any("uplink round failed" in e for e in errors)
    assert any("backoffice.server boom" in e for e in errors)
