"""Readings from /proc for the benchmarks: CPU time and memory of processes, the idle share.

Linux only. Every function reads the kernel's text tables as they are at the call; nothing is
cached, so two readings around a window measure that window.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> tuple[float, float]:
    """(utime + stime, stime) of a process (all its threads, dead ones included), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is field 3
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK, stime / CLK_TCK


def cpu_of(pids: list[int]) -> tuple[float, float]:
    times = [proc_cpu_s(pid) for pid in pids]
    return sum(t for t, _ in times), sum(s for _, s in times)


def scheduled_s(pids: list[int]) -> float:
    """CPU seconds of the processes' live threads from the scheduler's own account
    (/proc/<pid>/task/<tid>/schedstat, in nanoseconds): precise where utime and stime count
    10 ms ticks (a 6 s window of a process using 0.5 % of a core is 3 ticks). Threads that
    ended are not in it: use it over a window in which the threads live throughout."""
    total_ns = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total_ns += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue
    return total_ns / 1e9


def proc_kb(pid: int | str, key: str, table: str = "status") -> int:
    """A `kB` line of /proc/<pid>/status (VmRSS, RssAnon) or smaps_rollup (Pss), in bytes."""
    for line in Path(f"/proc/{pid}/{table}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss_self() -> int:
    return proc_kb("self", "VmRSS")


def anon_self() -> int:
    """The anonymous part of RSS (heap, stacks): what is not a mapped library or file."""
    return proc_kb("self", "RssAnon")


def wait_for_idle(timeout_s: float = 60.0, wanted: float = 0.95) -> float:
    """Wait (bounded) until the machine is idle, e.g. done writing back the last run's files."""
    deadline = time.monotonic() + timeout_s
    idle = idle_share()
    while idle < wanted and time.monotonic() < deadline:
        idle = idle_share()
    return idle


def idle_share(seconds: float = 1.0) -> float:
    """The machine's idle CPU share over `seconds` (/proc/stat): is anything else running?"""

    def ticks() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, all

    idle0, all0 = ticks()
    time.sleep(seconds)
    idle1, all1 = ticks()
    return (idle1 - idle0) / max(1, all1 - all0)


def thread_switches_cpu(native_id: int) -> tuple[int, float]:
    """Voluntary and involuntary context switches, and CPU seconds (the scheduler's account), of
    one of this process's threads so far ((0, 0.0) if it has ended)."""
    task = Path(f"/proc/self/task/{native_id}")
    try:
        lines = (task / "status").read_text().splitlines()
        on_cpu_ns = int((task / "schedstat").read_text().split()[0])  # ns, not 10 ms ticks
    except FileNotFoundError:
        return 0, 0.0
    # voluntary_ctxt_switches: and nonvoluntary_ctxt_switches:
    switches = sum(int(line.split()[1]) for line in lines if "ctxt_switches:" in line)
    return switches, on_cpu_ns / 1e9


def process_switches(pids: list[int]) -> int:
    """Context switches (voluntary and involuntary) of the processes' live threads so far."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                lines = (task / "status").read_text().splitlines()
            except (FileNotFoundError, ProcessLookupError):
                continue
            total += sum(int(line.split()[1]) for line in lines if "ctxt_switches:" in line)
    return total
