"""Packet-level one-way delay between two TUN devices: the netem `delay` this kernel lacks.

A TCP proxy terminates TCP, so it cannot give a congestion controller a real round-trip time. This
relay works one layer down: it holds two TUN devices (IFF_TUN | IFF_NO_PI, one IP packet per
read/write), which the caller moves into two network namespaces, and copies every packet read from
one device to the other `delay_s` later. RTT between the namespaces = 2 * delay_s (+ queueing).

Run as a process (labnet/netns.py does):
    python -m labnet.tunrelay --tun-a A --tun-b B --delay-ms N
It prints `ready` on stdout once both devices exist, then runs until SIGTERM/SIGINT, and on exit
prints one JSON line of counters and exits 0. The devices are not persistent: they vanish when the
relay exits, wherever they were moved.

Invariants:
- a packet is written no earlier than `delay_s` after it was read (the poll timeout rounds up to
  whole milliseconds, so a packet may leave up to ~1 ms late, never early);
- per direction, packets leave in the order they arrived: all have the same delay, so one FIFO
  (deque) per direction is enough, no heap;
- each FIFO holds at most `max_queue_packets`; a packet arriving at a full FIFO is dropped and
  counted, like a full router buffer; so is a write the kernel refuses (device down);
- one thread, one epoll loop: reads are taken in bursts of at most READ_BURST_PACKETS per device per
  wakeup so neither direction starves the other.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import select
import signal
import struct
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import FrameType

TUN_DEVICE_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int), from linux/if_tun.h
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16  # including the terminating NUL: names are at most 15 characters

READ_BYTES = 65535  # larger than any IP packet, so a read never truncates one
READ_BURST_PACKETS = 64
DEFAULT_MAX_QUEUE_PACKETS = 10_000  # 1 s of 100 Mbit/s at 1500 bytes: enough for any test delay
IDLE_POLL_S = 1.0  # an idle relay still wakes now and then; signals wake it at once anyway


@dataclass
class DirectionCounters:
    """What happened to the packets of one direction."""

    forwarded: int = 0
    dropped_queue_full: int = 0
    dropped_write_failed: int = 0


class DelayLine:
    """A bounded FIFO of packets that each become due `delay_s` after they were pushed.

    Pure (no I/O, time is passed in): push() at arrival, pop_due() when the clock has moved.
    Due times are non-decreasing along the FIFO because the delay is the same for every packet and
    arrival times are non-decreasing, so the head is always the next packet due.
    """

    def __init__(self, delay_s: float, max_packets: int) -> None:
        if delay_s < 0 or max_packets < 1:
            raise ValueError("delay_s must be >= 0 and max_packets >= 1")
        self.delay_s = delay_s
        self.max_packets = max_packets
        self.counters = DirectionCounters()
        self._due: deque[tuple[float, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._due)

    def push(self, now_s: float, packet: bytes) -> bool:
        """Queue `packet`; False (and counted) when the FIFO is full."""
        if len(self._due) >= self.max_packets:
            self.counters.dropped_queue_full += 1
            return False
        self._due.append((now_s + self.delay_s, packet))
        return True

    def next_due_s(self) -> float | None:
        return self._due[0][0] if self._due else None

    def pop_due(self, now_s: float) -> list[bytes]:
        """Remove and return, in order, every packet due at `now_s`."""
        ready: list[bytes] = []
        while self._due and self._due[0][0] <= now_s:
            ready.append(self._due.popleft()[1])
        return ready


def open_tun(name: str) -> int:
    """Create (or attach to) TUN device `name` in this process's namespace; a non-blocking fd."""
    if not 0 < len(name.encode()) < IFNAMSIZ:
        raise ValueError(f"interface name must be 1..{IFNAMSIZ - 1} bytes: {name!r}")
    fd = os.open(TUN_DEVICE_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        request = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, request)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Relay:
    """Forwards packets between two TUN fds through one DelayLine per direction, until stop()."""

    def __init__(self, fd_a: int, fd_b: int, delay_s: float, max_queue_packets: int) -> None:
        self._fd_a = fd_a
        self._fd_b = fd_b
        self.a_to_b = DelayLine(delay_s, max_queue_packets)
        self.b_to_a = DelayLine(delay_s, max_queue_packets)
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    def run(self, wakeup_fd: int) -> None:
        """The epoll loop. `wakeup_fd` becomes readable when a signal arrives (set_wakeup_fd)."""
        line_of_source = {self._fd_a: self.a_to_b, self._fd_b: self.b_to_a}
        with select.epoll() as poller:
            for fd in (self._fd_a, self._fd_b, wakeup_fd):
                poller.register(fd, select.EPOLLIN)
            while not self._stopping:
                events = poller.poll(self._poll_timeout_s(time.monotonic()))
                now_s = time.monotonic()
                for fd, _mask in events:
                    if fd == wakeup_fd:
                        _drain(wakeup_fd)
                    else:
                        _read_burst(fd, line_of_source[fd], now_s)
                self._send_due(self.a_to_b, self._fd_b, now_s)
                self._send_due(self.b_to_a, self._fd_a, now_s)

    def _poll_timeout_s(self, now_s: float) -> float:
        dues = [d for d in (self.a_to_b.next_due_s(), self.b_to_a.next_due_s()) if d is not None]
        if not dues:
            return IDLE_POLL_S
        return max(0.0, min(dues) - now_s)

    @staticmethod
    def _send_due(line: DelayLine, out_fd: int, now_s: float) -> None:
        for packet in line.pop_due(now_s):
            try:
                os.write(out_fd, packet)
            except OSError:  # device down (EIO) or a full kernel queue: the packet is lost
                line.counters.dropped_write_failed += 1
            else:
                line.counters.forwarded += 1


def _read_burst(fd: int, line: DelayLine, now_s: float) -> None:
    for _ in range(READ_BURST_PACKETS):
        try:
            packet = os.read(fd, READ_BYTES)
        except BlockingIOError:
            return
        line.push(now_s, packet)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m labnet.tunrelay", description=__doc__)
    parser.add_argument("--tun-a", required=True, help="first TUN device name (<= 15 chars)")
    parser.add_argument("--tun-b", required=True, help="second TUN device name (<= 15 chars)")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay, ms")
    parser.add_argument(
        "--max-queue-packets", type=int, default=DEFAULT_MAX_QUEUE_PACKETS, help="per direction"
    )
    args = parser.parse_args(argv)
    if args.delay_ms < 0 or args.max_queue_packets < 1:
        parser.error("--delay-ms must be >= 0 and --max-queue-packets >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    fd_a = open_tun(args.tun_a)
    fd_b = open_tun(args.tun_b)
    relay = Relay(fd_a, fd_b, args.delay_ms / 1000.0, args.max_queue_packets)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        relay.stop()

    signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("ready", flush=True)
    try:
        relay.run(wakeup_read)
    finally:
        for fd in (fd_a, fd_b, wakeup_read, wakeup_write):
            os.close(fd)
    counters = {"a_to_b": asdict(relay.a_to_b.counters), "b_to_a": asdict(relay.b_to_a.counters)}
    print(json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
