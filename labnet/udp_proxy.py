"""Fault-injecting UDP proxy (for QUIC), under the same FaultPlan as the TCP proxy.

The plan, its pacing clock (`DirectionClock`, pure) and the invariants are labnet/proxy.py's: in
each direction datagrams leave in the order they arrived, no earlier than arrival + delay_s and no
faster than rate_bytes_per_s. Here, in addition:
- memory is bounded: a flow direction holds at most UDP_QUEUE_DATAGRAMS (more are dropped and
  counted, as a router would) and at most MAX_UDP_FLOWS client mappings are kept (the oldest is
  forgotten);
- loss is drawn from a seeded generator, one draw per datagram while loss_fraction > 0, so a test
  can replay it exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections import deque
from collections.abc import Callable
from types import TracebackType

from labnet.proxy import DirectionClock, FaultPlan, Observable, loop_now_s

UDP_DATAGRAM_MAX_BYTES = 65535
UDP_READ_BURST = 64  # datagrams read per wakeup, so one busy socket cannot starve the others
UDP_QUEUE_DATAGRAMS = 4096
MAX_UDP_FLOWS = 1024


class _DatagramLine:
    """One UDP flow direction: a bounded FIFO released by a single timer, in order."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self._send = send
        self._due: deque[tuple[float, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def push(self, release_s: float, datagram: bytes) -> bool:
        """Queue for release at `release_s`; False when the FIFO is full (datagram dropped)."""
        loop = asyncio.get_running_loop()
        if not self._due and release_s <= loop.time():
            self._send(datagram)
            return True
        if len(self._due) >= UDP_QUEUE_DATAGRAMS:
            return False
        self._due.append((release_s, datagram))
        if self._timer is None:
            self._timer = loop.call_at(release_s, self._release_due)
        return True

    def _release_due(self) -> None:
        loop = asyncio.get_running_loop()
        now_s = loop.time()
        while self._due and self._due[0][0] <= now_s:
            self._send(self._due.popleft()[1])
        self._timer = loop.call_at(self._due[0][0], self._release_due) if self._due else None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._due.clear()


class _UdpFlow:
    """One client address's mapping: its own upstream socket (a NAT binding)."""

    def __init__(
        self, proxy: UdpFaultProxy, client_addr: tuple[str, int], upstream: socket.socket
    ) -> None:
        self.client_addr = client_addr
        self.upstream = upstream
        self.to_server = _DatagramLine(self._send_to_server)
        self.to_client = _DatagramLine(lambda data: proxy.send_to_client(data, client_addr))
        self._proxy = proxy
        self.closed = False

    def _send_to_server(self, datagram: bytes) -> None:
        if self.closed:
            return
        try:
            self.upstream.send(datagram)
        except OSError:  # full buffer or ICMP error: lost, as on a real path
            self._proxy.count_send_failed()
        else:
            self._proxy.count_c2s(len(datagram))

    def close(self) -> None:
        self.closed = True
        self.to_server.close()
        self.to_client.close()
        with contextlib.suppress(ValueError, RuntimeError):
            asyncio.get_running_loop().remove_reader(self.upstream.fileno())
        self.upstream.close()


class UdpFaultProxy(Observable):
    """UDP proxy (for QUIC): one upstream socket per client address, FaultPlan per datagram.

    Loss draws come from random.Random(seed), one draw per datagram (either direction) while
    loss_fraction > 0, so a test can replay them exactly. reset_all()/close_all() forget every
    mapping: a client's next datagram leaves from a new upstream port (a NAT rebinding).
    Counters: connections (mappings created), refused (datagrams from refused new sources),
    bytes_/datagrams_client_to_server and _server_to_client (sent onward), dropped_by_loss,
    dropped_queue_full, dropped_send_failed, datagrams_swallowed (blackholed).
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        plan: FaultPlan | None = None,
        listen_host: str = "127.0.0.1",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.plan = plan if plan is not None else FaultPlan()
        self.listen_host = listen_host
        self.c2s_clock = DirectionClock()
        self.s2c_clock = DirectionClock()
        self._rng = random.Random(seed)
        self.connections = 0
        self.refused = 0
        self.bytes_client_to_server = 0
        self.bytes_server_to_client = 0
        self.datagrams_client_to_server = 0
        self.datagrams_server_to_client = 0
        self.dropped_by_loss = 0
        self.dropped_queue_full = 0
        self.dropped_send_failed = 0
        self.datagrams_swallowed = 0
        self._listen: socket.socket | None = None
        self._upstream_addr: tuple[int, tuple[str, int]] | None = None
        self._flows: dict[tuple[str, int], _UdpFlow] = {}

    @property
    def port(self) -> int:
        if self._listen is None:
            raise RuntimeError("the proxy is not running (use `async with`)")
        return int(self._listen.getsockname()[1])

    async def __aenter__(self) -> UdpFaultProxy:
        loop = asyncio.get_running_loop()
        upstream = await loop.getaddrinfo(
            self.upstream_host, self.upstream_port, type=socket.SOCK_DGRAM
        )
        family, _, _, _, address = upstream[0]
        self._upstream_addr = (family, (str(address[0]), int(address[1])))
        local = await loop.getaddrinfo(self.listen_host, 0, type=socket.SOCK_DGRAM)
        listen = socket.socket(local[0][0], socket.SOCK_DGRAM)
        try:
            listen.setblocking(False)
            listen.bind(local[0][4])
        except BaseException:
            listen.close()
            raise
        self._listen = listen
        loop.add_reader(listen.fileno(), self._on_client_readable)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_all()
        if self._listen is not None:
            asyncio.get_running_loop().remove_reader(self._listen.fileno())
            self._listen.close()
            self._listen = None

    def reset_all(self) -> None:
        """Forget every mapping (and what is queued on it): the next datagram gets a new port."""
        for flow in self._flows.values():
            flow.close()
        self._flows.clear()
        self._changed()

    def close_all(self) -> None:
        """UDP has no connections to close: the same as reset_all()."""
        self.reset_all()

    def _lost(self) -> bool:
        fraction = self.plan.loss_fraction
        return fraction > 0 and self._rng.random() < fraction

    def _on_client_readable(self) -> None:
        assert self._listen is not None
        for _ in range(UDP_READ_BURST):
            try:
                datagram, client_addr = self._listen.recvfrom(UDP_DATAGRAM_MAX_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error for an earlier datagram to a client: ignore it
                continue
            self._from_client(datagram, (str(client_addr[0]), int(client_addr[1])))

    def _from_client(self, datagram: bytes, client_addr: tuple[str, int]) -> None:
        plan = self.plan
        flow = self._flows.get(client_addr)
        if plan.blackhole:
            self.datagrams_swallowed += 1
        elif flow is None and plan.refuse:
            self.refused += 1
        elif self._lost():
            self.dropped_by_loss += 1
        else:
            if flow is None:
                flow = self._open_flow(client_addr)
            release_s = self.c2s_clock.release_at(loop_now_s(), len(datagram), plan)
            if not flow.to_server.push(release_s, datagram):
                self.dropped_queue_full += 1
        self._changed()

    def _open_flow(self, client_addr: tuple[str, int]) -> _UdpFlow:
        assert self._upstream_addr is not None
        if len(self._flows) >= MAX_UDP_FLOWS:
            oldest = next(iter(self._flows))
            self._flows.pop(oldest).close()
        family, address = self._upstream_addr
        upstream = socket.socket(family, socket.SOCK_DGRAM)
        try:
            upstream.setblocking(False)
            upstream.connect(address)  # also filters: only the server's replies are accepted
        except BaseException:
            upstream.close()
            raise
        flow = _UdpFlow(self, client_addr, upstream)
        self._flows[client_addr] = flow
        asyncio.get_running_loop().add_reader(upstream.fileno(), self._on_upstream_readable, flow)
        self.connections += 1
        return flow

    def _on_upstream_readable(self, flow: _UdpFlow) -> None:
        for _ in range(UDP_READ_BURST):
            if flow.closed:
                return
            try:
                datagram = flow.upstream.recv(UDP_DATAGRAM_MAX_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable from the server: nothing to forward
                continue
            self._from_server(flow, datagram)

    def _from_server(self, flow: _UdpFlow, datagram: bytes) -> None:
        plan = self.plan
        if plan.blackhole:
            self.datagrams_swallowed += 1
        elif self._lost():
            self.dropped_by_loss += 1
        else:
            release_s = self.s2c_clock.release_at(loop_now_s(), len(datagram), plan)
            if not flow.to_client.push(release_s, datagram):
                self.dropped_queue_full += 1
        self._changed()

    def send_to_client(self, datagram: bytes, client_addr: tuple[str, int]) -> None:
        if self._listen is None:
            return
        try:
            self._listen.sendto(datagram, client_addr)
        except OSError:
            self.count_send_failed()
            return
        self.bytes_server_to_client += len(datagram)
        self.datagrams_server_to_client += 1
        self._changed()

    def count_c2s(self, size_bytes: int) -> None:
        self.bytes_client_to_server += size_bytes
        self.datagrams_client_to_server += 1
        self._changed()

    def count_send_failed(self) -> None:
        self.dropped_send_failed += 1
        self._changed()
