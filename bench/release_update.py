"""Sizes and times of a release update (issue 17; docs/benchmarks.md): bench.release_update.

Builds two releases of this tree (N and N+1 through `--version`), installs both offline, starts
the real box of N through `current` (tests/release_switch_helpers.py stands in for systemd) and
switches to N+1: the figures an admin plans a fleet update with. The switch's share that is
the box's own start is compared with a plain restart of N in the same run (the baseline).
About 3 minutes; run it niced on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backoffice.release_build import build_release
from gateway.release_install import install_release
from gateway.release_switch import Event, EventKind
from gateway.release_switch_io import ReleaseRoot, Switcher, Timing, activate_first, fetch_status
from tests.cameras import free_port
from tests.evidence_helpers import write_box_config
from tests.release_switch_helpers import ProcessService

REPOSITORY = Path(__file__).resolve().parents[1]
TIMING = Timing(health_deadline_s=120.0, healthy_polls=3, poll_interval_s=0.5)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def healthy_on(api_url: str, version: str) -> float:
    """Seconds until the box answers on `version` with its camera delivering."""
    started = time.monotonic()
    while True:
        document = fetch_status(api_url)
        box = document.get("box") if isinstance(document, dict) else None
        cameras = document.get("cameras") if isinstance(document, dict) else None
        if (
            isinstance(box, dict)
            and box.get("software_version") == version
            and isinstance(cameras, dict)
            and all(c.get("connected") for c in cameras.values())
        ):
            return time.monotonic() - started
        if time.monotonic() - started > 120:
            sys.exit(f"the box never became healthy on {version}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old", default="1.0.0")
    parser.add_argument("--new", default="1.0.1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mvb-bench-release-") as work_text:
        work = Path(work_text)
        root = ReleaseRoot(work / "opt")
        figures: list[str] = []
        for version in (args.old, args.new):
            started = time.monotonic()
            bundle, manifest = build_release(
                REPOSITORY, work / "bundles", os.uname().machine, version=version
            )
            built_s = time.monotonic() - started
            started = time.monotonic()
            release = install_release(bundle, root.path / "releases")
            installed_s = time.monotonic() - started
            figures.append(
                f"release {version}: bundle {bundle.stat().st_size / 1024**2:.1f} MiB "
                f"({len(manifest.files) - 1} wheels), built in {built_s:.1f} s; installed in "
                f"{installed_s:.1f} s, {tree_bytes(release) / 1024**2:.0f} MiB on disk"
            )
        activate_first(root, args.old)
        keys = work / "keys"
        subprocess.run(
            [Path(sys.executable).with_name("mvb-admin"), "keys", "create", "--dir", keys],
            check=True,
        )
        api_port = free_port()
        lines = (
            f"\n[recording]\nprerecord_s = 5\n[gps]\nport = {free_port()}\n[api]\n"
            f'port = {api_port}\n[[cameras]]\nname = "bodycam"\nkind = "synthetic"\nfps = 10\n'
        )
        config = write_box_config(work / "box", keys / "recording.pub", storage_lines=lines)
        service = ProcessService(root.path, config, work / "box.log")
        api_url = f"http://127.0.0.1:{api_port}"
        try:
            service.start()
            first_start_s = healthy_on(api_url, args.old)
            started = time.monotonic()
            service.stop()
            service.start()
            restart_s = time.monotonic() - started + healthy_on(api_url, args.old)
            started = time.monotonic()
            state = Switcher(root, service, api_url=api_url, timing=TIMING).run(
                Event(EventKind.REQUEST, version=args.new)
            )
            switch_s = time.monotonic() - started
        finally:
            service.kill()
        figures.append(f"first start of {args.old} to healthy: {first_start_s:.1f} s")
        figures.append(f"baseline: restart of {args.old} to healthy: {restart_s:.1f} s")
        figures.append(
            f"switch {args.old} -> {args.new} ({state.last.value}): {switch_s:.1f} s from the "
            f"request to the commit, {switch_s / restart_s:.2f}x the restart (the switch adds "
            f"{TIMING.healthy_polls} healthy answers {TIMING.poll_interval_s} s apart)"
        )
        print("\n".join(figures))


if __name__ == "__main__":
    main()
