"""Simulated vehicle inputs for the demo and the tests: values set by hand, real rules and queue.

A shell like those of gateway/inputs_io.py, with held values in place of a device: the same
pure rules (gateway/inputs.py) decide, and the same `Outlet` puts their events into the bounded
queue, so what the demo shows is what the hardware inputs would do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from gateway.inputs import (
    NS_PER_MS,
    STANDARD_GRAVITY_MPS2,
    CrashRule,
    Detector,
    InputDebouncer,
    InputHealth,
    InputKind,
    InputRule,
    SpeedRule,
)
from gateway.inputs_io import Clock, Outlet
from gateway.recorder import Event

_AT_REST = (0.0, 0.0, STANDARD_GRAVITY_MPS2)


class SimulatedInputs:
    """Named inputs the demo and the tests set by hand, through the same rules and queue.

    Values are *held* like a real line or sensor: `set`, `speed` and `crash` sample at once, and
    `poll` (or `run`) samples the held values again, which is what lets a debounce or a hold time
    complete. `set(name, True)` means "the input is on"; for an active-low rule the simulated line
    is low, so the inversion is exercised too. Every THRESHOLD rule takes the speed.
    """

    def __init__(
        self,
        queue: asyncio.Queue[Event],
        rules: Iterable[InputRule],
        *,
        crash_rule: CrashRule | None = None,
        clock: Clock = time.monotonic_ns,
    ) -> None:
        rules = list(rules)
        self.levels = {r.source: InputDebouncer(r) for r in rules if r.kind is InputKind.LEVEL}
        self.speeds = {r.source: SpeedRule(r) for r in rules if r.kind is InputKind.THRESHOLD}
        self.crash_rule = crash_rule if crash_rule is not None else CrashRule()
        self._outlets = {
            source: Outlet(queue, clock)
            for source in [*self.levels, *self.speeds, self.crash_rule.source]
        }
        self._clock = clock
        self._lines: dict[str, int] = {}
        self._speed_mps: float | None = None
        self._accel = _AT_REST
        self._accel_until_ns = 0

    def set(self, name: str, on: bool, *, now_ns: int | None = None) -> None:
        debouncer = self.levels[name]  # KeyError: no such input, a test or config error
        self._lines[name] = int(on != debouncer.rule.active_low)
        self._sample_level(name, self._now(now_ns))

    def speed(self, speed_mps: float, *, now_ns: int | None = None) -> None:
        self._speed_mps = speed_mps
        self._sample_speed(speed_mps, self._now(now_ns))

    def crash(
        self, peak_g: float, *, duration_ms: float = 200.0, now_ns: int | None = None
    ) -> None:
        """A deceleration of `peak_g` along the vehicle's axis for `duration_ms`, then rest."""
        now = self._now(now_ns)
        self._accel = (-peak_g * STANDARD_GRAVITY_MPS2, 0.0, STANDARD_GRAVITY_MPS2)
        self._accel_until_ns = now + int(duration_ms * NS_PER_MS)
        self._sample_accel(now)

    def poll(self, *, now_ns: int | None = None) -> None:
        """Sample every held value at `now_ns` (default: the clock)."""
        now = self._now(now_ns)
        for name in self._lines:
            self._sample_level(name, now)
        if self._speed_mps is not None:
            self._sample_speed(self._speed_mps, now)
        self._sample_accel(now)

    async def run(self, poll_ms: float = 20.0) -> None:
        """Poll until cancelled, like the hardware pollers."""
        while True:
            self.poll()
            await asyncio.sleep(poll_ms / 1000)

    def health(self) -> dict[str, InputHealth]:
        detectors: list[Detector] = [*self.levels.values(), *self.speeds.values()]
        detectors.append(self.crash_rule)
        return {d.source: self._outlets[d.source].health(d) for d in detectors}

    def _now(self, now_ns: int | None) -> int:
        return self._clock() if now_ns is None else now_ns

    def _sample_level(self, name: str, now_ns: int) -> None:
        self._outlets[name].emit(self.levels[name].sample(self._lines[name], now_ns))

    def _sample_speed(self, speed_mps: float, now_ns: int) -> None:
        for source, rule in self.speeds.items():
            self._outlets[source].emit(rule.sample(speed_mps, now_ns))

    def _sample_accel(self, now_ns: int) -> None:
        if self._accel != _AT_REST and now_ns >= self._accel_until_ns:
            self._accel = _AT_REST
        event = self.crash_rule.sample(*self._accel, now_ns)
        self._outlets[self.crash_rule.source].emit(event)
