"""A TLS listener that accepts only what its connection budget allows (the shell of
backoffice/connection_book.py), as an aiohttp site.

aiohttp's TCPSite hands the listening socket to asyncio's `create_server`, which accepts every
connection the kernel offers (a descriptor each) and starts its TLS handshake, with no bound in
all nor per client. This site runs its own accept loop instead:

1. while the budget is full it does not accept: new connections wait in the kernel's backlog
   (and beyond it are refused by the kernel), holding no descriptor of this process;
2. it accepts what the kernel holds, a batch per wake-up, and asks the book about each; a
   connection over its address's share or rate is closed at once, before a byte of TLS;
3. the TLS handshake runs (`connect_accepted_socket`) within `handshake_timeout_s`; a
   connection that does not complete it in time is closed and its slot freed;
4. the connection is then aiohttp's, as with TCPSite; its slot is freed when it is lost.

Invariants: a slot is taken before the handshake and freed exactly once (handshake failure, or
the connection's end); `stop()` ends the accept loops and every handshake in progress; the
connections already serving are closed by the runner's cleanup, as with TCPSite.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from backoffice.connection_book import Admission, ConnectionBook, ConnectionLimits

log = logging.getLogger(__name__)

BACKLOG: Final = 128
REFUSAL_REPORT_S: Final = 60.0
"""How often a listener that refused connections says so in the log (one line, counts by
reason): a flood is visible to the operator without a line per connection."""
ACCEPT_RETRY_S: Final = 1.0
"""After accept(2) failed for want of descriptors or memory: wait this long (asyncio's own
server does the same) rather than spin."""
_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


@dataclass
class ListenerStats:
    """Counters for operators, tests and benchmarks. `refused` counts connections closed at
    accept, by the Admission that refused them (`full`: another socket of the listener filled
    the budget in the same batch)."""

    accepted: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    handshakes_failed: int = 0
    peak_connections: int = 0


class _Counted(asyncio.Protocol):
    """aiohttp's protocol, unchanged, with the slot freed when its connection is lost."""

    def __init__(self, inner: asyncio.Protocol, on_lost: Callable[[], None]) -> None:
        self._inner = inner
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self._on_lost()

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class BudgetedSite(web.BaseSite):
    """An aiohttp site on host:port (0: any) with a connection budget; see the module
    docstring. `port` is the bound port once started."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        limits: ConnectionLimits,
        handshake_timeout_s: float,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=BACKLOG)
        if handshake_timeout_s <= 0:
            raise ValueError("handshake_timeout_s must be > 0")
        self._host = host
        self._requested_port = port
        self._context = ssl_context
        self._handshake_timeout_s = handshake_timeout_s
        self.book = ConnectionBook(limits)
        self.stats = ListenerStats()
        self.port = port
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listening = False
        self._stopped = False

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        self._sockets = _bind(self._host, self._requested_port)
        self.port = self._sockets[0].getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._listen()
        self._spawn(self._report_refusals())

    async def stop(self) -> None:
        self._stopped = True
        self._deafen()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        await super().stop()  # unregisters the site (it has no asyncio server to close)

    def _listen(self) -> None:
        if not (self._listening or self._stopped) and self._sockets and self._loop is not None:
            self._listening = True
            for sock in self._sockets:
                self._loop.add_reader(sock.fileno(), self._accept_ready, sock)

    def _deafen(self) -> None:
        if self._listening and self._loop is not None:
            self._listening = False
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())

    def _accept_ready(self, sock: socket.socket) -> None:
        """Accept what the kernel holds, up to BACKLOG at a time (as asyncio's own server does:
        one wake-up per batch, not per connection), within the budget."""
        assert self._loop is not None
        for _ in range(BACKLOG):
            if self.book.full:
                self._deafen()  # the rest waits in the kernel's backlog, holding nothing here
                return
            try:
                connection, peer = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    return
                log.error("accept failed, pausing error=%s", errno.errorcode.get(exc.errno))
                self._deafen()
                self._loop.call_later(ACCEPT_RETRY_S, self._listen)
                return
            address = str(peer[0]) if isinstance(peer, tuple) else ""
            admission = self.book.admit(address, self._loop.time())
            if admission is not Admission.ADMITTED:
                self.stats.refused[admission.value] += 1
                _reset(connection)
                continue
            self.stats.accepted += 1
            self.stats.peak_connections = max(self.stats.peak_connections, self.book.total)
            self._spawn(self._handshake(connection, address))

    async def _report_refusals(self) -> None:
        reported: collections.Counter[str] = collections.Counter()
        while True:
            await asyncio.sleep(REFUSAL_REPORT_S)
            if self.stats.refused != reported:
                new = self.stats.refused - reported
                reported = collections.Counter(self.stats.refused)
                log.warning(
                    "listener refused connections port=%d in_last_s=%d %s connections=%d",
                    self.port,
                    REFUSAL_REPORT_S,
                    " ".join(f"{reason}={count}" for reason, count in sorted(new.items())),
                    self.book.total,
                )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, connection: socket.socket, address: str) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.book.release(address)
                self._listen()  # a slot is free: take from the backlog again

        server = self._runner.server
        assert server is not None  # the runner was set up before the site started
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: _Counted(server(), release),
                connection,
                ssl=self._context,
                ssl_handshake_timeout=self._handshake_timeout_s,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            self.stats.handshakes_failed += 1
            release()
            connection.close()
        except asyncio.CancelledError:
            release()
            connection.close()
            raise


def _reset(connection: socket.socket) -> None:
    """Close with a reset: a refused connection leaves no TIME_WAIT behind (a flood of them
    would fill the kernel's tables, not ours)."""
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    connection.close()


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address `host` names (all interfaces for "" or a wildcard),
    as asyncio's create_server binds them; IPv6 sockets are IPv6 only."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, protocol, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, protocol)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(f"{host}:{port} names no address to listen on")
    return sockets


async def start_site(
    runner: web.BaseRunner,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext,
    limits: ConnectionLimits,
    handshake_timeout_s: float,
) -> BudgetedSite:
    """A started BudgetedSite; nothing is left behind when it cannot start."""
    site = BudgetedSite(
        runner,
        host,
        port,
        ssl_context=ssl_context,
        limits=limits,
        handshake_timeout_s=handshake_timeout_s,
    )
    try:
        await site.start()
    except BaseException:
        with contextlib.suppress(RuntimeError):
            await site.stop()
        raise
    return site
