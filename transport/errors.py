"""Transport errors by fault (DESIGN principle 5).

- TransientNetworkError: the link failed (cut, reset, timeout, DNS, refused). Retried with backoff.
- ServerError: the server answered 5xx / 429 / 423. Retried with backoff.
- PinMismatch: the peer's key is not pinned. Never retried on that link, never downgraded.
- HostileServer: the server broke the protocol (impossible offset, endless body, missing headers).
  Not retried blindly: the upload of that file pauses and an alarm is raised.
- UploadRejected: the server refused the upload for good (4xx other than 404/409/410/423/429).
- IntegrityError: the server attested a different SHA-256 than the box wrote. Never retried
  automatically and the local copy is kept (RULES S3).

The first two are TransientFaults, the other four RemoteFaults (common/faults.py); `RETRYABLE` is
exactly the transient ones.
"""

from __future__ import annotations

from common.faults import RemoteFault, TransientFault


class TransportError(Exception):
    """Base of every error the uplink raises to its caller: a family of two kinds, never raised
    itself (transient: TransientFault; remote: RemoteFault, see common/faults.py)."""


class TransientNetworkError(TransportError, TransientFault):
    """The outcome of the in-flight request is unknown; retry, resuming from the server offset."""


class ServerError(TransportError, TransientFault):
    """The server is up but failing (5xx, 429, 423); retry after backoff."""

    def __init__(self, message: str, status: int, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class PinMismatch(TransportError, RemoteFault):
    """The peer's SubjectPublicKeyInfo hash is none of the pins. No request byte was sent."""


class HostileServer(TransportError, RemoteFault):
    """The server's answer is impossible under tus 1.0.0 (or unbounded). Evidence stays local."""


class UploadRejected(TransportError, RemoteFault):
    """The server refused this upload permanently (e.g. 413 too large, 403 forbidden)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class IntegrityError(TransportError, RemoteFault):
    """The back office attested a checksum that differs from the one the box wrote."""


RETRYABLE: tuple[type[TransportError], ...] = (TransientNetworkError, ServerError)
"""Only these are retried by tenacity; everything else needs a person or a different link."""
