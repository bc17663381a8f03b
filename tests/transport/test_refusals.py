"""The uplink's pure policy for faults (transport/refusals.py): what each fault means, and how
long the file or the back office waits. No network, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport.errors import (
    CredentialsWithdrawn,
    HostileServer,
    IntegrityError,
    PinMismatch,
    ServerError,
    TransientNetworkError,
    UploadRejected,
)
from transport.refusals import (
    LONG_WAIT_MAX_S,
    REJECTED_BACKOFF,
    RETRY_AFTER_MAX_S,
    UNATTESTED_BACKOFF,
    Backoff,
    Rechecks,
    Verdict,
    Wait,
    next_wait,
    reason_of,
    verdict_of,
)

RETRY_MAX_S = 300.0


@pytest.mark.parametrize(
    ("fault", "verdict"),
    [
        (TransientNetworkError("reset"), Verdict.LINK_RETRY),
        (ServerError("PATCH answered 503", 503), Verdict.SERVER_PAUSE),
        (ServerError("PATCH answered 500", 500), Verdict.SERVER_PAUSE),
        (ServerError("PATCH answered 429", 429), Verdict.SERVER_PAUSE),
        (ServerError("PATCH answered 408", 408), Verdict.FILE_WAIT),
        (ServerError("PATCH answered 413", 413), Verdict.FILE_WAIT),
        (ServerError("PATCH answered 423", 423), Verdict.FILE_WAIT),
        (UploadRejected("PATCH answered 400", 400), Verdict.FILE_WAIT),
        (UploadRejected("Tus-Max-Size 9", 413), Verdict.FILE_WAIT),
        (CredentialsWithdrawn("PATCH answered 403", 403), Verdict.WITHDRAWN),
        (CredentialsWithdrawn("HEAD answered 401", 401), Verdict.WITHDRAWN),
        (HostileServer("offset beyond"), Verdict.BLOCK_FILE),
        (IntegrityError("other bytes"), Verdict.BLOCK_FILE),
        (PinMismatch("not pinned"), Verdict.BLOCK_LINK),
        (OSError("card read"), Verdict.FILE_WAIT),
        (RuntimeError("a bug"), Verdict.FILE_WAIT),
    ],
)
def test_each_fault_has_its_verdict(fault: Exception, verdict: Verdict) -> None:
    assert verdict_of(fault) is verdict


def test_only_integrity_blocks_a_file() -> None:
    faults: list[Exception] = [
        TransientNetworkError("x"),
        ServerError("x", 413),
        ServerError("x", 408),
        ServerError("x", 429),
        ServerError("x", 503),
        UploadRejected("x", 400),
        CredentialsWithdrawn("x", 403),
        OSError("x"),
    ]
    assert [f for f in faults if verdict_of(f) is Verdict.BLOCK_FILE] == []


def test_backoff_doubles_up_to_its_maximum() -> None:
    backoff = Backoff(10.0, 70.0)

    assert [backoff.delay_s(n) for n in range(1, 6)] == [10.0, 20.0, 40.0, 70.0, 70.0]
    assert backoff.delay_s(10_000) == 70.0  # no overflow however long the failures last


def test_retry_after_is_honoured_but_bounded() -> None:
    backoff = Backoff(10.0, 70.0)

    assert backoff.delay_s(1, retry_after_s=120.0) == 120.0  # longer than the backoff: honoured
    assert backoff.delay_s(3, retry_after_s=5.0) == 40.0  # shorter: the backoff wins
    assert backoff.delay_s(1, retry_after_s=1e9) == RETRY_AFTER_MAX_S  # a server cannot mute us


@given(
    failures=st.integers(min_value=1, max_value=200),
    retry_after_s=st.one_of(st.none(), st.floats(min_value=0, max_value=1e12)),
)
def test_a_wait_is_bounded_and_never_shorter_than_retry_after(
    failures: int, retry_after_s: float | None
) -> None:
    delay_s = REJECTED_BACKOFF.delay_s(failures, retry_after_s)

    assert REJECTED_BACKOFF.initial_s <= delay_s <= REJECTED_BACKOFF.max_s
    if retry_after_s is not None:
        assert delay_s >= min(retry_after_s, RETRY_AFTER_MAX_S)


def test_a_backoff_needs_a_positive_start_below_its_maximum() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(0.0, 10.0)
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(20.0, 10.0)


def test_consecutive_faults_wait_longer_and_keep_their_reason() -> None:
    first = next_wait(None, ServerError("PATCH answered 408", 408), 100.0, RETRY_MAX_S)
    second = next_wait(first, ServerError("PATCH answered 408", 408), 500.0, RETRY_MAX_S)

    assert first == Wait(100.0 + RETRY_MAX_S, reason_of(ServerError("x", 408)), 1)
    assert second.until_s == 500.0 + 2 * RETRY_MAX_S
    assert second.failures == 2
    assert "timed the request out (408)" in second.reason
    assert first.active(399.0)
    assert not first.active(400.0)


def test_a_transient_wait_is_capped_at_an_hour_unless_retry_after_says_more() -> None:
    wait = None
    for _ in range(20):
        wait = next_wait(wait, TransientNetworkError("cut"), 0.0, RETRY_MAX_S)
    assert wait is not None
    assert wait.until_s == LONG_WAIT_MAX_S

    busy = ServerError("PATCH answered 429", 429, retry_after_s=2 * LONG_WAIT_MAX_S)
    assert next_wait(None, busy, 0.0, RETRY_MAX_S).until_s == RETRY_AFTER_MAX_S


def test_a_refused_upload_waits_long() -> None:
    wait = next_wait(None, UploadRejected("PATCH answered 400", 400), 0.0, RETRY_MAX_S)

    assert wait.until_s == REJECTED_BACKOFF.initial_s > RETRY_MAX_S
    assert "refused the upload" in wait.reason


def test_unattested_files_are_asked_again_on_a_backoff() -> None:
    rechecks = Rechecks()

    assert rechecks.unattested("f1", 0.0, "note") is True
    assert rechecks.unattested("f1", 1000.0, "note") is False  # asked again, still unattested
    wait = rechecks.get("f1")
    assert wait == Wait(1000.0 + 2 * UNATTESTED_BACKOFF.initial_s, "note", 2)
    assert rechecks.forget("f1") == wait
    assert rechecks.get("f1") is None


def test_a_back_office_that_attests_is_asked_at_once() -> None:
    rechecks = Rechecks()
    assert rechecks.server_attests(False) is False  # a plain tus server: nothing changes
    rechecks.unattested("f1", 0.0, "note")
    rechecks.unattested("f2", 0.0, "note")

    assert rechecks.server_attests(False) is False
    assert rechecks.get("f1") is not None
    assert rechecks.server_attests(True) is True  # pointed at one that attests: ask now
    assert (rechecks.get("f1"), rechecks.get("f2")) == (None, None)
    rechecks.unattested("f1", 0.0, "note")
    assert rechecks.server_attests(True) is False  # still the same back office: on its backoff
    assert rechecks.get("f1") is not None
