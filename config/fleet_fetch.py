"""The box's `fetch(url_path, max_bytes)` for FleetConfigClient, over the pinned mutual-TLS link.

`FleetLink` is the asynchronous part: one aiohttp session to the back office, whose connector is
transport/https.py's PinningConnector (the chain and name are verified against the back office
CA and `server_name`, and the key against the pins, before a request byte is written), with the
box's paired client certificate. `LinkFetch` is the synchronous adapter that ngclient calls from
a worker thread: it runs each GET on the service's event loop with
`asyncio.run_coroutine_threadsafe` and waits for it, bounded.

Invariants:
- `get` returns only a 200 answer's body, of at most `max_bytes` bytes. It stops reading one
  byte past the bound (or at once, on a larger Content-Length) and raises
  DownloadLengthMismatchError, which the client treats as a hostile server, not a flaky link.
- Errors by fault, as config/fleet_client.py expects: another status is
  `DownloadHTTPError(message, status)` (`UnpairedByBackOffice`, a subclass, when the refusal
  says the box was unpaired: transport/unpairing.py); a link that failed or timed out is
  `DownloadError`; a
  pin mismatch or a server that breaks HTTP stays the transport's PinMismatch / HostileServer.
- Every wait is bounded: connect, each read, the whole request, and the worker thread's wait.
- No redirect is followed, no cookie kept, no proxy taken from the environment, no body
  decompressed (as in transport/https.py).
- `LinkFetch` refuses to run on the event loop's own thread (it would wait for itself).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, Final

import aiohttp
from tuf.api.exceptions import DownloadError, DownloadHTTPError, DownloadLengthMismatchError
from yarl import URL

from common.faults import RemoteFault
from transport.binding import LinkBinding
from transport.errors import TransientNetworkError, TransportError
from transport.https import (
    PinningConnector,
    host_header_value,
    pinned_session,
    request_url,
    translate_error,
)
from transport.tls import ClientTlsSettings
from transport.unpairing import says_unpaired

READ_PIECE_BYTES: Final = 16 * 1024


class UnpairedByBackOffice(DownloadHTTPError, RemoteFault):
    """The back office refused the request and said this box was unpaired."""


DEFAULT_CONNECT_TIMEOUT_S: Final = 15.0
DEFAULT_READ_TIMEOUT_S: Final = 15.0
DEFAULT_REQUEST_TIMEOUT_S: Final = 120.0
"""The whole GET, body included: 4 MiB of targets metadata over a poor cellular link."""
THREAD_WAIT_MARGIN_S: Final = 5.0
"""The worker thread waits this much longer than the request may take, then gives up."""


class FleetLink:
    """GETs of fleet files from one back office, pinned and mutually authenticated.

    Invariant: every connection in the pool passed the pin check (`connections_opened` counts
    them); `request_timeout_s` bounds each GET from start to last byte.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        connector: PinningConnector,
        host: str,
        port: int,
        server_name: str,
        request_timeout_s: float,
    ) -> None:
        self._session = session
        self._connector = connector
        self._host = host
        self._port = port
        self._server_name = server_name
        self.request_timeout_s = request_timeout_s

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        tls: ClientTlsSettings,
        *,
        binding: LinkBinding | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        max_connections: int = 1,
    ) -> FleetLink:
        """A link to `host:port` (connections open lazily); OSError at once for a `binding`
        that cannot be applied, ValueError for bad bounds (pinned_session). Call it on the loop
        that will run the GETs."""
        session, connector = pinned_session(
            tls,
            binding,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            request_timeout_s=request_timeout_s,
            max_connections=max_connections,
        )
        return cls(session, connector, host, port, tls.server_name, request_timeout_s)

    @property
    def connections_opened(self) -> int:
        return self._connector.connections_opened

    async def get(self, url_path: str, max_bytes: int) -> bytes:
        """The body of GET `url_path`, at most `max_bytes` bytes (errors: see the module)."""
        try:
            url = request_url(self._host, self._port, url_path)
        except ValueError as exc:
            raise DownloadError(f"refusing to fetch {url_path[:80]!r}: {exc}") from None
        headers = [("Host", host_header_value(self._server_name, self._port))]
        try:
            return await self._get(url_path, url, headers, max_bytes)
        except (DownloadError, TransportError):
            raise
        except Exception as exc:
            translated = translate_error(exc)
            if translated is None:
                raise
            if isinstance(translated, TransientNetworkError):
                raise DownloadError(f"GET {url_path}: {translated}") from exc
            raise translated from exc

    async def _get(
        self, url_path: str, url: URL, headers: list[tuple[str, str]], max_bytes: int
    ) -> bytes:
        response = await self._session.get(
            url, headers=headers, server_hostname=self._server_name, allow_redirects=False
        )
        try:
            if response.status != 200:
                message = f"GET {url_path}: HTTP {response.status}"
                answered = {name.lower(): value for name, value in response.headers.items()}
                if says_unpaired(response.status, answered):
                    raise UnpairedByBackOffice(f"{message}: this box was unpaired", 403)
                raise DownloadHTTPError(message, response.status)
            body = await read_at_most(response, url_path, max_bytes)
        except BaseException:
            # close(), not release(): an unread or refused body must not go back to the pool.
            response.close()
            raise
        response.release()
        return body

    async def post_json(self, url_path: str, body: bytes) -> int:
        """POST a small JSON body (a report) and return the status; the answer body is not read
        beyond a few bytes. Link faults raise DownloadError, pin faults pass through."""
        status, _ = await self.post_json_answer(url_path, body)
        return status

    async def post_json_answer(self, url_path: str, body: bytes) -> tuple[int, dict[str, str]]:
        """As `post_json`, with the answer's headers (names lower-cased; a repeated header's
        values joined with ", "): what the pinned back office says besides the status."""
        url = request_url(self._host, self._port, url_path)
        headers = [
            ("Host", host_header_value(self._server_name, self._port)),
            ("Content-Type", "application/json"),
        ]
        try:
            response = await self._session.post(
                url, data=body, headers=headers, server_hostname=self._server_name,
                allow_redirects=False,
            )  # fmt: skip
        except Exception as exc:
            translated = translate_error(exc)
            if translated is None:
                raise
            if isinstance(translated, TransientNetworkError):
                raise DownloadError(f"POST {url_path}: {translated}") from exc
            raise translated from exc
        answered: dict[str, str] = {}
        for name, value in response.headers.items():
            key = name.lower()
            answered[key] = value if key not in answered else f"{answered[key]}, {value}"
        response.close()
        return response.status, answered

    async def aclose(self) -> None:
        """Close every connection; idempotent."""
        await self._session.close()


async def read_at_most(response: aiohttp.ClientResponse, url_path: str, max_bytes: int) -> bytes:
    """The whole body, or DownloadLengthMismatchError as soon as it is known to exceed
    `max_bytes` (the declared length, or one byte read past it)."""
    declared_bytes = response.content_length
    if declared_bytes is not None and declared_bytes > max_bytes:
        raise DownloadLengthMismatchError(
            f"GET {url_path}: {declared_bytes} bytes declared, at most {max_bytes} expected"
        )
    body = bytearray()
    while piece := await response.content.read(min(READ_PIECE_BYTES, max_bytes + 1 - len(body))):
        body += piece
        if len(body) > max_bytes:
            raise DownloadLengthMismatchError(f"GET {url_path}: more than {max_bytes} bytes")
    return bytes(body)


class LinkFetch:
    """`fetch(url_path, max_bytes)` for FleetConfigClient: runs `link.get` on `loop` and waits
    for it from the calling (worker) thread, at most `wait_timeout_s`."""

    def __init__(
        self,
        link: FleetLink,
        loop: asyncio.AbstractEventLoop,
        *,
        wait_timeout_s: float | None = None,
    ) -> None:
        self._link = link
        self._loop = loop
        if wait_timeout_s is None:
            wait_timeout_s = link.request_timeout_s + THREAD_WAIT_MARGIN_S
        self._wait_timeout_s = wait_timeout_s
        if self._wait_timeout_s <= 0:
            raise ValueError("wait_timeout_s must be > 0")

    def __call__(self, url_path: str, max_bytes: int) -> bytes:
        if _running_loop() is self._loop:
            raise RuntimeError(
                "fetch blocks until the event loop answers: call FleetConfigClient.check "
                "via asyncio.to_thread"
            )
        future = _submit(self._link.get(url_path, max_bytes), self._loop)
        try:
            return future.result(timeout=self._wait_timeout_s)
        except TimeoutError:
            future.cancel()
            raise DownloadError(
                f"GET {url_path}: no answer within {self._wait_timeout_s:g} s"
            ) from None
        except asyncio.CancelledError:
            raise DownloadError(f"GET {url_path}: cancelled (the service is stopping)") from None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _submit(
    coroutine: Coroutine[Any, Any, bytes], loop: asyncio.AbstractEventLoop
) -> concurrent.futures.Future[bytes]:
    try:
        return asyncio.run_coroutine_threadsafe(coroutine, loop)
    except RuntimeError as exc:  # the loop is closed
        coroutine.close()
        raise DownloadError(f"the link's event loop is gone: {exc}") from None
