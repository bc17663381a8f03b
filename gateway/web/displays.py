"""Vehicle displays (docs/webui.md 1.4): a tablet the officer bound once for the shift, which keeps
the status and the record buttons without a session. Pure, no clock, no files (the shell keeps
the table in `state/web/displays.json` through `to_json` / `from_json`).

A binding is a random 256-bit token (cookie `mvb_display`). The table holds only the token's
SHA-256, the account's tag (gateway/caller.py `account_tag`, never the login name), what the
login was granted on (a digest: a password or role change ends the binding, as it ends
sessions), and the shift it was bound in (`shift_since_ms`). The display's CSRF token is derived
from its token (HMAC), so nothing secret is kept and a restart of the box keeps the tablet bound.

Invariants:
- A binding lives while the shift it was bound in runs (the same `since_ms`), and at most
  `DISPLAY_MAX_S` after binding (after a restart: after the restart); never once its account
  is gone or changed.
- What a binding may do is DISPLAY_ROUTES: read the status, follow it, start, stop and flag a
  recording, see and end its own binding. Nothing with personal data or settings.
- At most `max_displays` bindings; the oldest makes room.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.sessions import SESSION_ID_BYTES, random_token

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
_CSRF_LABEL = b"mvb display csrf"
_FORMAT = 1


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token_of(token: str) -> str:
    """The display's CSRF token: a MAC of its cookie token, so the page can be handed it by
    GET /api/display and no table needs to keep it."""
    mac = hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class Display:
    token_sha256: str
    account: str  # the account's tag, never its name
    grant: str
    shift_since_ms: int
    bound_s: float

    def expires_at_s(self) -> float:
        return self.bound_s + DISPLAY_MAX_S


class DisplayTable:
    """The bound vehicle displays by their token's SHA-256."""

    def __init__(
        self, max_displays: int = MAX_DISPLAYS, token: Callable[[int], str] = random_token
    ) -> None:
        self._max_displays = max_displays
        self._token = token
        self._displays: dict[str, Display] = {}

    def __len__(self) -> int:
        return len(self._displays)

    def bind(self, account: str, grant: str, shift_since_ms: int, now_s: float) -> str:
        """A new binding; its token (for the cookie: the table keeps only its digest)."""
        while len(self._displays) >= self._max_displays:
            del self._displays[next(iter(self._displays))]  # insertion order: the oldest
        token = self._token(SESSION_ID_BYTES)
        display = Display(token_digest(token), account, grant, shift_since_ms, now_s)
        self._displays[display.token_sha256] = display
        return token

    def account_of(self, token: str | None) -> str | None:
        """Whose binding `token` is, alive or not (to look up that account's grant)."""
        display = self._displays.get(token_digest(token or ""))
        return None if display is None else display.account

    def lookup(
        self, token: str | None, now_s: float, shift_since_ms: int | None, grant: str | None
    ) -> Display | None:
        """The live binding of `token`, or None. `shift_since_ms`: the running shift's start
        (None: no shift runs); `grant`: what the binding's account is granted on now (None:
        the account is gone). A binding that no longer holds is removed."""
        display = self._displays.get(token_digest(token or ""))
        if display is None:
            return None
        if (
            now_s >= display.expires_at_s()
            or shift_since_ms != display.shift_since_ms
            or grant != display.grant
        ):
            del self._displays[display.token_sha256]
            return None
        return display

    def unbind(self, token: str) -> bool:
        return self._displays.pop(token_digest(token), None) is not None

    def to_json(self) -> bytes:
        entries = [
            {
                "token_sha256": d.token_sha256,
                "account": d.account,
                "grant": d.grant,
                "shift_since_ms": d.shift_since_ms,
            }
            for d in self._displays.values()
        ]
        return json.dumps({"format": _FORMAT, "displays": entries}, sort_keys=True).encode()

    def load_json(self, raw: bytes, now_s: float) -> None:
        """The bindings of `to_json`, each living `DISPLAY_MAX_S` from `now_s` (monotonic time
        does not survive a restart); ValueError for a file that is not one."""
        document = json.loads(raw)
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise ValueError("not a displays file of this format")
        loaded = [_display(entry, now_s) for entry in document.get("displays", [])]
        self._displays = {d.token_sha256: d for d in loaded[-self._max_displays :]}


def _display(entry: Any, now_s: float) -> Display:
    if not isinstance(entry, dict):
        raise ValueError("a display entry is not an object")
    texts = [entry.get(k) for k in ("token_sha256", "account", "grant")]
    since = entry.get("shift_since_ms")
    if not all(isinstance(t, str) for t in texts) or type(since) is not int:
        raise ValueError("a display entry lacks its members")
    token_sha256, account, grant = (str(t) for t in texts)
    return Display(token_sha256, account, grant, since, now_s)
