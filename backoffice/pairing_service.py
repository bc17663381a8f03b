"""The back office's pairing shell (docs/pairing.md): the ledger on disk, `POST /pair/v1`, the gate.

Around the pure core of backoffice/pairing.py:

- `LedgerStore` keeps the PairingLedger as one JSON file, mode 0600, replaced atomically (temp
  file, fsync, rename, fsync of the directory) after every change. A read-modify-write holds a
  thread lock and an exclusive `flock` on a lock file next to it, so the server's requests and
  the admin's `mvb-admin pair-code` / `unpair` (other processes) serialise.
- `answer_request` (pure) turns a request body into the ledger to persist and the HTTP answer.
- `PairingService` + `start_pairing_server` serve `POST /pair/v1` on a TLS listener of its own
  that asks for no client certificate (the box has none yet) and presents the back office's
  serving certificate, whose pin the pairing codes check.
- `PairRateLimiter` (pure: it is handed `now_s`) keeps a token bucket per client address and
  one for all; the listener asks it before it reads a body and answers 429 beyond
  (docs/pairing.md 4.4).
- `LedgerGate` is the mutual-TLS listener's client gate (backoffice/server.py): it denies a
  serial on the ledger's deny list on every request. It re-reads the ledger whenever the file
  changed (by identity, size and times), so an `unpair` in another process counts at the next
  request; `withdrawn_among` tells which requests already running to cut
  (backoffice/in_flight.py).

Invariants:
- The ledger file is never seen half-written: readers see the old or the new version.
- A refusal that changes the ledger (a failed proof withdraws the code) is persisted before it
  is answered, like a grant.
- The pairing listener reads at most MAX_REQUEST_BYTES + 1 of a body, within a time bound, and
  handles at most `max_concurrent_requests` at once (503 beyond); it admits at most the rate
  limits' requests, per client address and in all, and reads no byte of a refused body.
- It has its own descriptor budget (`connections`, backoffice/connection_book.py), so a flood
  of this unauthenticated port never takes the evidence listener's descriptors (why a budget
  and not a process of its own: docs/deploy-backoffice.md, Limits).
- The rate limiter's memory is bounded: at most `max_tracked_addresses` buckets.
- Nothing derived from a nonce (codes, proof keys) is logged, nor a client's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from aiohttp import web

from backoffice.client_gate import ClientDenied, GateUnavailable
from backoffice.connection_book import ConnectionLimits
from backoffice.pairing import (
    BackOfficeTrust,
    CertificateDenied,
    CodeReused,
    MalformedRequest,
    PairingRefused,
    ProofInvalid,
    RateLimited,
    check_client_serial,
    redeem,
    refusal_json,
)
from backoffice.pairing_ledger import MAX_LEDGER_BYTES, PairingLedger
from backoffice.pki import Issued, load_issued
from backoffice.server import RunningServer, serve_tls
from common.durable import atomic_write_bytes, make_dirs
from common.faults import StorageFault
from protocol.pairing_code import PAIR_PATH
from protocol.pairing_messages import MAX_REQUEST_BYTES, ServiceEndpoint
from storage.devicekey import DevicePublicKey
from transport.pinning import pin_of_pem_file

log = logging.getLogger(__name__)

LEDGER_FILE: Final = "pairing-ledger.json"
LOCK_FILE: Final = "pairing-ledger.lock"
DEFAULT_LOCK_TIMEOUT_S: Final = 10.0
LOCK_POLL_S: Final = 0.01
"""flock has no timeout; a bounded wait polls the non-blocking form at this interval."""
DEFAULT_PAIR_REQUEST_TIMEOUT_S: Final = 10.0
DEFAULT_PAIR_MAX_CONCURRENT_REQUESTS: Final = 16
DEFAULT_PAIR_IDLE_TIMEOUT_S: Final = 10.0
DEFAULT_PAIR_SHUTDOWN_TIMEOUT_S: Final = 5.0
DEFAULT_PAIR_CONNECTIONS: Final = ConnectionLimits(
    max_connections=64, max_per_address=8, new_per_address_per_s=2.0, new_burst_per_address=10
)
"""The pairing listener's own descriptor budget (backoffice/connection_book.py): a pairing is
one request of a few KiB, and a depot pairs a few boxes at a time; however many connections
reach it, it holds at most these, and the evidence listener's budget is untouched. Two new
connections a second from one address (ten at once) are more than any depot pairs."""
DEFAULT_PAIR_HANDSHAKE_TIMEOUT_S: Final = 10.0
READ_PIECE_BYTES: Final = 4 * 1024
PAIR_REQUESTS_PER_ADDRESS_PER_MIN: Final = 10
"""A box pairs with one request (a few on a lost answer): ten a minute from one address leaves
room for a depot of boxes behind one NAT and none for guessing."""
PAIR_REQUESTS_PER_MIN: Final = 60
"""All addresses together: bounds what many addresses can try, and the CA's signing load."""
MAX_TRACKED_ADDRESSES: Final = 4096
JSON_TYPE: Final = "application/json"
GRANTED: Final = "granted"

_T = TypeVar("_T")


class LedgerUnavailable(StorageFault):
    """The ledger file cannot be read (corrupt, too large) or its lock not taken in time."""


# --- the ledger on disk ---------------------------------------------------------------------------


StatKey = tuple[int, int, int, int, int]
"""(device, inode, size, mtime ns, ctime ns) of the ledger file: a rename changes it."""


class LedgerStore:
    """The PairingLedger in `state_dir/LEDGER_FILE` (mode 0600; the directory 0700).

    Invariants: writes replace the file atomically; `transact` runs one read-modify-write at a
    time across threads (a lock) and processes (`flock` on LOCK_FILE), each waiting at most
    `lock_timeout_s`. A missing file is the empty ledger.
    """

    def __init__(self, state_dir: Path, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        if lock_timeout_s <= 0:
            raise ValueError("lock_timeout_s must be > 0")
        self.state_dir = state_dir
        self.path = state_dir / LEDGER_FILE
        self._lock_path = state_dir / LOCK_FILE
        self._lock_timeout_s = lock_timeout_s
        self._thread_lock = threading.Lock()

    def stat_key(self) -> StatKey | None:
        """The file's identity now, None when there is no ledger yet."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def read(self) -> PairingLedger:
        """The persisted ledger (no lock needed: writes are atomic renames)."""
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_LEDGER_BYTES + 1)
        except FileNotFoundError:
            return PairingLedger()
        try:
            return PairingLedger.from_json(data)
        except ValueError as exc:  # LedgerFormatError, too large
            raise LedgerUnavailable(f"{self.path}: {exc}") from None

    def transact(self, operation: Callable[[PairingLedger], tuple[PairingLedger, _T]]) -> _T:
        """Read the ledger, apply `operation`, persist its ledger if it changed, return its
        result. An exception from `operation` leaves the file as it was, except a
        PairingRefused carrying a changed ledger, which is persisted before it propagates."""
        with self._locked():
            ledger = self.read()
            try:
                new_ledger, result = operation(ledger)
            except PairingRefused as refusal:
                if refusal.ledger is not None and refusal.ledger != ledger:
                    self._write(refusal.ledger)
                raise
            if new_ledger != ledger:
                self._write(new_ledger)
            return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._thread_lock.acquire(timeout=self._lock_timeout_s):
            raise LedgerUnavailable(f"{self.path}: busy for {self._lock_timeout_s:g} s")
        try:
            make_dirs(self.state_dir, mode=0o700)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                self._flock(fd)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock
        finally:
            self._thread_lock.release()

    def _flock(self, fd: int) -> None:
        deadline_s = time.monotonic() + self._lock_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline_s:
                    raise LedgerUnavailable(
                        f"{self.path}: locked by another process for {self._lock_timeout_s:g} s"
                    ) from None
                time.sleep(LOCK_POLL_S)

    def _write(self, ledger: PairingLedger) -> None:
        atomic_write_bytes(self.path, ledger.to_json(), mode=0o600)


# --- the back office's keys -----------------------------------------------------------------------


def back_office_pins(pki_dir: Path) -> tuple[str, ...]:
    """The pin set the back office hands out, from a `mvb-admin pki init` directory: the serving
    key (`server.crt`) first, which the pairing codes check, then the offline backup key."""
    pins = [pin_of_pem_file((pki_dir / "server.crt").read_bytes())]
    backup = pki_dir / "backup.crt"
    if backup.exists():
        pins.append(pin_of_pem_file(backup.read_bytes()))
    return tuple(pins)


def load_back_office_ca(pki_dir: Path) -> Issued:
    """The CA that signs the boxes' certificates (`ca.crt`, `ca.key` of `pki init`)."""
    return load_issued(pki_dir / "ca.crt", pki_dir / "ca.key")


# --- the request (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairingAnswer:
    """The HTTP answer to one request: `kind` is GRANTED or the refusal kind (for logs)."""

    status: int
    body: bytes
    kind: str


def refusal_answer(refusal: PairingRefused) -> PairingAnswer:
    return PairingAnswer(refusal.http_status, refusal_json(refusal), refusal.kind)


def answer_request(
    ledger: PairingLedger, body: bytes, now_s: float, ca: Issued, trust: BackOfficeTrust
) -> tuple[PairingLedger, PairingAnswer]:
    """The ledger to persist and the answer to `POST /pair/v1` with `body` (docs/pairing.md 4.2)."""
    try:
        new_ledger, grant = redeem(ledger, body, now_s, ca, trust)
    except PairingRefused as refusal:
        kept = ledger if refusal.ledger is None else refusal.ledger
        return kept, refusal_answer(refusal)
    return new_ledger, PairingAnswer(200, grant.to_json(), GRANTED)


# --- the rate limits (pure) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests admitted per minute to `/pair/v1`: from one address, and from all together.
    Each is also the burst: a full bucket holds a minute's requests."""

    per_address_per_min: int = PAIR_REQUESTS_PER_ADDRESS_PER_MIN
    overall_per_min: int = PAIR_REQUESTS_PER_MIN
    max_tracked_addresses: int = MAX_TRACKED_ADDRESSES

    def __post_init__(self) -> None:
        if min(self.per_address_per_min, self.overall_per_min, self.max_tracked_addresses) < 1:
            raise ValueError("rate limits and the address bound must be >= 1")


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """`tokens` at time `at_s`, refilled at `per_min` a minute up to `per_min`.
    Invariant: 0 <= tokens <= per_min."""

    per_min: int
    tokens: float
    at_s: float

    @classmethod
    def full(cls, per_min: int, now_s: float) -> TokenBucket:
        return cls(per_min, float(per_min), now_s)

    def at(self, now_s: float) -> TokenBucket:
        """The bucket refilled up to `now_s` (a clock that went back refills nothing)."""
        elapsed_s = max(0.0, now_s - self.at_s)
        tokens = min(float(self.per_min), self.tokens + elapsed_s * self.per_min / 60.0)
        return TokenBucket(self.per_min, tokens, max(self.at_s, now_s))

    def taken(self) -> TokenBucket:
        return TokenBucket(self.per_min, self.tokens - 1.0, self.at_s)

    def wait_s(self) -> float:
        """Seconds until it holds a whole token (0 when it does)."""
        return max(0.0, (1.0 - self.tokens) * 60.0 / self.per_min)

    def is_full(self) -> bool:
        return self.tokens >= self.per_min


@dataclass(frozen=True, slots=True)
class RateDecision:
    """`admitted`, or refused until `retry_after_s` from now have passed."""

    admitted: bool
    retry_after_s: float = 0.0


class PairRateLimiter:
    """A token bucket per client address and one for all (docs/pairing.md 4.4). Pure: no clock,
    no I/O; the caller hands in `now_s` from a monotonic clock.

    Invariants: a request is admitted only when both its address's bucket and the overall bucket
    hold a token, and then it takes one from each; a refused request takes nothing. At most
    `max_tracked_addresses` buckets are kept: a full bucket is the same as none, so full ones
    are forgotten first, and a new address is refused while every kept bucket is still filling.
    """

    def __init__(self, limits: RateLimits | None = None) -> None:
        self.limits = limits or RateLimits()
        self._overall: TokenBucket | None = None
        self._addresses: dict[str, TokenBucket] = {}

    @property
    def tracked_addresses(self) -> int:
        return len(self._addresses)

    def admit(self, address: str, now_s: float) -> RateDecision:
        """Take a token for one request from `address`, or say how long to wait."""
        limits = self.limits
        overall = (self._overall or TokenBucket.full(limits.overall_per_min, now_s)).at(now_s)
        own = self._addresses.get(address)
        if own is None:
            self._forget_full(now_s)
            if len(self._addresses) >= limits.max_tracked_addresses:
                return RateDecision(False, self._first_full_s(now_s))
            own = TokenBucket.full(limits.per_address_per_min, now_s)
        own = own.at(now_s)
        wait_s = max(own.wait_s(), overall.wait_s())
        if wait_s > 0:
            return RateDecision(False, wait_s)
        self._overall = overall.taken()
        self._addresses[address] = own.taken()
        return RateDecision(True)

    def _forget_full(self, now_s: float) -> None:
        full = [key for key, bucket in self._addresses.items() if bucket.at(now_s).is_full()]
        for key in full:
            del self._addresses[key]

    def _first_full_s(self, now_s: float) -> float:
        """Seconds until the first kept bucket is full again (and can be forgotten)."""
        per_min = self.limits.per_address_per_min
        return min(
            (per_min - bucket.at(now_s).tokens) * 60.0 / per_min
            for bucket in self._addresses.values()
        )


def retry_after_header(retry_after_s: float) -> str:
    """Retry-After in whole seconds, rounded up, at least 1 (RFC 9110 10.2.3)."""
    return str(max(1, math.ceil(retry_after_s)))


# --- the service ----------------------------------------------------------------------------------


class PairingService:
    """Answers pairing requests against the ledger in `store`.

    `pins` is the back office's pin set (the serving pin first); `tuf_root` gives the fleet's
    current root metadata (read at each request: a rotated root goes to the next box paired);
    `service` is where paired boxes reach the mutual-TLS listener (docs/pairing.md 3.2).
    """

    def __init__(
        self,
        store: LedgerStore,
        ca: Issued,
        pins: Sequence[str],
        tuf_root: Callable[[], bytes],
        *,
        service: ServiceEndpoint,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ca = ca
        self._pins = tuple(pins)
        self._tuf_root = tuf_root
        self._service = service
        self._clock = clock

    async def answer(self, body: bytes) -> PairingAnswer:
        """The answer to one request body; the ledger is persisted first. Off the event loop:
        the CA signs, and the ledger is fsynced."""
        answer = await asyncio.to_thread(self._answer_blocking, body)
        if answer.kind == CodeReused.kind:
            # docs/pairing.md 7: someone else may hold a certificate for this box.
            log.warning("ALARM: a used pairing code was presented again (code-reused)")
        elif answer.kind == ProofInvalid.kind:
            log.warning("a pairing request failed its proof; the code is withdrawn")
        else:
            log.info("pairing request answered status=%d kind=%s", answer.status, answer.kind)
        return answer

    def _answer_blocking(self, body: bytes) -> PairingAnswer:
        trust = BackOfficeTrust(self._pins, self._tuf_root(), self._service)
        # The clock is read inside the lock: a request that waited is judged when it runs.
        return self._store.transact(
            lambda ledger: answer_request(ledger, body, self._clock(), self._ca, trust)
        )


class LedgerGate:
    """The mutual-TLS listener's client gate: `await gate(serial)` raises ClientDenied for a
    withdrawn certificate and GateUnavailable when the ledger cannot be read (fail closed)."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self._cached: tuple[StatKey | None, PairingLedger] | None = None

    async def __call__(self, serial: int) -> None:
        try:
            ledger = await self._current()
        except (LedgerUnavailable, OSError) as exc:
            raise GateUnavailable(str(exc)) from None
        try:
            check_client_serial(ledger, serial)
        except CertificateDenied as exc:
            raise ClientDenied(str(exc), unpaired=exc.reason == "unpaired") from None

    async def enrolled_device_key(self, box_id: str) -> DevicePublicKey | None:
        """The device key `box_id` enrolled at pairing, None when it is not paired or paired
        before keys were enrolled; GateUnavailable when the ledger cannot be read."""
        try:
            ledger = await self._current()
        except (LedgerUnavailable, OSError) as exc:
            raise GateUnavailable(str(exc)) from None
        pairing = ledger.pairing_of(box_id)
        if pairing is None or pairing.device_key is None:
            return None
        return DevicePublicKey.from_raw(pairing.device_key, source=f"box {box_id}'s enrolled key")

    async def withdrawn_among(self, serials: frozenset[int]) -> frozenset[int]:
        """Those of `serials` the ledger denies now: the requests in flight to cut
        (backoffice/in_flight.py). LedgerUnavailable when the ledger cannot be read."""
        ledger = await self._current()
        return frozenset(serial for serial in serials if ledger.is_denied(serial))

    async def _current(self) -> PairingLedger:
        key = self._store.stat_key()  # one stat per request: cheap, and sees every rename
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        ledger = await asyncio.to_thread(self._store.read)
        self._cached = (key, ledger)
        return ledger


# --- the HTTP shell -------------------------------------------------------------------------------


def pairing_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context that asks for no client certificate: a box pairs before it has
    one. It presents the serving certificate, whose key the code's pin check names."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(cert_file), str(key_file))
    context.set_alpn_protocols(["http/1.1"])
    return context


async def read_bounded_request_body(request: web.Request, max_bytes: int) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed `max_bytes`."""
    declared_bytes = request.content_length
    if declared_bytes is not None and declared_bytes > max_bytes:
        return None
    body = bytearray()
    while piece := await request.content.read(READ_PIECE_BYTES):
        body += piece
        if len(body) > max_bytes:
            return None
    return bytes(body)


class _PairingHandler:
    """`POST /pair/v1` only; bounded rate, body, time and concurrency."""

    def __init__(
        self,
        service: PairingService,
        *,
        request_timeout_s: float,
        max_concurrent_requests: int,
        limiter: PairRateLimiter,
        clock: Callable[[], float],
    ) -> None:
        self._service = service
        self._request_timeout_s = request_timeout_s
        self._max_concurrent_requests = max_concurrent_requests
        self._limiter = limiter
        self._clock = clock
        self._in_flight = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != PAIR_PATH:
            return web.Response(status=404, text="not found\n")
        if request.method != "POST":
            return web.Response(status=405, text="POST only\n", headers={"Allow": "POST"})
        decision = self._limiter.admit(request.remote or "", self._clock())
        if not decision.admitted:
            return _rate_limited(decision.retry_after_s)
        if self._in_flight >= self._max_concurrent_requests:
            return web.Response(status=503, text="busy\n", headers={"Retry-After": "5"})
        self._in_flight += 1
        try:
            return await self._answer(request)
        finally:
            self._in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        try:
            async with asyncio.timeout(self._request_timeout_s):
                body = await read_bounded_request_body(request, MAX_REQUEST_BYTES)
        except TimeoutError:
            response = web.Response(status=408, text="the request body was too slow\n")
            response.force_close()
            return response
        if body is None:
            answer = refusal_answer(
                MalformedRequest(f"the request is larger than {MAX_REQUEST_BYTES} bytes")
            )
            response = _json_answer(answer)
            response.force_close()  # the rest of the body is not worth reading
            return response
        return _json_answer(await self._service.answer(body))


def _rate_limited(retry_after_s: float) -> web.Response:
    """429 with Retry-After and a refusal (docs/pairing.md 3.3); the body is left unread."""
    log.warning("pairing request refused: rate limit reached")
    retry_after = retry_after_header(retry_after_s)
    refusal = RateLimited(
        f"too many pairing requests reached the back office; try again in {retry_after} s "
        "(the code is unchanged)"
    )
    response = _json_answer(refusal_answer(refusal))
    response.headers["Retry-After"] = retry_after
    response.force_close()  # an unread body is not worth reading
    return response


def _json_answer(answer: PairingAnswer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=answer.body,
        content_type=JSON_TYPE,
        headers={"Cache-Control": "no-store"},
    )


async def start_pairing_server(
    service: PairingService,
    *,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    request_timeout_s: float = DEFAULT_PAIR_REQUEST_TIMEOUT_S,
    max_concurrent_requests: int = DEFAULT_PAIR_MAX_CONCURRENT_REQUESTS,
    idle_timeout_s: float = DEFAULT_PAIR_IDLE_TIMEOUT_S,
    shutdown_timeout_s: float = DEFAULT_PAIR_SHUTDOWN_TIMEOUT_S,
    connections: ConnectionLimits = DEFAULT_PAIR_CONNECTIONS,
    handshake_timeout_s: float = DEFAULT_PAIR_HANDSHAKE_TIMEOUT_S,
    rate_limits: RateLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunningServer:
    """Serve `POST /pair/v1` over TLS without client certificates on host:port (0: any).
    `clock` (monotonic seconds) is what the rate limiter is handed at each request."""
    if not (request_timeout_s > 0 and idle_timeout_s > 0 and max_concurrent_requests > 0):
        raise ValueError("timeouts and the concurrency bound must be > 0")
    context = pairing_ssl_context(cert_file, key_file)
    handler = _PairingHandler(
        service,
        request_timeout_s=request_timeout_s,
        max_concurrent_requests=max_concurrent_requests,
        limiter=PairRateLimiter(rate_limits),
        clock=clock,
    )
    return await serve_tls(
        handler.handle,
        context,
        host=host,
        port=port,
        what="pairing",
        client_max_size=MAX_REQUEST_BYTES,
        idle_timeout_s=idle_timeout_s,
        shutdown_timeout_s=shutdown_timeout_s,
        connections=connections,
        handshake_timeout_s=handshake_timeout_s,
    )
