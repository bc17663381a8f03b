"""The credentials guard across restarts (transport/withdrawal.py), on a real ledger and the
box's real Alarms; the credentials are fingerprints behind transport's small `Credentials`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.alarms import Alarms
from transport.errors import CredentialsWithdrawn
from transport.http import HttpRequest, HttpResponse
from transport.ledger import UplinkLedger
from transport.refusals import CREDENTIALS_CHECK_S, WITHDRAWN_RECHECK_S
from transport.tus_statuses import refusal_error
from transport.unpairing import says_unpaired
from transport.withdrawal import ALARM, UNPAIRED_ALARM, CredentialsGuard


class Fingerprints:
    def __init__(self, value: str) -> None:
        self.loaded = self.files = value

    def in_use(self) -> str:
        return self.loaded

    def on_disk(self) -> str | None:
        return self.files

    def reload(self) -> None:
        self.loaded = self.files


class Clock:
    def __init__(self) -> None:
        self.now_s = 50.0

    def __call__(self) -> float:
        return self.now_s


class AuditList:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


def guard(ledger: UplinkLedger, alarms: Alarms, value: str, audit: AuditList) -> CredentialsGuard:
    return CredentialsGuard(ledger, Fingerprints(value), alarms, audit, Clock(), lambda: 1234)


async def test_a_restart_with_the_refused_credentials_stays_quiet(tmp_path: Path) -> None:
    ledger, audit = UplinkLedger(tmp_path / "ledger"), AuditList()
    try:
        first = guard(ledger, Alarms(), "old", audit)
        await first.withdraw(CredentialsWithdrawn("PATCH answered 403", 403))
        await first.withdraw(CredentialsWithdrawn("HEAD answered 403", 403))  # idempotent

        alarms = Alarms()
        after_restart = guard(ledger, alarms, "old", audit)
        await after_restart.load()

        assert after_restart.withdrawn is not None
        assert after_restart.withdrawn.status == 403
        assert ALARM in alarms.codes()
        assert not after_restart.recheck_due()  # not even one OPTIONS before the hour is over
        wait = after_restart.wait()
        assert wait is not None
        assert wait.until_s == 50.0 + WITHDRAWN_RECHECK_S
        assert [event for event, _ in audit.events] == ["uplink.credentials_withdrawn"]
    finally:
        ledger.close()


async def test_a_restart_with_new_credentials_starts_clean(tmp_path: Path) -> None:
    ledger, audit = UplinkLedger(tmp_path / "ledger"), AuditList()
    try:
        await guard(ledger, Alarms(), "old", audit).withdraw(CredentialsWithdrawn("x", 401))

        alarms = Alarms()
        re_paired = guard(ledger, alarms, "new", audit)  # `mvb pair --re-pair`, then a start
        await re_paired.load()

        assert re_paired.withdrawn is None
        assert ALARM not in alarms.codes()
        assert ledger.withdrawal() is None
        assert audit.events[-1] == ("uplink.credentials_renewed", {"status": 401})
    finally:
        ledger.close()


async def test_new_credentials_on_disk_lift_the_withdrawal_at_once(tmp_path: Path) -> None:
    ledger, audit, alarms = UplinkLedger(tmp_path / "ledger"), AuditList(), Alarms()
    try:
        credentials, clock = Fingerprints("old"), Clock()
        running = CredentialsGuard(ledger, credentials, alarms, audit, clock, lambda: 1)
        await running.withdraw(CredentialsWithdrawn("x", 403))
        assert not await running.renewed()  # the same files: nothing new

        credentials.files = "new"
        assert not await running.renewed()  # looked less than CREDENTIALS_CHECK_S ago
        clock.now_s += CREDENTIALS_CHECK_S
        assert await running.renewed()

        assert credentials.loaded == "new"
        assert running.withdrawn is None
        assert ALARM not in alarms.codes()
    finally:
        ledger.close()


async def test_an_unpaired_answer_forgets_nothing_here_but_calls_the_box_and_never_rechecks(
    tmp_path: Path,
) -> None:
    """`Mvb-Credentials: unpaired` (transport/unpairing.py): the sticky alarm `unpaired`, the
    box's unpairing called once, no hourly recheck (nothing left to ask with); new credentials
    lift it and clear the alarm."""
    ledger, audit = UplinkLedger(tmp_path / "ledger"), AuditList()
    try:
        credentials = Fingerprints("old")
        clock = Clock()
        alarms = Alarms()
        unpaired_guard = CredentialsGuard(ledger, credentials, alarms, audit, clock, lambda: 1)
        calls: list[str] = []

        async def forget() -> None:
            calls.append("forget")

        unpaired_guard.on_unpaired = forget
        refusal = refusal_error(
            HttpRequest("HEAD", "/files/x"), HttpResponse(403, {"mvb-credentials": "unpaired"})
        )
        assert isinstance(refusal, CredentialsWithdrawn)
        assert refusal.unpaired
        await unpaired_guard.withdraw(refusal)
        await unpaired_guard.withdraw(refusal)

        assert calls == ["forget"]
        assert UNPAIRED_ALARM in alarms
        assert ALARM not in alarms
        assert audit.events == [("uplink.credentials_withdrawn", {"status": 403, "unpaired": True})]
        clock.now_s += WITHDRAWN_RECHECK_S * 2
        assert not unpaired_guard.recheck_due()
        credentials.files = "new"  # the next pairing
        clock.now_s += CREDENTIALS_CHECK_S
        assert await unpaired_guard.renewed()
        assert UNPAIRED_ALARM not in alarms
    finally:
        ledger.close()


def test_only_a_refusal_that_says_unpaired_is_an_unpair() -> None:
    request = HttpRequest("PATCH", "/files/x")
    for status, headers, unpaired in (
        (403, {"mvb-credentials": "unpaired"}, True),
        (401, {"mvb-credentials": " Unpaired "}, True),
        (403, {"mvb-credentials": "withdrawn"}, False),
        (403, {}, False),
        (404, {"mvb-credentials": "unpaired"}, False),
    ):
        assert says_unpaired(status, headers) is unpaired
        refusal = refusal_error(request, HttpResponse(status, headers))
        assert getattr(refusal, "unpaired", False) is unpaired
