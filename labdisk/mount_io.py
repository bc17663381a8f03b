"""Mount and unmount labdisk from a test: the daemon runs in a process of its own.

    with LabDisk(backing=tmp / "card-backing", mountpoint=tmp / "card", mode="strict") as disk:
        ... the code under test writes below tmp / "card" ...
        disk.cut()                      # or, from another process: LabDiskClient(disk.control)

The daemon (`python -m labdisk serve`) is started in a new session, so a test that SIGKILLs the
process group of the code under test does not kill the card with it. `close` unmounts
(`fusermount3 -u`, lazily with `-z` when busy) and waits for the daemon; the mount is made with
`auto_unmount`, so even a daemon that dies takes its mount with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Final

from labdisk.control_io import LabDiskClient
from labdisk.durability import Mode, check_mode

ROOT: Final = Path(__file__).resolve().parents[1]
START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0
POLL_S: Final = 0.02
FUSERMOUNT: Final = "fusermount3"


def _unescape(field: str) -> str:
    """/proc/self/mountinfo escapes space, tab, newline and backslash as octal."""
    for code in ("040", "011", "012", "134"):
        field = field.replace(f"\\{code}", chr(int(code, 8)))
    return field


def labdisk_mounts() -> list[Path]:
    """Mount points of every labdisk mounted on this machine (type fuse.labdisk)."""
    found: list[Path] = []
    with Path("/proc/self/mountinfo").open(encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-")
            if fields[separator + 1] == "fuse.labdisk":
                found.append(Path(_unescape(fields[4])))
    return found


def is_mounted(mountpoint: Path) -> bool:
    return Path(mountpoint).absolute() in labdisk_mounts()


def unmount(mountpoint: Path) -> bool:
    """Unmount a labdisk: `fusermount3 -u`, then lazily (`-z`, or `umount -l`) if it is busy.
    True when it was clean (or not mounted); after a lazy unmount the daemon goes on serving the
    open files until it is stopped."""
    if not is_mounted(mountpoint):
        return True
    subprocess.run([FUSERMOUNT, "-u", str(mountpoint)], capture_output=True, check=False)
    if not is_mounted(mountpoint):
        return True
    for argv in ([FUSERMOUNT, "-u", "-z", str(mountpoint)], ["umount", "-l", str(mountpoint)]):
        subprocess.run(argv, capture_output=True, check=False)
        if not is_mounted(mountpoint):
            break
    return False


class LabDisk(LabDiskClient):
    """A labdisk mounted at `mountpoint` over `backing` (both made if missing), controlled
    through its socket (`control`, in a fresh directory under /tmp unless given: a unix socket
    path must stay under 108 bytes). `classes`: (name, glob) pairs for the accounting."""

    def __init__(
        self,
        backing: Path,
        mountpoint: Path,
        *,
        mode: Mode = "strict",
        seed: int = 0,
        classes: Iterable[tuple[str, str]] = (),
        allow_other: bool = False,
        control: Path | None = None,
    ) -> None:
        self._own_dir: Path | None = None
        if control is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="labdisk-"))
            control = self._own_dir / "ctl"
        super().__init__(control)
        self.backing = Path(backing).absolute()
        self.mountpoint = Path(mountpoint).absolute()
        self.mode = check_mode(mode)
        self.seed = seed
        self.classes = list(classes)
        self.allow_other = allow_other
        self.log_path = self.control.with_name(self.control.name + ".log")
        self._process: subprocess.Popen[bytes] | None = None
        self.last_log = ""

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "labdisk", "serve", str(self.backing), str(self.mountpoint)]
        argv += ["--control", str(self.control), "--mode", self.mode, "--seed", str(self.seed)]
        for name, glob in self.classes:
            argv += ["--class", f"{name}={glob}"]
        if self.allow_other:
            argv.append("--allow-other")
        return argv

    def start(self) -> LabDisk:
        """Start the daemon and wait until the mount serves and the socket answers."""
        if is_mounted(self.mountpoint):
            raise RuntimeError(f"{self.mountpoint} is already a labdisk mount")
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"labdisk exited ({self._process.returncode}): {self.log()}")
            if is_mounted(self.mountpoint) and self.control.exists():
                with contextlib.suppress(OSError):
                    if self.ping():
                        return self
            time.sleep(POLL_S)
        self.close()
        raise RuntimeError(f"labdisk did not come up in {START_TIMEOUT_S} s: {self.log()}")

    def log(self) -> str:
        """The daemon's output so far (after `close`: `last_log`)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def close(self) -> None:
        """Unmount and stop the daemon; safe to call twice, and after the daemon died."""
        clean = False
        try:
            clean = unmount(self.mountpoint)
        finally:
            process, self._process = self._process, None
            if process is not None:
                if not clean:
                    process.terminate()  # lazily unmounted: it would serve until files close
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.terminate()
                    try:
                        process.wait(timeout=STOP_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            self.last_log = self.log() or self.last_log
            if self._own_dir is not None:
                shutil.rmtree(self._own_dir, ignore_errors=True)

    def __enter__(self) -> LabDisk:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
