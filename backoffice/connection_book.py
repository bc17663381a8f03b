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
  box one address in it); an IPv4-mapped IPv6 address counts as the IPv4 address.

Invariants: `total` is the number of admitted connections not yet released, never above
`max_connections`; each address's count is at most `max_per_address`; an address with no
connection has no entry (memory is bounded by `max_connections`); `release` of an address
with none is a no-op.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

IPV6_PREFIX_BITS: Final = 64


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """A listener's budget: connections at once, and from one address (or IPv6 /64)."""

    max_connections: int
    max_per_address: int

    def __post_init__(self) -> None:
        if not 1 <= self.max_per_address <= self.max_connections:
            raise ValueError("need 1 <= max_per_address <= max_connections")


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

    @property
    def full(self) -> bool:
        return self.total >= self.limits.max_connections

    def admit(self, address: str) -> bool:
        """Count a new connection from `address`; False (nothing counted) when the listener or
        that address is at its budget."""
        key = address_key(address)
        count = self._per_key.get(key, 0)
        if self.full or count >= self.limits.max_per_address:
            return False
        self._per_key[key] = count + 1
        self.total += 1
        return True

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
