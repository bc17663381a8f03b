"""The soak's script: what each cycle of the box's life does, drawn from one seeded RNG. Pure.

A cycle is one life of `mvb run` between two power cuts: start, a trigger, some recording, maybe
a stop, then a SIGKILL at the cycle's kill phase (while recording, while uploading, while idle).
Around it the weather: WiFi up, flapping, slow (a 200 kbit/s hotspot) or gone (LTE only); now
and then the back office goes away (SIGTERM, or once a SIGKILL) and comes back on the same port
and store; and now and then the box's wall clock is stepped while it runs (a box without an RTC
battery, a wrong NTP answer, a technician setting it right).

Invariants of `CycleScript` (for any seed):
- the kill phases rotate, in a seeded order, so every block of three cycles kills once in each;
- cycle LTE_EPISODE_CYCLE is the LTE budget episode: WiFi gone, a P1 recording until the LTE
  budget is used up, then a crash (P0) that still goes out over LTE;
- the back office restarts (SIGTERM) in cycle BACK_OFFICE_RESTART_CYCLE and crashes (SIGKILL)
  in cycle BACK_OFFICE_CRASH_CYCLE, and again every BACK_OFFICE_CRASH_EVERY cycles after it;
- from cycle CLOCK_STEP_FIRST_CYCLE on, every CLOCK_STEP_EVERY cycles the box's wall clock is
  stepped to the next offset of CLOCK_STEPS (forward 40 days, back to true, back 40 days, true
  again, ...); the offset stays through power cuts until the next step, as a wrong RTC would;
- the same seed gives the same cycles (the timing of the processes themselves is not scripted).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

LTE_EPISODE_CYCLE = 2
BACK_OFFICE_RESTART_CYCLE = 4
BACK_OFFICE_CRASH_CYCLE = 7
BACK_OFFICE_CRASH_EVERY = 50
BACK_OFFICE_RESTART_CHANCE = 0.12
TRIGGER_WEIGHTS = {"officer": 0.5, "patrol": 0.3, "crash": 0.2}
"""Trigger sources: the officer (P1), a routine patrol trigger (P2), a crash (P0)."""
FLAG_CHANCE = 0.25  # an officer's recording flagged as an incident (P0)
CLOCK_STEP_FIRST_CYCLE = 3
CLOCK_STEP_EVERY = 5
CLOCK_STEPS = ("+40d", "+0", "-40d", "+0")
"""libfaketime offsets of the box's wall clock (its monotonic clock stays true), in turn."""


class KillPhase(enum.StrEnum):
    RECORDING = "recording"  # a recording is being written
    UPLOAD = "upload"  # after the recording, once upload traffic flows
    IDLE = "idle"  # stand-by, nothing in flight


class Wifi(enum.StrEnum):
    UP = "up"
    FLAPPING = "flapping"  # blackholed and reset now and then during the cycle
    SLOW = "slow"  # a 200 kbit/s hotspot for the whole cycle
    DOWN = "down"  # refused for the whole cycle: LTE only


class BackOfficeFault(enum.StrEnum):
    NONE = "none"
    RESTART = "restart"  # SIGTERM, then started again on the same port and store
    CRASH = "crash"  # SIGKILL, then started again


@dataclass(frozen=True, slots=True)
class Cycle:
    """One life of the box. Seconds are waits of the driver, counted from the named moment."""

    index: int
    trigger: str
    flag: bool
    record_s: float  # trigger -> officer's stop (phases upload and idle)
    kill_phase: KillPhase
    kill_delay_s: float  # phase reached -> SIGKILL
    wifi: Wifi
    back_office: BackOfficeFault
    back_office_after_s: float  # box started -> the back office goes away
    back_office_outage_s: float  # gone -> started again
    lte_episode: bool
    clock_step: str | None = None  # the box's new wall-clock offset (CLOCK_STEPS), or none
    clock_step_after_s: float = 0.0  # box started -> the step


class CycleScript:
    """Cycles in order from a seed: call `cycle(0)`, `cycle(1)`, ... (each draws from the RNG)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self._phases = self._rng.sample(list(KillPhase), len(KillPhase))
        self._next_index = 0

    def cycle(self, index: int) -> Cycle:
        if index != self._next_index:
            raise ValueError(f"cycles are drawn in order: expected {self._next_index}, got {index}")
        self._next_index += 1
        rng = self._rng
        lte_episode = index == LTE_EPISODE_CYCLE
        phase = KillPhase.IDLE if lte_episode else self._phases[index % len(self._phases)]
        trigger = "officer" if lte_episode else _weighted(rng, TRIGGER_WEIGHTS)
        return Cycle(
            index=index,
            trigger=trigger,
            flag=trigger == "officer" and not lte_episode and rng.random() < FLAG_CHANCE,
            record_s=rng.uniform(1.0, 3.5),
            kill_phase=phase,
            kill_delay_s=_kill_delay_s(rng, phase),
            wifi=Wifi.DOWN if lte_episode else _weather(rng),
            back_office=_back_office_fault(rng, index),
            back_office_after_s=rng.uniform(0.3, 3.0),
            back_office_outage_s=rng.uniform(0.3, 2.0),
            lte_episode=lte_episode,
            clock_step=_clock_step(index),
            clock_step_after_s=rng.uniform(0.0, 2.0),
        )


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _kill_delay_s(rng: random.Random, phase: KillPhase) -> float:
    # While recording: anywhere in a few seconds of it (files roll every few seconds, so some
    # cuts land on a seal); uploads of small files are short, so those cuts come quickly.
    upper_s = {KillPhase.RECORDING: 4.0, KillPhase.UPLOAD: 0.4, KillPhase.IDLE: 1.0}[phase]
    return rng.uniform(0.0, upper_s)


def _weather(rng: random.Random) -> Wifi:
    weights: dict[str, float] = {Wifi.UP: 0.4, Wifi.FLAPPING: 0.25, Wifi.SLOW: 0.15, Wifi.DOWN: 0.2}
    return Wifi(_weighted(rng, weights))


def _clock_step(index: int) -> str | None:
    since_first = index - CLOCK_STEP_FIRST_CYCLE
    if since_first < 0 or since_first % CLOCK_STEP_EVERY:
        return None
    return CLOCK_STEPS[(since_first // CLOCK_STEP_EVERY) % len(CLOCK_STEPS)]


def _back_office_fault(rng: random.Random, index: int) -> BackOfficeFault:
    drawn = rng.random()
    if index == BACK_OFFICE_RESTART_CYCLE:
        return BackOfficeFault.RESTART
    if index >= BACK_OFFICE_CRASH_CYCLE and (
        (index - BACK_OFFICE_CRASH_CYCLE) % BACK_OFFICE_CRASH_EVERY == 0
    ):
        return BackOfficeFault.CRASH
    if index != LTE_EPISODE_CYCLE and drawn < BACK_OFFICE_RESTART_CHANCE:
        return BackOfficeFault.RESTART
    return BackOfficeFault.NONE
