"""How the demo talks: step headings, its own lines, commands' output, and checks.

Everything goes to stdout, flushed at once (a newcomer watches it live; tests read it line by
line). A failed `check` raises DemoFailure, which stops the demo with its message and status 1.
"""

from __future__ import annotations

import time

from demo.synthetic import clock_text as synthetic_clock_text

STEPS = 10


class DemoFailure(Exception):
    """A check of the demo failed; the message says which and why."""


def heading(number: int, text: str) -> None:
    """The one-line heading of a step."""
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def say(text: str) -> None:
    """A line of the demo's own narration, indented under the heading."""
    print(f"  {text}", flush=True)


def echo(output: str) -> None:
    """Show a command's real output, indented one level further."""
    for line in output.rstrip("\n").splitlines():
        print(f"    {line}", flush=True)


def check(condition: bool, message: str) -> None:
    """Raise DemoFailure with `message` unless `condition` holds."""
    if not condition:
        raise DemoFailure(message)


def clock_text(wall_ms: int | None = None) -> str:
    """`HH:MM:SS.mmm` UTC (default: now), the clock the synthetic cameras paint into the picture."""
    ms = time.time_ns() // 1_000_000 if wall_ms is None else wall_ms
    return synthetic_clock_text(ms).partition(" ")[2]
