"""Which credentials the uplink connects with, and whether new ones arrived (a re-pair).

A back office that answers 401 or 403 refuses the box's certificate (docs/pairing.md 5.2: it was
unpaired, or re-paired and the old certificate withdrawn). The uplink then stops sending to it
and watches its `Credentials`: when the files on disk differ from those it connects with, it
reloads them and resumes at once, without a restart (transport/uplink.py).

The composition root implements `Credentials` over the pairing files (gateway/
uplink_credentials.py); transport knows only fingerprints. A fingerprint is a SHA-256 over public
material (certificate, pins, address): it is kept in the uplink ledger, never a secret.
"""

from __future__ import annotations

from typing import Final, Protocol

FIXED: Final = "fixed"


class Credentials(Protocol):
    """The uplink's view of its credentials. `on_disk` and `reload` may read files: the uplink
    calls them off the event loop."""

    def in_use(self) -> str:
        """The fingerprint of the credentials new connections use now."""
        ...

    def on_disk(self) -> str | None:
        """The fingerprint of the credentials the files hold now (None: none are readable)."""
        ...

    def reload(self) -> None:
        """Use the credentials on disk for every new connection from now on."""
        ...


class FixedCredentials:
    """Credentials that never change (tests, tools): a withdrawal lasts until the recheck."""

    def in_use(self) -> str:
        return FIXED

    def on_disk(self) -> str | None:
        return FIXED

    def reload(self) -> None:
        return None
