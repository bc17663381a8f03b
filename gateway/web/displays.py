"""Vehicle displays (docs/webui.md 1.4): a tablet the officer bound once for the shift, which keeps
the status and the record buttons without a session. Pure, in memory, no clock.

A binding is a random 256-bit token (cookie `mvb_display`) with its own CSRF token. It names the
officer who bound it, what their login was granted on (a password or role change ends it, as it
ends sessions), and the shift it was bound in (`shift_since_ms`).

Invariants:
- A binding lives while the shift it was bound in runs (the same `since_ms`), and at most
  `DISPLAY_MAX_S` after binding; never across a restart (memory only).
- What a binding may do is DISPLAY_ROUTES: read the status, follow it, start, stop and flag a
  recording, see and end its own binding. Nothing with personal data or settings.
- At most `max_displays` bindings; the oldest makes room.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from gateway.web.sessions import CSRF_TOKEN_BYTES, SESSION_ID_BYTES, random_token

DISPLAY_MAX_S = 16 * 3600.0  # a long shift; a shift nobody ends does not bind a display forever
MAX_DISPLAYS = 8
DISPLAY_ROUTES = frozenset(
    {
        ("GET", "/api/status"),
        ("GET", "/api/events"),
        ("POST", "/api/record/start"),
        ("POST", "/api/record/stop"),
        ("POST", "/api/record/flag"),
        ("GET", "/api/display"),
        ("DELETE", "/api/display"),
    }
)
"""What a vehicle display may call without a session (the access layer enforces it)."""


@dataclass(frozen=True, slots=True)
class Display:
    token: str
    csrf_token: str
    user: str
    grant: str
    shift_since_ms: int
    bound_s: float

    def csrf_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token.encode(), token.encode())

    def expires_at_s(self) -> float:
        return self.bound_s + DISPLAY_MAX_S


class DisplayTable:
    """The bound vehicle displays by token."""

    def __init__(
        self, max_displays: int = MAX_DISPLAYS, token: Callable[[int], str] = random_token
    ) -> None:
        self._max_displays = max_displays
        self._token = token
        self._displays: dict[str, Display] = {}

    def __len__(self) -> int:
        return len(self._displays)

    def bind(self, user: str, grant: str, shift_since_ms: int, now_s: float) -> Display:
        while len(self._displays) >= self._max_displays:
            del self._displays[next(iter(self._displays))]  # insertion order: the oldest
        display = Display(
            token=self._token(SESSION_ID_BYTES),
            csrf_token=self._token(CSRF_TOKEN_BYTES),
            user=user,
            grant=grant,
            shift_since_ms=shift_since_ms,
            bound_s=now_s,
        )
        self._displays[display.token] = display
        return display

    def lookup(
        self, token: str | None, now_s: float, shift_since_ms: int | None, grant_of_user: str | None
    ) -> Display | None:
        """The live binding of `token`, or None. `shift_since_ms`: the running shift's start
        (None: no shift runs); `grant_of_user`: what the binding's account is granted on now
        (None: the account is gone). A binding that no longer holds is removed."""
        display = self._displays.get(token or "")
        if display is None:
            return None
        if (
            now_s >= display.expires_at_s()
            or shift_since_ms != display.shift_since_ms
            or grant_of_user != display.grant
        ):
            del self._displays[display.token]
            return None
        return display

    def user_of(self, token: str | None) -> str | None:
        """Whose binding `token` is, alive or not (to look up that account's grant)."""
        display = self._displays.get(token or "")
        return None if display is None else display.user

    def unbind(self, token: str) -> bool:
        return self._displays.pop(token, None) is not None

    def users(self) -> set[str]:
        return {display.user for display in self._displays.values()}
