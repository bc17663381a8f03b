"""Web sessions (docs/webui.md 1.1): pure, in memory, no clock. The login throttle is
common/login_throttle.py.

Every method takes `now_s` (seconds on a monotonic clock) from its caller, so the rules are tested
without sleeping and a wall-clock step cannot revive a session. `SessionLimits` is passed per
call as well: a fleet document that changes `[webui]` applies to the next request.

Invariants:
- Memory is bounded: the session table keeps at most `max_sessions`.
- A session id is 256 random bits; a session lives at most `max_s` after login and `idle_s`
  after its last request. Nothing here is persisted: a restart logs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

SESSION_ID_BYTES = 32  # 256 bits
CSRF_TOKEN_BYTES = 32
MAX_SESSIONS = 64


@dataclass(frozen=True, slots=True)
class SessionLimits:
    idle_s: float
    max_s: float


@dataclass(frozen=True, slots=True)
class Session:
    """`role` is the account's role at login; `grant` is the caller's digest of what the login
    was granted on (role, password): a session whose account changed is ended by the access
    layer rather than silently carrying old rights."""

    session_id: str
    csrf_token: str
    user: str
    role: str
    grant: str
    created_s: float
    last_seen_s: float

    def expires_at_s(self, limits: SessionLimits) -> float:
        return min(self.last_seen_s + limits.idle_s, self.created_s + limits.max_s)

    def csrf_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token.encode(), token.encode())


def random_token(nbytes: int) -> str:
    return secrets.token_urlsafe(nbytes)


class SessionTable:
    """Logged-in browsers by session id. Full: the session unused longest is ended, so an
    officer actively using the page keeps theirs."""

    def __init__(
        self,
        max_sessions: int = MAX_SESSIONS,
        token: Callable[[int], str] = random_token,
    ) -> None:
        self._max_sessions = max_sessions
        self._token = token
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(
        self, user: str, role: str, grant: str, now_s: float, limits: SessionLimits
    ) -> Session:
        self._expire(now_s, limits)
        while len(self._sessions) >= self._max_sessions:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen_s)
            del self._sessions[oldest.session_id]
        session = Session(
            session_id=self._token(SESSION_ID_BYTES),
            csrf_token=self._token(CSRF_TOKEN_BYTES),
            user=user,
            role=role,
            grant=grant,
            created_s=now_s,
            last_seen_s=now_s,
        )
        self._sessions[session.session_id] = session
        return session

    def lookup(self, session_id: str, now_s: float, limits: SessionLimits) -> Session | None:
        """The live session, or None (unknown, or expired: then it is removed)."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if now_s >= session.expires_at_s(limits):
            del self._sessions[session_id]
            return None
        return session

    def touch(self, session_id: str, now_s: float) -> Session | None:
        """Record a request: the idle timer starts again (never the absolute one)."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        touched = replace(session, last_seen_s=max(session.last_seen_s, now_s))
        self._sessions[session_id] = touched
        return touched

    def touch_all(self, now_s: float, limits: SessionLimits) -> None:
        """Every live session's idle timer starts again (the box records: docs/webui.md 1.1);
        an expired session stays expired."""
        self._expire(now_s, limits)
        for session_id in list(self._sessions):
            self.touch(session_id, now_s)

    def users(self) -> set[str]:
        return {session.user for session in self._sessions.values()}

    def delete(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    def delete_all_for(self, user: str) -> int:
        """End every session of `user` (an account removed or changed by a configuration)."""
        ended = [sid for sid, s in self._sessions.items() if s.user == user]
        for session_id in ended:
            del self._sessions[session_id]
        return len(ended)

    def _expire(self, now_s: float, limits: SessionLimits) -> None:
        expired = [sid for sid, s in self._sessions.items() if now_s >= s.expires_at_s(limits)]
        for session_id in expired:
            del self._sessions[session_id]
