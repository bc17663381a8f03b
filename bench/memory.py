"""The whole box's own memory in stand-by: `mvb run` at 0, 1 and 4 cameras (issue 18 item 2).

The real box process (its configuration from `write_box_config`, the page off, no uplink, no
GPS daemon, the box's default modules otherwise) with N replayed 4 Mbit/s cameras (the capture
benchmark's clip), in stand-by once every ring holds its pre-record. Its *own* memory is its
RSS (VmRSS of the process, sampled every 0.2 s over `--sample-s`, the median) less the rings'
packet bytes (the status document's `prerecord_bytes`) and the replayed clips (each replay camera
holds its clip in memory; a real camera leaves nothing of the kind in the box). PSS and USS
(/proc/<pid>/smaps_rollup at the end of the window) are printed beside it: they count library
pages shared with other processes on this machine (another box, the benchmark itself) partly or
not at all, which on a vehicle, where the box is the only Python process, they would not.
`python -m bench.memory_floor` gives the floor of this process shape (fresh interpreters).

Targets (issue 18): the box's own memory < 60 MB at one camera; per camera beyond the ring
<= 1 MiB in stand-by (the slope from 1 to 4 cameras). Each is printed with whether it was met.

    python -m bench.memory [--source DIR] [--prerecord-s 5] [--sample-s 5]

`--source DIR` runs the box from another checkout (e.g. `git archive` of an older commit) with
this interpreter, for a before/after comparison in one run; the modules the box loaded at the
end are listed by top-level package, so an import that should be lazy shows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.capture_clip import Clip, make_clip
from bench.memory_floor import Footprint, parse_rollup
from bench.procfs import proc_kb
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config

ROOT = Path(__file__).resolve().parent.parent
MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
MiB = 1024 * 1024
TARGET_ONE_CAMERA_BYTES = 60e6
TARGET_PER_CAMERA_BYTES = 1 * MiB
COUNTS = (0, 1, 4)
SAMPLE_EVERY_S = 0.2
START_MAX_S = 60.0
# Packages with native parts, printed when the box has them mapped at the end of a run (issue
# 18: HTTP/3 only when a link prefers it; one cryptography library where one suffices).
WATCHED_PACKAGES = ("aioquic", "pylsqpack", "Crypto", "cryptography", "aiohttp", "av")


@dataclass(frozen=True)
class Reading:
    cameras: int
    rss: int  # median over the sample window
    anon: int
    ring: int  # the rings' packet bytes
    clips: int  # the replayed clips' bytes
    loaded: list[str]  # WATCHED_PACKAGES the box had loaded
    rollup: Footprint  # /proc/<pid>/smaps_rollup at the end of the window (PSS, USS)

    @property
    def own(self) -> int:
        return self.rss - self.ring - self.clips


def box_config(root: Path, clip: Clip, cameras: int, prerecord_s: float, api_port: int) -> Path:
    recipient = root / "keys" / "recording.pub"
    subprocess.run(
        [str(MVB_ADMIN), "keys", "create", "--dir", str(recipient.parent)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    camera_lines = "".join(
        f'\n[[cameras]]\nname = "cam{i}"\nkind = "replay"\nurl = "{clip.path}"\nserial = "C{i}"\n'
        for i in range(cameras)
    )
    return write_box_config(
        root / "box",
        recipient,
        storage_lines=(
            f"\n[recording]\nprerecord_s = {prerecord_s}\n[gps]\nport = {free_port()}\n"
            f"[api]\nport = {api_port}\n{camera_lines}"
        ),
    )


def status(api_port: int) -> dict[str, object] | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/status", timeout=5) as r:
            document: dict[str, object] = json.loads(r.read())
            return document
    except (urllib.error.URLError, OSError, ValueError):
        return None


def ring_bytes(document: dict[str, object]) -> tuple[int, float]:
    """The rings' bytes and the least-filled ring's seconds."""
    cameras = document.get("cameras")
    assert isinstance(cameras, dict)
    rings = [int(c["prerecord_bytes"]) for c in cameras.values()]
    filled = [float(c["prerecord_filled_s"]) for c in cameras.values()]
    return sum(rings), min(filled, default=float("inf"))


def measure(source: Path, clip: Clip, cameras: int, args: argparse.Namespace) -> Reading:
    with tempfile.TemporaryDirectory(prefix=f"mvb-bench-memory-{cameras}-") as tmp:
        api_port = free_port()
        config = box_config(Path(tmp), clip, cameras, args.prerecord_s, api_port)
        box = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from gateway.cli import main; sys.argv[0] = 'mvb'; main()",
                "--config",
                str(config),
                "run",
            ],
            cwd=source,  # '' first on sys.path: the box's modules from `source`
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(source)},
        )
        try:
            deadline = time.monotonic() + START_MAX_S + args.prerecord_s
            while True:
                assert box.poll() is None, box.stderr.read().decode()[-2000:] if box.stderr else ""
                assert time.monotonic() < deadline, "the box did not fill its rings in time"
                document = status(api_port)
                if document is not None and ring_bytes(document)[1] >= args.prerecord_s - 1.0:
                    break
                time.sleep(0.5)
            rss, anon, rings = [], [], []
            end = time.monotonic() + args.sample_s
            while time.monotonic() < end:
                rss.append(proc_kb(box.pid, "VmRSS"))
                anon.append(proc_kb(box.pid, "RssAnon"))
                time.sleep(SAMPLE_EVERY_S)
            document = status(api_port)
            assert document is not None
            rings.append(ring_bytes(document)[0])
            loaded = loaded_packages(box.pid)
            rollup = parse_rollup(Path(f"/proc/{box.pid}/smaps_rollup").read_text())
        finally:
            box.terminate()
            try:
                box.wait(30)
            except subprocess.TimeoutExpired:
                box.kill()
                box.wait(10)
    return Reading(
        cameras,
        int(statistics.median(rss)),
        int(statistics.median(anon)),
        rings[0],
        cameras * clip.payload_bytes,
        loaded,
        rollup,
    )


def loaded_packages(pid: int) -> list[str]:
    """The WATCHED_PACKAGES whose shared objects the box has mapped (imported)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return [name for name in WATCHED_PACKAGES if f"/{name}/" in maps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout the box runs from")
    parser.add_argument("--prerecord-s", type=float, default=5.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mvb-bench-memory-clip-") as tmp:
        clip = make_clip(Path(tmp))
        readings = [measure(args.source.resolve(), clip, n, args) for n in COUNTS]
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"# bench/memory.py: {time.strftime('%Y-%m-%d')}, box from {args.source}, "
        f"pre-record {args.prerecord_s:.0f} s, load average {' '.join(load)}\n"
    )
    print(
        "| cameras | RSS MiB | of it anonymous | rings MiB | replay clips MiB "
        "| **box's own MiB** | PSS MiB | USS MiB | native libraries of issue 18 loaded |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in readings:
        print(
            f"| {r.cameras} | {r.rss / MiB:.1f} | {r.anon / MiB:.1f} | {r.ring / MiB:.1f} "
            f"| {r.clips / MiB:.1f} | **{r.own / MiB:.1f}** | {r.rollup.pss / MiB:.1f} "
            f"| {r.rollup.uss / MiB:.1f} | {', '.join(r.loaded) or '-'} |"
        )
    by = {r.cameras: r for r in readings}
    one = by[1].own
    per_camera = (by[4].own - by[1].own) / 3
    print(
        f"\nAgainst the targets: the box's own memory at one camera {one / MiB:.1f} MiB "
        f"(target < 60 MB = {TARGET_ONE_CAMERA_BYTES / MiB:.1f} MiB: "
        f"{'met' if one < TARGET_ONE_CAMERA_BYTES else '**not met**'}); per camera beyond the "
        f"ring in stand-by {per_camera / MiB:.2f} MiB (1 to 4 cameras; target <= 1 MiB: "
        f"{'met' if per_camera <= TARGET_PER_CAMERA_BYTES else '**not met**'}); before any "
        f"camera {by[0].own / MiB:.1f} MiB."
    )


if __name__ == "__main__":
    main()
