"""The session table: the pure rules, with the clock passed in (the login throttle's are in
test_login_throttle.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.sessions import SessionLimits, SessionTable

LIMITS = SessionLimits(idle_s=600, max_s=3600)


def test_a_session_has_a_256_bit_id_and_its_own_csrf_token() -> None:
    table = SessionTable()
    one = table.create("alice", "officer", "g", 0, LIMITS)
    two = table.create("alice", "officer", "g", 0, LIMITS)
    assert len(one.session_id) == 43  # 32 bytes of urlsafe base64
    assert len({one.session_id, two.session_id, one.csrf_token, two.csrf_token}) == 4
    assert one.csrf_matches(one.csrf_token)
    assert not one.csrf_matches(two.csrf_token)
    assert not one.csrf_matches("")


def test_idle_expiry_and_touch() -> None:
    table = SessionTable()
    session = table.create("alice", "officer", "g", 0, LIMITS)
    assert table.lookup(session.session_id, 599, LIMITS) == session
    table.touch(session.session_id, 599)
    assert table.lookup(session.session_id, 1198, LIMITS) is not None
    assert table.lookup(session.session_id, 1199, LIMITS) is None
    assert len(table) == 0, "an expired session is removed when met"


def test_absolute_expiry_however_busy() -> None:
    table = SessionTable()
    session = table.create("alice", "officer", "g", 0, LIMITS)
    for now_s in range(0, 3600, 300):
        table.touch(session.session_id, now_s)
        assert table.lookup(session.session_id, now_s, LIMITS) is not None
    assert table.lookup(session.session_id, 3600, LIMITS) is None


def test_touch_never_moves_backwards() -> None:
    table = SessionTable()
    session = table.create("alice", "officer", "g", 100, LIMITS)
    touched = table.touch(session.session_id, 50)
    assert touched is not None
    assert touched.last_seen_s == 100


def test_touch_all_restarts_every_live_idle_timer_but_revives_nothing() -> None:
    table = SessionTable()
    early = table.create("alice", "officer", "g", 0, LIMITS)
    late = table.create("bob", "admin", "g", 100, LIMITS)
    table.touch_all(650, LIMITS)  # early expired at 600: it stays expired
    assert table.lookup(early.session_id, 650, LIMITS) is None
    assert table.lookup(late.session_id, 1249, LIMITS) is not None, "idle from 650, not 100"
    assert table.lookup(late.session_id, 1250, LIMITS) is None


def test_delete_and_delete_all_for_a_user() -> None:
    table = SessionTable()
    first = table.create("alice", "officer", "g", 0, LIMITS)
    table.create("alice", "officer", "g", 0, LIMITS)
    bob = table.create("bob", "admin", "g", 0, LIMITS)
    assert table.delete(first.session_id) is True
    assert table.delete(first.session_id) is False
    assert table.users() == {"alice", "bob"}
    assert table.delete_all_for("alice") == 1
    assert table.users() == {"bob"}
    assert table.lookup(bob.session_id, 1, LIMITS) == bob


def test_a_full_table_ends_the_session_unused_longest() -> None:
    table = SessionTable(max_sessions=3)
    sessions = [table.create(f"u{i}", "officer", "g", i, LIMITS) for i in range(3)]
    table.touch(sessions[0].session_id, 10)  # the first officer is still using the page
    table.create("u3", "officer", "g", 11, LIMITS)
    assert len(table) == 3
    assert table.lookup(sessions[0].session_id, 11, LIMITS) is not None
    assert table.lookup(sessions[1].session_id, 11, LIMITS) is None


def test_expired_sessions_make_room_before_live_ones_are_evicted() -> None:
    table = SessionTable(max_sessions=2)
    stale = table.create("u0", "officer", "g", 0, LIMITS)
    live = table.create("u1", "officer", "g", 700, LIMITS)
    table.create("u2", "officer", "g", 700, LIMITS)
    assert table.lookup(live.session_id, 700, LIMITS) is not None
    assert table.lookup(stale.session_id, 700, LIMITS) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1000)), max_size=80))
def test_the_table_is_bounded_and_never_returns_an_expired_session(
    steps: list[tuple[int, float]],
) -> None:
    table = SessionTable(max_sessions=4)
    now_s = 0.0
    ids: list[str] = []
    for action, step_s in steps:
        now_s += step_s
        if action == 0 or not ids:
            ids.append(table.create("u", "officer", "g", now_s, LIMITS).session_id)
        elif action == 1:
            table.touch(ids[-1], now_s)
        else:
            for session_id in ids:
                found = table.lookup(session_id, now_s, LIMITS)
                assert found is None or now_s < found.expires_at_s(LIMITS)
        assert len(table) <= 4
