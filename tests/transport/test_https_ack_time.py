"""When the socket last received an ACK (transport/https.py, TCP_INFO): how the HTTPS transport
dates the progress of a body (transport/progress.py, Progress.moved_at_s). Real TCP on
loopback."""

from __future__ import annotations

import asyncio
import struct

from transport.https import (
    TCP_INFO_LAST_ACK_RECV_OFFSET,
    TCP_INFO_READ_BYTES,
    last_ack_age_s,
    socket_last_ack_age_s,
    socket_unacked_bytes,
)

GUARD_S = 5.0


def test_the_age_is_read_from_tcpi_last_ack_recv_in_milliseconds() -> None:
    info = bytearray(TCP_INFO_READ_BYTES + 40)
    struct.pack_into("=I", info, TCP_INFO_LAST_ACK_RECV_OFFSET, 1500)
    struct.pack_into("=I", info, TCP_INFO_LAST_ACK_RECV_OFFSET - 4, 99_999)  # last_data_recv
    assert last_ack_age_s(bytes(info)) == 1.5


def test_a_short_tcp_info_gives_no_age() -> None:
    assert last_ack_age_s(b"\0" * (TCP_INFO_READ_BYTES - 1)) is None


async def test_an_acknowledged_write_dates_the_last_ack_on_the_loop_clock() -> None:
    loop = asyncio.get_running_loop()
    received = bytearray()
    got_all = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while piece := await reader.read(65536):
            received.extend(piece)
            if len(received) >= 200_000:
                got_all.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        before_s = loop.time()
        writer.write(b"x" * 200_000)
        async with asyncio.timeout(GUARD_S):
            await got_all.wait()
            while socket_unacked_bytes(writer.transport) != 0:
                await asyncio.sleep(0.01)
        age_s = socket_last_ack_age_s(writer.transport)
        assert age_s is not None
        acked_at_s = loop.time() - age_s
        # Jiffies, not the loop's clock: allow one scheduler tick of rounding either way.
        assert before_s - 0.02 <= acked_at_s <= loop.time() + 0.02
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def test_a_transport_without_a_socket_gives_no_age() -> None:
    class NoSocket(asyncio.BaseTransport):
        def get_extra_info(self, name: str, default: object = None) -> object:
            return default

    assert socket_last_ack_age_s(NoSocket()) is None
