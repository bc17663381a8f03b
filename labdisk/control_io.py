"""labdisk's control interface: a unix socket the daemon serves, and its client.

One JSON object per line each way. A request names a command and its arguments:

    {"cmd": "cut", "torn": true}
    {"cmd": "fail", "error": "EIO", "ops": ["fsync"], "path": "evidence/*", "times": 1}
    {"cmd": "stall", "delay": {"kind": "uniform", "values": [0.05, 2.0]}, "ops": ["fsync"]}

and the answer is `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`. Commands:
`ping`, `status`, `cut` (torn), `pull` (error: ENODEV | ENOTCONN | EIO, torn), `reinsert`,
`read_only` (on), `fail` (error, ops, path, after, times), `stall` (delay, ops, path, after,
times), `clear` (id: one rule, or all), `mode` (mode: strict | ext4), `commit` (a journal
commit), `classify` (classes: [[name, glob], ...]), `stats` (reset).

From a shell: `python -m labdisk ctl SOCKET cut --torn` (labdisk/__main__.py); from Python in
any process: `LabDiskClient(SOCKET).cut(torn=True)`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from labdisk.faults import Delay

if TYPE_CHECKING:
    from labdisk.fs_io import LabDiskFs

CONTROL_TIMEOUT_S: Final = 120.0  # a cut moves every durable file: seconds on a big card
MAX_LINE_BYTES: Final = 1 << 20

Command = Callable[["LabDiskFs", dict[str, Any]], Any]


def _delay(value: Any) -> Delay:
    if isinstance(value, int | float):
        return Delay.fixed(float(value))
    if isinstance(value, dict):
        return Delay.from_json(value)
    raise ValueError(f"a delay is seconds or {{kind, values}}, not {value!r}")


def _times(args: dict[str, Any]) -> int | None:
    times = args.get("times")
    return None if times is None else int(times)


COMMANDS: Final[dict[str, Command]] = {
    "ping": lambda fs, args: "pong",
    "status": lambda fs, args: fs.status(),
    "cut": lambda fs, args: fs.cut(torn=bool(args.get("torn", False))).to_json(),
    "pull": lambda fs, args: fs.pull(
        args.get("error", "ENODEV"), torn=bool(args.get("torn", False))
    ).to_json(),
    "reinsert": lambda fs, args: fs.reinsert(),
    "read_only": lambda fs, args: fs.set_read_only(bool(args.get("on", True))),
    "fail": lambda fs, args: fs.add_error(
        args["error"],
        ops=args.get("ops", ["*"]),
        path=str(args.get("path", "*")),
        after=int(args.get("after", 0)),
        times=_times(args),
    ),
    "stall": lambda fs, args: fs.add_stall(
        _delay(args["delay"]),
        ops=args.get("ops", ["fsync"]),
        path=str(args.get("path", "*")),
        after=int(args.get("after", 0)),
        times=_times(args),
    ),
    "clear": lambda fs, args: fs.clear_faults(args.get("id")),
    "mode": lambda fs, args: fs.set_mode(str(args["mode"])),
    "commit": lambda fs, args: fs.commit(),
    "classify": lambda fs, args: fs.set_classes(
        (str(name), str(glob)) for name, glob in args.get("classes", [])
    ),
    "stats": lambda fs, args: fs.stats(reset=bool(args.get("reset", False))),
}


def answer(fs: LabDiskFs, line: bytes) -> dict[str, Any]:
    """One request line -> its answer (never raises)."""
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        command = COMMANDS.get(str(request.get("cmd")))
        if command is None:
            raise ValueError(f"unknown command {request.get('cmd')!r}: one of {sorted(COMMANDS)}")
        return {"ok": True, "result": command(fs, request)}
    except (ValueError, KeyError, TypeError, OSError) as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}


class _Handler(socketserver.StreamRequestHandler):
    server: ControlServer

    def handle(self) -> None:
        while line := self.rfile.readline(MAX_LINE_BYTES):
            reply = answer(self.server.fs, line)
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class ControlServer(socketserver.ThreadingUnixStreamServer):
    """Serves the control socket on a daemon thread (`start`, `close`)."""

    daemon_threads = True

    def __init__(self, path: Path, fs: LabDiskFs) -> None:
        self.fs = fs
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        super().__init__(str(path), _Handler)
        path.chmod(0o600)
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name="labdisk-ctl", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class ControlError(RuntimeError):
    """The daemon refused a command (the message says why)."""


class LabDiskClient:
    """Control of a running labdisk, from any process: `LabDiskClient(control_socket)`."""

    def __init__(self, control: Path, *, timeout_s: float = CONTROL_TIMEOUT_S) -> None:
        self.control = Path(control)
        self.timeout_s = timeout_s

    def call(self, cmd: str, **args: Any) -> Any:
        request = json.dumps({"cmd": cmd, **args}).encode() + b"\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout_s)
            sock.connect(str(self.control))
            sock.sendall(request)
            with sock.makefile("rb") as reader:
                line = reader.readline(MAX_LINE_BYTES)
        if not line:
            raise ControlError(f"labdisk at {self.control} closed the connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error")))
        return reply.get("result")

    def ping(self) -> bool:
        return bool(self.call("ping") == "pong")

    def status(self) -> dict[str, Any]:
        return dict(self.call("status"))

    def cut(self, *, torn: bool = False) -> dict[str, Any]:
        """Power cut: only what was durable remains (the mount serves it at once; handles open
        before fail EIO). Returns what was lost: files_restored, bytes_lost, entries_reverted,
        torn_pages_kept of torn_pages."""
        return dict(self.call("cut", torn=torn))

    def pull(self, error: str = "ENODEV", *, torn: bool = False) -> dict[str, Any]:
        """The card is pulled: a cut, then every operation fails with `error` until reinsert."""
        return dict(self.call("pull", error=error, torn=torn))

    def reinsert(self) -> None:
        self.call("reinsert")

    def read_only(self, on: bool = True) -> None:
        """The card turns read-only: every write operation fails EROFS; reads work."""
        self.call("read_only", on=on)

    def fail(
        self,
        error: str,
        *,
        ops: Sequence[str] = ("*",),
        path: str = "*",
        after: int = 0,
        times: int | None = None,
    ) -> int:
        """Operations in `ops` on paths matching `path` fail with `error` (after `after`
        matches, `times` times or forever). Returns the rule's id for `clear_faults`."""
        args = {"error": error, "ops": list(ops), "path": path, "after": after, "times": times}
        return int(self.call("fail", **args))

    def stall(
        self,
        delay: Delay | float,
        *,
        ops: Sequence[str] = ("fsync",),
        path: str = "*",
        after: int = 0,
        times: int | None = None,
    ) -> int:
        """Operations in `ops` on paths matching `path` wait `delay` (seconds, or a Delay
        drawn from the seeded generator) before they run. Returns the rule's id."""
        shown = delay.to_json() if isinstance(delay, Delay) else float(delay)
        args = {"delay": shown, "ops": list(ops), "path": path, "after": after, "times": times}
        return int(self.call("stall", **args))

    def clear_faults(self, rule_id: int | None = None) -> None:
        self.call("clear", id=rule_id)

    def set_mode(self, mode: str) -> None:
        self.call("mode", mode=mode)

    def commit(self) -> None:
        self.call("commit")

    def classify(self, classes: Iterable[tuple[str, str]]) -> None:
        self.call("classify", classes=[[name, glob] for name, glob in classes])

    def stats(self, *, reset: bool = False) -> dict[str, Any]:
        return dict(self.call("stats", reset=reset))
