"""The floor of the box's memory in this process shape: fresh interpreters that import a part of
the box and nothing else, read from /proc/self/smaps_rollup (issue 18 item 2).

bench/memory.py measures the running box; this says what any process of the same shape pays
before it does anything: the interpreter, asyncio (which loads OpenSSL through `ssl`), the
capture and store alone (PyAV with its bundled FFmpeg, cryptography, the box's storage and
capture: what a capture-only process would need), and everything `mvb run` imports at start.
Each is printed as RSS, its anonymous part, the file-backed rest (library and module pages,
which another process mapping the same files would share), PSS (shared pages divided among
the processes that map them, on this machine at this moment) and USS (pages this process alone
has: what ending it would give back).

    python -m bench.memory_floor [--source DIR]

`--source DIR` imports the box's modules from another checkout, as bench/memory.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024
MiB = 1024 * 1024
# (what it is, the import statement run in a fresh interpreter)
PARTS = (
    ("python (the interpreter, `site`)", "pass"),
    ("+ asyncio (it loads `ssl`: OpenSSL)", "import asyncio"),
    (
        "capture and store only: asyncio, PyAV, cryptography, the box's storage and capture",
        "import asyncio, av, gateway.capture.service, storage.store, storage.writer",
    ),
    ("the whole box at start: everything `mvb run` imports", "import gateway.cli"),
)
REPORT = (
    "import sys; from pathlib import Path; "
    "sys.stdout.write(Path('/proc/self/smaps_rollup').read_text()); "
    "sys.stdout.write(f'modules {len(sys.modules)}\\n')"
)


@dataclass(frozen=True)
class Footprint:
    """One process's memory, bytes (from smaps_rollup)."""

    rss: int
    anon: int
    pss: int
    uss: int
    modules: int

    @property
    def file_backed(self) -> int:
        return self.rss - self.anon


def parse_rollup(text: str) -> Footprint:
    """smaps_rollup's kB fields (and the `modules N` line REPORT adds) as a Footprint."""
    kb: dict[str, int] = {}
    modules = 0
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("modules "):
            modules = int(key.split()[1])
        elif rest.strip().endswith("kB"):
            kb[key] = int(rest.split()[0])
    return Footprint(
        rss=kb["Rss"] * KiB,
        anon=kb["Anonymous"] * KiB,
        pss=kb["Pss"] * KiB,
        uss=(kb["Private_Clean"] + kb["Private_Dirty"]) * KiB,
        modules=modules,
    )


def footprint(source: Path, statement: str) -> Footprint:
    """The memory of a fresh interpreter that ran `statement` (the box's modules from `source`)."""
    result = subprocess.run(
        [sys.executable, "-c", f"{statement}\n{REPORT}"],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return parse_rollup(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout to import from")
    args = parser.parse_args()
    source = args.source.resolve()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"# bench/memory_floor.py: {time.strftime('%Y-%m-%d')}, modules from {args.source}, "
        f"load average {' '.join(load)}\n"
    )
    print("| process | modules | RSS MiB | anonymous | file-backed | PSS | USS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for what, statement in PARTS:
        f = footprint(source, statement)
        print(
            f"| {what} | {f.modules} | {f.rss / MiB:.1f} | {f.anon / MiB:.1f} "
            f"| {f.file_backed / MiB:.1f} | {f.pss / MiB:.1f} | {f.uss / MiB:.1f} |"
        )


if __name__ == "__main__":
    main()
