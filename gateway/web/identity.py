"""Who is calling the local API: the contract between the access layer and the route handlers.

The API is served on two channels (docs/webui.md, section 1):
- `web`: HTTPS on the vehicle network; the access middleware (gateway/web/access.py) has checked a
  session cookie (and, for a state change, the CSRF token) and sets the account's identity;
- `local`: the loopback listener that `mvb status|record|shift` use on the box itself, trusted
  because only processes on the box can reach it (config/local.py refuses a non-loopback host).

Handlers read `identity_of(request)`; they never look at cookies or headers themselves. The
Identity itself is the port's (gateway/caller.py): services decide on it.
Invariant: every request that reaches a handler carries exactly one Identity.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.caller import LOCAL_IDENTITY, Channel, Identity

__all__ = [
    "LOCAL_IDENTITY",
    "Channel",
    "Identity",
    "identity_of",
    "set_identity",
    "set_still_authorised",
    "still_authorised",
]

_KEY: web.RequestKey[Identity] = web.RequestKey("mvb.identity", Identity)


def set_identity(request: web.Request, identity: Identity) -> None:
    request[_KEY] = identity


StillAuthorised = Callable[[], bool]
_STILL_KEY: web.RequestKey[StillAuthorised] = web.RequestKey("mvb.still_authorised")


def set_still_authorised(request: web.Request, check: StillAuthorised) -> None:
    """For a long-lived request (the event stream): how to ask, later, whether the caller may
    still read (e.g. its session has not expired or been ended since the request began)."""
    request[_STILL_KEY] = check


def still_authorised(request: web.Request) -> bool:
    """True while the caller of a long-lived request may still read; always true on the local
    channel, where nothing expires."""
    check = request.get(_STILL_KEY)
    return True if check is None else check()


def identity_of(request: web.Request) -> Identity:
    """The caller; a request without one is a wiring bug, never a client's fault."""
    identity = request.get(_KEY)
    if not isinstance(identity, Identity):
        raise RuntimeError("no identity on the request: the access middleware is not installed")
    return identity
