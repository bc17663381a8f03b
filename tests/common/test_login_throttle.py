"""The login throttle per client and per account (common/login_throttle.py): the pure rules,
with the clock passed in. The same rules over real HTTPS from two source addresses are in
test_lockout_clients.py."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.login_throttle import (
    KNOWN_DEVICE_MAX_S,
    FailureBook,
    KnownDevices,
    LoginThrottle,
    Scope,
    ThrottlePolicy,
    client_key,
)

POLICY = ThrottlePolicy(max_failed_logins=5, lockout_s=900)
ATTACKER, TABLET, OTHER = "10.0.0.66", "10.0.0.7", "10.0.0.8"


def fail(throttle: LoginThrottle, client: str, name: str, now_s: float, times: int) -> list[bool]:
    return [bool(throttle.failed(client, name, now_s, POLICY)) for _ in range(times)]


def wait(
    throttle: LoginThrottle, client: str, name: str, now_s: float, known: bool = False
) -> float:
    return throttle.retry_after_s(client, name, known, now_s, POLICY)


def test_five_wrong_passwords_ban_that_client_for_that_account_only() -> None:
    throttle = LoginThrottle()
    assert fail(throttle, ATTACKER, "alice", 0, 5) == [False, False, False, False, True]
    assert wait(throttle, ATTACKER, "alice", 0) == 900
    assert wait(throttle, ATTACKER, "alice", 899.5) == 0.5
    assert wait(throttle, ATTACKER, "alice", 900) == 0
    assert wait(throttle, TABLET, "alice", 0) == 0, "another client still logs in as alice"
    assert wait(throttle, ATTACKER, "bob", 0) == 0, "the ban is for this account"


def test_the_fifth_failure_says_it_banned_the_pair() -> None:
    throttle = LoginThrottle()
    fail(throttle, ATTACKER, "alice", 0, 4)
    assert throttle.failed(ATTACKER, "alice", 0, POLICY) == {Scope.PAIR}


def test_one_client_spraying_names_is_banned_for_every_name() -> None:
    throttle = LoginThrottle()
    for n in range(POLICY.spread_max_failures - 1):
        throttle.failed(ATTACKER, f"name{n}", 0, POLICY)
    assert throttle.failed(ATTACKER, "last", 0, POLICY) == {Scope.CLIENT}
    assert wait(throttle, ATTACKER, "alice", 1) == 899
    assert wait(throttle, TABLET, "alice", 1) == 0


def test_many_clients_ban_the_account_for_new_devices_but_not_for_a_known_one() -> None:
    throttle = LoginThrottle()
    engaged: set[Scope] = set()
    for n in range(POLICY.spread_max_failures):
        engaged |= throttle.failed(f"10.9.{n}.1", "alice", 0, POLICY)
    assert Scope.ACCOUNT in engaged
    assert wait(throttle, OTHER, "alice", 1) == 899, "a device that never logged in waits"
    assert wait(throttle, TABLET, "alice", 1, known=True) == 0, "the officer's tablet does not"
    assert wait(throttle, OTHER, "bob", 1) == 0


def test_a_success_resets_the_pair_and_the_client_not_the_account() -> None:
    throttle = LoginThrottle()
    fail(throttle, TABLET, "alice", 0, 4)
    throttle.succeeded(TABLET, "alice")
    assert fail(throttle, TABLET, "alice", 1, 4) == [False] * 4
    assert wait(throttle, TABLET, "alice", 1) == 0
    assert len(throttle.accounts) == 1, "the account still counts every client's guesses"


def test_failures_older_than_lockout_s_are_forgotten() -> None:
    throttle = LoginThrottle()
    fail(throttle, ATTACKER, "alice", 0, 4)
    assert throttle.failed(ATTACKER, "alice", 900, POLICY) == set(), "the run started over"
    assert len(throttle.pairs) == 1


def test_a_policy_change_applies_to_the_next_attempt() -> None:
    throttle = LoginThrottle()
    fail(throttle, ATTACKER, "alice", 0, 3)
    stricter = ThrottlePolicy(max_failed_logins=4, lockout_s=60)
    assert Scope.PAIR in throttle.failed(ATTACKER, "alice", 1, stricter)
    assert throttle.retry_after_s(ATTACKER, "alice", False, 1, stricter) == 60


def test_a_full_book_makes_room_from_the_oldest_unlocked_entry() -> None:
    book: FailureBook[str] = FailureBook(lambda policy: policy.max_failed_logins, max_entries=3)
    for _ in range(5):
        book.failed("locked", 0, POLICY)
    book.failed("old", 1, POLICY)
    book.failed("new", 2, POLICY)
    book.failed("newest", 3, POLICY)
    assert len(book) == 3
    assert book.retry_after_s("locked", 3, POLICY) > 0, "a lock is never evicted"
    assert book.retry_after_s("old", 3, POLICY) == 0


def test_a_book_full_of_locks_fails_closed_for_new_keys() -> None:
    book: FailureBook[str] = FailureBook(lambda policy: policy.max_failed_logins, max_entries=2)
    for key, at_s in (("a", 0), ("b", 10)):
        for _ in range(5):
            book.failed(key, at_s, POLICY)
    assert book.retry_after_s("c", 20, POLICY) == 880, "until the earliest lock ends"
    assert book.failed("c", 20, POLICY) is False
    assert len(book) == 2
    assert book.retry_after_s("c", 900, POLICY) == 0, "a's lock ended: room again"


def test_a_pair_book_full_of_locks_fails_open_and_never_locks_out_a_known_device() -> None:
    """Locks earned from 4 addresses fill the small books; the officer's tablet (a new pair
    there) still logs in, and a stranger at a new address is held by the account's count."""
    throttle = LoginThrottle(max_entries=4)
    for n in range(4):
        for _ in range(5):
            throttle.failed(f"10.9.{n}.1", "alice", 0, POLICY)
    assert wait(throttle, TABLET, "alice", 1, known=True) == 0
    assert wait(throttle, OTHER, "alice", 1) == 899, "the account's 20 failures hold new devices"
    assert wait(throttle, OTHER, "bob", 1) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
            st.sampled_from(["alice", "bob"]),
            st.booleans(),
            st.floats(min_value=0, max_value=400),
        ),
        max_size=80,
    )
)
def test_no_client_gets_more_than_max_failed_logins_guesses_per_account_and_lockout(
    attempts: list[tuple[str, str, bool, float]],
) -> None:
    """Whatever the order and timing: while a (client, account) is banned it gets no
    verification at all, and the books stay within their bounds."""
    throttle = LoginThrottle(max_entries=4)
    now_s = 0.0
    banned_until: dict[tuple[str, str], float] = {}
    for client, name, correct, step_s in attempts:
        now_s += step_s
        retry = throttle.retry_after_s(client, name, False, now_s, POLICY)
        if now_s < banned_until.get((client, name), 0.0):
            assert retry > 0
        if retry > 0:
            continue
        if correct:
            throttle.succeeded(client, name)
        elif Scope.PAIR in throttle.failed(client, name, now_s, POLICY):
            banned_until[(client, name)] = now_s + POLICY.lockout_s
        assert len(throttle) <= 12


def test_client_key_is_the_address_or_the_ipv6_slash_64() -> None:
    assert client_key("127.0.0.2") == "127.0.0.2"
    assert client_key("::ffff:10.0.0.7") == "10.0.0.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) == client_key("") == client_key("garbage") == "unknown"


def test_a_known_device_names_one_account_and_expires() -> None:
    devices = KnownDevices(max_devices=2)
    devices.remember("t1", "alice", 0)
    assert devices.knows("t1", "alice", 1)
    assert not devices.knows("t1", "bob", 1), "a token is for the account it logged in as"
    assert not devices.knows(None, "alice", 1)
    assert not devices.knows("forged", "alice", 1)
    assert not devices.knows("t1", "alice", KNOWN_DEVICE_MAX_S)
    devices.remember("t2", "alice", 2)
    devices.remember("t3", "alice", 3)
    devices.remember("t4", "alice", 4)
    assert len(devices) == 2
    assert not devices.knows("t2", "alice", 5), "the oldest token made room"
    assert devices.knows("t4", "alice", 5)
