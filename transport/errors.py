"""Transport errors by fault (DESIGN principle 5).

- TransientNetworkError: the link failed (cut, reset, stall, timeout, DNS, refused). Retried with
  backoff.
- ServerError: the server answered but not now: 5xx, 429, 423, 408 (its idle timeout), 413 (the
  chunk is over its limit: the caller sends smaller ones). Retried with backoff, at least the
  server's Retry-After.
- PinMismatch: the peer's key is not pinned. Never retried on that link, never downgraded.
- CredentialsWithdrawn: 401 or 403: the back office no longer accepts this box's certificate (it
  was unpaired or re-paired). The box stops using that back office until its credentials change.
- HostileServer: the server broke the protocol (impossible offset, endless body, missing headers).
  Not retried blindly: the upload of that file is blocked and an alarm is raised.
- UploadRejected: the server refused this upload for now with a 4xx that has no rule of its own
  (400, 412, 415, ..., or Tus-Max-Size below the file). Not retried at once; the file waits long
  and is tried again (docs/tus-profile.md 7).
- IntegrityError: the server attested a different SHA-256 than the box wrote. Never retried
  automatically and the local copy is kept (RULES S3).

The first two are TransientFaults, the other five RemoteFaults (common/faults.py); `RETRYABLE` is
exactly the transient ones. Only HostileServer and IntegrityError block a file (transport/
refusals.py decides what each fault means for the file, the link and the back office).
"""

from __future__ import annotations

from common.faults import RemoteFault, TransientFault


class TransportError(Exception):
    """Base of every error the uplink raises to its caller: a family of two kinds, never raised
    itself (transient: TransientFault; remote: RemoteFault, see common/faults.py)."""


class TransientNetworkError(TransportError, TransientFault):
    """The outcome of the in-flight request is unknown; retry, resuming from the server offset."""


class ServerError(TransportError, TransientFault):
    """The server is up but cannot take the request now (5xx, 429, 423, 408, 413); retry after
    backoff. `retry_after_s` is its Retry-After in seconds, if it sent the delta-seconds form."""

    def __init__(self, message: str, status: int, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class PinMismatch(TransportError, RemoteFault):
    """The peer's SubjectPublicKeyInfo hash is none of the pins. No request byte was sent."""


class CredentialsWithdrawn(TransportError, RemoteFault):
    """401 or 403: the back office refuses this box's client certificate (docs/pairing.md 5.2:
    an unpaired or re-paired box's old certificate). Retrying with the same credentials cannot
    help; new credentials (a re-pair) can. `unpaired`: the back office said the box was
    removed (transport/unpairing.py): the box forgets it."""

    def __init__(self, message: str, status: int, *, unpaired: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unpaired = unpaired


class HostileServer(TransportError, RemoteFault):
    """The server's answer is impossible under tus 1.0.0 (or unbounded). Evidence stays local."""


class UploadRejected(TransportError, RemoteFault):
    """The server refused this upload with a 4xx that has no rule of its own, or its Tus-Max-Size
    is below the file's size (status 413). The same request would get the same answer soon:
    the file waits long, it is not blocked."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class IntegrityError(TransportError, RemoteFault):
    """The back office attested a checksum that differs from the one the box wrote."""


RETRYABLE: tuple[type[TransportError], ...] = (TransientNetworkError, ServerError)
"""Only these are retried by tenacity; everything else needs a person or a different link."""
