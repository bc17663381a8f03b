"""Fault-injecting TCP and UDP proxies, for tests that break connections on purpose.

This module holds the plan, the pacing clock and the TCP proxy; the UDP proxy (for QUIC) is
labnet/udp_proxy.py, under the same plan and invariants.

A proxy listens on loopback, forwards to a real server, and applies a FaultPlan that the test may
change at any moment: the plan is read again for every TCP chunk and every UDP datagram.

    async with TcpFaultProxy("127.0.0.1", server_port, plan=FaultPlan(delay_s=0.05)) as proxy:
        connect the client to ("127.0.0.1", proxy.port); later: proxy.reset_all()

Invariants:
- in each direction traffic leaves in the order it arrived, no earlier than arrival + delay_s and
  no faster than rate_bytes_per_s: one token bucket (RATE_BURST_BYTES deep) per direction, shared
  by all connections/flows of the proxy, like one link;
- memory is bounded: a TCP direction holds at most QUEUE_CHUNKS chunks of at most CHUNK_BYTES and
  stops reading when full (backpressure reaches the sender through TCP flow control); a UDP flow
  direction holds at most UDP_QUEUE_DATAGRAMS (more are dropped and counted, as a router would) and
  at most MAX_UDP_FLOWS client mappings are kept (the oldest is forgotten);
- a cut (cut_after_client_bytes) fires once per setting: the plan field is reset to None;
- a stall (stall_after_client_bytes) holds each connection's client->server bytes beyond that
  many, unread (TCP backpressure reaches the client), while server->client keeps flowing: a
  client whose request body stops mid-way, so the server's own idle timeout answers (408). It
  lasts until the field is None again;
- counters only grow; wait_until() wakes on every counter change, so tests await events, not time.

One TCP proxy can stand for several links at once: with `plan_for_peer`, each client address gets
its own plan (and its own rate buckets), so a box whose WiFi link binds 127.0.0.2 and whose LTE
link binds 127.0.0.3 can lose WiFi while LTE carries on, through one proxy:

    plans = {"127.0.0.2": FaultPlan(), "127.0.0.3": FaultPlan(delay_s=0.05)}
    async with TcpFaultProxy("127.0.0.1", server_port, plan_for_peer=plans.get) as proxy:
        plans["127.0.0.2"].blackhole = True; proxy.reset_peer("127.0.0.2")

Loss is UDP only: TCP here is terminated at the proxy on both sides, so dropping bytes of a stream
would corrupt it rather than emulate loss (the kernel retransmits below us). Packet loss for TCP
belongs one layer down: labnet.netns.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

CHUNK_BYTES = 65536
MIN_PACED_CHUNK_BYTES = 512
PACED_CHUNK_S = 0.01  # rate-limited reads take ~10 ms of line rate, so pacing stays smooth
QUEUE_CHUNKS = 32
RATE_BURST_BYTES = 16 * 1024
CONNECT_TIMEOUT_S = 10.0
DEFAULT_WAIT_S = 10.0
STALL_POLL_S = 0.01  # how often a stalled direction looks whether the plan lifted the stall


@dataclass
class FaultPlan:
    """What the proxy does to traffic; mutable, read on every chunk/datagram.

    delay_s: added one way, in each direction (order kept). rate_bytes_per_s: per direction cap,
    None = unlimited. loss_fraction: UDP datagrams dropped at random (seeded; TCP ignores it, see
    the module doc). blackhole: everything is swallowed, connections stay open. refuse: new TCP
    connections are reset at once, new UDP sources ignored. cut_after_client_bytes: close a
    connection after forwarding exactly this many client->server bytes, once (then None).
    stall_after_client_bytes: forward at most this many client->server bytes per TCP connection
    and hold the rest until it is None again (server->client flows on). cuts: how many cuts have
    fired under this plan.
    """

    delay_s: float = 0.0
    rate_bytes_per_s: float | None = None
    loss_fraction: float = 0.0
    blackhole: bool = False
    stall: bool = False
    refuse: bool = False
    cut_after_client_bytes: int | None = None
    stall_after_client_bytes: int | None = None
    cuts: int = 0

    def __post_init__(self) -> None:
        if self.delay_s < 0 or not 0.0 <= self.loss_fraction <= 1.0:
            raise ValueError("delay_s must be >= 0 and loss_fraction within [0, 1]")
        if self.rate_bytes_per_s is not None and self.rate_bytes_per_s <= 0:
            raise ValueError("rate_bytes_per_s must be > 0 (None = unlimited)")
        for name in ("cut_after_client_bytes", "stall_after_client_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 (None = never)")


class DirectionClock:
    """When each unit of one direction may leave: token bucket first, then the fixed delay.

    Pure. A chunk that fits the bucket leaves at once; otherwise when the link is free again.
    Release times never decrease, so lowering delay_s mid-stream cannot reorder traffic.
    """

    def __init__(self) -> None:
        self._link_free_at_s = -math.inf
        self._last_release_s = -math.inf

    def release_at(self, now_s: float, size_bytes: int, plan: FaultPlan) -> float:
        departure_s = now_s
        rate = plan.rate_bytes_per_s
        if rate is not None:
            # A full bucket is a link that was free RATE_BURST_BYTES' worth of time ago.
            start_s = max(self._link_free_at_s, now_s - RATE_BURST_BYTES / rate)
            self._link_free_at_s = start_s + size_bytes / rate
            departure_s = max(now_s, self._link_free_at_s)
        release_s = max(departure_s + plan.delay_s, self._last_release_s)
        self._last_release_s = release_s
        return release_s


class Observable:
    """Counters that tests can await: wait_until(predicate) wakes on every change."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_until(
        self, predicate: Callable[[], bool], timeout_s: float = DEFAULT_WAIT_S
    ) -> None:
        """Return once predicate() holds (checked after every counter change); TimeoutError."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close at once with a TCP RST (SO_LINGER 0): the peer sees ECONNRESET."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Signal(enum.Enum):
    EOF = "eof"  # the source half-closed: half-close the destination
    CUT = "cut"  # forwarded the cut point: end the connection


_Item = tuple[float, bytes] | _Signal

PlanForPeer = Callable[[str], FaultPlan | None]
"""A client's IP address -> its own plan, or None for the proxy's shared `plan`."""


class _Cut(Exception):
    """The connection reached its cut point (raised by the client->server writer)."""


class _End(enum.Enum):
    CLOSE = "close"  # FIN both sides (after flushing what is already written)
    RESET = "reset"  # RST both sides


class _TcpConnection:
    """One proxied connection: per direction a reader task and a writer task joined by a queue.

    The reader applies the plan (blackhole, cut) and stamps each chunk with its release time; the
    writer waits for that time, writes and drains. Either side's failure ends both.
    """

    def __init__(
        self,
        proxy: TcpFaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self._proxy = proxy
        self._client_reader, self._client_writer = client
        self._server_reader, self._server_writer = server
        self.peer_host = _peer_host(self._client_writer)
        self._c2s_clock, self._s2c_clock = proxy.clocks_for(self.peer_host)
        self._client_bytes_accepted = 0  # client->server bytes taken for forwarding (cut counter)
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = False

    async def run(self) -> None:
        to_server: asyncio.Queue[_Item] = asyncio.Queue(QUEUE_CHUNKS)
        to_client: asyncio.Queue[_Item] = asyncio.Queue(QUEUE_CHUNKS)
        proxy = self._proxy
        self._tasks = [
            asyncio.create_task(self._read_client(to_server)),
            asyncio.create_task(self._write(to_server, self._server_writer, self._count_c2s)),
            asyncio.create_task(self._read_server(to_client)),
            asyncio.create_task(self._write(to_client, self._client_writer, proxy.count_s2c)),
        ]
        how = _End.CLOSE
        errors: list[BaseException] = []
        try:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            errors = [e for task in done if not task.cancelled() and (e := task.exception())]
            if any(isinstance(error, OSError) for error in errors):
                how = _End.RESET  # a reset (or other socket error) on one side resets the other
        finally:
            self.end(how)
            await asyncio.gather(*self._tasks, return_exceptions=True)
        bugs = [error for error in errors if not isinstance(error, _Cut | OSError)]
        if bugs:
            raise bugs[0]  # not a network fault: let it show

    def _plan(self) -> FaultPlan:
        """This connection's plan, read afresh: the test may change or replace it any time."""
        return self._proxy.plan_for(self.peer_host)

    def _count_c2s(self, size_bytes: int) -> None:
        self._proxy.count_peer_c2s(self.peer_host, size_bytes)
        self._proxy.count_c2s(size_bytes)

    def end(self, how: _End) -> None:
        """End both sides now (idempotent); the tasks are cancelled."""
        if self._ended:
            return
        self._ended = True
        for task in self._tasks:
            task.cancel()
        for writer in (self._client_writer, self._server_writer):
            if how is _End.RESET:
                _abort_with_rst(writer)
            else:
                writer.close()

    async def _read_client(self, queue: asyncio.Queue[_Item]) -> None:
        while True:
            chunk = await self._client_reader.read(await self._client_read_size())
            plan = self._plan()
            if not chunk:
                await self._forward_eof(queue, plan)
                return
            if plan.blackhole:
                self._proxy.count_swallowed(len(chunk))
                continue
            chunk, cut = self._take_until_cut(chunk, plan)
            if chunk:
                release_s = self._c2s_clock.release_at(loop_now_s(), len(chunk), plan)
                await queue.put((release_s, chunk))
            if cut:
                await queue.put(_Signal.CUT)
                return

    async def _client_read_size(self) -> int:
        """How much the next client read may take: never past a stall point, and nothing (it
        waits, reading nothing) while the connection stands at one."""
        while True:
            plan = self._plan()
            stall = plan.stall_after_client_bytes
            if stall is None:
                return _read_size(plan)
            if self._client_bytes_accepted < stall:
                return min(_read_size(plan), stall - self._client_bytes_accepted)
            await asyncio.sleep(STALL_POLL_S)  # the test lifts the stall by changing the plan

    def _take_until_cut(self, chunk: bytes, plan: FaultPlan) -> tuple[bytes, bool]:
        """The part of `chunk` to forward and whether the cut fires after it (one-shot)."""
        limit = plan.cut_after_client_bytes
        remaining = None if limit is None else limit - self._client_bytes_accepted
        if remaining is None or remaining > len(chunk):
            self._client_bytes_accepted += len(chunk)
            return chunk, False
        plan.cut_after_client_bytes = None
        plan.cuts += 1
        self._proxy.count_cut()
        taken = chunk[: max(0, remaining)]
        self._client_bytes_accepted += len(taken)
        return taken, True

    async def _read_server(self, queue: asyncio.Queue[_Item]) -> None:
        while True:
            chunk = await self._server_reader.read(_read_size(self._plan()))
            plan = self._plan()
            if not chunk:
                await self._forward_eof(queue, plan)
                return
            if plan.blackhole:
                self._proxy.count_swallowed(len(chunk))
                continue
            release_s = self._s2c_clock.release_at(loop_now_s(), len(chunk), plan)
            await queue.put((release_s, chunk))

    @staticmethod
    async def _forward_eof(queue: asyncio.Queue[_Item], plan: FaultPlan) -> None:
        """Pass a half-close on, unless blackholed: then the FIN is swallowed like the data."""
        if not plan.blackhole:
            await queue.put(_Signal.EOF)

    @staticmethod
    async def _write(
        queue: asyncio.Queue[_Item],
        writer: asyncio.StreamWriter,
        count: Callable[[int], None],
    ) -> None:
        while True:
            item = await queue.get()
            if item is _Signal.EOF:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            if item is _Signal.CUT:
                raise _Cut
            release_s, chunk = item
            wait_s = release_s - loop_now_s()
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # the injected delay itself, not synchronisation
            writer.write(chunk)
            count(len(chunk))
            await writer.drain()


def _read_size(plan: FaultPlan) -> int:
    if plan.rate_bytes_per_s is None:
        return CHUNK_BYTES
    paced = int(plan.rate_bytes_per_s * PACED_CHUNK_S)
    return min(CHUNK_BYTES, max(MIN_PACED_CHUNK_BYTES, paced))


def loop_now_s() -> float:
    """The running loop's clock: every release time is on it."""

    return asyncio.get_running_loop().time()


def _peer_host(writer: asyncio.StreamWriter) -> str:
    """The client's IP address ("" when the transport cannot tell)."""
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class TcpFaultProxy(Observable):
    """TCP proxy from (listen_host, port) to (upstream_host, upstream_port) applying `plan`.

    Counters: connections (accepted, refused ones included), refused, upstream_failures (upstream
    unreachable: the client is reset), bytes_client_to_server / bytes_server_to_client (written
    onward), bytes_swallowed (blackholed), cuts; per client address: peer_bytes_client_to_server.

    `plan_for_peer` (optional) gives a client address its own plan, read like `plan` on every
    chunk; a peer with its own plan also gets its own rate buckets (it is a link of its own).
    Peers for which it answers None share `plan` and the shared buckets, as without it.

    `receive_buffer_bytes` (optional) bounds what the proxy takes from a client ahead of what it
    forwarded: the kernel's receive buffer of client connections (SO_RCVBUF, which the kernel
    doubles) and the stream reader's (which pauses at twice it). Under a rate cap the proxy is
    the bottleneck, and a client's bytes it has acknowledged should be about as few as a
    link's queue holds; loopback's defaults would let it acknowledge hundreds of kilobytes the
    "link" has not carried yet.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        plan: FaultPlan | None = None,
        listen_host: str = "127.0.0.1",
        *,
        plan_for_peer: PlanForPeer | None = None,
        receive_buffer_bytes: int | None = None,
    ) -> None:
        super().__init__()
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.plan = plan if plan is not None else FaultPlan()
        self.listen_host = listen_host
        self.plan_for_peer = plan_for_peer
        if receive_buffer_bytes is not None and receive_buffer_bytes < 1024:
            raise ValueError("receive_buffer_bytes must be at least 1024 (None: the default)")
        self.receive_buffer_bytes = receive_buffer_bytes
        self.c2s_clock = DirectionClock()
        self.s2c_clock = DirectionClock()
        self._peer_clocks: dict[str, tuple[DirectionClock, DirectionClock]] = {}
        self.peer_bytes_client_to_server: dict[str, int] = {}
        self.connections = 0
        self.refused = 0
        self.upstream_failures = 0
        self.bytes_client_to_server = 0
        self.bytes_server_to_client = 0
        self.bytes_swallowed = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._live: set[_TcpConnection] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not running (use `async with`)")
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> TcpFaultProxy:
        if self.receive_buffer_bytes is None:
            self._server = await asyncio.start_server(self._on_client, self.listen_host, 0)
            return self
        listener = socket.create_server((self.listen_host, 0))
        # Set before any connection: accepted sockets inherit it, and the window scale a client
        # is offered at its handshake is sized by it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer_bytes)
        self._server = await asyncio.start_server(
            self._on_client, sock=listener, limit=self.receive_buffer_bytes
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        self.close_all()
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def reset_all(self) -> None:
        """Abort every live connection with a RST on both sides."""
        for connection in list(self._live):
            connection.end(_End.RESET)

    def reset_peer(self, peer_host: str) -> int:
        """Abort (RST both sides) the live connections of the client at `peer_host` only;
        returns how many there were."""
        mine = [c for c in self._live if c.peer_host == peer_host]
        for connection in mine:
            connection.end(_End.RESET)
        return len(mine)

    def plan_for(self, peer_host: str) -> FaultPlan:
        """The plan that applies to a client at `peer_host` now."""
        if self.plan_for_peer is not None:
            own = self.plan_for_peer(peer_host)
            if own is not None:
                return own
        return self.plan

    def clocks_for(self, peer_host: str) -> tuple[DirectionClock, DirectionClock]:
        """(client->server, server->client) buckets for a new connection from `peer_host`: its
        own while it has its own plan, else the shared ones (a connection keeps what it got)."""
        if self.plan_for_peer is None or self.plan_for_peer(peer_host) is None:
            return self.c2s_clock, self.s2c_clock
        return self._peer_clocks.setdefault(peer_host, (DirectionClock(), DirectionClock()))

    def count_peer_c2s(self, peer_host: str, size_bytes: int) -> None:
        """Per client address; the shared counter is counted by `count_c2s`."""
        by_peer = self.peer_bytes_client_to_server
        by_peer[peer_host] = by_peer.get(peer_host, 0) + size_bytes

    def close_all(self) -> None:
        """Close every live connection (FIN both sides, after flushing what is written)."""
        for connection in list(self._live):
            connection.end(_End.CLOSE)

    def count_c2s(self, size_bytes: int) -> None:
        self.bytes_client_to_server += size_bytes
        self._changed()

    def count_s2c(self, size_bytes: int) -> None:
        self.bytes_server_to_client += size_bytes
        self._changed()

    def count_swallowed(self, size_bytes: int) -> None:
        self.bytes_swallowed += size_bytes
        self._changed()

    def count_cut(self) -> None:
        self.cuts += 1
        self._changed()

    async def _on_client(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._serve(client_reader, client_writer)
        finally:
            self._handlers.discard(handler)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        if self.plan_for(_peer_host(client_writer)).refuse:
            self.refused += 1
            _abort_with_rst(client_writer)
            self._changed()
            return
        try:
            server = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError):
            self.upstream_failures += 1
            _abort_with_rst(client_writer)
            self._changed()
            return
        connection = _TcpConnection(self, (client_reader, client_writer), server)
        self._live.add(connection)
        self._changed()
        try:
            await connection.run()
        finally:
            connection.end(_End.CLOSE)
            self._live.discard(connection)
