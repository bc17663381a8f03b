"""The bounds `mvb-admin serve` puts on every client: its settings, defaults and their wiring.

One place for every limit of issue 13 item 7 (docs/deploy-backoffice.md, "Limits"), so that
backoffice/cli.py only asks for them:

- per box (client certificate): requests in flight on both listeners together
  (backoffice/in_flight.py), requests a second (backoffice/rate_limit.py), creations a minute,
  bytes of unfinished uploads (reserved at creation: backoffice/reservations.py), the minimum
  pace of a body (backoffice/body_pace.py);
- per listener: connections in all and per client address, new connections a second per
  address, and the TLS handshake's time (backoffice/connection_book.py,
  backoffice/listener.py); the pairing listener has a budget of its own;
- the process: the descriptors all of that needs (`ensure_descriptors`: RLIMIT_NOFILE is
  raised to it, or the server refuses to start, naming the settings).

Invariants: every setting is positive (argparse refuses others); the descriptor need is the sum
of the listeners' budgets, one per request handled at once (an append holds its upload's data
file) and FD_HEADROOM; `ensure_descriptors` runs before any listener exists.
"""

from __future__ import annotations

import argparse
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from backoffice.body_pace import DEFAULT_MIN_BODY_RATE_BYTES_PER_S, DEFAULT_PACE_WINDOW_S
from backoffice.connection_book import ConnectionLimits
from backoffice.in_flight import DEFAULT_MAX_REQUESTS_PER_CLIENT
from backoffice.incidents import INCIDENTS_FILE, IncidentLog
from backoffice.pairing_service import DEFAULT_PAIR_CONNECTIONS, DEFAULT_PAIR_HANDSHAKE_TIMEOUT_S
from backoffice.rate_limit import ClientRateLimit
from backoffice.server import (
    DEFAULT_CONNECTIONS,
    DEFAULT_HANDSHAKE_TIMEOUT_S,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
)
from common.faults import ConfigurationFault

DEFAULT_CLIENT_REQUESTS_PER_S: Final = 20.0
DEFAULT_CLIENT_BURST: Final = 40
"""A box sends a request per chunk (4 MiB) and one or two per file: a few a second on its best
link. Twenty a second on average, forty at once, is room for that; a box that sends hundreds a
second is flooding (issue 13: it was on only when asked, and a flood of cheap requests then
took the event loop from every other box)."""
DEFAULT_CREATIONS_PER_MIN: Final = 120
"""A box seals a file every few seconds at most (the demo's 3 s is the fastest); 120 a minute
leaves room for that and for re-creations after lost answers. A box that creates thousands a
minute is not uploading evidence."""
RESERVED_SHARE_OF_MAX_UPLOAD: Final = 2
"""A box's unfinished uploads may hold twice the largest file: the one it uploads and the orphan
of a lost creation answer, at the largest size."""
FD_HEADROOM: Final = 256
"""Descriptors beyond the listeners' budgets and the appends: the store's lock, fsyncs and hashes
in worker threads, the ledger, logs, the HTTP/3 socket and its appends, the interpreter's own."""


class DescriptorLimitTooLow(ConfigurationFault):
    """RLIMIT_NOFILE's hard limit is below what the listeners' budgets need."""


@dataclass(frozen=True, slots=True)
class ServeLimits:
    """Every bound of `mvb-admin serve` (see the module docstring)."""

    client_max_requests: int = DEFAULT_MAX_REQUESTS_PER_CLIENT
    client_requests_per_s: float = DEFAULT_CLIENT_REQUESTS_PER_S
    client_burst: int = DEFAULT_CLIENT_BURST
    client_creations_per_min: int = DEFAULT_CREATIONS_PER_MIN
    client_reserved_bytes: int | None = None  # None: RESERVED_SHARE_OF_MAX_UPLOAD x max upload
    min_body_rate_bytes_per_s: float = DEFAULT_MIN_BODY_RATE_BYTES_PER_S
    body_rate_window_s: float = DEFAULT_PACE_WINDOW_S
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    connections: ConnectionLimits = DEFAULT_CONNECTIONS
    handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S
    pair_connections: ConnectionLimits = DEFAULT_PAIR_CONNECTIONS
    pair_handshake_timeout_s: float = DEFAULT_PAIR_HANDSHAKE_TIMEOUT_S

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeLimits:
        """The limits `add_limit_arguments` parsed; ConfigurationFault when they contradict."""
        try:
            connections = ConnectionLimits(
                args.max_connections,
                args.max_connections_per_address,
                args.new_connections_per_address_per_s,
                DEFAULT_CONNECTIONS.new_burst_per_address,
            )
            pair_connections = ConnectionLimits(
                args.pair_max_connections,
                args.pair_max_connections_per_address,
                args.pair_new_connections_per_address_per_s,
                DEFAULT_PAIR_CONNECTIONS.new_burst_per_address,
            )
        except ValueError as exc:
            raise ConfigurationFault(
                "--max-connections-per-address must not exceed --max-connections, nor "
                f"--pair-max-connections-per-address --pair-max-connections: {exc}"
            ) from None
        return cls(
            client_max_requests=args.client_max_requests,
            client_requests_per_s=args.client_rate_limit,
            client_burst=args.client_burst,
            client_creations_per_min=args.client_creations_per_min,
            client_reserved_bytes=args.client_reserved_bytes,
            min_body_rate_bytes_per_s=args.min_body_rate,
            body_rate_window_s=args.body_rate_window,
            max_concurrent_requests=args.max_concurrent_requests,
            connections=connections,
            handshake_timeout_s=args.handshake_timeout,
            pair_connections=pair_connections,
            pair_handshake_timeout_s=args.pair_handshake_timeout,
        )

    def reserved_bytes_per_client(self, max_upload_bytes: int) -> int:
        if self.client_reserved_bytes is not None:
            return self.client_reserved_bytes
        return RESERVED_SHARE_OF_MAX_UPLOAD * max_upload_bytes

    def tus_app_options(self, store_dir: Path, max_upload_bytes: int) -> dict[str, Any]:
        """TusApp's per-box bounds, and where its incidents go (beside the uploads)."""
        per_s = self.client_creations_per_min / 60.0
        return {
            "creation_limit": ClientRateLimit(per_s, self.client_creations_per_min),
            "max_reserved_bytes_per_client": self.reserved_bytes_per_client(max_upload_bytes),
            "incidents": IncidentLog(store_dir / INCIDENTS_FILE),
        }

    def https_options(self) -> dict[str, Any]:
        return {
            "rate_limit": ClientRateLimit(self.client_requests_per_s, self.client_burst),
            "pace_window_s": self.body_rate_window_s,
            "min_body_rate_bytes_per_s": self.min_body_rate_bytes_per_s,
            "max_concurrent_requests": self.max_concurrent_requests,
            "connections": self.connections,
            "handshake_timeout_s": self.handshake_timeout_s,
        }

    def h3_options(self) -> dict[str, Any]:
        return {
            "pace_window_s": self.body_rate_window_s,
            "min_body_rate_bytes_per_s": self.min_body_rate_bytes_per_s,
        }

    def pairing_options(self) -> dict[str, Any]:
        return {
            "connections": self.pair_connections,
            "handshake_timeout_s": self.pair_handshake_timeout_s,
        }

    def descriptors_needed(self, *, pairing: bool) -> int:
        pair = self.pair_connections.max_connections if pairing else 0
        appends = self.max_concurrent_requests
        return self.connections.max_connections + pair + appends + FD_HEADROOM


def ensure_descriptors(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to `needed` if it is lower (never lower it); the soft limit
    now. DescriptorLimitTooLow when the hard limit is below `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= needed:
        return soft
    if soft == resource.RLIM_INFINITY:
        return needed
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise DescriptorLimitTooLow(
            f"the listeners' connection budgets need {needed} file descriptors "
            "(--max-connections + --pair-max-connections + --max-concurrent-requests + "
            f"{FD_HEADROOM}), and the hard "
            f"limit is {hard}: lower the budgets or raise LimitNOFILE"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def add_limit_arguments(serve: argparse.ArgumentParser) -> None:
    """The limit settings of `mvb-admin serve` (docs/deploy-backoffice.md, "Limits")."""
    limits = serve.add_argument_group("limits per box and per listener")
    limits.add_argument(
        "--client-max-requests",
        type=positive_int,
        default=DEFAULT_MAX_REQUESTS_PER_CLIENT,
        help="requests one box may have in flight, on both listeners together (more: 429)",
    )
    limits.add_argument(
        "--client-rate-limit",
        type=positive_float,
        default=DEFAULT_CLIENT_REQUESTS_PER_S,
        help="tus requests a second one box may send on average (more: 429, connection closed)",
    )
    limits.add_argument(
        "--client-burst",
        type=positive_int,
        default=DEFAULT_CLIENT_BURST,
        help="tus requests one box may send at once, with --client-rate-limit",
    )
    limits.add_argument(
        "--client-creations-per-min",
        type=positive_int,
        default=DEFAULT_CREATIONS_PER_MIN,
        help="uploads one box may create a minute (and at once); more: 429",
    )
    limits.add_argument(
        "--client-reserved-bytes",
        type=positive_int,
        default=None,
        help="bytes one box's unfinished uploads may hold (reserved at creation; more: 507); "
        f"default {RESERVED_SHARE_OF_MAX_UPLOAD} x --max-upload-bytes",
    )
    limits.add_argument(
        "--min-body-rate",
        type=positive_float,
        default=DEFAULT_MIN_BODY_RATE_BYTES_PER_S,
        help="bytes/s a request body must bring in every --body-rate-window (slower: 408, cut)",
    )
    limits.add_argument(
        "--body-rate-window",
        type=positive_float,
        default=DEFAULT_PACE_WINDOW_S,
        help="seconds: the window over which --min-body-rate is measured",
    )
    limits.add_argument(
        "--max-concurrent-requests",
        type=positive_int,
        default=DEFAULT_MAX_CONCURRENT_REQUESTS,
        help="requests handled at once by the HTTPS listener, all boxes together (more: 503)",
    )
    _add_listener_limits(
        limits, "", "the HTTPS listener", DEFAULT_CONNECTIONS, DEFAULT_HANDSHAKE_TIMEOUT_S
    )
    _add_listener_limits(
        limits,
        "pair-",
        "the pairing listener",
        DEFAULT_PAIR_CONNECTIONS,
        DEFAULT_PAIR_HANDSHAKE_TIMEOUT_S,
    )


def _add_listener_limits(
    limits: argparse._ArgumentGroup,
    prefix: str,
    listener: str,
    connections: ConnectionLimits,
    handshake_timeout_s: float,
) -> None:
    """One listener's connection budget and handshake bound (each listener has its own: the
    pairing listener cannot use up the evidence listener's descriptors)."""
    limits.add_argument(
        f"--{prefix}max-connections",
        type=positive_int,
        default=connections.max_connections,
        help=f"connections {listener} holds at once (beyond: they wait in the backlog)",
    )
    limits.add_argument(
        f"--{prefix}max-connections-per-address",
        type=positive_int,
        default=connections.max_per_address,
        help=f"connections {listener} holds from one address (IPv6: one /64)",
    )
    limits.add_argument(
        f"--{prefix}new-connections-per-address-per-s",
        type=positive_float,
        default=connections.new_per_address_per_s,
        help=f"new connections a second {listener} takes from one address (bursts of "
        f"{connections.new_burst_per_address}); more are closed before their handshake",
    )
    limits.add_argument(
        f"--{prefix}handshake-timeout",
        type=positive_float,
        default=handshake_timeout_s,
        help=f"seconds a TLS handshake may take on {listener}",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value
