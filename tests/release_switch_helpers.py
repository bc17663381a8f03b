"""The A/B switch against real processes, without systemd as PID 1 (test_release_switch_e2e.py).

`ProcessService` stands where systemd's mvb.service stands on a box: it starts
`<root>/current/bin/mvb --config CONFIG run` (the ExecStart= of systemd/mvb.service, through the
`current` link, resolved when the process starts) and stops it with SIGTERM. Its pid file lets
another process (a switcher that was SIGKILLed, the test that "reboots") find the box.

Run as `python -m tests.release_switch_helpers ROOT CONFIG API_URL VERSION DIE_AT`: a switcher
in its own process that SIGKILLs itself at DIE_AT (`before-stop`: the trial is durable, nothing
stopped or linked; `between-links`: previous re-pointed, current not yet; `after-start`: the
target started, not yet judged), so the test sees what a real kill leaves on disk.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.durable import atomic_write_bytes, make_dirs
from gateway.release_install import COMPLETE
from gateway.release_switch import Event, EventKind
from gateway.release_switch_io import ReleaseRoot, Switcher, Timing
from protocol.release_manifest import FileEntry, Manifest

STOP_TIMEOUT_S = 30.0
DIE_POINTS = ("before-stop", "between-links", "after-start")
FAST = Timing(health_deadline_s=60.0, healthy_polls=3, poll_interval_s=0.5, standby_poll_s=0.5)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped by its parent, is not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class ProcessService:
    """The box's service as a plain process started through `root/current` (see module)."""

    root: Path
    config: Path
    log: Path

    @property
    def pid_file(self) -> Path:
        return self.root.parent / "box.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def start(self) -> None:
        if self.pid() is not None:
            return  # like systemctl start of a running service
        with self.log.open("ab") as log:
            box = subprocess.Popen(
                [str(self.root / "current" / "bin" / "mvb"), "--config", str(self.config), "run"],
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            )
        self.pid_file.write_text(str(box.pid))

    def stop(self) -> None:
        self._signal_and_wait(signal.SIGTERM)

    def kill(self) -> None:
        """What a power cut does to the box's process."""
        self._signal_and_wait(signal.SIGKILL)

    def _signal_and_wait(self, signum: int) -> None:
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


def fake_install(root: ReleaseRoot, version: str) -> None:
    """A release directory whose release.json is complete (the venv is not this test's part)."""
    manifest = Manifest(
        version=version,
        platform="x86_64",
        source_commit="",
        lock_sha256="0" * 64,
        files={
            "install.txt": FileEntry("0" * 64, 1),
            "wheels/a-1-py3-none-any.whl": FileEntry("0" * 64, 1),
        },
    )
    make_dirs(root.release(version))
    atomic_write_bytes(root.release(version) / COMPLETE, manifest.to_json())


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DyingService(ProcessService):
    def __init__(self, die_at: str, root: Path, config: Path, log: Path) -> None:
        super().__init__(root, config, log)
        self.die_at = die_at

    def stop(self) -> None:
        if self.die_at == "before-stop":
            die()
        super().stop()

    def start(self) -> None:
        super().start()
        if self.die_at == "after-start":
            die()


class DiesBetweenLinks(ReleaseRoot):
    """Dies once `previous` is re-pointed, before `current` is (no fields of its own: the
    slotted, frozen base forbids new ones, and zero-argument super() with it)."""

    def link(self, name: str, version: str) -> None:
        ReleaseRoot.link(self, name, version)
        if name == "previous":
            die()


def main(argv: list[str]) -> None:
    root_text, config, api_url, version, die_at = argv
    root = Path(root_text)
    service = DyingService(die_at, root, Path(config), root.parent / "box.log")
    switcher = Switcher(
        DiesBetweenLinks(root) if die_at == "between-links" else ReleaseRoot(root),
        service,
        api_url=api_url,
        timing=FAST,
    )
    switcher.run(Event(EventKind.REQUEST, version=version))
    sys.exit("the switch finished: the kill point was never reached")


if __name__ == "__main__":
    main(sys.argv[1:])
