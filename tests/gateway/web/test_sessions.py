"""Login throttle and session table: the pure rules, with the clock passed in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.web.sessions import LoginThrottle, SessionLimits, SessionTable, ThrottlePolicy

POLICY = ThrottlePolicy(max_failed_logins=5, lockout_s=900)
LIMITS = SessionLimits(idle_s=600, max_s=3600)


def fail(throttle: LoginThrottle, name: str, now_s: float, times: int) -> list[bool]:
    return [throttle.failed(name, now_s, POLICY) for _ in range(times)]


def test_the_fifth_wrong_password_locks_for_lockout_s() -> None:
    throttle = LoginThrottle()
    assert fail(throttle, "alice", 0, 5) == [False, False, False, False, True]
    assert throttle.retry_after_s("alice", 0, POLICY) == 900
    assert throttle.retry_after_s("alice", 899.5, POLICY) == 0.5
    assert throttle.retry_after_s("alice", 900, POLICY) == 0
    assert throttle.retry_after_s("bob", 0, POLICY) == 0, "one account's lock is its own"


def test_a_success_resets_the_run() -> None:
    throttle = LoginThrottle()
    fail(throttle, "alice", 0, 4)
    throttle.succeeded("alice")
    assert fail(throttle, "alice", 1, 4) == [False] * 4
    assert throttle.retry_after_s("alice", 1, POLICY) == 0


def test_failures_older_than_lockout_s_are_forgotten() -> None:
    throttle = LoginThrottle()
    fail(throttle, "alice", 0, 4)
    assert throttle.failed("alice", 900, POLICY) is False, "the run started over"
    assert len(throttle) == 1


def test_a_policy_change_applies_to_the_next_attempt() -> None:
    throttle = LoginThrottle()
    fail(throttle, "alice", 0, 3)
    stricter = ThrottlePolicy(max_failed_logins=4, lockout_s=60)
    assert throttle.failed("alice", 1, stricter) is True
    assert throttle.retry_after_s("alice", 1, stricter) == 60


def test_a_full_table_makes_room_from_the_oldest_unlocked_entry() -> None:
    throttle = LoginThrottle(max_entries=3)
    fail(throttle, "locked", 0, 5)
    throttle.failed("old", 1, POLICY)
    throttle.failed("new", 2, POLICY)
    throttle.failed("newest", 3, POLICY)
    assert len(throttle) == 3
    assert throttle.retry_after_s("locked", 3, POLICY) > 0, "a lock is never evicted"
    fail(throttle, "newest", 4, 4)
    assert throttle.retry_after_s("newest", 4, POLICY) == 900


def test_a_table_full_of_locks_fails_closed_for_new_names() -> None:
    throttle = LoginThrottle(max_entries=2)
    fail(throttle, "a", 0, 5)
    fail(throttle, "b", 10, 5)
    assert throttle.retry_after_s("c", 20, POLICY) == 880, "until the earliest lock ends"
    assert throttle.failed("c", 20, POLICY) is False
    assert len(throttle) == 2
    assert throttle.retry_after_s("c", 900, POLICY) == 0, "a's lock ended: room again"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["alice", "bob", "carol", "dave"]),
            st.booleans(),
            st.floats(min_value=0, max_value=400),
        ),
        max_size=60,
    )
)
def test_an_attacker_never_gets_more_than_max_failed_logins_guesses_per_lockout(
    attempts: list[tuple[str, bool, float]],
) -> None:
    """Whatever the order and timing, while a name is locked it gets no verification at all,
    and the table stays within its bound."""
    throttle = LoginThrottle(max_entries=3)
    now_s = 0.0
    locked_until: dict[str, float] = {}
    for name, correct, step_s in attempts:
        now_s += step_s
        retry = throttle.retry_after_s(name, now_s, POLICY)
        if name in locked_until and now_s < locked_until[name]:
            assert retry > 0
        if retry > 0:
            continue
        if correct:
            throttle.succeeded(name)
        elif throttle.failed(name, now_s, POLICY):
            locked_until[name] = now_s + POLICY.lockout_s
        assert len(throttle) <= 3


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
