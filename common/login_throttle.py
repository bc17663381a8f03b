"""Login throttling per client and per account together (docs/webui.md 1.1, RULES U2): pure, in
memory, no clock.

RULE U2 asks for a ban after 5 wrong tries. A ban of the account name alone lets anyone on the
car's network lock the officer out (5 guesses, repeated every 15 minutes). So three books count
wrong passwords, each with its own lock:

- **pair** (client, account): `max_failed_logins` wrong passwords in a row from one client for
  one account ban that client for that account for `lockout_s`. This is U2's "5 tries".
- **client** (any account): `spread_max_failures` from one client ban it for every account, so
  one client cannot spray guesses over many names.
- **account** (any client): `spread_max_failures` from all clients together ban the account for
  every client that is not a *known device* of it (a browser that logged in as it before: see
  `KnownDevices`). Many addresses then get no more guesses than a few clients would, while the
  officer's own tablet keeps its 5 tries.

One attacker with one address therefore locks only itself out; the officer's tablet, and any
other device, still logs in. Every method takes `now_s` (monotonic seconds) from its caller.

Invariants:
- A key is banned after its book's threshold of failures in a row, for `lockout_s`, whatever
  password comes meanwhile; a correct password resets the pair and the client (not the
  account: other clients' guesses still count there).
- Memory is bounded: a book forgets a key `lockout_s` after its last failure or lock and keeps
  at most `max_entries`; a lock is never evicted. When every entry of a full book is locked,
  the account book fails closed (a new name counts as locked until the earliest lock ends: it
  holds unknown devices only), while the pair and client books fail open (a new key is not
  counted there). So filling the books with locks from many addresses never locks out a known
  device, and it gains the attacker nothing: every guess at a name still counts in the account
  book.
- An unknown account name is counted like a real one: a lock reveals nothing about which names
  exist.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

MAX_THROTTLE_ENTRIES = 1024
SPREAD_FACTOR = 4
"""The client and account books allow this many clients' worth of failures before they ban."""
IPV6_CLIENT_PREFIX = 64  # one host holds a whole /64: counting its addresses apart is no limit
MAX_KNOWN_DEVICES = 256
KNOWN_DEVICE_MAX_S = 30 * 86_400.0

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    max_failed_logins: int
    lockout_s: float

    @property
    def spread_max_failures(self) -> int:
        return self.max_failed_logins * SPREAD_FACTOR


class Scope(enum.Enum):
    """Which ban a wrong password engaged (the audit says which)."""

    PAIR = "pair"
    CLIENT = "client"
    ACCOUNT = "account"


def client_key(remote: str | None) -> str:
    """The client a request counts against: its IPv4 address, or its IPv6 /64 (an IPv4-mapped
    IPv6 address is its IPv4 address); "unknown" when the socket gave none."""
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False)
        return str(network)
    return str(address)


@dataclass(slots=True)
class _Failures:
    count: int
    last_failure_s: float
    locked_until_s: float  # 0: not locked

    def forgettable(self, now_s: float, lockout_s: float) -> bool:
        return now_s >= max(self.last_failure_s + lockout_s, self.locked_until_s)


class FailureBook(Generic[K]):
    """Wrong passwords in a row per key, with a ban after `threshold(policy)` of them."""

    def __init__(
        self,
        threshold: Callable[[ThrottlePolicy], int],
        max_entries: int = MAX_THROTTLE_ENTRIES,
        *,
        fail_closed: bool = True,
    ) -> None:
        self._threshold = threshold
        self._max_entries = max_entries
        self._fail_closed = fail_closed
        self._entries: dict[K, _Failures] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def retry_after_s(self, key: K, now_s: float, policy: ThrottlePolicy) -> float:
        """Seconds until `key` may try again; 0 when it may try now."""
        self._forget(now_s, policy.lockout_s)
        entry = self._entries.get(key)
        if entry is not None:
            return max(0.0, entry.locked_until_s - now_s)
        full = len(self._entries) >= self._max_entries
        if self._fail_closed and full and self._all_locked(now_s):
            return min(e.locked_until_s for e in self._entries.values()) - now_s
        return 0.0

    def failed(self, key: K, now_s: float, policy: ThrottlePolicy) -> bool:
        """Count a wrong password; True when this one banned the key."""
        self._forget(now_s, policy.lockout_s)
        entry = self._entries.get(key)
        if entry is None:
            if not self._make_room(now_s):
                return False  # saturated: retry_after_s already refuses untracked keys
            entry = self._entries[key] = _Failures(0, now_s, 0.0)
        entry.count += 1
        entry.last_failure_s = now_s
        if entry.count >= self._threshold(policy) and entry.locked_until_s <= now_s:
            entry.locked_until_s = now_s + policy.lockout_s
            entry.count = 0  # after the ban, a fresh run
            return True
        return False

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def _forget(self, now_s: float, lockout_s: float) -> None:
        stale = [k for k, e in self._entries.items() if e.forgettable(now_s, lockout_s)]
        for key in stale:
            del self._entries[key]

    def _all_locked(self, now_s: float) -> bool:
        return all(e.locked_until_s > now_s for e in self._entries.values())

    def _make_room(self, now_s: float) -> bool:
        if len(self._entries) < self._max_entries:
            return True
        unlocked = [
            (e.last_failure_s, k) for k, e in self._entries.items() if e.locked_until_s <= now_s
        ]
        if not unlocked:
            return False
        oldest = min(unlocked, key=lambda item: item[0])
        del self._entries[oldest[1]]
        return True


def _per_client(policy: ThrottlePolicy) -> int:
    return policy.max_failed_logins


def _spread(policy: ThrottlePolicy) -> int:
    return policy.spread_max_failures


class LoginThrottle:
    """The three books of the module docstring, asked and told together."""

    def __init__(self, max_entries: int = MAX_THROTTLE_ENTRIES) -> None:
        self.pairs: FailureBook[tuple[str, str]] = FailureBook(
            _per_client, max_entries, fail_closed=False
        )
        self.clients: FailureBook[str] = FailureBook(_spread, max_entries, fail_closed=False)
        self.accounts: FailureBook[str] = FailureBook(_spread, max_entries)

    def __len__(self) -> int:
        return len(self.pairs) + len(self.clients) + len(self.accounts)

    def retry_after_s(
        self, client: str, name: str, known_device: bool, now_s: float, policy: ThrottlePolicy
    ) -> float:
        """Seconds until `client` may try `name` again; 0 when it may try now. A known device
        of `name` is not held by the account's ban (only by its own)."""
        waits = [
            self.pairs.retry_after_s((client, name), now_s, policy),
            self.clients.retry_after_s(client, now_s, policy),
        ]
        if not known_device:
            waits.append(self.accounts.retry_after_s(name, now_s, policy))
        return max(waits)

    def failed(self, client: str, name: str, now_s: float, policy: ThrottlePolicy) -> set[Scope]:
        """Count a wrong password in every book; the bans it engaged."""
        engaged = set()
        if self.pairs.failed((client, name), now_s, policy):
            engaged.add(Scope.PAIR)
        if self.clients.failed(client, now_s, policy):
            engaged.add(Scope.CLIENT)
        if self.accounts.failed(name, now_s, policy):
            engaged.add(Scope.ACCOUNT)
        return engaged

    def succeeded(self, client: str, name: str) -> None:
        self.pairs.forget((client, name))
        self.clients.forget(client)


@dataclass(frozen=True, slots=True)
class _Device:
    name: str
    issued_s: float


class KnownDevices:
    """Browsers that logged in to an account: each got a random token (a cookie) at a correct
    password, so only someone who knew the password holds one. A token names one account, lives
    at most `KNOWN_DEVICE_MAX_S`, and the table keeps the `max_devices` newest. In memory only:
    a restart forgets them (the officer's tablet is then a new device until it logs in)."""

    def __init__(self, max_devices: int = MAX_KNOWN_DEVICES) -> None:
        self._max_devices = max_devices
        self._devices: dict[str, _Device] = {}

    def __len__(self) -> int:
        return len(self._devices)

    def remember(self, token: str, name: str, now_s: float) -> None:
        self._devices.pop(token, None)
        while len(self._devices) >= self._max_devices:
            del self._devices[next(iter(self._devices))]  # insertion order: the oldest first
        self._devices[token] = _Device(name, now_s)

    def knows(self, token: str | None, name: str, now_s: float) -> bool:
        device = self._devices.get(token or "")
        if device is None:
            return False
        if now_s >= device.issued_s + KNOWN_DEVICE_MAX_S:
            del self._devices[token or ""]
            return False
        return device.name == name
