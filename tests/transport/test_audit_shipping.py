"""The audit log leaves the box (transport/audit_shipping_io.py): new entries in order, in
bounded pieces, resumable across a power cut, over the cheapest link its budget allows; every
upload's creation carries the signed head. Real TLS, the real back office (with its audit
custody, as `mvb-admin serve` runs it), fault proxies as links."""

from __future__ import annotations

from pathlib import Path

from backoffice.audit_store import AUDIT_DIR, AuditStore
from storage.audit_head import parse_signed_head
from storage.audit_io import AuditLog
from storage.envelope import RecipientPrivateKey
from tests.tls_helpers import TestPki
from tests.transport.uplink_rig import Rig, lte, record_evidence, uplink_rig, wifi
from transport.audit_shipping import Position
from transport.audit_shipping_io import (
    AUDIT_REFUSED_ALARM,
    INTERVAL_S,
    POSITION_FILE,
    RETRY_S,
    AuditShipper,
    LinkCourier,
)
from transport.audit_wire import MAX_APPEND_BYTES

BOX = "MVB-TEST-0001"  # the test client certificate's CN


async def ship(rig: Rig, rounds: int = 1) -> None:
    """Let the shipper run `rounds` rounds, each after its interval (the clock is the test's)."""
    for _ in range(rounds):
        rig.clock.advance(INTERVAL_S)
        rig.service.audit_shipper.poke(rig.clock())
        await rig.service.audit_shipper.wait()


def held(rig: Rig) -> AuditStore:
    store = rig.back_office.audit
    assert store is not None
    return store


def restart_shipper(rig: Rig, audit: AuditLog | None = None) -> None:
    """A new shipper, as after a restart of the box (of `audit`, default the store's log)."""
    service = rig.service
    courier = LinkCourier(service.links, rig.connector, service.ledger, rig.clock, rig.clock.today)
    service.audit_shipper = AuditShipper(audit or rig.store.audit, rig.store.alarms, courier)


def add_entries(rig: Rig, count: int, text: str = "x" * 400) -> None:
    for number in range(count):
        rig.store.audit.append("gateway.trigger", number=number, note=text)


async def test_the_log_arrives_whole_in_bounded_pieces_and_the_position_is_durable(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        await rig.probe()
        add_entries(rig, 400)  # about 230 KiB: several requests
        assert rig.store.audit.path.stat().st_size > 3 * MAX_APPEND_BYTES
        await ship(rig)
        box_log = rig.store.audit.path.read_bytes()
        assert held(rig).box(BOX).log_bytes() == box_log
        position = Position.from_json((tmp_path / "state" / POSITION_FILE).read_text())
        assert position == Position(rig.store.audit.durable_end()[0], len(box_log))
        requests = [h for h in held(rig).box(BOX).heads() if h["via"] == "append"]
        assert len(requests) >= 4
        assert all(h["outcome"] == "held" for h in requests)
        before = len(requests)
        await ship(rig)  # nothing new: nothing is sent
        assert len([h for h in held(rig).box(BOX).heads() if h["via"] == "append"]) == before


async def test_a_backlog_over_a_paced_link_arrives_whole_and_custody_resumes(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    """The ext4 soak's stall (seed 1406, docs/soak.md): while the back office was away the box's
    backlog outgrew one TLS record (16 KiB); over a paced link, on a new connection (as after
    every start of the box), the append reached the back office in pieces, and the back office
    judged the first piece alone: 400 ("whole lines"). Every retry carried the same backlog or
    a longer one, so custody never resumed. Now the body is read whole and held."""
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        await rig.probe()
        add_entries(rig, 3)
        await ship(rig)  # small: one TLS record
        wifi_proxy = rig.proxies["wifi"]
        wifi_proxy.plan.rate_bytes_per_s = 100_000
        wifi_proxy.plan.delay_s = 0.03
        add_entries(rig, 120)  # about 70 KiB: two requests, each many records
        wifi_proxy.reset_all()  # the box restarted: a new connection (its handshake paced too)
        await ship(rig, rounds=int(RETRY_S / INTERVAL_S) + 1)  # the reset costs one retry
        assert held(rig).box(BOX).log_bytes() == rig.store.audit.path.read_bytes()
        appends = [h for h in held(rig).box(BOX).heads() if h["via"] == "append"]
        assert len(appends) >= 3
        assert all(h["outcome"] == "held" for h in appends)


async def test_a_power_cut_before_the_position_was_saved_resends_harmlessly(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        await rig.probe()
        add_entries(rig, 5)
        position_file = tmp_path / "state" / POSITION_FILE
        await ship(rig)
        early = position_file.read_text()
        add_entries(rig, 5)
        await ship(rig)
        # The answer had come, but the power went before the position was written: the box
        # starts again from the older position and sends entries the back office holds.
        position_file.write_text(early)
        restart_shipper(rig)
        add_entries(rig, 2)
        await ship(rig)
        assert held(rig).box(BOX).log_bytes() == rig.store.audit.path.read_bytes()
        assert held(rig).box(BOX).alarms() == []
        # The position file lost altogether: the box asks the back office where it stands.
        position_file.unlink()
        restart_shipper(rig)
        add_entries(rig, 1)
        await ship(rig)
        assert held(rig).box(BOX).log_bytes() == rig.store.audit.path.read_bytes()
        assert held(rig).box(BOX).alarms() == []
        assert AUDIT_REFUSED_ALARM not in rig.store.alarms


async def test_a_cut_connection_is_retried_and_nothing_is_held_twice(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        await rig.probe()
        add_entries(rig, 60)
        rig.proxies["wifi"].plan.cut_after_client_bytes = 8 * 1024  # mid-request
        await ship(rig)
        assert rig.proxies["wifi"].plan.cuts == 1
        await ship(rig, rounds=int(60 / INTERVAL_S) + 2)  # the retry waits RETRY_S
        assert held(rig).box(BOX).log_bytes() == rig.store.audit.path.read_bytes()


async def test_wifi_is_preferred_and_cellular_is_used_within_its_p0_budget(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    links = (wifi(), lte(monthly_cap_bytes=200_000, p0_reserve_bytes=100_000))
    async with uplink_rig(tmp_path, recipient, pki, links) as rig:
        await rig.probe()
        probed = rig.proxies["lte"].bytes_client_to_server  # the probe's OPTIONS
        add_entries(rig, 20)
        await ship(rig)
        assert rig.proxies["lte"].bytes_client_to_server == probed
        rig.carrier["wifi"] = False
        await rig.probe()
        add_entries(rig, 20)
        await ship(rig)
        lte_budget = rig.service.links["lte"].budget
        assert lte_budget is not None
        used = lte_budget.state.used_bytes
        assert used > 0  # counted against the budget
        assert held(rig).box(BOX).log_bytes() == rig.store.audit.path.read_bytes()
        # The budget is spent, P0 reserve too: nothing more goes over LTE.
        lte_budget.spend(200_000, rig.clock.today())
        sent = rig.proxies["lte"].bytes_client_to_server
        add_entries(rig, 5)
        await ship(rig)
        assert rig.proxies["lte"].bytes_client_to_server == sent


async def test_every_upload_creation_carries_the_signed_head(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        await rig.probe()
        await ship(rig)  # the device key is pinned at the first shipment
        record_evidence(rig.store, 10_000)
        record_evidence(rig.store, 20_000)
        await rig.settle()
        await ship(rig)
        uploads = [h for h in held(rig).box(BOX).heads() if h["via"] == "upload"]
        assert len(uploads) == 2
        public = rig.store.audit.public_key()
        assert all(parse_signed_head(h["head"], public) for h in uploads)
        assert {h["outcome"] for h in uploads} <= {"extends", "stale", "pending"}
        assert held(rig).box(BOX).alarms() == []


async def test_a_log_rewritten_on_the_box_is_refused_and_both_sides_alarm(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        await rig.probe()
        add_entries(rig, 5)
        await ship(rig)
        held_before = held(rig).box(BOX).log_bytes()
        # Someone holding the device key writes another log and lets the box ship it.
        (tmp_path / "forged").mkdir()
        with AuditLog.open(tmp_path / "forged" / "audit.jsonl", rig.store.device_key) as forged:
            for number in range(7):
                forged.append("gateway.stop", number=number)
            restart_shipper(rig, forged)
            await ship(rig)
        assert AUDIT_REFUSED_ALARM in rig.store.alarms
        assert held(rig).box(BOX).log_bytes() == held_before
        (alarm,) = held(rig).box(BOX).alarms()
        assert (alarm["kind"], alarm["via"]) == ("fork", "append")
        assert (tmp_path / "backoffice" / AUDIT_DIR / BOX / "alarms.jsonl").exists()
