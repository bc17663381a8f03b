"""Telling systemd how the box is doing: READY, STATUS, STOPPING and the watchdog (sd_notify).

Our own small client of the sd_notify protocol (no libsystemd binding): systemd passes the path of
an AF_UNIX datagram socket in `NOTIFY_SOCKET`; each datagram is newline-separated `KEY=value`
assignments. With `Type=notify` the unit counts as started only at `READY=1`; with `WatchdogSec=`
systemd kills and (with `Restart=always`) restarts the service when no `WATCHDOG=1` arrives in time.

A pure core and a thin shell:

- `parse_notify_socket`, `watchdog_interval_s`, `format_message` and `status_line` read no
  socket and no process state (the environment and pid are arguments), so tests drive them with
  any value, garbage included;
- `Notifier` sends datagrams; it is a no-op when `NOTIFY_SOCKET` is unset (a developer's
  terminal, the tests, `make demo`), and a failed send is logged and reported, never raised: the
  box must keep recording whatever happens to its supervisor's socket;
- `watchdog_pinger` is the task that pings while a health predicate says the main loop is well.

How `mvb run` uses it (the service lifecycle wires it into `gateway/run.py`):

    notifier = Notifier.from_environ()
    running = await start_box(config)
    notifier.ready(status_line("standby", cameras=2, uplink=None))
    interval_s = watchdog_interval_s_from_environ()
    if interval_s is not None:
        pinger = asyncio.create_task(watchdog_pinger(notifier, interval_s, healthy))
    ...
    notifier.stopping()  # first thing on SIGTERM, before the shutdown grace period starts

STATUS text is shown by `systemctl status` and kept in the journal: only the box's mode and counts,
never officer ids, vehicle ids, serials, addresses or key material (`status_line` admits only
those facts; `format_message` refuses control characters so a value cannot smuggle in another
assignment).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from common.faults import ConfigurationFault

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

US_PER_S = 1_000_000
# sockaddr_un.sun_path is 108 bytes on Linux; a path needs its terminating NUL, an abstract name
# (leading NUL) does not.
SUN_PATH_MAX_BYTES = 108
STATUS_MAX_CHARS = 200  # one line in `systemctl status`; longer says nothing more useful

_KEY = re.compile(r"[A-Z][A-Z0-9_]*")
_STATUS_WORD = re.compile(r"[a-z][a-z0-9_-]{0,31}")

HealthCheck = Callable[[], bool]


class NotifyConfigError(ValueError, ConfigurationFault):
    """NOTIFY_SOCKET, WATCHDOG_USEC or WATCHDOG_PID hold something systemd never writes."""


# -- pure: the environment --------------------------------------------------------------------


def parse_notify_socket(value: str | None) -> bytes | None:
    """The socket address to send to, as bytes for `socket.sendto`, or None when unset.

    `/run/systemd/notify` is a path; `@name` is a Linux abstract socket (the address starts with a
    NUL byte instead of `@`). Anything else (relative paths, `vsock:` addresses of newer systemd,
    names too long for sun_path) raises NotifyConfigError: sending it anywhere would be a guess.
    """
    if value is None or value == "":
        return None
    raw = os.fsencode(value)
    if raw.startswith(b"@"):
        address = b"\0" + raw[1:]
        limit = SUN_PATH_MAX_BYTES
    elif raw.startswith(b"/"):
        address = raw
        limit = SUN_PATH_MAX_BYTES - 1
    else:
        raise NotifyConfigError(
            f"{NOTIFY_SOCKET_ENV} must be an absolute path or an @abstract name, not {value!r}"
        )
    if len(address) > limit or len(address) < 2 or b"\0" in address[1:]:
        raise NotifyConfigError(f"{NOTIFY_SOCKET_ENV} is not a usable AF_UNIX address")
    return address


def _decimal(name: str, value: str) -> int:
    """A non-negative decimal as systemd writes it; anything else is an error, never a guess."""
    if not value.isascii() or not value.isdigit():
        raise NotifyConfigError(f"{name} must be a decimal number, not {value[:32]!r}")
    return int(value)


def watchdog_interval_s(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between watchdog pings (half of WATCHDOG_USEC), or None when no watchdog applies.

    None when WATCHDOG_USEC is unset or 0, or when WATCHDOG_PID names another process (the
    variables were inherited by a child: the watchdog is its parent's duty). Garbage in either
    variable raises NotifyConfigError. Half the timeout, as sd_watchdog_enabled(3) recommends, so
    one late ping is not yet a restart. `environ` defaults to os.environ, `pid` to os.getpid().
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get(WATCHDOG_USEC_ENV)
    if raw_usec is None:
        return None
    usec = _decimal(WATCHDOG_USEC_ENV, raw_usec)
    raw_pid = env.get(WATCHDOG_PID_ENV)
    if raw_pid is not None:
        watchdog_pid = _decimal(WATCHDOG_PID_ENV, raw_pid)
        if watchdog_pid == 0:
            raise NotifyConfigError(f"{WATCHDOG_PID_ENV} must name a process, not 0")
        if watchdog_pid != (os.getpid() if pid is None else pid):
            return None
    if usec == 0:
        return None
    return usec / 2 / US_PER_S


def watchdog_interval_s_from_environ() -> float | None:
    """`watchdog_interval_s()` for the running process; garbage is logged and means no watchdog
    (the service then stays up without pings rather than crashing at start)."""
    try:
        return watchdog_interval_s()
    except NotifyConfigError as exc:
        log.warning("systemd watchdog disabled: %s", exc)
        return None


# -- pure: messages ---------------------------------------------------------------------------


def format_message(assignments: Iterable[tuple[str, str]]) -> bytes:
    """`KEY=value` lines as one datagram.

    Invariant: every key matches [A-Z][A-Z0-9_]* and no value holds a control character (a
    newline would start another assignment: a STATUS must never be able to say READY=1).
    """
    lines: list[str] = []
    for key, value in assignments:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not an sd_notify key: {key!r}")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise ValueError(f"sd_notify value for {key} holds a control character")
        lines.append(f"{key}={value}")
    if not lines:
        raise ValueError("an sd_notify message needs at least one assignment")
    return "\n".join(lines).encode("utf-8")


def status_line(mode: str, *, cameras: int, uplink: str | None) -> str:
    """The box's STATUS, e.g. `recording; 2 cameras; uplink wifi`.

    Only the mode, a count and the uplink's cost class (`wifi`, `cellular`) or `none`: short
    lowercase words, so no serial, officer id, host name or address can end up in the journal.
    """
    link = "none" if uplink is None else uplink
    for what, word in (("mode", mode), ("uplink", link)):
        if not _STATUS_WORD.fullmatch(word):
            raise ValueError(f"status {what} must be one short lowercase word, not {word!r}")
    if cameras < 0:
        raise ValueError(f"cameras must be >= 0, not {cameras}")
    noun = "camera" if cameras == 1 else "cameras"
    return f"{mode}; {cameras} {noun}; uplink {link}"


# -- shell: the socket ------------------------------------------------------------------------


@dataclass
class Notifier:
    """Sends sd_notify datagrams to `address` (None: every call is a no-op returning False).

    Sends never block (MSG_DONTWAIT: a supervisor that stopped reading must not stall the event
    loop) and never raise: a failure is logged once per kind of error and the call returns False.
    """

    address: bytes | None
    _sock: socket.socket | None = field(default=None, init=False, repr=False)
    # errno of the last failure: a dead socket logs once, not once per ping
    _failed: int | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for; disabled (with a warning) when NOTIFY_SOCKET is bad."""
        env = os.environ if environ is None else environ
        try:
            return cls(parse_notify_socket(env.get(NOTIFY_SOCKET_ENV)))
        except NotifyConfigError as exc:
            log.warning("sd_notify disabled: %s", exc)
            return cls(None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: tuple[str, str]) -> bool:
        """Send one datagram; True when the kernel took it."""
        message = format_message(assignments)  # a bad message is a programming error: raise
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            if exc.errno != self._failed:
                log.warning("sd_notify send failed: %s", errno.errorcode.get(exc.errno or 0, exc))
            self._failed = exc.errno
            return False
        self._failed = None
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete: systemd starts the watchdog clock from here."""
        if status is None:
            return self.notify(("READY", "1"))
        return self.notify(("READY", "1"), ("STATUS", status))

    def status(self, text: str) -> bool:
        return self.notify(("STATUS", text))

    def stopping(self) -> bool:
        """Shutdown has begun; systemd then waits up to TimeoutStopSec= instead of the watchdog."""
        return self.notify(("STOPPING", "1"))

    def watchdog(self) -> bool:
        return self.notify(("WATCHDOG", "1"))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the current start or stop timeout (e.g. a long card
        recovery at start); systemd accepts this only while starting or stopping."""
        if not seconds > 0:
            raise ValueError(f"extend_timeout needs seconds > 0, not {seconds}")
        return self.notify(("EXTEND_TIMEOUT_USEC", str(round(seconds * US_PER_S))))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# -- shell: the watchdog task -----------------------------------------------------------------


async def watchdog_pinger(notifier: Notifier, interval_s: float, healthy: HealthCheck) -> None:
    """Ping the watchdog every `interval_s` while `healthy()` says True; runs until cancelled.

    Each tick calls `healthy()` once and sends `WATCHDOG=1` only if it returned True, so a wedged
    core stops the pings and systemd restarts the service after WatchdogSec=. A predicate that
    raises counts as unhealthy for that tick (logged), and the next tick asks again: a health check
    that recovers resumes the pings. `healthy` runs in the event loop and must be quick and
    non-blocking (e.g. compare a heartbeat timestamp with the monotonic clock); that it runs at
    all already proves the loop turns.
    """
    if not interval_s > 0:
        raise ValueError(f"watchdog interval must be > 0 s, not {interval_s}")
    paused = False
    while True:
        ok = _ask(healthy)
        if ok:
            notifier.watchdog()
        if ok == paused:  # a change of state: log the edge, not every tick
            paused = not ok
            log.warning("watchdog pings %s", "paused: box unhealthy" if paused else "resumed")
        await asyncio.sleep(interval_s)


def _ask(healthy: HealthCheck) -> bool:
    try:
        return healthy() is True
    except Exception:
        log.exception("watchdog health check failed; counted as unhealthy")
        return False
