"""Running a real process with its wall clock moved (Debian's faketime, libfaketime), its
monotonic clocks left true, as a real clock step leaves them: for the retention clock tests and
the soak's clock steps."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FAKETIME = shutil.which("faketime")  # Debian's faketime (the Makefile installs it)


def libfaketime() -> str:
    libraries = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    assert libraries, "libfaketime is missing: apt-get install faketime (make test does)"
    return str(libraries[0])


def faked(offset: str) -> tuple[list[str], dict[str, str]]:
    """The command prefix and environment that run a process with its wall clock moved by
    `offset` (e.g. "-40d") from its start; its monotonic clocks stay true (DONT_FAKE_MONOTONIC),
    as a real clock step leaves them. libfaketime is preloaded directly: the `faketime` wrapper
    names a POSIX semaphore after its PID and leaves it behind when killed, so a later wrapper
    with a reused PID fails at start ("sem_open: File exists")."""
    assert FAKETIME is not None, "faketime is missing: apt-get install faketime (make test does)"
    environment = {**os.environ, "LD_PRELOAD": libfaketime(), "FAKETIME": offset}
    return [], {**environment, "DONT_FAKE_MONOTONIC": "1"}


def stepped_by_file(step_file: Path) -> dict[str, str]:
    """The environment of a process whose wall clock offset is read from `step_file` at every
    reading ("+0" now; write "+40d" to step the running process), monotonic clocks true."""
    step_file.write_text("+0\n")
    return {
        **os.environ,
        "LD_PRELOAD": libfaketime(),
        "FAKETIME_TIMESTAMP_FILE": str(step_file),
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",
    }
