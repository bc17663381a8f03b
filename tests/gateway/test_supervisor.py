"""The supervisor: isolated children restart with backoff, a core failure stops the group."""

from __future__ import annotations

import asyncio

import pytest

from gateway.supervisor import Child, RestartPolicy, Supervisor, restart_delay_s


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_s=1.0, max_s=10.0)
    delays = [restart_delay_s(policy, n) for n in range(0, 7)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert restart_delay_s(policy, 10_000) == 10.0  # years of failures: no overflow


class Sleeps:
    """Records the backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        await asyncio.sleep(0)


async def test_a_failing_isolated_child_restarts_and_the_others_keep_running() -> None:
    sleeps = Sleeps()
    failures: list[str] = []
    supervisor = Supervisor(sleep=sleeps, on_failure=lambda name, exc: failures.append(name))
    flaky_runs = 0
    steady_ticks = 0
    recovered = asyncio.Event()

    async def flaky() -> None:
        nonlocal flaky_runs
        flaky_runs += 1
        if flaky_runs <= 3:
            raise OSError("camera gone")
        recovered.set()
        await asyncio.Event().wait()

    async def steady() -> None:
        nonlocal steady_ticks
        while True:
            steady_ticks += 1
            await asyncio.sleep(0)

    runner = asyncio.create_task(supervisor.run([Child("camera", flaky), Child("gps", steady)]))
    await asyncio.wait_for(recovered.wait(), 5)
    status = supervisor.status()
    assert status["camera"] == {"state": "running", "restarts": 3, "last_error": "OSError"}
    assert status["gps"]["state"] == "running"
    assert sleeps.delays == [1.0, 2.0, 4.0]
    assert failures == ["camera", "camera", "camera"]
    assert steady_ticks > 0
    supervisor.stop()
    await asyncio.wait_for(runner, 5)
    assert runner.exception() is None


async def test_a_core_failure_cancels_everything_and_propagates() -> None:
    cancelled = asyncio.Event()

    async def core() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("recorder bug")

    async def other() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    supervisor = Supervisor(sleep=Sleeps())
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(
            supervisor.run([Child("recorder", core, kind="core"), Child("uplink", other)]), 5
        )
    assert caught.group_contains(RuntimeError)
    assert cancelled.is_set()
    assert supervisor.status()["recorder"]["state"] == "failed"


async def test_recovery_resets_the_backoff() -> None:
    sleeps = Sleeps()
    now = [0.0]
    policy = RestartPolicy(initial_s=1.0, healthy_after_s=60.0)
    supervisor = Supervisor(policy=policy, sleep=sleeps, clock_s=lambda: now[0])
    runs = 0
    done = asyncio.Event()

    async def child() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            now[0] += 120.0  # this run lasted two minutes before failing: it had recovered
        if runs == 5:
            done.set()
            return
        raise OSError("flap")

    await asyncio.wait_for(supervisor.run([Child("link", child)]), 5)
    assert done.is_set()
    assert sleeps.delays == [1.0, 2.0, 1.0, 2.0]
    assert supervisor.status()["link"]["state"] == "ended"


async def test_outside_cancellation_is_not_swallowed() -> None:
    supervisor = Supervisor()

    async def forever() -> None:
        await asyncio.Event().wait()

    runner = asyncio.create_task(supervisor.run([Child("a", forever)]))
    await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_duplicate_names_are_refused() -> None:
    async def nothing() -> None:
        return None

    with pytest.raises(ValueError, match="unique"):
        await Supervisor().run([Child("a", nothing), Child("a", nothing)])
