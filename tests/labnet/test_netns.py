"""EmulatedLink for real: namespaces, TUN relay, tbf and nftables, probed by real processes.

The root tests need root, ip, tc, nft and /dev/net/tun; where those are missing they FAIL (this
suite runs as root: a missing tool is a broken machine, not a reason to skip). Every link gets a
random name, so parallel runs never collide. Timing is only checked in the direction a faulty link
would break: RTT at least the configured one, throughput at most the configured rate.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labnet import netns
from labnet.netns import (
    EmulatedLink,
    NetnsError,
    cleanup_stale,
    is_available,
    link_addresses,
    nft_script,
    tbf_params,
)
from labnet.tunrelay import DelayLine

READ_TIMEOUT_S = 10.0

# One peer program for both sides; the first argument picks the role.
PEER = r"""
import json, socket, socketserver, sys, time

def echo(addr):
    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            while data := self.request.recv(65536):
                self.request.sendall(data)
    socketserver.ThreadingTCPServer.daemon_threads = True
    server = socketserver.ThreadingTCPServer((addr, 0), Echo)
    print(server.server_address[1], flush=True)
    server.serve_forever()

def rtt(addr, port, rounds):
    with socket.create_connection((addr, int(port)), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for _ in range(int(rounds)):
            started = time.monotonic()
            conn.sendall(b"x")
            assert conn.recv(1) == b"x"
            samples.append(time.monotonic() - started)
    print(json.dumps(samples))

def sink(addr):
    with socket.create_server((addr, 0)) as server:
        print(server.getsockname()[1], flush=True)
        conn, _ = server.accept()
        first = conn.recv(1 << 20)
        first_at = last_at = time.monotonic()
        later_bytes = 0
        while data := conn.recv(1 << 20):
            later_bytes += len(data)
            last_at = time.monotonic()
    print(json.dumps({"total": len(first) + later_bytes, "after_first": later_bytes,
                      "seconds": last_at - first_at}), flush=True)

def send(addr, port, size):
    with socket.create_connection((addr, int(port)), timeout=30) as conn:
        conn.sendall(bytes(int(size)))

def udp_sink(addr):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, 33, 1 << 22)  # SO_RCVBUFFORCE: never drop here
    sock.bind((addr, 0))
    print(sock.getsockname()[1], flush=True)
    count, reported = 0, set()
    while True:
        data, peer = sock.recvfrom(2048)
        if data.startswith(b"done"):
            if data not in reported:
                reported.add(data)
                print(count, flush=True)
                count = 0
            sock.sendto(data, peer)
        else:
            count += 1

def udp_send(addr, port, count, marker):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((addr, int(port)))
    for index in range(int(count)):  # 200 bytes: ~3k packets/s at 5 Mbit/s, easy for the relay
        sock.send((b"%06d" % index).ljust(200, b"."))
    sock.settimeout(0.2)
    for _ in range(100):  # the marker and its echo cross the lossy link too: resend until echoed
        sock.send(marker.encode())
        try:
            if sock.recv(64) == marker.encode():
                return
        except TimeoutError:
            pass
    sys.exit("marker never echoed")

def probe(addr, port, timeout):
    try:
        with socket.create_connection((addr, int(port)), timeout=float(timeout)) as conn:
            conn.sendall(b"?")
            print("ok" if conn.recv(1) == b"?" else "bad")
    except TimeoutError:
        print("timeout")
    except OSError as error:
        print(type(error).__name__)

globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
"""


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(3)}"


def peer_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", PEER, *args]


def read_line(process: subprocess.Popen[Any]) -> str:
    """The next stdout line of `process`, failing (not hanging) if it never comes."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(READ_TIMEOUT_S)
    line = process.stdout.readline() if ready else ""
    if not line:
        pytest.fail(f"peer gave no output (exit status {process.poll()})")
    return str(line).strip()


def start_peer(link: EmulatedLink, ns: str, *args: str) -> tuple[subprocess.Popen[Any], int]:
    """A long-running peer; returns it and the port it printed once listening."""
    process = link.popen(ns, peer_argv(*args), stdout=subprocess.PIPE, text=True)
    return process, int(read_line(process))


def run_peer(link: EmulatedLink, ns: str, *args: str) -> str:
    done = link.run(ns, peer_argv(*args))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def probe(link: EmulatedLink, port: int, timeout_s: float = 0.5) -> str:
    return run_peer(link, link.box_ns, "probe", link.bo_addr, str(port), str(timeout_s))


@pytest.fixture
def netns_ready() -> None:
    if not is_available():
        pytest.fail("labnet.netns needs root, ip, tc, nft and /dev/net/tun; this machine lacks one")


def process_alive(pid: int) -> bool:
    try:
        return b"labnet.tunrelay" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def leftovers(name: str) -> list[str]:
    namespaces = [ns for ns in netns._namespaces() if ns.startswith(name)]
    devices = [dev for dev in netns._root_interfaces() if dev.startswith(name)]
    return namespaces + devices


# -- pure parts ------------------------------------------------------------------------------


def test_tbf_burst_holds_two_packets_and_queue_holds_its_share_of_time() -> None:
    slow = tbf_params(1.0, 1500)
    fast = tbf_params(100.0, 1500)
    assert slow.burst_bytes == 3000
    assert slow.limit_bytes == 3000 + 15_000  # 80 ms of 1 Mbit/s is less than ten packets
    assert fast.rate_bits_per_s == 100_000_000
    assert fast.burst_bytes == 25_000
    assert fast.limit_bytes == 25_000 + 1_000_000


def test_nft_script_drops_only_on_the_link_device() -> None:
    script = nft_script("t1-bx", 0.25, down=False)
    assert 'iifname "t1-bx" numgen random mod 1000000 < 250000 counter drop' in script
    assert "hook input" in script
    assert 'iifname "t1-bx" counter drop' in nft_script("t1-bx", 0.0, down=True)
    assert "drop" not in nft_script("t1-bx", 0.0, down=False)


def test_link_addresses_are_the_two_hosts_of_one_slash_30() -> None:
    box, office = link_addresses("abc")
    *box_net, box_host = box.split(".")
    *office_net, office_host = office.split(".")
    assert box_net == office_net
    assert (int(box_host) % 4, int(office_host) - int(box_host)) == (1, 1)


def test_delay_line_releases_in_order_after_the_delay_and_drops_when_full() -> None:
    line = DelayLine(delay_s=0.5, max_packets=2)
    assert line.push(10.0, b"first")
    assert line.push(10.1, b"second")
    assert not line.push(10.2, b"overflow")
    assert line.pop_due(10.49) == []
    assert line.next_due_s() == 10.5
    assert line.pop_due(10.6) == [b"first", b"second"]
    assert line.counters.dropped_queue_full == 1
    assert len(line) == 0


def test_bad_names_and_values_are_refused() -> None:
    with pytest.raises(ValueError, match="link name"):
        EmulatedLink("averyverylongname", rate_mbit=1, rtt_ms=0, loss_fraction=0)
    with pytest.raises(ValueError, match="loss_fraction"):
        EmulatedLink("ok", rate_mbit=1, rtt_ms=0, loss_fraction=1.5)
    with pytest.raises(ValueError, match="rate_mbit"):
        EmulatedLink("ok", rate_mbit=0, rtt_ms=0, loss_fraction=0)


# -- real links --------------------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.usefixtures("netns_ready")
def test_tcp_round_trip_takes_at_least_the_configured_rtt() -> None:
    with EmulatedLink(unique_name(), rate_mbit=50, rtt_ms=40, loss_fraction=0.0) as link:
        _, port = start_peer(link, link.bo_ns, "echo", link.bo_addr)
        samples_s = json.loads(run_peer(link, link.box_ns, "rtt", link.bo_addr, str(port), "5"))
    assert len(samples_s) == 5
    assert min(samples_s) >= 0.040


@pytest.mark.root
@pytest.mark.usefixtures("netns_ready")
def test_throughput_stays_within_the_rate() -> None:
    rate_mbit, size_bytes = 24.0, 3_000_000
    with EmulatedLink(unique_name(), rate_mbit=rate_mbit, rtt_ms=10, loss_fraction=0.0) as link:
        sink, port = start_peer(link, link.bo_ns, "sink", link.bo_addr)
        run_peer(link, link.box_ns, "send", link.bo_addr, str(port), str(size_bytes))
        report = json.loads(read_line(sink))
    assert report["total"] == size_bytes
    payload_bits_per_s = report["after_first"] * 8 / report["seconds"]
    assert payload_bits_per_s <= rate_mbit * 1e6 * 1.1


@pytest.mark.root
@pytest.mark.usefixtures("netns_ready")
def test_loss_drops_udp_at_about_the_configured_fraction() -> None:
    with EmulatedLink(unique_name(), rate_mbit=5, rtt_ms=10, loss_fraction=0.0) as link:
        sink, port = start_peer(link, link.bo_ns, "udp-sink", link.bo_addr)
        run_peer(link, link.box_ns, "udp-send", link.bo_addr, str(port), "300", "done-clean")
        received_clean = int(read_line(sink))
        link.set_loss(0.3)
        run_peer(link, link.box_ns, "udp-send", link.bo_addr, str(port), "1000", "done-lossy")
        received_lossy = int(read_line(sink))
    assert received_clean == 300  # the count is exact when nothing is lost on purpose
    assert 600 <= received_lossy <= 800  # 700 expected; the binomial spread is about 15


@pytest.mark.root
@pytest.mark.usefixtures("netns_ready")
def test_set_down_blocks_the_link_and_set_up_restores_it() -> None:
    with EmulatedLink(unique_name(), rate_mbit=20, rtt_ms=10, loss_fraction=0.0) as link:
        _, port = start_peer(link, link.bo_ns, "echo", link.bo_addr)
        assert probe(link, port) == "ok"
        link.set_down()
        assert probe(link, port) == "timeout"  # silent: like driving out of coverage
        link.set_up()
        assert probe(link, port) == "ok"
        link.set_down(interfaces=True)
        assert probe(link, port) == "OSError"  # the box's own interface is gone: unreachable
        link.set_up()
        assert probe(link, port) == "ok"


@pytest.mark.root
@pytest.mark.usefixtures("netns_ready")
def test_zero_rtt_uses_a_shaped_veth_pair() -> None:
    with EmulatedLink(unique_name(), rate_mbit=10, rtt_ms=0, loss_fraction=0.0) as link:
        _, port = start_peer(link, link.bo_ns, "echo", link.bo_addr)
        assert link.relay_pid is None
        assert probe(link, port) == "ok"
        qdiscs = [
            link.run(ns, ["tc", "qdisc", "show", "dev", dev]).stdout
            for ns, dev in ((link.box_ns, link.box_dev), (link.bo_ns, link.bo_dev))
        ]
    assert all("tbf" in shown and "rate 10Mbit" in shown for shown in qdiscs)


@pytest.mark.root
@pytest.mark.usefixtures("netns_ready")
def test_a_name_in_use_fails_without_harming_the_link_that_owns_it() -> None:
    name = unique_name()
    with EmulatedLink(name, rate_mbit=20, rtt_ms=0, loss_fraction=0.0) as owner:
        _, port = start_peer(owner, owner.bo_ns, "echo", owner.bo_addr)
        with (
            pytest.raises(NetnsError, match="netns add"),
            EmulatedLink(name, rate_mbit=20, rtt_ms=10, loss_fraction=0.0),
        ):
            pass
        assert probe(owner, port) == "ok"
    assert leftovers(name) == []


@dataclass
class SeenInside:
    """What a failing test body saw while its link was up."""

    link: EmulatedLink | None = None
    sleeper: subprocess.Popen[bytes] | None = None
    relay_pid: int = 0
    alive: list[str] = field(default_factory=list)


def fail_inside_a_link(name: str, seen: SeenInside) -> None:
    with EmulatedLink(name, rate_mbit=10, rtt_ms=10, loss_fraction=0.1) as link:
        seen.link = link
        seen.sleeper = link.popen(link.box_ns, ["sleep", "60"])
        seen.relay_pid = link.relay_pid or 0
        seen.alive = sorted(leftovers(name))
        raise RuntimeError("test body failed")


@pytest.mark.root
@pytest.mark.usefixtures("netns_ready")
def test_exit_leaves_no_namespace_device_or_process_even_on_error() -> None:
    name = unique_name()
    seen = SeenInside()
    with pytest.raises(RuntimeError, match="test body failed"):
        fail_inside_a_link(name, seen)
    assert seen.link is not None
    assert seen.sleeper is not None
    assert seen.alive == [seen.link.bo_ns, seen.link.box_ns]
    assert seen.relay_pid > 0
    assert leftovers(name) == []
    assert seen.sleeper.poll() is not None
    assert not process_alive(seen.relay_pid)
    assert seen.link.relay_counters is not None  # the relay exited cleanly and reported


@pytest.mark.root
@pytest.mark.usefixtures("netns_ready")
def test_cleanup_stale_removes_what_a_crashed_run_left() -> None:
    prefix = unique_name("s")
    env = {**os.environ, "PYTHONPATH": str(netns.REPO_ROOT)}
    relay_argv = [
        *(sys.executable, "-m", "labnet.tunrelay", "--tun-a", f"{prefix}a-bx"),
        *("--tun-b", f"{prefix}a-bo", "--delay-ms", "1"),
    ]
    with subprocess.Popen(relay_argv, stdout=subprocess.PIPE, text=True, env=env) as relay:
        try:
            assert read_line(relay) == "ready"
            subprocess.run(["ip", "netns", "add", f"{prefix}b-box"], check=True)
            subprocess.run(
                [
                    *("ip", "link", "add", f"{prefix}c-bx", "type", "veth"),
                    "peer",
                    "name",
                    f"{prefix}c-bo",
                ],
                check=True,
            )
            removed = cleanup_stale(prefix)
            relay.wait(READ_TIMEOUT_S)
            assert leftovers(prefix) == []
            assert f"netns {prefix}b-box" in removed
            assert f"relay pid {relay.pid}" in removed
        finally:
            relay.kill()
            subprocess.run(
                ["ip", "netns", "del", f"{prefix}b-box"], check=False, capture_output=True
            )
            subprocess.run(["ip", "link", "del", f"{prefix}c-bx"], check=False, capture_output=True)
