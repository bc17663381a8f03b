"""Login throttling and web sessions (docs/webui.md 1.1, RULES U2): pure, in memory, no clock.

Every method takes `now_s` (seconds on a monotonic clock) from its caller, so the rules are tested
without sleeping and a wall-clock step cannot unlock an account or revive a session. Policies
(`ThrottlePolicy`, `SessionLimits`) are passed per call as well: a fleet document that changes
`[webui]` applies to the next request.

Invariants:
- An account is locked after `max_failed_logins` wrong passwords in a row and stays locked for
  `lockout_s`, whatever password comes meanwhile; a correct password resets the count.
- Memory is bounded: the throttle forgets an account `lockout_s` after its last failure or lock,
  and keeps at most `max_entries`; the session table keeps at most `max_sessions`.
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
MAX_THROTTLE_ENTRIES = 1024


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    max_failed_logins: int
    lockout_s: float


@dataclass(slots=True)
class _Failures:
    count: int
    last_failure_s: float
    locked_until_s: float  # 0: not locked

    def forgettable(self, now_s: float, lockout_s: float) -> bool:
        return now_s >= max(self.last_failure_s + lockout_s, self.locked_until_s)


class LoginThrottle:
    """Consecutive wrong passwords per login name, known account or not: an unknown name locks
    like a real one, so a lock reveals nothing about which names exist.

    When the table is full, the entry idle longest that is not locked makes room. When every
    entry is locked (a flood of names), a new name counts as locked until the earliest lock ends:
    the box fails closed rather than forgetting a lock an attacker earned."""

    def __init__(self, max_entries: int = MAX_THROTTLE_ENTRIES) -> None:
        self._max_entries = max_entries
        self._entries: dict[str, _Failures] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def retry_after_s(self, name: str, now_s: float, policy: ThrottlePolicy) -> float:
        """Seconds until `name` may try again; 0 when it may try now."""
        self._forget(now_s, policy.lockout_s)
        entry = self._entries.get(name)
        if entry is not None:
            return max(0.0, entry.locked_until_s - now_s)
        if len(self._entries) >= self._max_entries and self._all_locked(now_s):
            return min(e.locked_until_s for e in self._entries.values()) - now_s
        return 0.0

    def failed(self, name: str, now_s: float, policy: ThrottlePolicy) -> bool:
        """Count a wrong password; True when this one locked the account."""
        self._forget(now_s, policy.lockout_s)
        entry = self._entries.get(name)
        if entry is None:
            if not self._make_room(now_s):
                return False  # saturated: retry_after_s already refuses untracked names
            entry = self._entries[name] = _Failures(0, now_s, 0.0)
        entry.count += 1
        entry.last_failure_s = now_s
        if entry.count >= policy.max_failed_logins and entry.locked_until_s <= now_s:
            entry.locked_until_s = now_s + policy.lockout_s
            entry.count = 0  # after the lock, a fresh run of max_failed_logins
            return True
        return False

    def succeeded(self, name: str) -> None:
        self._entries.pop(name, None)

    def _forget(self, now_s: float, lockout_s: float) -> None:
        stale = [n for n, e in self._entries.items() if e.forgettable(now_s, lockout_s)]
        for name in stale:
            del self._entries[name]

    def _all_locked(self, now_s: float) -> bool:
        return all(e.locked_until_s > now_s for e in self._entries.values())

    def _make_room(self, now_s: float) -> bool:
        if len(self._entries) < self._max_entries:
            return True
        unlocked = [
            (e.last_failure_s, n) for n, e in self._entries.items() if e.locked_until_s <= now_s
        ]
        if not unlocked:
            return False
        del self._entries[min(unlocked)[1]]
        return True


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
