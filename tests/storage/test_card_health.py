"""What a failed card operation says about the card (storage/card_health.py): pure."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from storage.card_health import (
    ALARM_OF,
    CARD_ALARMS,
    CardCondition,
    alarm_message,
    card_state,
    condition_of,
)
from storage.errors import WriterPoisoned


def os_error(code: int) -> OSError:
    return OSError(code, errno.errorcode[code])


@pytest.mark.parametrize(
    ("code", "condition"),
    [
        (errno.EROFS, CardCondition.READ_ONLY),
        (errno.ENODEV, CardCondition.MISSING),
        (errno.ENOTCONN, CardCondition.MISSING),
        (errno.ENXIO, CardCondition.MISSING),
        (errno.ENOMEDIUM, CardCondition.MISSING),
        (errno.ESTALE, CardCondition.MISSING),
        (errno.EIO, CardCondition.FAILED),
        (errno.EBADF, CardCondition.FAILED),
    ],
)
def test_an_errno_names_the_card_s_condition(code: int, condition: CardCondition) -> None:
    assert condition_of(os_error(code)) is condition


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_card_is_not_a_dying_one(code: int) -> None:
    assert condition_of(os_error(code)) is None
    assert condition_of(sqlite3.OperationalError("database or disk is full")) is None


def test_the_cause_of_a_poisoned_writer_tells() -> None:
    poisoned = WriterPoisoned("write of evidence file 01 failed: Read-only file system")
    poisoned.__cause__ = os_error(errno.EROFS)
    assert condition_of(poisoned) is CardCondition.READ_ONLY
    assert condition_of(WriterPoisoned("no cause")) is None


def test_sqlite_says_it_in_words() -> None:
    readonly = sqlite3.OperationalError("attempt to write a readonly database")
    assert condition_of(readonly) is CardCondition.READ_ONLY
    assert condition_of(sqlite3.OperationalError("disk I/O error")) is CardCondition.FAILED
    malformed = sqlite3.DatabaseError("database disk image is malformed")
    assert condition_of(malformed) is CardCondition.FAILED
    assert condition_of(sqlite3.OperationalError("no such table: x")) is None


def test_an_error_that_is_not_the_card_s_shows_nothing() -> None:
    assert condition_of(ValueError("a bug")) is None
    assert condition_of(OSError("no errno")) is None


def test_each_condition_has_one_alarm_and_a_message_that_says_replace_it() -> None:
    assert set(ALARM_OF) == set(CardCondition)
    assert len(CARD_ALARMS) == len(CardCondition)
    for condition in CardCondition:
        assert "replace it" in alarm_message(condition)
    assert alarm_message(CardCondition.FAILED, "Input/output error").endswith(
        "(Input/output error)"
    )


def test_the_status_names_the_worst_card_alarm_raised() -> None:
    assert card_state([]) == "ok"
    assert card_state(["card_full", "gps"]) == "ok"
    assert card_state(["card_write_failed"]) == "failed"
    assert card_state(["card_write_failed", "card_read_only"]) == "read_only"
    assert card_state(["card_read_only", "card_missing", "card_write_failed"]) == "missing"
