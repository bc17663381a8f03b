"""The demo's child processes (the back office, the power cut's writer) as lines on a queue.

A thread reads each child's stdout to its end, so a child never blocks on a full pipe; the main
thread waits for a line with a deadline, and a child that ends or falls silent is a DemoFailure.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time

from demo.narration import DemoFailure

CHILD_TIMEOUT_S = 30.0


def child_lines(child: subprocess.Popen[str], name: str) -> queue.Queue[str | None]:
    """The child's stdout lines, read by a thread into a queue (to its end, so the child never
    blocks on a full pipe); None marks the end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, name=f"demo-{name}-stdout", daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str | None], deadline: float, who: str) -> str:
    """The child's next line, or DemoFailure at the deadline or at the end of its output."""
    try:
        line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
    except queue.Empty:
        raise DemoFailure(f"{who} printed nothing in time") from None
    if line is None:
        raise DemoFailure(f"{who} stopped early (see its error above)")
    return line
