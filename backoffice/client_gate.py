"""Who a mutual-TLS client is, and whether it may be served: shared by both back office shells.

backoffice/server.py (HTTP/1.1) and backoffice/h3_server.py (HTTP/3) read a client's id and
serial from its verified certificate here and put every request to the same gate contract.

Invariants:
- A client id is exactly one CN of 1-64 of `A-Z a-z 0-9 . _ -` (CLIENT_ID_PATTERN): ids go into
  file names and log lines; anything else reads as None and is refused by the shell.
- A gate returns to allow, raises ClientDenied (403, with `denial_headers`) or GateUnavailable
  (fail closed, 503); a serial that is not hex reads as None and is denied.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from common.faults import RemoteFault, StorageFault
from storage.devicekey import DevicePublicKey
from transport.unpairing import CREDENTIALS_HEADER, UNPAIRED, WITHDRAWN

CLIENT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SERIAL_HEX: Final = re.compile(r"[0-9A-Fa-f]{1,40}")


class ClientDenied(RemoteFault):
    """Raised by a client gate: this client certificate must not be served (403). `unpaired`:
    an admin removed the box, and the answer says so (transport/unpairing.py)."""

    def __init__(self, message: str, *, unpaired: bool = False) -> None:
        super().__init__(message)
        self.unpaired = unpaired


def denial_headers(denied: ClientDenied) -> dict[str, str]:
    """The header of a 403 to a withdrawn certificate: whether the box was unpaired (it then
    forgets the back office) or only withdrawn (it waits for new credentials)."""
    return {CREDENTIALS_HEADER: UNPAIRED if denied.unpaired else WITHDRAWN}


class GateUnavailable(StorageFault):
    """Raised by a client gate that cannot decide (its state is unreadable): fail closed (503)."""


ClientGate = Callable[[int], Awaitable[None]]
"""`await gate(serial)` before every request of a mutual-TLS client: returns to allow, raises
ClientDenied or GateUnavailable otherwise (docs/pairing.md 5.2: an unpaired box stops at once)."""

EnrolledKeys = Callable[[str], Awaitable[DevicePublicKey | None]]
"""`await enrolled_keys(box_id)`: the device key the box enrolled at pairing (None: none);
GateUnavailable when the ledger cannot be read (`LedgerGate.enrolled_device_key`)."""


def client_id_of(peercert: object) -> str | None:
    """The CN of a verified peer certificate (as `SSLSocket.getpeercert()` gives it), if it is
    exactly one CN made of CLIENT_ID_PATTERN; else None."""
    if not isinstance(peercert, Mapping):
        return None
    subject = peercert.get("subject", ())
    if not isinstance(subject, tuple):
        return None
    names = [
        attribute[1]
        for relative_name in subject
        if isinstance(relative_name, tuple)
        for attribute in relative_name
        if isinstance(attribute, tuple) and len(attribute) == 2 and attribute[0] == "commonName"
    ]
    if len(names) != 1 or not isinstance(names[0], str):
        return None
    return names[0] if CLIENT_ID_PATTERN.fullmatch(names[0]) else None


def client_serial_of(peercert: object) -> int | None:
    """The serial number of a verified peer certificate (as `SSLSocket.getpeercert()` gives it,
    upper-case hex), or None when it is missing or not hex."""
    if not isinstance(peercert, Mapping):
        return None
    serial = peercert.get("serialNumber")
    if not isinstance(serial, str) or not _SERIAL_HEX.fullmatch(serial):
        return None
    return int(serial, 16)
