"""An emulated radio link between two network namespaces: rate, RTT, random loss, outages.

`EmulatedLink("ln1", rate_mbit=20, rtt_ms=60, loss_fraction=0.01)` builds, as root:

    [netns ln1-box] ln1-bx 10.a.b.c+1/30 <== relay, rtt/2 each way ==> ln1-bo 10.a.b.c+2/30 [ln1-bo]

- delay: this kernel has no netem, so a relay process (labnet.tunrelay) holds one TUN device in
  each namespace and copies packets across after rtt/2. With rtt_ms == 0 a plain veth pair is used;
- rate: a `tbf` qdisc on the egress of BOTH devices (both directions limited, like a radio link).
  Burst is TBF_BURST_S of line rate (>= 2 MTU: tbf drops any packet larger than its burst); the
  queue holds TBF_QUEUE_S of line rate (>= TBF_MIN_QUEUE_PACKETS packets), like a modem buffer;
- loss: an nftables rule in each namespace drops packets arriving on the link device at random
  (`numgen random`), so data and ACKs are both lost after having used the link, as over the air;
- outages: set_down() drops everything silently (routes stay, like driving out of coverage), or
  with interfaces=True sets both devices down (the box sees its interface go away).

Invariants: every namespace, device and process this object creates is removed on exit, error or
not, and nothing it did not create: namespaces are deleted (after killing every process left in
them) only if this object added them; the veth pair is created inside the namespaces and the
relay's TUN devices are not persistent, so no device can outlive them in the root namespace.
Names are validated so interface names fit IFNAMSIZ (15 chars).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{0,11}")  # + "-bx"/"-bo" stays <= 15 chars
BOX_SUFFIX = "-box"
BO_SUFFIX = "-bo"
TBF_BURST_S = 0.002
TBF_QUEUE_S = 0.08
TBF_MIN_QUEUE_PACKETS = 10
LOSS_SCALE = 1_000_000  # loss resolution: parts per million
NFT_TABLE = "labnet"
RELAY_READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 30.0
REPO_ROOT = Path(__file__).resolve().parent.parent  # so the relay finds `labnet` from any cwd


class NetnsError(RuntimeError):
    """A namespace, device, qdisc or nftables step failed (message has the command's stderr)."""


def is_available() -> bool:
    """Whether this machine can build links: root, ip, tc, nft and /dev/net/tun."""
    tools = all(shutil.which(tool) for tool in ("ip", "tc", "nft"))
    return os.geteuid() == 0 and tools and Path("/dev/net/tun").exists()


@dataclass(frozen=True)
class TbfParams:
    """A tbf qdisc for one rate: what `tc qdisc ... tbf` is given."""

    rate_bits_per_s: int
    burst_bytes: int
    limit_bytes: int


def tbf_params(rate_mbit: float, mtu: int) -> TbfParams:
    """Burst TBF_BURST_S of line rate (>= 2 packets), queue TBF_QUEUE_S (>= a few packets)."""
    if rate_mbit <= 0:
        raise ValueError("rate_mbit must be > 0")
    rate_bytes_per_s = rate_mbit * 1e6 / 8
    burst_bytes = max(2 * mtu, int(rate_bytes_per_s * TBF_BURST_S))
    queue_bytes = max(TBF_MIN_QUEUE_PACKETS * mtu, int(rate_bytes_per_s * TBF_QUEUE_S))
    return TbfParams(round(rate_mbit * 1e6), burst_bytes, burst_bytes + queue_bytes)


def tbf_argv(ns: str, device: str, params: TbfParams) -> list[str]:
    return [
        *("tc", "-n", ns, "qdisc", "replace", "dev", device, "root", "tbf"),
        *("rate", f"{params.rate_bits_per_s}bit", "burst", str(params.burst_bytes)),
        *("limit", str(params.limit_bytes)),
    ]


def nft_script(device: str, loss_fraction: float, down: bool) -> str:
    """The whole `labnet` table of one namespace, replaced atomically (`nft -f -` is one batch).

    Rules sit on the input hook and match only the link device: a sender never sees an error
    (as it would from an output-hook drop) and loopback traffic inside the namespace is untouched.
    """
    check_loss_fraction(loss_fraction)
    rules = []
    if down:
        rules.append(f'iifname "{device}" counter drop')
    loss_ppm = round(loss_fraction * LOSS_SCALE)
    if loss_ppm > 0:
        rules.append(f'iifname "{device}" numgen random mod {LOSS_SCALE} < {loss_ppm} counter drop')
    body = "".join(f"\t\t{rule}\n" for rule in rules)
    return (
        f"table inet {NFT_TABLE} {{}}\n"
        f"delete table inet {NFT_TABLE}\n"
        f"table inet {NFT_TABLE} {{\n"
        "\tchain input {\n"
        "\t\ttype filter hook input priority filter; policy accept;\n"
        f"{body}"
        "\t}\n"
        "}\n"
    )


def check_loss_fraction(fraction: float) -> float:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("loss_fraction must be within [0, 1]")
    return fraction


def link_addresses(name: str) -> tuple[str, str]:
    """(box, back office) addresses of a /30 derived from the name: stable, readable in traces.

    Each link has namespaces of its own, so two links may even share addresses without conflict.
    """
    digest = hashlib.sha256(name.encode()).digest()
    network = f"10.{1 + digest[0] % 254}.{digest[1]}"
    subnet = digest[2] & 0xFC  # a /30 boundary: .0 network, .1 and .2 hosts, .3 broadcast
    return f"{network}.{subnet + 1}", f"{network}.{subnet + 2}"


def validate_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"link name must match {NAME_PATTERN.pattern}: {name!r}")
    return name


def _run(
    argv: Sequence[str], *, stdin_text: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(argv),
        input=stdin_text,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _namespaces() -> list[str]:
    listing = _run(["ip", "-json", "netns", "list"], check=False).stdout.strip()
    return [str(entry["name"]) for entry in json.loads(listing or "[]")]


def _root_interfaces() -> list[str]:
    listing = _run(["ip", "-json", "link", "show"], check=False).stdout.strip()
    return [str(entry["ifname"]) for entry in json.loads(listing or "[]")]


def _kill_namespace_processes(ns: str) -> None:
    """SIGKILL every process left in `ns` (children of what we started there, say)."""
    listed = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in (int(text) for text in listed if text.isdigit()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _delete_namespace(ns: str) -> None:
    _kill_namespace_processes(ns)
    _run(["ip", "netns", "del", ns], check=False)


def _stop_process(process: subprocess.Popen[Any], *, close_pipes: bool = True) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S; its pipes closed."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
    if close_pipes:
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def _relay_pids(prefix: str) -> list[int]:
    """tunrelay processes (of any run) whose first device name starts with `prefix`."""
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            argv = (proc_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        words = [word.decode(errors="replace") for word in argv]
        if "labnet.tunrelay" in words and "--tun-a" in words:
            tun_a_index = words.index("--tun-a") + 1
            if tun_a_index < len(words) and words[tun_a_index].startswith(prefix):
                pids.append(int(proc_dir.name))
    return pids


def cleanup_stale(prefix: str) -> list[str]:
    """Remove what crashed runs left behind for links named `prefix*`; returns what was removed.

    Kills their relays, deletes their namespaces (killing processes inside) and root-namespace
    devices. `prefix` must be a valid link name prefix, so it cannot match everything.
    """
    validate_name(prefix)
    removed: list[str] = []
    for pid in _relay_pids(prefix):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            removed.append(f"relay pid {pid}")
    for ns in _namespaces():
        if ns.startswith(prefix) and ns.endswith((BOX_SUFFIX, BO_SUFFIX)):
            _delete_namespace(ns)
            removed.append(f"netns {ns}")
    for device in _root_interfaces():
        if device.startswith(prefix) and device.endswith(("-bx", "-bo")):
            _run(["ip", "link", "del", device], check=False)
            removed.append(f"link {device}")
    return removed


class EmulatedLink:
    """Context manager: two namespaces joined by a shaped, delayed, lossy point-to-point link.

    `box_ns`/`box_addr` is the vehicle side, `bo_ns`/`bo_addr` the back office. Run programs on a
    side with popen()/run(); every process started with popen() is stopped on exit.
    """

    def __init__(
        self,
        name: str,
        rate_mbit: float,
        rtt_ms: float,
        loss_fraction: float,
        mtu: int = 1500,
    ) -> None:
        self.name = validate_name(name)
        if rtt_ms < 0 or not 576 <= mtu <= 9000:
            raise ValueError("rtt_ms must be >= 0 and mtu within [576, 9000]")
        tbf_params(rate_mbit, mtu)  # validates the rate
        check_loss_fraction(loss_fraction)
        self.rate_mbit = rate_mbit
        self.rtt_ms = rtt_ms
        self.loss_fraction = loss_fraction
        self.mtu = mtu
        self.box_dev = f"{name}-bx"
        self.bo_dev = f"{name}-bo"
        self._box_addr, self._bo_addr = link_addresses(name)
        self._down = False
        self._relay: subprocess.Popen[bytes] | None = None
        self._processes: list[subprocess.Popen[Any]] = []
        # Only what this object created is removed: a failed build must never delete a
        # same-named link that another run owns.
        self._created_namespaces: list[str] = []
        self.relay_counters: dict[str, Any] | None = None  # the relay's counters after exit

    @property
    def box_ns(self) -> str:
        return f"{self.name}{BOX_SUFFIX}"

    @property
    def bo_ns(self) -> str:
        return f"{self.name}{BO_SUFFIX}"

    @property
    def box_addr(self) -> str:
        return self._box_addr

    @property
    def bo_addr(self) -> str:
        return self._bo_addr

    @property
    def relay_pid(self) -> int | None:
        return None if self._relay is None else self._relay.pid

    def __enter__(self) -> EmulatedLink:
        try:
            self._build()
        except BaseException as error:
            for failure in self._teardown():  # the build error is the story; these are notes
                error.add_note(f"teardown after the failed build: {failure}")
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failures = self._teardown()
        if not failures:
            return
        if exc is not None:  # never mask the error the body raised
            exc.add_note(f"teardown of link {self.name} incomplete: {failures[0]}")
            return
        raise NetnsError(f"teardown of link {self.name} incomplete: {failures[0]}") from failures[0]

    # -- running programs on either side ---------------------------------------------------------

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside `ns` (box_ns or bo_ns); stopped on exit if still running."""
        self._check_ns(ns)
        process: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], **kwargs
        )
        self._processes.append(process)
        return process

    def run(
        self, ns: str, argv: Sequence[str], *, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside `ns` to completion: output captured as text, exit status unchecked."""
        self._check_ns(ns)
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    # -- changing the link while it runs ---------------------------------------------------------

    def set_down(self, *, interfaces: bool = False) -> None:
        """Cut the link: drop everything silently, or (interfaces=True) set both devices down."""
        if interfaces:
            for ns, device in self._sides():
                _run(["ip", "-n", ns, "link", "set", device, "down"])
        else:
            self._down = True
            self._apply_nft()

    def set_up(self) -> None:
        """Undo set_down() (either kind)."""
        for ns, device in self._sides():
            _run(["ip", "-n", ns, "link", "set", device, "up"])
        self._down = False
        self._apply_nft()

    def set_loss(self, fraction: float) -> None:
        self.loss_fraction = check_loss_fraction(fraction)
        self._apply_nft()

    def set_rate(self, mbit: float) -> None:
        params = tbf_params(mbit, self.mtu)
        self.rate_mbit = mbit
        for ns, device in self._sides():
            _run(tbf_argv(ns, device, params))

    # -- building and tearing down ---------------------------------------------------------------

    def _sides(self) -> tuple[tuple[str, str], tuple[str, str]]:
        return (self.box_ns, self.box_dev), (self.bo_ns, self.bo_dev)

    def _check_ns(self, ns: str) -> None:
        if ns not in (self.box_ns, self.bo_ns):
            raise ValueError(f"{ns!r} is not one of this link's namespaces")

    def _build(self) -> None:
        for ns, _ in self._sides():
            _run(["ip", "netns", "add", ns])
            self._created_namespaces.append(ns)
        if self.rtt_ms > 0:
            self._start_relay()
            for ns, device in self._sides():
                _run(["ip", "link", "set", device, "netns", ns])
        else:
            _run(
                [
                    *("ip", "link", "add", self.box_dev, "netns", self.box_ns, "type", "veth"),
                    *("peer", "name", self.bo_dev, "netns", self.bo_ns),
                ]
            )
        params = tbf_params(self.rate_mbit, self.mtu)
        for (ns, device), addr in zip(self._sides(), (self.box_addr, self.bo_addr), strict=True):
            self._configure_side(ns, device, addr)
            _run(tbf_argv(ns, device, params))
        self._apply_nft()

    def _configure_side(self, ns: str, device: str, addr: str) -> None:
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # No IPv6 on the link: autoconfiguration chatter would spend rate and skew loss counts.
        no_ipv6 = f"net.ipv6.conf.{device}.disable_ipv6=1"
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", no_ipv6])
        _run(["ip", "-n", ns, "link", "set", device, "mtu", str(self.mtu)])
        _run(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", device])
        _run(["ip", "-n", ns, "link", "set", device, "up"])

    def _apply_nft(self) -> None:
        for ns, device in self._sides():
            script = nft_script(device, self.loss_fraction, self._down)
            _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin_text=script)

    def _start_relay(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        delay_ms = self.rtt_ms / 2
        self._relay = subprocess.Popen(
            [
                *(sys.executable, "-m", "labnet.tunrelay", "--tun-a", self.box_dev),
                *("--tun-b", self.bo_dev, "--delay-ms", repr(delay_ms)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._await_relay_ready(self._relay)

    @staticmethod
    def _await_relay_ready(relay: subprocess.Popen[bytes]) -> None:
        assert relay.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(relay.stdout, selectors.EVENT_READ)
            readable = selector.select(RELAY_READY_TIMEOUT_S)
        line = relay.stdout.readline() if readable else b""
        if line.strip() != b"ready":
            _stop_process(relay, close_pipes=False)
            _, err = relay.communicate()
            stderr = err.decode(errors="replace")
            raise NetnsError(f"tunrelay did not start: {stderr.strip() or 'no ready line'}")

    def _stop_relay(self) -> None:
        relay = self._relay
        if relay is None:
            return
        _stop_process(relay, close_pipes=False)
        out, _ = relay.communicate()
        lines = out.decode(errors="replace").strip().splitlines()
        with contextlib.suppress(ValueError, IndexError):
            self.relay_counters = json.loads(lines[-1])

    def _teardown(self) -> list[Exception]:
        """Everything goes, each step attempted whatever failed before; returns the failures."""
        steps: list[Callable[[], None]] = [
            *(lambda p=p: _stop_process(p) for p in self._processes),
            self._stop_relay,
            *(lambda ns=ns: _delete_namespace(ns) for ns in self._created_namespaces),
        ]
        failures: list[Exception] = []
        for step in steps:
            try:
                step()
            except Exception as error:  # keep tearing down; report the first failure below
                failures.append(error)
        self._processes.clear()
        self._created_namespaces.clear()
        return failures
