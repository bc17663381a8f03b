"""What a tus server's answer status means when the session has no specific rule for it
(docs/tus-profile.md 7), and the termination of an upload outside a session (section 9). Pure.

Invariants:
- `refusal_error` maps every status to exactly one error kind: ServerError (transient: retry
  after backoff), CredentialsWithdrawn, UploadRejected or HostileServer.
- A termination is sent only to a server that offers `termination`, and only to a path this
  profile would send (never another origin).
"""

from __future__ import annotations

from typing import Final

from transport.errors import (
    CredentialsWithdrawn,
    HostileServer,
    ServerError,
    TransportError,
    UploadRejected,
)
from transport.http import HttpRequest, HttpResponse
from transport.tus_headers import RESUMABLE, is_absolute_path, retry_after_s
from transport.tus_messages import ServerCapabilities
from transport.unpairing import says_unpaired

TRANSIENT_STATUSES: Final = frozenset({408, 413, 423, 429})
"""4xx answers that mean "not now" (idle timeout, chunk over the limit, upload busy, rate
limit): ServerError, like 5xx. docs/tus-profile.md 7."""
CREDENTIAL_STATUSES: Final = frozenset({401, 403})
"""The back office refuses this box's certificate: CredentialsWithdrawn."""
TERMINATED_STATUSES: Final = frozenset({204, 404, 410})
"""Answers to DELETE after which the upload is gone from the server."""


def termination_request(
    upload_url: str, capabilities: ServerCapabilities | None
) -> HttpRequest | None:
    """DELETE of an upload the box abandons without a session (a file deleted by retention, an
    upload URL it will not resume: docs/tus-profile.md 9); None when the server does not offer
    `termination` (its expiration cleans up) or the URL is not a path this profile would send.
    Answer it with `check_termination`."""
    if capabilities is None or not capabilities.offers("termination"):
        return None
    if not is_absolute_path(upload_url):
        return None
    return HttpRequest("DELETE", upload_url, (RESUMABLE,))


def check_termination(request: HttpRequest, response: HttpResponse) -> None:
    """Return if the answer to a DELETE says the upload is gone (204, 404, 410); else raise
    the error of section 7 (a finished upload refused with 403 is CredentialsWithdrawn by status
    alone: a caller that terminates best-effort does not act on it)."""
    if response.status not in TERMINATED_STATUSES:
        raise refusal_error(request, response)


def refusal_error(request: HttpRequest, response: HttpResponse) -> TransportError:
    """The error for a status the request's handler has no specific rule for (section 7)."""
    status = response.status
    what = f"{request.method} answered {status}"
    if status == 413 and request.body is None:
        # No body to make smaller: the server refuses the Upload-Length itself (Tus-Max-Size).
        return UploadRejected(f"{what}: the file is larger than the server takes", status=status)
    if status in TRANSIENT_STATUSES or 500 <= status <= 599:
        return ServerError(what, status=status, retry_after_s=retry_after_s(response))
    if status in CREDENTIAL_STATUSES:
        unpaired = says_unpaired(status, response.headers)
        return CredentialsWithdrawn(what, status=status, unpaired=unpaired)
    if 400 <= status <= 499:
        return UploadRejected(what, status=status)
    return HostileServer(f"{what}, a status tus 1.0.0 does not give here")
