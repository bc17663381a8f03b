"""One soak cycle (tests/soak/script.py's Cycle): the box lives until the cycle's kill phase
(recording, upload, idle) while the weather runs beside it (WiFi flaps, clock steps, back office
faults, the LTE budget episode), then it is killed. Every wait is on observable state, bounded
(tests/soak/soak_rig.py is the rig).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.soak.script import BackOfficeFault, Cycle, KillPhase, Wifi
from tests.soak.soak_settings import (
    CYCLE_TIMEOUT_S,
    EPISODE_WAIT_S,
    IDLE_WAIT_S,
    POLL_S,
    SLOW_WIFI_RATE_BYTES_PER_S,
    UPLOAD_TRAFFIC_BYTES,
    UPLOAD_WAIT_S,
    WIFI_SOURCE,
)
from tests.soak.soak_world import World

# -- one cycle ------------------------------------------------------------------------------------


async def run_cycle(world: World, cycle: Cycle, seed: int) -> None:
    """One life of the box: weather, start, the script's activity, the power cut."""
    world.stats.cycles += 1
    weather = _weather(world, cycle, random.Random(f"{seed}/{cycle.index}/wifi"))
    async with _background(weather) as _:
        world.stats.startup_s.append(await world.box.start(world.api.session))
        if world.stats.cycles == 1:
            shutil.copyfile(world.paths.state / "device_key.pub.pem", world.paths.device_pub)
        async with _background(_clock_step(world, cycle)) as step:
            phase = await _life(world, cycle)
            await step()  # a life shorter than the step's delay: set while the box was off
    world.heal_wifi()
    world.stats.kills[phase] += 1
    world.log(
        f"cycle {cycle.index}: {cycle.trigger}{' flagged' if cycle.flag else ''}, wifi "
        f"{cycle.wifi}, back office {cycle.back_office}"
        f"{f', clock {cycle.clock_step}' if cycle.clock_step else ''}: power cut while {phase}"
    )


async def _life(world: World, cycle: Cycle) -> str:
    """From the box's start to its power cut, with the back office's fault beside it; the
    phase the cut came in."""
    async with _background(_back_office_fault(world, cycle)) as fault:
        try:
            async with asyncio.timeout(CYCLE_TIMEOUT_S):
                phase = await _live(world, cycle)
        finally:
            await world.box.power_cut()
        await fault()  # the back office is back before the next cycle starts
    return phase


@contextlib.asynccontextmanager
async def _background(
    work: Awaitable[None] | None,
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Run `work` beside the block; `await joined()` waits for it; leaving the block without
    joining cancels it. Its failure is raised when joined, or when the block ends."""
    task = None if work is None else asyncio.ensure_future(work)

    async def joined() -> None:
        if task is not None:
            await task

    try:
        yield joined
    finally:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _weather(world: World, cycle: Cycle, rng: random.Random) -> Awaitable[None] | None:
    if cycle.wifi is Wifi.DOWN:
        world.stats.wifi_down_cycles += 1
        world.wifi.refuse = True  # out of range for the whole cycle: LTE only
        return None
    if cycle.wifi is Wifi.FLAPPING:
        return _flap_wifi(world, rng)
    if cycle.wifi is Wifi.SLOW:
        world.stats.wifi_slow_cycles += 1
        world.wifi.rate_bytes_per_s = SLOW_WIFI_RATE_BYTES_PER_S  # healed after the cycle
    return None


def _clock_step(world: World, cycle: Cycle) -> Awaitable[None] | None:
    if cycle.clock_step is None:
        return None
    return _step_clock(world, cycle.clock_step, cycle.clock_step_after_s)


async def _step_clock(world: World, offset: str, after_s: float) -> None:
    """Step the running box's wall clock to `offset` (atomically: libfaketime may read the file
    at any moment and must never see it half written)."""
    await asyncio.sleep(after_s)
    staged = world.paths.clock_offset.with_name("clock-offset.new")
    staged.write_text(f"{offset}\n")
    staged.replace(world.paths.clock_offset)
    world.stats.clock_steps.append(offset)


async def _flap_wifi(world: World, rng: random.Random) -> None:
    """WiFi at the edge of range: up a while, then gone (silence, then resets), and back."""
    try:
        while True:
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            world.wifi.blackhole = True
            world.stats.wifi_flaps += 1
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            world.proxy.reset_peer(WIFI_SOURCE)
            world.heal_wifi()
    finally:
        world.heal_wifi()


def _back_office_fault(world: World, cycle: Cycle) -> Awaitable[None] | None:
    if cycle.back_office is BackOfficeFault.NONE:
        return None
    return _restart_back_office(world, cycle)


async def _restart_back_office(world: World, cycle: Cycle) -> None:
    await asyncio.sleep(cycle.back_office_after_s)
    crash = cycle.back_office is BackOfficeFault.CRASH
    await world.back_office.stop(signal.SIGKILL if crash else signal.SIGTERM)
    world.stats.back_office_restarts += 1
    world.stats.back_office_crashes += int(crash)
    await asyncio.sleep(cycle.back_office_outage_s)
    await world.back_office.start()


async def _live(world: World, cycle: Cycle) -> str:
    """The scripted activity up to the moment of the power cut; returns the phase it reached."""
    api = world.api
    await api.trigger(cycle.trigger)
    await world.status_until(
        lambda s: s["state"] == "recording", "recording", world.state_timeout_s
    )
    if cycle.flag:
        assert await api.post("/api/record/flag") == 200
    if cycle.kill_phase is KillPhase.RECORDING:
        await asyncio.sleep(cycle.kill_delay_s)
        return KillPhase.RECORDING
    await asyncio.sleep(cycle.record_s)
    await _stop_recording(world)
    if cycle.lte_episode:
        await _lte_episode(world)
    if cycle.kill_phase is KillPhase.UPLOAD:
        return await _until_upload_traffic(world, cycle)
    return await _until_idle(world, cycle)


async def _stop_recording(world: World) -> None:
    assert await world.api.post("/api/record/stop") == 200
    await world.status_until(
        lambda s: s["state"] == "standby", "post-record", world.state_timeout_s
    )


async def _until_idle(world: World, cycle: Cycle) -> str:
    """Until no upload runs (bounded: a backlog on a healthy link keeps both slots busy, which
    is no fault of the box); then the script's delay."""
    try:
        async with asyncio.timeout(IDLE_WAIT_S):
            while (await world.api.status())["uplink"]["uploading"]:
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        return "idle (uploads never paused)"
    await asyncio.sleep(cycle.kill_delay_s)
    return KillPhase.IDLE


async def _until_upload_traffic(world: World, cycle: Cycle) -> str:
    """Until file bytes flow through the proxy (bounded: with WiFi gone and only routine files
    waiting, nothing may go); then the script's short delay."""
    proxy = world.proxy
    before = proxy.bytes_client_to_server
    try:
        await proxy.wait_until(
            lambda: proxy.bytes_client_to_server - before >= UPLOAD_TRAFFIC_BYTES, UPLOAD_WAIT_S
        )
    except TimeoutError:
        return "upload (none started)"
    await asyncio.sleep(cycle.kill_delay_s)
    return KillPhase.UPLOAD


async def _lte_episode(world: World) -> None:
    """WiFi is gone: the P1 files use up LTE's P1 budget and then wait for WiFi; a crash (P0)
    right after still goes out over LTE, from the P0 reserve."""
    await world.status_until(_budget_used_up, "the LTE budget to run out", EPISODE_WAIT_S)
    world.stats.lte_budget_used_up_seen = True
    started_before = _recordings(world.paths.audit)
    await world.api.trigger("crash")
    await world.status_until(
        lambda s: s["state"] == "recording", "recording", world.state_timeout_s
    )
    crash = next(r for r in _recordings(world.paths.audit) if r not in started_before)
    await _stop_recording(world)
    try:
        async with asyncio.timeout(EPISODE_WAIT_S):
            while not _uploaded_over(world.paths.audit, crash, "lte"):
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise AssertionError("the crash recording did not go out over LTE") from None
    world.stats.lte_p0_after_budget = True


def _budget_used_up(status: dict[str, Any]) -> bool:
    return any("budget used up" in reason for reason in status["uplink"]["waiting_reasons"])


def _audit_entries(audit: Path) -> list[dict[str, Any]]:
    """The complete lines of the box's audit log, read while the box appends to it."""
    data = audit.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def _recordings(audit: Path) -> list[str]:
    return [
        str(e["fields"]["recording_id"])
        for e in _audit_entries(audit)
        if e["event"] == "storage.recording_started"
    ]


def _uploaded_over(audit: Path, recording_id: str, link: str) -> bool:
    """Whether a file of `recording_id` was uploaded over `link` (per the audit log)."""
    entries = _audit_entries(audit)
    files = {
        str(e["fields"]["file_id"])
        for e in entries
        if e["event"] == "storage.file_sealed" and e["fields"]["recording_id"] == recording_id
    }
    return any(
        e["event"] == "uplink.uploaded" and e["fields"]["file_id"] in files
        for e in entries
        if e["fields"].get("link") == link
    )
