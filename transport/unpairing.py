"""The back office's explicit word that a box was unpaired (docs/pairing.md 5.2, RULES L5).

The back office refuses a withdrawn client certificate with 403 on every request, and says why
in one header: `Mvb-Credentials: unpaired` when an admin removed the box (`mvb-admin unpair`),
`Mvb-Credentials: withdrawn` for any other refusal (the certificate was replaced by a re-pair).
The box acts on "unpaired" by forgetting its credentials and the back office's address; on
anything else it only stops and waits for new credentials (transport/withdrawal.py).

Why the box may believe the header: it arrives only over the pinned mutual-TLS link, after the
box checked that the server holds a pinned key (transport/pinning.py), so it is the back
office's own answer. Someone in the middle can block or break the link, which the box reads as a
failed link, never as this answer. Pure: shared by the back office (which writes it) and the box
(which reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

CREDENTIALS_HEADER: Final = "Mvb-Credentials"
UNPAIRED: Final = "unpaired"
WITHDRAWN: Final = "withdrawn"
REFUSED_STATUSES: Final = frozenset({401, 403})


def says_unpaired(status: int, headers: Mapping[str, str]) -> bool:
    """True when a refusal (401/403) says the box was unpaired. `headers` has lower-case names
    (transport/http.py HttpResponse)."""
    value = headers.get(CREDENTIALS_HEADER.lower(), "")
    return status in REFUSED_STATUSES and value.strip().lower() == UNPAIRED
