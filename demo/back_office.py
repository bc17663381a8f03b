"""Step 1: the reference back office, set up and serving for the whole demo.

Its recording key pair, CA and server certificate (`pki init`) and fleet repository
(`config init`); then `mvb-admin serve` with pairing, as a process of its own (as it runs in a
municipality), always stopped at the end (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from demo.children import CHILD_TIMEOUT_S, child_lines, next_line
from demo.narration import check, echo, heading, say
from demo.workspace import REPO_ROOT, DemoPaths, Runner

BACKOFFICE_NAME = "backoffice.demo"
BACKOFFICE_STOP_S = 10.0
# The back office runs as its own process, as `mvb-admin serve` (the console script may not be
# on PATH when the demo runs from a plain checkout; the module always is, from the repository).
SERVE_MAIN = "import sys; from backoffice.cli import main; sys.exit(main())"
SERVING = re.compile(
    r"serving (?:pairing at )?https://127\.0\.0\.1:(?P<port>\d+)/(?P<what>[a-z]+)/"
)


@dataclass(frozen=True, slots=True)
class BackOffice:
    """The running `mvb-admin serve`: its mutual-TLS (tus, fleet) port and its pairing port."""

    files_port: int
    pair_port: int


@contextlib.contextmanager
def backoffice_running(paths: DemoPaths, run: Runner) -> Iterator[BackOffice]:
    """`mvb-admin serve` with pairing, in a process of its own, until the context ends; its log
    goes to backoffice/serve.log. It is always stopped (SIGTERM, then SIGKILL)."""
    argv: list[str | Path] = [
        "serve", "--dir", paths.store, "--cert", paths.pki / "server.crt",
        "--key", paths.pki / "server.key", "--client-ca", paths.pki / "ca.crt",
        "--port", "0", "--reserve-bytes", "0", "--pair-port", "0",
        "--pairing-state", paths.pairing_state, "--pki-dir", paths.pki,
        "--fleet-repo", paths.fleet_repo,
    ]  # fmt: skip
    run.show("mvb-admin", [*argv, "&"])
    command = [sys.executable, "-c", SERVE_MAIN, *map(str, argv)]
    with (
        paths.serve_log.open("w") as log,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO_ROOT
        ) as process,
    ):
        try:
            yield serving_ports(child_lines(process, "backoffice"))
        finally:
            process.send_signal(signal.SIGTERM)  # it closes its listeners and store cleanly
            try:
                process.wait(BACKOFFICE_STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serving_ports(lines: queue.Queue[str | None]) -> BackOffice:
    """Read `serve`'s start lines (files, fleet, pairing) until both ports are known."""
    ports: dict[str, int] = {}
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not {"files", "pair"} <= ports.keys():
        line = next_line(lines, deadline, "mvb-admin serve")
        echo(line)
        match = SERVING.match(line)
        if match is not None:
            ports[match["what"]] = int(match["port"])
    return BackOffice(files_port=ports["files"], pair_port=ports["pair"])


def step_backoffice(paths: DemoPaths, run: Runner) -> None:
    """1 (first half): the back office's keys, PKI and fleet repository."""
    heading(1, "back office: keys, certificates, fleet repository; then it serves (pairing, tus)")
    run.admin("keys", "create", "--dir", paths.keys)
    run.admin("viewing", "init", "--log", paths.viewing_log)  # decrypt writes every viewing there
    output = run.admin("pki", "init", "--dir", paths.pki, "--host", BACKOFFICE_NAME, "127.0.0.1")
    pins = [word for word in output.split() if word.startswith("sha256/")]
    check(len(pins) == 2, "pki init printed no primary and backup pin")
    run.admin(
        "config", "init", "--repo", paths.fleet_repo, "--keys", paths.fleet_keys,
        "--trust", paths.fleet_trust,
    )  # fmt: skip
    say("every pairing code carries both pins: a box trusts exactly these two server keys")
