"""Why a file waits to upload, as a code the officer's page translates (docs/webui.md 3), beside
the plain English `mvb uploads` prints. Pure.

Each reason is a `WaitCode` and, where it names one, the link (its configured name, not
translated). The English text of a scheduler verdict is `text()`; the shell's own reasons
(refusals, backoff) keep their English, while the code says which kind they are.

Invariant: every reason a row of transport/uplink_view.py can carry has exactly one code here,
and both languages of the page have `wait.<code>` (tests/gateway/web/test_refusal_codes.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class WaitCode(enum.Enum):
    UPLOADING = "uploading"
    STARTING_SHORTLY = "starting_shortly"  # a link would take it now: the next round does
    WAITING_FOR_SLOT = "waiting_for_slot"  # files ahead of it hold the upload slots
    BUDGET_USED_UP = "budget_used_up"  # the link's monthly budget is used up
    BUDGET_USED_UP_THEN_WIFI = "budget_used_up_then_wifi"  # ... and it waits for WiFi
    TOO_LARGE_FOR_LINK = "too_large_for_link"  # waits for WiFi: too large for the link
    WAITING_FOR_WIFI = "waiting_for_wifi"  # routine evidence goes over WiFi only
    WAITING_FOR_UPLINK = "waiting_for_uplink"  # no link is up
    RETRYING = "retrying"  # an attempt failed: it is tried again after a pause
    BACK_OFFICE_WAITS = "back_office_waits"  # the back office paused or refuses every upload
    UNATTESTED = "unattested"  # uploaded, the back office cannot confirm it yet
    BLOCKED = "blocked"  # held back for integrity until an admin releases it
    NOT_YET_QUEUED = "not_yet_queued"  # sealed just now
    UPLINK_NOT_RUNNING = "uplink_not_running"  # not paired, or the uplink is off


@dataclass(frozen=True, slots=True)
class WaitReason:
    code: WaitCode
    link: str | None = None

    def text(self) -> str:
        """The English `mvb uploads` and the audit show (unchanged since before the codes)."""
        link = self.link or ""
        match self.code:
            case WaitCode.STARTING_SHORTLY:
                return "starting shortly"
            case WaitCode.WAITING_FOR_SLOT:
                return "waiting for a free upload slot"
            case WaitCode.BUDGET_USED_UP:
                return f"{link} budget used up"
            case WaitCode.BUDGET_USED_UP_THEN_WIFI:
                return f"{link} budget used up, waiting for WiFi"
            case WaitCode.TOO_LARGE_FOR_LINK:
                return f"waiting for WiFi (too large for {link})"
            case WaitCode.WAITING_FOR_WIFI:
                return "waiting for WiFi (routine)"
            case WaitCode.WAITING_FOR_UPLINK:
                return "waiting for an uplink"
        return str(self.code.value).replace("_", " ")
