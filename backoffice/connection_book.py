"""How many connections a listener holds, in all and per client address (pure).

Every TCP listener of the back office (the evidence listener, the pairing listener) has a
budget of its own (backoffice/listener.py asks this book before and after each accept):

- at most `max_connections` at once: at the budget the listener stops accepting, so further
  connections wait in the kernel's backlog and take no descriptor of the process. The budgets
  of all listeners, plus a headroom for files, are what `mvb-admin serve` needs of
  RLIMIT_NOFILE (backoffice/serve_limits.py checks it at start), so one listener can never take
  the descriptors another one needs: 450 bare connections to the pairing port cost the evidence
  listener nothing;
- at most `max_per_address` from one address: one more is closed at once. An IPv6 client is
  counted by its /64 prefix (one subscriber's network: an attacker holds a whole /64, an honest
  box one address in it); an IPv4-mapped IPv6 address counts as the IPv4 address;
- at most `new_per_address_per_s` new connections a second from one address (bursts of
  `new_burst_per_address`): one more is closed at once, before its TLS handshake. A handshake
  is the dearest thing a client can make the server do before it has proved anything (a
  signature, a certificate chain to verify), and a box keeps its connections alive: it opens a
  new one now and then, a flood opens thousands a second.

Invariants: `total` is the number of admitted connections not yet released, never above
`max_connections`; each address's count is at most `max_per_address`; an address with no
connection has no entry (memory is bounded by `max_connections`, and the rate's by
MAX_RATE_ADDRESSES); `release` of an address with none is a no-op; a refused connection
takes nothing (no slot, no token). Pure: the caller passes monotonic `now_s`.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Final

from backoffice.rate_limit import ClientRateLimit

IPV6_PREFIX_BITS: Final = 64
MAX_RATE_ADDRESSES: Final = 4096
"""Addresses whose new-connection rate is remembered; the least recently seen is forgotten first
(a forgotten address starts with a full bucket: it errs towards serving)."""


class Admission(enum.Enum):
    ADMITTED = "admitted"
    FULL = "full"  # the listener holds its budget
    ADDRESS_FULL = "address_full"  # the address holds its share
    TOO_FAST = "too_fast"  # the address opens connections faster than its rate


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """A listener's budget: connections at once, and from one address (or IPv6 /64), and new
    connections a second from one address."""

    max_connections: int
    max_per_address: int
    new_per_address_per_s: float = 10.0
    new_burst_per_address: int = 40

    def __post_init__(self) -> None:
        if not 1 <= self.max_per_address <= self.max_connections:
            raise ValueError("need 1 <= max_per_address <= max_connections")
        if not (self.new_per_address_per_s > 0 and self.new_burst_per_address >= 1):
            raise ValueError("need new_per_address_per_s > 0 and new_burst_per_address >= 1")


def address_key(address: str) -> str:
    """What a client address is counted as: the IPv4 address, or the IPv6 /64 it lies in.
    Anything that does not parse (a Unix socket's empty name) is counted as itself."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX_BITS), strict=False))
    return str(parsed)


class ConnectionBook:
    """The connections one listener holds; see the module docstring."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.total = 0
        self._per_key: dict[str, int] = {}
        self._new = ClientRateLimit(
            limits.new_per_address_per_s,
            limits.new_burst_per_address,
            max_clients=MAX_RATE_ADDRESSES,
        )

    @property
    def full(self) -> bool:
        return self.total >= self.limits.max_connections

    def admit(self, address: str, now_s: float) -> Admission:
        """Count a new connection from `address` at monotonic `now_s`, or say why not (nothing
        is counted then)."""
        key = address_key(address)
        count = self._per_key.get(key, 0)
        if self.full:
            return Admission.FULL
        if count >= self.limits.max_per_address:
            return Admission.ADDRESS_FULL
        if self._new.take(key, now_s) is not None:
            return Admission.TOO_FAST
        self._per_key[key] = count + 1
        self.total += 1
        return Admission.ADMITTED

    def release(self, address: str) -> None:
        """A connection `admit` counted has ended."""
        key = address_key(address)
        count = self._per_key.get(key, 0)
        if count == 0:
            return
        if count == 1:
            del self._per_key[key]
        else:
            self._per_key[key] = count - 1
        self.total -= 1

    def count(self, address: str) -> int:
        return self._per_key.get(address_key(address), 0)
