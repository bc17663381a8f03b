"""The fault-injecting proxies against real TCP and UDP servers on 127.0.0.1.

Timing is only ever checked as a lower bound (a delay or a rate cap can only make things slower);
everything else waits on events: the proxies' wait_until() and the servers' queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import cast

import pytest

from labnet.proxy import RATE_BURST_BYTES, DirectionClock, FaultPlan, TcpFaultProxy
from labnet.udp_proxy import UdpFaultProxy

LOOPBACK = "127.0.0.1"
WAIT_S = 10.0


class TcpUpstream:
    """A real TCP server: echoes (echo=True) or only reads; reports each connection's end.

    `ended` gets (bytes received, "eof" | "reset") per connection.
    """

    def __init__(self, *, echo: bool) -> None:
        self.echo = echo
        self.connections = 0
        self.ended: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        received = bytearray()
        how = "eof"
        try:
            while chunk := await reader.read(65536):
                received += chunk
                if self.echo:
                    writer.write(chunk)
                    await writer.drain()
        except ConnectionResetError:
            how = "reset"
        finally:
            writer.close()
        await self.ended.put((bytes(received), how))


@contextlib.asynccontextmanager
async def tcp_upstream(*, echo: bool) -> AsyncIterator[TcpUpstream]:
    upstream = TcpUpstream(echo=echo)
    server = await asyncio.start_server(upstream.handle, LOOPBACK, 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def tcp_client(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class UdpUpstream(asyncio.DatagramProtocol):
    """A real UDP server: echo replies with b"<source port>|<datagram>", or just collects."""

    def __init__(self, *, echo: bool) -> None:
        self.echo = echo
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.put_nowait(data)
        if self.echo and self.transport is not None:
            self.transport.sendto(f"{addr[1]}|".encode() + data, addr)


@contextlib.asynccontextmanager
async def udp_upstream(*, echo: bool) -> AsyncIterator[tuple[UdpUpstream, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: UdpUpstream(echo=echo), local_addr=(LOOPBACK, 0)
    )
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@contextlib.contextmanager
def udp_client(port: int) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect((LOOPBACK, port))
    try:
        yield sock
    finally:
        sock.close()


async def udp_exchange(sock: socket.socket, payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, payload)
    return await asyncio.wait_for(loop.sock_recv(sock, 65536), WAIT_S)


async def connection_ended(reader: asyncio.StreamReader) -> bool:
    """True once the proxy ended the connection: EOF, or a reset."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT_S) is not None
    except ConnectionResetError:
        return True


# -- the pure clock ----------------------------------------------------------------------------


def test_clock_keeps_order_when_delay_is_lowered() -> None:
    clock = DirectionClock()
    plan = FaultPlan(delay_s=1.0)
    first_s = clock.release_at(0.0, 100, plan)
    plan.delay_s = 0.0
    second_s = clock.release_at(0.1, 100, plan)
    assert first_s == 1.0
    assert second_s == first_s


def test_clock_spaces_chunks_by_rate_after_the_burst() -> None:
    clock = DirectionClock()
    plan = FaultPlan(rate_bytes_per_s=1000.0)
    releases_s = [clock.release_at(0.0, RATE_BURST_BYTES, plan) for _ in range(3)]
    assert releases_s == [0.0, RATE_BURST_BYTES / 1000.0, 2 * RATE_BURST_BYTES / 1000.0]


# -- TCP -----------------------------------------------------------------------------------------


async def test_tcp_delay_applies_one_way_in_each_direction_in_order() -> None:
    plan = FaultPlan(delay_s=0.1)
    async with (
        tcp_upstream(echo=True) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port, plan=plan) as proxy,
        tcp_client(proxy.port) as (reader, writer),
    ):
        started_s = time.monotonic()
        for word in (b"one ", b"two ", b"three"):
            writer.write(word)
            await writer.drain()
        echoed = await asyncio.wait_for(reader.readexactly(13), WAIT_S)
        elapsed_s = time.monotonic() - started_s
    assert echoed == b"one two three"
    assert elapsed_s >= 2 * plan.delay_s


async def test_tcp_rate_cap_bounds_transfer_time() -> None:
    plan = FaultPlan(rate_bytes_per_s=400_000.0)
    payload = bytes(range(256)) * 800  # 204,800 bytes
    async with (
        tcp_upstream(echo=False) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port, plan=plan) as proxy,
    ):
        started_s = time.monotonic()
        async with tcp_client(proxy.port) as (_, writer):
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            received, how = await asyncio.wait_for(upstream.ended.get(), WAIT_S)
        elapsed_s = time.monotonic() - started_s
    assert (received, how) == (payload, "eof")
    assert proxy.bytes_client_to_server == len(payload)
    assert elapsed_s >= (len(payload) - RATE_BURST_BYTES) / 400_000.0


async def test_tcp_cut_after_client_bytes_cuts_exactly_there_once() -> None:
    plan = FaultPlan(cut_after_client_bytes=1000)
    payload = b"x" * 5000
    async with (
        tcp_upstream(echo=False) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port, plan=plan) as proxy,
    ):
        async with tcp_client(proxy.port) as (reader, writer):
            writer.write(payload)
            await writer.drain()
            cut_received, how = await asyncio.wait_for(upstream.ended.get(), WAIT_S)
            assert await connection_ended(reader)
        async with tcp_client(proxy.port) as (_, writer):
            writer.write(payload)
            writer.write_eof()
            whole_received, _ = await asyncio.wait_for(upstream.ended.get(), WAIT_S)
    assert (len(cut_received), how) == (1000, "eof")
    assert whole_received == payload
    assert plan.cut_after_client_bytes is None
    assert (plan.cuts, proxy.cuts) == (1, 1)
    assert proxy.bytes_client_to_server == 1000 + len(payload)


async def test_tcp_stall_holds_client_bytes_while_the_server_still_answers() -> None:
    """A request body that stops mid-way: the server sees the first 1000 bytes and can still
    answer (here: it echoes them); the rest is held, not lost, until the stall is lifted."""
    plan = FaultPlan(stall_after_client_bytes=1000)
    payload = bytes(range(256)) * 20
    async with (
        tcp_upstream(echo=True) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port, plan=plan) as proxy,
        tcp_client(proxy.port) as (reader, writer),
    ):
        writer.write(payload)
        await writer.drain()
        await proxy.wait_until(lambda: proxy.bytes_client_to_server == 1000)
        assert await asyncio.wait_for(reader.readexactly(1000), WAIT_S) == payload[:1000]

        plan.stall_after_client_bytes = None
        rest = await asyncio.wait_for(reader.readexactly(len(payload) - 1000), WAIT_S)

    assert rest == payload[1000:]
    assert proxy.bytes_client_to_server == len(payload)


async def test_tcp_reset_all_resets_both_sides() -> None:
    async with (
        tcp_upstream(echo=True) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port) as proxy,
        tcp_client(proxy.port) as (reader, writer),
    ):
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), WAIT_S) == b"hello"
        proxy.reset_all()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), WAIT_S)
        received, how = await asyncio.wait_for(upstream.ended.get(), WAIT_S)
    assert (received, how) == (b"hello", "reset")


async def test_tcp_blackhole_swallows_data_and_keeps_the_connection() -> None:
    plan = FaultPlan(blackhole=True)
    async with (
        tcp_upstream(echo=True) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port, plan=plan) as proxy,
        tcp_client(proxy.port) as (reader, writer),
    ):
        writer.write(b"lost")
        await proxy.wait_until(lambda: proxy.bytes_swallowed == 4)
        plan.blackhole = False
        writer.write(b"kept")
        echoed = await asyncio.wait_for(reader.readexactly(4), WAIT_S)
        writer.write_eof()
        received, _ = await asyncio.wait_for(upstream.ended.get(), WAIT_S)
    assert echoed == b"kept"
    assert received == b"kept"
    assert proxy.bytes_client_to_server == 4


async def test_tcp_stall_stops_accepting_the_clients_bytes_until_lifted() -> None:
    """A stalled proxy reads nothing: once the kernel buffers between are full (a few MB at
    most), the client's socket takes no more and its transport keeps the rest; lifted, every
    byte arrives in order."""
    plan = FaultPlan(stall_after_client_bytes=0)
    data = random.Random(7).randbytes(32 * 1024 * 1024)  # more than every buffer between
    async with (
        tcp_upstream(echo=False) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port, plan=plan) as proxy,
        tcp_client(proxy.port) as (_, writer),
    ):
        writer.write(data)
        await proxy.wait_until(lambda: proxy.connections == 1)
        assert writer.transport.get_write_buffer_size() > 0
        assert proxy.bytes_client_to_server == 0
        plan.stall_after_client_bytes = None
        await asyncio.wait_for(writer.drain(), WAIT_S)
        writer.write_eof()
        received, how = await asyncio.wait_for(upstream.ended.get(), WAIT_S)
    assert (received == data, how) == (True, "eof")


async def test_tcp_refuse_resets_new_connections_only_while_set() -> None:
    plan = FaultPlan(refuse=True)
    async with (
        tcp_upstream(echo=True) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port, plan=plan) as proxy,
    ):
        async with tcp_client(proxy.port) as (reader, _):
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), WAIT_S)
        assert (proxy.connections, proxy.refused, upstream.connections) == (1, 1, 0)
        plan.refuse = False
        async with tcp_client(proxy.port) as (reader, writer):
            writer.write(b"again")
            assert await asyncio.wait_for(reader.readexactly(5), WAIT_S) == b"again"
    assert (proxy.connections, proxy.refused, upstream.connections) == (2, 1, 1)


async def test_tcp_unreachable_upstream_resets_the_client() -> None:
    with socket.socket() as unused:  # bound, never listening: connecting to it is refused
        unused.bind((LOOPBACK, 0))
        dead_port = unused.getsockname()[1]
        async with (
            TcpFaultProxy(LOOPBACK, dead_port) as proxy,
            tcp_client(proxy.port) as (reader, _),
        ):
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), WAIT_S)
    assert proxy.upstream_failures == 1


# -- UDP -----------------------------------------------------------------------------------------


async def test_udp_round_trip_with_delay_keeps_order() -> None:
    plan = FaultPlan(delay_s=0.05)
    async with (
        udp_upstream(echo=True) as (_, port),
        UdpFaultProxy(LOOPBACK, port, plan=plan) as proxy,
    ):
        loop = asyncio.get_running_loop()
        with udp_client(proxy.port) as sock:
            started_s = time.monotonic()
            for index in range(3):
                await loop.sock_sendall(sock, b"d%d" % index)
            replies = [await asyncio.wait_for(loop.sock_recv(sock, 100), WAIT_S) for _ in "abc"]
            elapsed_s = time.monotonic() - started_s
    assert [reply.split(b"|")[1] for reply in replies] == [b"d0", b"d1", b"d2"]
    assert elapsed_s >= 2 * plan.delay_s
    assert (proxy.datagrams_client_to_server, proxy.datagrams_server_to_client) == (3, 3)


async def wait_handled(proxy: UdpFaultProxy, datagrams: int) -> None:
    """Until the proxy has forwarded or dropped `datagrams` client datagrams."""
    await proxy.wait_until(
        lambda: proxy.dropped_by_loss + proxy.datagrams_client_to_server == datagrams
    )


async def test_udp_loss_drops_exactly_the_seeded_draws() -> None:
    seed, fraction, batches, batch_size = 7, 0.25, 8, 50
    total = batches * batch_size
    draws = random.Random(seed)
    expected_lost = {index for index in range(total) if draws.random() < fraction}
    plan = FaultPlan(loss_fraction=fraction)
    async with (
        udp_upstream(echo=False) as (sink, port),
        UdpFaultProxy(LOOPBACK, port, plan=plan, seed=seed) as proxy,
    ):
        loop = asyncio.get_running_loop()
        received: list[int] = []
        with udp_client(proxy.port) as sock:
            # In batches, each fully handled before the next: no kernel buffer ever overflows.
            for batch in range(batches):
                for index in range(batch * batch_size, (batch + 1) * batch_size):
                    await loop.sock_sendall(sock, b"%d" % index)
                await wait_handled(proxy, (batch + 1) * batch_size)
                while len(received) < proxy.datagrams_client_to_server:
                    received.append(int(await asyncio.wait_for(sink.received.get(), WAIT_S)))
    assert proxy.dropped_by_loss == len(expected_lost)
    assert received == [index for index in range(total) if index not in expected_lost]
    assert abs(len(expected_lost) / total - fraction) < 0.1


async def test_udp_reset_all_gives_a_new_upstream_port() -> None:
    async with (
        udp_upstream(echo=True) as (_, port),
        UdpFaultProxy(LOOPBACK, port) as proxy,
    ):
        with udp_client(proxy.port) as sock:
            first_port, _ = (await udp_exchange(sock, b"a")).split(b"|")
            again_port, _ = (await udp_exchange(sock, b"b")).split(b"|")
            proxy.reset_all()
            rebound_port, payload = (await udp_exchange(sock, b"c")).split(b"|")
    assert first_port == again_port
    assert rebound_port != first_port
    assert payload == b"c"
    assert proxy.connections == 2


async def test_udp_refuse_ignores_new_sources_and_blackhole_swallows() -> None:
    plan = FaultPlan()
    async with (
        udp_upstream(echo=True) as (upstream, port),
        UdpFaultProxy(LOOPBACK, port, plan=plan) as proxy,
    ):
        with udp_client(proxy.port) as known, udp_client(proxy.port) as stranger:
            await udp_exchange(known, b"hello")
            plan.refuse = True
            stranger.send(b"let me in")
            await proxy.wait_until(lambda: proxy.refused == 1)
            assert (await udp_exchange(known, b"still")).endswith(b"|still")
            plan.blackhole = True
            known.send(b"void")
            await proxy.wait_until(lambda: proxy.datagrams_swallowed == 1)
            plan.blackhole = False
            assert (await udp_exchange(known, b"back")).endswith(b"|back")
    seen = [upstream.received.get_nowait() for _ in range(upstream.received.qsize())]
    assert seen == [b"hello", b"still", b"back"]
    assert proxy.connections == 1


# -- TCP, one proxy for several links (a plan per client address) -------------------------------

WIFI_HOST = "127.0.0.2"
LTE_HOST = "127.0.0.3"


@contextlib.asynccontextmanager
async def tcp_client_from(
    source_host: str, port: int
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client whose socket is bound to `source_host`, as a box binds a link's address."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(source_host, 0))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def echo_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> bytes:
    writer.write(payload)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(payload)), WAIT_S)


async def test_tcp_peer_plans_blackhole_one_link_while_the_other_carries_on() -> None:
    plans = {WIFI_HOST: FaultPlan(), LTE_HOST: FaultPlan()}
    async with (
        tcp_upstream(echo=True) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port, plan_for_peer=plans.get) as proxy,
        tcp_client_from(WIFI_HOST, proxy.port) as wifi,
        tcp_client_from(LTE_HOST, proxy.port) as lte,
    ):
        assert await echo_once(*wifi, b"wifi") == b"wifi"
        plans[WIFI_HOST].blackhole = True
        wifi[1].write(b"lost")
        await proxy.wait_until(lambda: proxy.bytes_swallowed == 4)
        assert await echo_once(*lte, b"cellular") == b"cellular"
        plans[WIFI_HOST].blackhole = False
        assert await echo_once(*wifi, b"back") == b"back"
    assert proxy.peer_bytes_client_to_server == {WIFI_HOST: 8, LTE_HOST: 8}
    assert proxy.bytes_client_to_server == 16


async def test_tcp_peer_plan_refuses_one_address_only() -> None:
    plans = {WIFI_HOST: FaultPlan(refuse=True)}
    async with (
        tcp_upstream(echo=True) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port, plan_for_peer=plans.get) as proxy,
    ):
        async with tcp_client_from(WIFI_HOST, proxy.port) as (reader, _):
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), WAIT_S)
        async with tcp_client_from(LTE_HOST, proxy.port) as lte:
            assert await echo_once(*lte, b"no plan of its own") == b"no plan of its own"
    assert (proxy.connections, proxy.refused, upstream.connections) == (2, 1, 1)


async def test_tcp_peers_without_a_plan_of_their_own_share_the_proxy_plan() -> None:
    shared = FaultPlan()
    plans = {WIFI_HOST: FaultPlan()}
    async with (
        tcp_upstream(echo=True) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port, shared, plan_for_peer=plans.get) as proxy,
        tcp_client_from(WIFI_HOST, proxy.port) as wifi,
        tcp_client_from(LTE_HOST, proxy.port) as lte,
    ):
        shared.blackhole = True
        lte[1].write(b"void")
        await proxy.wait_until(lambda: proxy.bytes_swallowed == 4)
        assert await echo_once(*wifi, b"own plan") == b"own plan"
    assert proxy.plan_for(LTE_HOST) is shared
    assert proxy.plan_for(WIFI_HOST) is plans[WIFI_HOST]


async def test_tcp_reset_peer_resets_that_address_only() -> None:
    async with (
        tcp_upstream(echo=True) as upstream,
        TcpFaultProxy(LOOPBACK, upstream.port) as proxy,
        tcp_client_from(WIFI_HOST, proxy.port) as wifi,
        tcp_client_from(LTE_HOST, proxy.port) as lte,
    ):
        assert await echo_once(*wifi, b"a") == b"a"
        assert await echo_once(*lte, b"b") == b"b"
        assert proxy.reset_peer(WIFI_HOST) == 1
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(wifi[0].read(1), WAIT_S)
        assert await echo_once(*lte, b"still here") == b"still here"
        received, how = await asyncio.wait_for(upstream.ended.get(), WAIT_S)
    assert (received, how) == (b"a", "reset")
    assert proxy.reset_peer("127.0.0.9") == 0


def test_tcp_each_peer_with_a_plan_is_a_link_of_its_own_for_rate() -> None:
    plans = {WIFI_HOST: FaultPlan(rate_bytes_per_s=1000.0), LTE_HOST: FaultPlan()}
    proxy = TcpFaultProxy(LOOPBACK, 9, plan_for_peer=plans.get)
    wifi_up, _ = proxy.clocks_for(WIFI_HOST)
    lte_up, _ = proxy.clocks_for(LTE_HOST)
    # The WiFi bucket drains; LTE's stays full, and a peer without a plan shares the proxy's.
    releases_s = [wifi_up.release_at(0.0, RATE_BURST_BYTES, plans[WIFI_HOST]) for _ in range(2)]
    assert releases_s == [0.0, RATE_BURST_BYTES / 1000.0]
    assert lte_up.release_at(0.0, RATE_BURST_BYTES, plans[WIFI_HOST]) == 0.0
    assert proxy.clocks_for(WIFI_HOST)[0] is wifi_up
    assert proxy.clocks_for("127.0.0.9") == (proxy.c2s_clock, proxy.s2c_clock)
