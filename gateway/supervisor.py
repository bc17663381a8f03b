"""Structured concurrency for `mvb run`: every subsystem is a child of one asyncio TaskGroup.

A child is a named coroutine factory with a kind:
- `isolated` (a camera's feed, GPS, a vehicle input, the uplink, fleet sync): when it raises, the
  failure is recorded, and the child is started again after a backoff that grows with consecutive
  failures (`RestartPolicy`); a child that ran for `healthy_after_s` counts as recovered. Nothing an
  isolated child does can stop the others: above all, it cannot stop recording.
- `core` (the recorder's event loop): when it raises, that is a bug in the core; the whole group is
  cancelled and `run()` re-raises, so the service exits non-zero and systemd restarts it with its
  recovery path. An isolated child never escalates.

The backoff is a pure function of the failure count (`restart_delay_s`), so its table is tested
without a clock. Invariants: at most one task per child at any time; `stop()` cancels every child
and `run()` returns once they have all ended; a child that returns normally is not restarted (it
chose to end, e.g. an input line the configuration turned off).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

ChildKind = Literal["isolated", "core"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff for isolated children: initial_s, doubling up to max_s."""

    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0
    healthy_after_s: float = 60.0


def restart_delay_s(policy: RestartPolicy, consecutive_failures: int) -> float:
    """Delay before restart number `consecutive_failures` (1 = the first failure)."""
    if consecutive_failures < 1:
        return 0.0
    exponent = min(consecutive_failures - 1, 32)  # bounded: no float overflow after years
    return float(min(policy.max_s, policy.initial_s * policy.factor**exponent))


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    run: Callable[[], Awaitable[None]]
    kind: ChildKind = "isolated"


@dataclass(slots=True)
class ChildState:
    """What `status()` shows per child: never the exception's text (it may carry data), only
    its type name."""

    state: Literal["starting", "running", "backoff", "ended", "failed"] = "starting"
    restarts: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class Supervisor:
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    on_failure: Callable[[str, BaseException], None] | None = None
    clock_s: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    children: dict[str, ChildState] = field(default_factory=dict)
    _group_task: asyncio.Task[None] | None = None
    _stopping: bool = False

    async def run(self, children: list[Child]) -> None:
        """Run every child until `stop()`; re-raise a core child's failure."""
        names = [c.name for c in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        me = asyncio.current_task()
        assert me is not None  # run() is always awaited inside a task
        self._group_task = me
        try:
            async with asyncio.TaskGroup() as group:
                for child in children:
                    self.children[child.name] = ChildState()
                    group.create_task(self._keep(child), name=child.name)
        except asyncio.CancelledError:
            if not self._stopping:
                raise  # cancelled from outside: not ours to swallow
            me.uncancel()  # stop(): every child was cancelled and has ended

    def stop(self) -> None:
        """Cancel every child; `run()` returns normally once they have ended."""
        self._stopping = True
        if self._group_task is not None and not self._group_task.done():
            self._group_task.cancel()

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "state": s.state,
                "restarts": s.restarts,
                "last_error": s.last_error,
            }
            for name, s in self.children.items()
        }

    async def _keep(self, child: Child) -> None:
        state = self.children[child.name]
        while True:
            started_s = self.clock_s()
            state.state = "running"
            try:
                await child.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._record_failure(child, state, exc, self.clock_s() - started_s)
                if child.kind == "core":
                    state.state = "failed"
                    raise
                state.state = "backoff"
                await self.sleep(restart_delay_s(self.policy, state.consecutive_failures))
                state.restarts += 1
                continue
            state.state = "ended"
            return

    def _record_failure(
        self, child: Child, state: ChildState, exc: Exception, ran_for_s: float
    ) -> None:
        if ran_for_s >= self.policy.healthy_after_s:
            state.consecutive_failures = 0  # it had recovered: start the backoff afresh
        state.consecutive_failures += 1
        state.last_error = type(exc).__name__
        log.error(
            "subsystem %s failed (%s, failure %d in a row)",
            child.name,
            type(exc).__name__,
            state.consecutive_failures,
            exc_info=exc,
        )
        if self.on_failure is not None:
            self.on_failure(child.name, exc)
