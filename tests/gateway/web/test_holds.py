"""Holds (RULES S4, docs/webui.md 7) on a real running box: `mvb hold` over its loopback API
holds every file of a recording (and its later files), the officer's list and status show that a
hold exists and never why, the reason exists only as encrypted evidence for the back office,
and release is audited. On the web channel only an admin account may hold (the web layer in
front of the in-memory box; the box's own rule is checked on the real desk below)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.caller import Identity, Refused, account_tag
from storage.models import FileState
from tests.gateway.web.conftest import WebRig, login
from tests.gateway.web.feature_rig import (
    LocalBox,
    feature_box_config,
    files_containing,
    record_once,
    replay_clip,
    run_command,
    running_box,
    wait_for,
)
from tests.trusted_time_helpers import trusted_time_later

MVB = Path(sys.executable).with_name("mvb")
REASON = "Klacht van J. de Vries, zaaknummer 2024-0815"
OFFICER = Identity(channel="web", user="alice", role="officer", officer_id="BOA-1234")
ADMIN = Identity(channel="web", user="bob", role="admin", officer_id="")


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[LocalBox]:
    config = feature_box_config(tmp_path, camera_clip=replay_clip(tmp_path))
    async with running_box(config) as running:
        camera = running.running.service.cameras["dashcam"]
        await wait_for(lambda: camera.ring.span_ns() > 0, "the camera's first packets")
        yield running


def mvb(box: LocalBox, *args: str) -> list[str]:
    return [str(MVB), "--config", str(box.config_path), "hold", *args]


async def test_mvb_hold_keeps_a_recording_from_retention_and_shows_only_that_it_is_held(
    box: LocalBox,
) -> None:
    store = box.running.box.store
    async with box.client() as client:
        held_id = await record_once(box, client)
        free_id = await record_once(box, client)

        done = await run_command(*mvb(box, held_id, "--reason", REASON))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(
            f"held recording {held_id} (2 file(s) on the card); the reason"
        )
        again = await run_command(*mvb(box, held_id, "--reason", REASON))
        assert (again.returncode, again.stderr.strip()) == (
            1,
            "mvb hold: the recording is already held on this box",
        )

        listed = await (await client.get("/api/reports")).json()
        flags = {e["recording_id"]: e["held"] for e in listed["missing"]}
        assert flags == {held_id: True, free_id: False}
        status = await (await client.get("/api/status")).json()
        assert status["storage"]["held_recordings"] == 1
        text = await run_command(str(MVB), "--config", str(box.config_path), "status", "--text")
        assert "; 1 recording(s) held (mvb hold --list)" in text.stdout
        listing = await run_command(*mvb(box, "--list"))
        assert listing.stdout.splitlines() == [
            f"{held_id}  held by local, 2 file(s) on the card",
            "1 recording(s) held",
        ]

    # Every file of it is held, the note with the reason too; the other recording is not.
    held_files = store.recording_files(held_id)
    assert [f.held for f in held_files] == [True, True]
    assert [f.held for f in store.recording_files(free_id)] == [False]
    trusted_time_later(store, days=29)  # past the retention period, in trusted time
    deleted = await asyncio.to_thread(store.apply_retention)
    assert {d.recording_id for d in deleted} == {free_id}
    assert {f.state for f in store.recording_files(held_id)} == {FileState.SEALED}

    # The reason: encrypted for the back office, nowhere in plaintext, never in the audit log.
    (note,) = [
        m
        for report in box.decrypt_all()
        if report.header.recording_id.hex() == held_id
        for m in report.metadata
        if m["type"] == "hold"
    ]
    assert (note["reason"], note["channel"], note["by"]) == (REASON, "local", "local")
    roots = [box.config.card_dir, box.config.state_dir]
    assert files_containing(roots, REASON.encode()) == []
    assert files_containing(roots, b"2024-0815") == []
    (hold_set,) = box.audit_events("hold.")
    assert hold_set[0] == "hold.set"
    assert hold_set[1]["channel"] == "local"
    assert hold_set[1]["by"] == "local"

    released = await run_command(*mvb(box, "--release", held_id))
    assert released.returncode == 0, released.stderr
    assert released.stdout.strip() == f"released this box's hold of recording {held_id}"
    assert [f.held for f in store.recording_files(held_id)] == [False, False]
    not_held = await run_command(*mvb(box, "--release", held_id))
    assert (not_held.returncode, not_held.stderr.strip()) == (
        1,
        "mvb hold: the recording is not held",
    )
    assert [event for event, _ in box.audit_events("hold.")] == ["hold.set", "hold.released"]


async def test_the_box_holds_only_for_an_admin_and_names_the_account_by_its_tag(
    box: LocalBox,
) -> None:
    desk = box.running.holds
    async with box.client() as client:
        recording_id = await record_once(box, client)
    with pytest.raises(Refused) as refused:
        await desk.hold(OFFICER, recording_id, {"reason": REASON})
    assert refused.value.code == "forbidden"
    for bad, code in (
        ({"reason": ""}, "invalid"),
        ({"reason": REASON, "extra": 1}, "invalid"),
        ({"reason": "x" * 1001}, "invalid"),
    ):
        with pytest.raises(Refused) as refused:
            await desk.hold(ADMIN, recording_id, bad)
        assert refused.value.code == code
    with pytest.raises(Refused) as refused:
        await desk.hold(ADMIN, "f" * 32, {"reason": REASON})
    assert refused.value.code == "unknown_recording"

    answer = await desk.hold(ADMIN, recording_id, {"reason": REASON})
    assert answer["reason_sealed"] is True
    assert answer["sources"] == ["local"]
    (event,) = box.audit_events("hold.set")
    assert (event[1]["channel"], event[1]["by"]) == ("web", account_tag("bob"))
    assert "bob" not in str(box.audit_events())

    # The fleet holds it too: the box's own release leaves the fleet's hold.
    await desk.fleet_named(7, {recording_id: "police_demand"})
    released = await desk.release(ADMIN, recording_id)
    assert (released["held"], released["sources"], released["ground"]) == (
        True,
        ["fleet"],
        "police_demand",
    )
    with pytest.raises(Refused) as refused:
        await desk.release(ADMIN, recording_id)
    assert refused.value.code == "held_by_fleet"
    await desk.fleet_applied(8, {})
    assert desk.held_ids() == frozenset()
    assert [e for e, _ in box.audit_events("hold.")] == [
        "hold.set",
        "hold.set",
        "hold.released",
        "hold.released",
    ]


async def test_on_the_web_an_officer_may_not_hold_and_an_admin_may(web_rig: WebRig) -> None:
    recording_id = "ab" * 16
    web_rig.box.book.started(recording_id, 1, "officer")
    async with web_rig.client() as alice, web_rig.client() as bob:
        _, session = await login(alice, "alice")
        alice_csrf = {"X-CSRF-Token": str(session["csrf_token"])}
        _, session = await login(bob, "bob")
        bob_csrf = {"X-CSRF-Token": str(session["csrf_token"])}
        path = f"/api/holds/{recording_id}"

        reply = await alice.put(path, json={"reason": REASON}, headers=alice_csrf)
        assert (reply.status, (await reply.json())["error"]) == (403, "forbidden")
        reply = await alice.get("/api/holds")
        assert reply.status == 403
        reply = await bob.put(path, json={"reason": REASON})  # no CSRF token
        assert (reply.status, (await reply.json())["error"]) == (403, "csrf")
        reply = await bob.put(path, json={"reason": REASON}, headers=bob_csrf)
        assert reply.status == 200, await reply.text()
        listed = await (await alice.get("/api/reports")).json()
        assert listed["missing"][0]["held"] is True
        assert REASON not in str(listed)
        reply = await bob.delete(path, headers=bob_csrf)
        assert reply.status == 200
        assert (await reply.json())["held"] is False
