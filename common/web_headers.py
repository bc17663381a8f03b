"""The security headers every page of the project sends (the officer's page on the box, the
fleet admin's page at the back office), one set so the two cannot drift apart. PURE.

Each page brings its own Content-Security-Policy (what it loads differs); the rest is the same:
HTTPS only for a year, no sniffing, no referrer, no framing, no camera, microphone or location
for the page, and a browsing context of its own.
"""

from __future__ import annotations

from typing import Final

_COMMON: Final = {
    "Strict-Transport-Security": "max-age=31536000",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def security_headers(csp: str) -> dict[str, str]:
    """The headers of a page whose Content-Security-Policy is `csp` (a new dict each call)."""
    return {"Content-Security-Policy": csp, **_COMMON}
