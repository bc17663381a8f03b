"""The box's pairing shell (docs/pairing.md): `mvb pair CODE` over real TLS, then the files.

`pair(typed_code, box_id, state_dir)` runs the pure core of gateway/pairing.py against the back
office named in the code:

1. refuses when the box is already paired (unless `re_pair`), then parses the code and makes a
   fresh key pair and CSR (a typo is refused before any connection);
2. connects with TLS 1.2+ *without* checking the chain or the name (the box has no CA yet) and,
   inside the connector, right after the handshake and before aiohttp may write a byte, checks
   the peer's key against the code (`check_server_certificate`); a wrong key aborts the
   connection and withdraws the attempt (WrongServerKey);
3. POSTs the request and reads at most MAX_GRANT_BYTES of the answer; a lost connection is
   retried with the *identical* request (docs/pairing.md 5.3), at most `attempts` times;
4. checks the grant (`accept_grant`), installs the fleet's TUF root into
   `state_dir/fleet-metadata` and then writes the credentials into `state_dir/pairing/`.

Files (`state_dir/pairing/`, directory 0700): `client.crt`, `client.key` (0600), `ca.crt`,
`pins.json` (a JSON list of "sha256/<base64>" pins, the serving pin first), `address`
(`host[:port]` of the pairing endpoint) and `service.json` (the grant's mutual-TLS service
endpoint: address, server name, HTTP/3 port; protocol/pairing_messages.py ServiceEndpoint).
The directory is the commit point: it is written whole under a temporary name, fsynced and
renamed into place (common/durable.py `replace_directory`), so the box is paired (the directory
exists) with a complete set of files or not at all. A re-pair swaps the directories by two
renames; `recover_pairing_dir` finishes a swap a crash interrupted. Once paired, `release.key`
(0600) joins them: the fleet's release key, fetched over the new link (`fetch_release_key`,
docs/releases.md 6.2), not part of the commit point (a box without it fetches it later).

Invariants:
- No request byte is sent to a server whose key the code does not name.
- The private key is written only to `client.key` (0600) and never logged; nothing derived from
  the nonce is written or logged.
- An installed trust root is replaced only by a re-pair, or when the box is not paired: a root
  without credentials is what an interrupted pairing left behind.
- Every wait is bounded: connect, request, body size, attempts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp.client_proto import ResponseHandler
from tuf.api.exceptions import DownloadError, RepositoryError

from common.durable import make_dirs, recover_directory_swap, remove_tree, replace_directory
from common.faults import MisuseFault, TransientFault
from config.fleet_client import install_trust_root
from config.fleet_fetch import FleetLink
from config.release_targets import RELEASE_KEY_PATH
from gateway.fleet_sync import forget_fleet_state
from gateway.pairing import (
    GrantMalformed,
    GrantRejected,
    PairedCredentials,
    PairingAttempt,
    PairingFailed,
    RefusedByBackOffice,
    WrongServerKey,
    accept_grant,
    check_server_certificate,
    refusal_from_answer,
    start_pairing,
)
from gateway.release_update import MAX_KEY_BYTES, RELEASE_KEY_FILE, keep_release_key
from gateway.uplink_from_config import PairedUplink
from protocol.pairing_code import CodeFormatError, CodeTypo, normalise_address, split_address
from protocol.pairing_messages import MAX_GRANT_BYTES, MessageFormatError, ServiceEndpoint
from storage.envelope import RecipientKeyError
from transport.errors import HostileServer, TransientNetworkError, TransportError
from transport.https import peer_certificate, read_bounded_body, translate_error
from transport.pinning import PinSet
from transport.tls import MINIMUM_TLS, ClientTlsSettings

PAIRING_DIR: Final = "pairing"
FLEET_METADATA_DIR: Final = "fleet-metadata"
CLIENT_CERT_FILE: Final = "client.crt"
CLIENT_KEY_FILE: Final = "client.key"
CA_FILE: Final = "ca.crt"
PINS_FILE: Final = "pins.json"
ADDRESS_FILE: Final = "address"
SERVICE_FILE: Final = "service.json"
_MAX_SMALL_FILE_BYTES: Final = 64 * 1024

DEFAULT_ATTEMPTS: Final = 3
DEFAULT_RETRY_DELAY_S: Final = 2.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 15.0
DEFAULT_REQUEST_TIMEOUT_S: Final = 30.0
JSON_TYPE: Final = "application/json"
RELEASE_KEY_TIMEOUT_S: Final = 10.0
logger = logging.getLogger(__name__)


class AlreadyPairedHere(PairingFailed, MisuseFault):
    """The box holds credentials; only an explicit re-pair replaces them. Nothing was sent."""

    withdraws = False


class PairingUnreachable(PairingFailed, TransientFault):
    """The back office could not be reached (or the answer was lost) on every attempt. The code
    may still be valid; if the back office answered and the answer was lost, it is used."""

    withdraws = False


# --- the files ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairingFiles:
    """The credentials a paired box keeps in `directory` (`state_dir/pairing`)."""

    directory: Path

    @property
    def client_cert(self) -> Path:
        return self.directory / CLIENT_CERT_FILE

    @property
    def client_key(self) -> Path:
        return self.directory / CLIENT_KEY_FILE

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_FILE

    def pins(self) -> tuple[str, ...]:
        """The pin set; ValueError when the file is not a list of pins."""
        raw = json.loads(_read_small(self.directory / PINS_FILE))
        if not isinstance(raw, list) or not all(isinstance(pin, str) for pin in raw):
            raise ValueError(f"{self.directory / PINS_FILE} is not a list of pins")
        PinSet.from_strings(raw)  # validates every pin
        return tuple(raw)

    def address(self) -> str:
        """The back office's pairing address, `host[:port]` in canonical form."""
        return normalise_address(_read_small(self.directory / ADDRESS_FILE).decode("ascii"))

    def service(self) -> ServiceEndpoint | None:
        """The mutual-TLS service endpoint of the grant; None for a pairing made before grants
        carried it (the box then needs uplink.host and uplink.server_name, or a re-pair).
        ValueError when the file is not an endpoint."""
        try:
            data = _read_small(self.directory / SERVICE_FILE)
        except FileNotFoundError:
            return None
        try:
            return ServiceEndpoint.from_json(data)
        except MessageFormatError as exc:
            raise ValueError(f"{self.directory / SERVICE_FILE}: {exc}") from None

    def tls_settings(self, server_name: str | None = None) -> ClientTlsSettings:
        """Mutual-TLS settings for the pinned link: the granted certificate and key, the back
        office CA and pins. `server_name` defaults to the service endpoint's, else to the host
        of the pairing address."""
        service = self.service()
        default_name = split_address(self.address())[0] if service is None else service.server_name
        return ClientTlsSettings(
            ca_file=self.ca_cert,
            client_cert_file=self.client_cert,
            client_key_file=self.client_key,
            pins=PinSet.from_strings(self.pins()),
            server_name=server_name or default_name,
        )


def _read_small(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(_MAX_SMALL_FILE_BYTES + 1)
    if len(data) > _MAX_SMALL_FILE_BYTES:
        raise ValueError(f"{path} is larger than {_MAX_SMALL_FILE_BYTES} bytes")
    return data


def pairing_files(state_dir: Path) -> PairingFiles:
    return PairingFiles(state_dir / PAIRING_DIR)


def paired_uplink(state_dir: Path) -> PairedUplink | None:
    """What pairing gave the uplink (gateway/uplink_from_config.py merges it with the local file);
    None when the box is not paired. ValueError or OSError when the files are damaged."""
    if not is_paired(state_dir):
        return None
    files = pairing_files(state_dir)
    return PairedUplink(
        ca_file=files.ca_cert,
        client_cert_file=files.client_cert,
        client_key_file=files.client_key,
        pins=files.pins(),
        service=files.service(),
    )


def fleet_metadata_dir(state_dir: Path) -> Path:
    """Where the box keeps its TUF metadata (the trust root installed at pairing)."""
    return state_dir / FLEET_METADATA_DIR


def is_paired(state_dir: Path) -> bool:
    return (state_dir / PAIRING_DIR).is_dir()


def recover_pairing_dir(state_dir: Path) -> None:
    """Finish or undo a credentials write that a crash interrupted (see the module docstring).

    `.pairing-old` exists only between the two renames of a re-pair, and the new directory
    (`.pairing-new`) was complete before the first: so promote it. Any other leftover is an
    unfinished write.
    """
    recover_directory_swap(state_dir / PAIRING_DIR)


def forget_pairing(state_dir: Path) -> None:
    """An unpair (the back office said so, gateway/unpairing.py; RULES L5): forget the
    credentials and the back office's address (the pairing directory: the box is unpaired the
    moment it is gone), then the fleet's trust root and what the fleet sync kept under it.
    The evidence, the catalog and the audit log are not touched. A crash in between leaves an
    unpaired box with a stale trust root, which the next pairing replaces (`install_credentials`).
    The client key is unlinked, not wiped (flash keeps no promise either way); its certificate is
    on the back office's deny list until it expires, so the key is worth nothing."""
    remove_tree(state_dir / PAIRING_DIR)
    remove_tree(fleet_metadata_dir(state_dir))
    forget_fleet_state(state_dir)


def store_credentials(state_dir: Path, credentials: PairedCredentials) -> None:
    """Write the credentials as `state_dir/pairing/`, replacing any there as one step."""
    make_dirs(state_dir)
    files = {
        CLIENT_CERT_FILE: (credentials.certificate_pem, 0o644),
        CLIENT_KEY_FILE: (credentials.key_pem, 0o600),
        CA_FILE: (credentials.ca_certificate_pem, 0o644),
        PINS_FILE: (json.dumps(list(credentials.pins)).encode("ascii"), 0o644),
        ADDRESS_FILE: (f"{credentials.address}\n".encode("ascii"), 0o644),
        SERVICE_FILE: (credentials.service.to_json(), 0o644),
    }
    # Each file is created with its final mode: the key is never readable by others, not even
    # for a moment.
    replace_directory(state_dir / PAIRING_DIR, files, mode=0o700)


def install_credentials(state_dir: Path, credentials: PairedCredentials, *, re_pair: bool) -> int:
    """Install the fleet trust root, then the credentials (the commit point). Returns the root's
    version. GrantMalformed when the root is not root metadata signed by its own threshold.
    A new root also resets what the fleet sync kept under the old one (its applied serial, a
    deferred document, unsent reports): docs/fleet-config.md 8."""
    replace_root = re_pair or not is_paired(state_dir)
    try:
        version = install_trust_root(
            fleet_metadata_dir(state_dir), credentials.tuf_root, replace=replace_root
        )
    except (RepositoryError, ValueError) as exc:
        message = f"the grant's fleet trust root is not valid root metadata: {exc}"
        raise GrantMalformed(message) from None
    if replace_root:
        forget_fleet_state(state_dir)  # the applied serial and the rest belong to the old root
    store_credentials(state_dir, credentials)
    return version


# --- the exchange ---------------------------------------------------------------------------------


def pairing_ssl_context() -> ssl.SSLContext:
    """TLS 1.2+ without chain or name checks: the key is checked against the code instead."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_TLS
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the key is checked against the code instead
    context.set_alpn_protocols(["http/1.1"])
    return context


class KeyCheckingConnector(aiohttp.TCPConnector):
    """A connector that checks every new connection's server key against the attempt's code
    before handing it out (the hook transport/https.py's PinningConnector uses: it returns after
    the TLS handshake and before the request is written)."""

    def __init__(self, attempt: PairingAttempt, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._attempt = attempt

    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        try:
            check_server_certificate(self._attempt, peer_certificate(transport))
        except WrongServerKey:
            transport.abort()  # drop at once: nothing goes to a server the code does not name
            raise
        return transport, protocol


async def post_request(
    attempt: PairingAttempt, *, connect_timeout_s: float, request_timeout_s: float
) -> tuple[int, bytes]:
    """One POST of the attempt's request: (status, body of at most MAX_GRANT_BYTES).

    Raises WrongServerKey, GrantMalformed (not HTTP, or too large), or TransientNetworkError
    when the outcome is unknown.
    """
    connector = KeyCheckingConnector(attempt, ssl=pairing_ssl_context(), limit=1, force_close=True)
    timeout = aiohttp.ClientTimeout(total=request_timeout_s, sock_connect=connect_timeout_s)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("Accept-Encoding",),
        auto_decompress=False,
        trust_env=False,
    ) as session:
        try:
            return await _exchange(session, attempt)
        except (WrongServerKey, GrantMalformed):
            raise
        except Exception as exc:
            if isinstance(exc.__cause__, WrongServerKey):
                raise exc.__cause__ from None
            translated = translate_error(exc)
            if isinstance(translated, HostileServer):
                message = f"the back office's answer is not usable: {translated}"
                raise GrantMalformed(message) from None
            if isinstance(translated, TransientNetworkError):
                raise translated from exc
            raise


async def _exchange(session: aiohttp.ClientSession, attempt: PairingAttempt) -> tuple[int, bytes]:
    async with session.post(
        attempt.code.endpoint_url,
        data=attempt.request_json(),
        headers={"Content-Type": JSON_TYPE, "Accept": JSON_TYPE},
        allow_redirects=False,
    ) as response:
        body = await read_bounded_body(response, "POST", MAX_GRANT_BYTES)
        return response.status, body


async def send_with_retries(
    attempt: PairingAttempt,
    *,
    attempts: int,
    retry_delay_s: float,
    connect_timeout_s: float,
    request_timeout_s: float,
) -> tuple[int, bytes]:
    """Send the identical request until an answer arrives, at most `attempts` times
    (docs/pairing.md 5.3: never a new key for the same code). PairingUnreachable after that."""
    failure: TransientNetworkError | None = None
    for number in range(1, attempts + 1):
        try:
            return await post_request(
                attempt, connect_timeout_s=connect_timeout_s, request_timeout_s=request_timeout_s
            )
        except TransientNetworkError as exc:
            failure = exc
        if number < attempts:
            await asyncio.sleep(retry_delay_s)  # a pause between tries, not a synchronisation
    raise PairingUnreachable(
        f"the back office at {attempt.code.address} did not answer ({attempts} tries): {failure}"
    )


async def pair(
    typed_code: str,
    box_id: str,
    state_dir: Path,
    device_key: bytes,
    *,
    re_pair: bool = False,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> PairedCredentials:
    """Pair this box (`box_id`, files under `state_dir`, device public key `device_key`, 32
    bytes: the back office enrolls it) with the back office the code names.

    Raises, by fault: AlreadyPairedHere, CodeFormatError / CodeTypo (nothing sent),
    BoxIdInvalid, WrongServerKey (nothing sent), RefusedByBackOffice, GrantRejected,
    PairingUnreachable; OSError when the files cannot be written.
    """
    if attempts < 1 or min(connect_timeout_s, request_timeout_s) <= 0 or retry_delay_s < 0:
        raise ValueError("attempts must be >= 1, timeouts > 0 and the retry delay >= 0")
    await asyncio.to_thread(recover_pairing_dir, state_dir)
    if is_paired(state_dir) and not re_pair:
        raise AlreadyPairedHere(
            "this box is already paired; pairing again needs a re-pair code and --re-pair"
        )
    attempt = start_pairing(typed_code, box_id, device_key)
    status, body = await send_with_retries(
        attempt,
        attempts=attempts,
        retry_delay_s=retry_delay_s,
        connect_timeout_s=connect_timeout_s,
        request_timeout_s=request_timeout_s,
    )
    if status != 200:
        raise refusal_from_answer(status, body)
    credentials = accept_grant(attempt, body)
    await asyncio.to_thread(install_credentials, state_dir, credentials, re_pair=re_pair)
    await fetch_release_key(state_dir)
    return credentials


async def fetch_release_key(state_dir: Path) -> bool:
    """The fleet's release key, fetched at once over the freshly paired link (docs/releases.md
    6.2): a box taken to a place without a link right after pairing can still open a release
    from a stick. Best effort: a back office without a release key, or a link that fails now,
    leaves it to the box's first fleet round; pairing has succeeded either way."""
    files = pairing_files(state_dir)
    try:
        service = await asyncio.to_thread(files.service)
        if service is None:
            return False
        host, port = split_address(service.address)
        tls = await asyncio.to_thread(files.tls_settings)
        link = await FleetLink.connect(
            host, port, tls, connect_timeout_s=RELEASE_KEY_TIMEOUT_S,
            read_timeout_s=RELEASE_KEY_TIMEOUT_S, request_timeout_s=RELEASE_KEY_TIMEOUT_S,
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        logger.info("release key not fetched at pairing: %s", type(exc).__name__)
        return False
    try:
        pem = await link.get(RELEASE_KEY_PATH, MAX_KEY_BYTES)
        await asyncio.to_thread(keep_release_key, files.directory / RELEASE_KEY_FILE, pem)
    except (DownloadError, TransportError, RecipientKeyError, OSError) as exc:
        logger.info("release key not fetched at pairing: %s", type(exc).__name__)
        return False
    finally:
        await link.aclose()
    return True


# --- what the officer reads -----------------------------------------------------------------------

_REFUSAL_ADVICE: Final = {
    "code-unknown": "the back office does not know this code: check the address, or ask the "
    "admin for a new code",
    "code-expired": "the code has expired (a code is valid for 15 minutes): ask the admin for a "
    "new one",
    "code-reused": "the code was already used. If this box did not use it, tell the admin at "
    "once: someone else may have paired with it",
    "code-withdrawn": "the code was withdrawn: ask the admin for a new one",
    "proof-invalid": "the back office could not verify the request and withdrew the code: ask "
    "for a new code and report this",
    "box-id-mismatch": "the code was made for another box: enter it on the box it was made for",
    "csr-invalid": "the back office refused this box's certificate request",
    "already-paired": "the back office says this box is already paired: ask the admin for a "
    "re-pair code and use --re-pair",
    "malformed-request": "the back office could not read the request (software versions?)",
    "rate-limited": "the back office is receiving too many pairing requests: wait a minute and "
    "enter the same code again (it is still valid for its 15 minutes)",
}


_REASON_BY_CLASS: Final[tuple[tuple[type[Exception], str], ...]] = (
    (AlreadyPairedHere, "already_paired_here"),
    (CodeTypo, "code_typo"),
    (CodeFormatError, "not_a_code"),
    (WrongServerKey, "wrong_server_key"),
    (GrantRejected, "grant_rejected"),
    (PairingUnreachable, "unreachable"),
    (ValueError, "not_a_code"),  # the typed text could not be read as a code at all
)
_REFUSED_OTHER: Final = "refused_other"
_FAILED: Final = "failed"


def officer_reason(error: Exception) -> str:
    """`officer_message` as the code the page translates (`pair.reason.<code>`); one of
    `officer_reasons()`."""
    if isinstance(error, RefusedByBackOffice):
        if error.kind in _REFUSAL_ADVICE:
            return "refused_" + error.kind.replace("-", "_")
        return _REFUSED_OTHER
    for kind, code in _REASON_BY_CLASS:
        if isinstance(error, kind):
            return code
    return _FAILED


def officer_reasons() -> frozenset[str]:
    """Every code `officer_reason` can give."""
    refused = {"refused_" + kind.replace("-", "_") for kind in _REFUSAL_ADVICE}
    return frozenset(code for _, code in _REASON_BY_CLASS) | refused | {_REFUSED_OTHER, _FAILED}


def officer_message(error: Exception) -> str:
    """One line for the officer about why pairing did not happen; never repeats the code."""
    if isinstance(error, CodeTypo):
        return f"the code has a typing error: {error}"
    if isinstance(error, CodeFormatError):
        return f"this is not a pairing code: {error}"
    if isinstance(error, WrongServerKey):
        return (
            f"{error}. Report a possible interception to the admin; no data was sent to that server"
        )
    if isinstance(error, RefusedByBackOffice):
        advice = _REFUSAL_ADVICE.get(
            error.kind, f"the back office answered HTTP {error.http_status} without a reason"
        )
        return f"refused ({error.kind}): {advice}"
    if isinstance(error, GrantRejected):
        return (
            f"the back office's answer failed a check ({error}); pairing withdrawn: ask for a "
            "new code and report this"
        )
    return str(error)
