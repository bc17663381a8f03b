"""The shift (RULES R5, docs/webui.md 2) on a real running box: over the loopback channel
(officer id in the body, `mvb shift`) and over the web channel with accounts (officer id from
the account); every recording of the shift carries the officer and the bodycams inside its
encryption; a shift ends only with every report filed or the missing ones acknowledged."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import aiohttp
import pytest

from config.local import load_config
from gateway.caller import Refused
from gateway.capture.camera import Camera
from gateway.officer.shift import ShiftStart
from gateway.web.identity import LOCAL_IDENTITY, Identity
from gateway.web.jsonbody import ApiError
from gateway.web.shift_routes import parse_start
from storage.envelope import RecipientPrivateKey
from storage.reader import read_evidence
from storage.sealed import open_sealed, seal
from tests.gateway.web.conftest import WebRig, login
from tests.gateway.web.fake_box import fake_local
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

MVB = Path(sys.executable).with_name("mvb")
ALICE = Identity(channel="web", user="alice", role="officer", officer_id="BOA-1234")
NO_ID = Identity(channel="web", user="dave", role="officer", officer_id="")


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[LocalBox]:
    async with running_box(feature_box_config(tmp_path)) as running:
        yield running


async def post(client: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await client.post(path, data=data, headers={"Content-Type": "application/json"})
    return reply.status, await reply.json()


# -- the face: who starts a shift -----------------------------------------------------------------


def test_who_starts_a_shift_depends_on_the_channel() -> None:
    assert parse_start({"bodycam_serials": ["BC-1"]}, ALICE) == ShiftStart("BOA-1234", ("BC-1",))
    local = parse_start({"officer_id": "BOA-9", "bodycam_serials": []}, LOCAL_IDENTITY)
    assert local == ShiftStart("BOA-9", ())
    with pytest.raises(ApiError) as no_id:
        parse_start({"bodycam_serials": []}, NO_ID)
    assert (no_id.value.status, no_id.value.code) == (409, "no_officer_id")
    with pytest.raises(ApiError) as named:
        parse_start({"officer_id": "BOA-9"}, ALICE)
    assert named.value.extra["field"] == "officer_id"
    with pytest.raises(ApiError) as missing:
        parse_start({}, LOCAL_IDENTITY)
    assert missing.value.extra["field"] == "officer_id"


# -- over the loopback channel ---------------------------------------------------------------------


async def test_recordings_of_a_shift_carry_the_officer_and_bodycams(
    tmp_path: Path,
) -> None:
    """Issue 15, item 4: two officers, each with a bodycam; the dashcam's footage names both,
    each bodycam's its own officer; before and after the shift, no one (and the page says so)."""
    config = feature_box_config(
        tmp_path, camera_clip=replay_clip(tmp_path), bodycams=("BC-7", "BC.8")
    )
    async with running_box(config) as box, box.client() as client:
        for camera in box.running.service.cameras.values():
            await wait_for(partial(delivered, camera), f"{camera.name}'s packets")
        status = await (await client.get("/api/status")).json()
        assert "no_shift" in [alert["code"] for alert in status["alerts"]]
        before = await record_once(box, client)
        code, shift = await post(
            client, "/api/shift/start", {"officer_id": "BOA-42", "bodycam_serials": ["BC-7"]}
        )
        assert code == 200, shift
        code, shift = await post(
            client, "/api/shift/start", {"officer_id": "BOA-43", "bodycam_serials": ["BC.8"]}
        )
        assert code == 200, shift
        assert shift["officers"] == [
            {"officer_id": "BOA-42", "bodycam_serials": ["BC-7"]},
            {"officer_id": "BOA-43", "bodycam_serials": ["BC.8"]},
        ]
        code, full = await post(client, "/api/shift/start", {"officer_id": "BOA-44"})
        assert (code, full["error"]) == (409, "shift_full")
        code, taken = await post(
            client, "/api/shift/start", {"officer_id": "BOA-43", "bodycam_serials": ["BC-7"]}
        )
        assert (code, taken["error"], taken["field"]) == (409, "bodycam_taken", "bodycam_serials")
        during = await record_once(box, client)
        status = await (await client.get("/api/status")).json()
        assert status["shift"]["active"] is True
        assert [o["officer_id"] for o in status["shift"]["officers"]] == ["BOA-42", "BOA-43"]
        assert "no_shift" not in [alert["code"] for alert in status["alerts"]]
        code, refused = await post(client, "/api/shift/end", {})
        assert (code, refused["error"]) == (409, "reports_missing")
        assert refused["missing"] == [before, during]
        code, ended = await post(client, "/api/shift/end", {"acknowledge_missing_reports": True})
        assert code == 200, ended
        assert (ended["active"], ended["reports_missing_acknowledged"]) == (False, 2)
        listed = await (await client.get("/api/reports")).json()
        assert (listed["missing"], listed["filed"]) == ([], [])
        after = await record_once(box, client)
        state_dir = box.config.state_dir
    for needle in (b"BOA-42", b"BOA-43", b"BC-7", b"BC.8"):
        assert files_containing([state_dir, box.config.card_dir], needle) == [], needle

    by_camera: dict[tuple[str, str], dict[str, Any]] = {}
    for report in box.decrypt_all():
        recording = next(m for m in report.metadata if m["type"] == "recording")
        by_camera[(recording["recording_id"], recording["camera"])] = recording
    assert {name for (_, name) in by_camera} == {"dashcam", "bodycam-1", "bodycam-2"}
    for recording_id in (before, after):
        for name in ("dashcam", "bodycam-1", "bodycam-2"):
            facts = by_camera[(recording_id, name)]
            assert (facts["officer_ids"], facts["shift_officers"]) == ([], [])
    assert by_camera[(during, "dashcam")]["officer_ids"] == ["BOA-42", "BOA-43"]
    assert by_camera[(during, "bodycam-1")]["officer_ids"] == ["BOA-42"]
    assert by_camera[(during, "bodycam-2")]["officer_ids"] == ["BOA-43"]
    assert by_camera[(during, "bodycam-2")]["camera_serial"] == "BC.8"
    assert by_camera[(during, "dashcam")]["shift_officers"] == [
        {"officer_id": "BOA-42", "bodycam_serials": ["BC-7"]},
        {"officer_id": "BOA-43", "bodycam_serials": ["BC.8"]},
    ]
    assert (
        by_camera[(during, "dashcam")]["device_serial"],
        by_camera[(during, "dashcam")]["vehicle_id"],
    ) == ("MVB-TEST-0001", "veh-test-1")
    shifts = box.audit_events("shift.")
    assert [(event, opened(box, fields)) for event, fields in shifts] == [
        (
            "shift.started",
            {"officer_id": "BOA-42", "bodycams": 1, "officers": 1, "channel": "local"},
        ),
        (
            "shift.joined",
            {"officer_id": "BOA-43", "bodycams": 1, "officers": 2, "channel": "local"},
        ),
        (
            "shift.ended",
            {
                "officer_id": "BOA-42",
                "partner_id": "BOA-43",
                "reports_missing": 2,
                "acknowledged_missing": True,
                "by_admin": True,
                "channel": "local",
            },
        ),
    ]


def delivered(camera: Camera) -> bool:
    return camera.ring.span_ns() > 0


def opened(box: LocalBox, fields: dict[str, Any]) -> dict[str, Any]:
    """An audit entry's fields with the sealed officer ids opened by the back office's key."""
    sealed = fields.pop("officer_id_sealed")
    partner = fields.pop("partner_id_sealed", None)
    assert "officer_id" not in fields
    plain = {"officer_id": open_sealed(sealed, box.recipient, "officer_id").decode()}
    if partner is not None:
        plain["partner_id"] = open_sealed(partner, box.recipient, "officer_id").decode()
    return {**plain, **fields}


async def test_after_a_restart_the_shift_runs_sealed_until_an_officer_resumes_it(
    tmp_path: Path,
) -> None:
    config = feature_box_config(tmp_path)
    async with running_box(config) as box, box.client() as client:
        code, started = await post(client, "/api/shift/start", {"officer_id": "BOA-1"})
        assert code == 200
        code, joined = await post(
            client, "/api/shift/start", {"officer_id": "BOA-2", "bodycam_serials": ["BC-2"]}
        )
        assert code == 200, joined
        code, full = await post(client, "/api/shift/start", {"officer_id": "BOA-3"})
        assert (code, full["error"]) == (409, "shift_full")  # while the box runs, it knows
    saved = json.loads((tmp_path / "box" / "state" / "shift.json").read_text())
    assert saved["version"] == 3
    assert set(saved["shift"]) == {"since_ms", "officers", "bodycams", "sealed"}
    assert (saved["shift"]["officers"], saved["shift"]["bodycams"]) == (2, 1)
    plain = open_sealed(saved["shift"]["sealed"], box.recipient, "shift")
    assert json.loads(plain) == {
        "officers": [
            {"officer_id": "BOA-1", "bodycam_serials": []},
            {"officer_id": "BOA-2", "bodycam_serials": ["BC-2"]},
        ],
        "since_ms": ANY,
    }
    async with running_box(config) as box, box.client() as client:
        # The box knows a shift runs since when, not who works it: only an admin may end it.
        shift = await (await client.get("/api/shift")).json()
        assert (shift["active"], shift["officers"], shift["since_ms"]) == (
            True,
            [],
            started["since_ms"],
        )
        assert shift["officers_unknown"] == 2
        with pytest.raises(Refused) as forbidden:
            await box.running.officer.shift.end(ALICE, acknowledge=True)
        assert forbidden.value.code == "forbidden"
        code, resumed = await post(
            client, "/api/shift/start", {"officer_id": "BOA-1", "bodycam_serials": ["BC-1"]}
        )
        assert (code, resumed["officers"], resumed["since_ms"]) == (
            200,
            [{"officer_id": "BOA-1", "bodycam_serials": ["BC-1"]}],
            started["since_ms"],
        )
        (event, fields) = box.audit_events("shift.")[-1]
        assert (event, opened(box, dict(fields))["officer_id"]) == ("shift.resumed", "BOA-1")
        code, rejoined = await post(client, "/api/shift/start", {"officer_id": "BOA-2"})
        assert (code, len(rejoined["officers"])) == (200, 2)  # the partner joins again
        code, full = await post(client, "/api/shift/start", {"officer_id": "BOA-3"})
        assert (code, full["error"]) == (409, "shift_full")


async def test_bad_shift_requests_get_clear_errors_and_the_box_keeps_running(
    tmp_path: Path,
) -> None:
    """The face's parsing, in front of the in-memory box."""
    cases: list[tuple[str, Any, int, str]] = [
        ("/api/shift/start", b"{", 400, "bad_json"),
        ("/api/shift/start", b"", 400, "bad_json"),
        ("/api/shift/start", b"[1, 2]", 422, "invalid"),
        ("/api/shift/start", {"officer_id": 7}, 422, "invalid"),
        ("/api/shift/start", {"officer_id": "x" * 33}, 422, "invalid"),
        ("/api/shift/start", {"officer_id": "Jan Jansen"}, 422, "invalid"),
        ("/api/shift/start", {"officer_id": "BOA-1", "bodycam_serials": "BC-1"}, 422, "invalid"),
        (
            "/api/shift/start",
            {"officer_id": "BOA-1", "bodycam_serials": ["x" * 65]},
            422,
            "invalid",
        ),
        ("/api/shift/start", {"officer_id": "BOA-1", "bodycam_serials": ["../x"]}, 422, "invalid"),
        (
            "/api/shift/start",
            {"officer_id": "BOA-1", "bodycam_serials": ["A", "A"]},
            422,
            "invalid",
        ),
        (
            "/api/shift/start",
            {"officer_id": "BOA-1", "bodycam_serials": [f"BC-{i}" for i in range(9)]},
            422,
            "invalid",
        ),
        ("/api/shift/start", {"officer_id": "BOA-1", "name": "Jan"}, 422, "invalid"),
        ("/api/shift/start", b'{"officer_id": "' + b"A" * 70_000 + b'"}', 413, "too_large"),
        ("/api/shift/end", {}, 409, "no_shift"),
        ("/api/shift/end", {"acknowledge_missing_reports": "yes"}, 422, "invalid"),
    ]
    async with fake_local(load_config(feature_box_config(tmp_path))) as box, box.client() as client:
        for path, body, status, error in cases:
            code, answer = await post(client, path, body)
            assert (code, answer["error"]) == (status, error), (path, body, answer)
            assert answer["message"]
        assert box.box.shift is None
        code, _ = await post(client, "/api/shift/start", {"officer_id": "BOA-1"})
        assert code == 200
    assert box.box.shift is not None


async def test_mvb_shift_start_and_end(box: LocalBox) -> None:
    mvb = [str(MVB), "--config", str(box.config_path), "shift"]
    started = await run_command(*mvb, "start", "--officer-id", "BOA-3", "--bodycam", "BC-1", "BC-2")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "shift: officer BOA-3 (bodycams BC-1, BC-2)"
    taken = await run_command(*mvb, "start", "--officer-id", "BOA-4", "--bodycam", "BC-2")
    assert taken.returncode == 1
    assert "carried by the other officer" in taken.stderr
    joined = await run_command(*mvb, "start", "--officer-id", "BOA-4")
    assert joined.returncode == 0, joined.stderr
    assert joined.stdout.strip() == (
        "shift: officer BOA-3 (bodycams BC-1, BC-2), officer BOA-4 (no bodycams)"
    )
    left = await run_command(*mvb, "leave", "--officer-id", "BOA-3")
    assert left.returncode == 0, left.stderr
    assert left.stdout.strip() == "shift: officer BOA-4 (no bodycams)"
    status = await run_command(str(MVB), "--config", str(box.config_path), "status", "--text")
    assert "shift: officer BOA-4 (no bodycams); reports missing: 0" in status.stdout
    async with box.client() as client:
        recording_id = await record_once(box, client)
    refused = await run_command(*mvb, "end")
    assert refused.returncode == 1
    assert f"no report yet: recording {recording_id}" in refused.stderr
    assert "--acknowledge-missing-reports" in refused.stderr
    ended = await run_command(*mvb, "end", "--acknowledge-missing-reports")
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.strip() == "shift ended (1 missing report(s) acknowledged)"


# -- over the web channel: the officer id comes from the account -----------------------------------


async def test_on_the_web_the_account_names_the_officer(web_rig: WebRig) -> None:
    async with web_rig.client() as alice, web_rig.client() as bob:
        code, session = await login(alice, "alice")
        assert code == 200
        alice_csrf = {"X-CSRF-Token": str(session["csrf_token"])}
        code, session = await login(bob, "bob")
        assert code == 200
        bob_csrf = {"X-CSRF-Token": str(session["csrf_token"])}

        reply = await bob.post("/api/shift/start", json={"bodycam_serials": []}, headers=bob_csrf)
        assert (reply.status, (await reply.json())["error"]) == (409, "no_officer_id")
        reply = await alice.post(
            "/api/shift/start",
            json={"officer_id": "BOA-9999", "bodycam_serials": []},
            headers=alice_csrf,
        )
        assert (reply.status, (await reply.json())["field"]) == (422, "officer_id")
        reply = await alice.post(
            "/api/shift/start", json={"bodycam_serials": ["BC-77"]}, headers=alice_csrf
        )
        assert reply.status == 200
        expected = [{"officer_id": "BOA-1234", "bodycam_serials": ["BC-77"]}]
        assert (await reply.json())["officers"] == expected
        shift = await (await bob.get("/api/shift")).json()
        assert shift["officers"] == expected
        reply = await bob.post("/api/shift/end", json={}, headers=bob_csrf)  # an admin may
        assert reply.status == 200, await reply.text()
    audit = web_rig.box.audit_text()
    assert '"shift.started"' in audit
    assert "BOA-1234" not in audit  # sealed for the back office: the box cannot read it
    assert "alice" not in audit  # a login name never; the service number is the evidence
    (started,) = [e for e in web_rig.audit_events() if e["event"] == "shift.started"]
    sealed = started["fields"]["officer_id_sealed"]
    assert open_sealed(sealed, web_rig.box.recording_key, "officer_id") == b"BOA-1234"


# -- mvb import: a docked bodycam's clip, attributed by the shift history -------------------------


async def test_mvb_import_attributes_a_clip_to_whoever_held_its_bodycam_then(
    tmp_path: Path,
) -> None:
    """Issue 15, item 4: the shift history (sealed officer ids, tagged serials) outlives the
    shift and the box's process; `mvb import --bodycam` names the officer who held that bodycam
    at the clip's time (given, or the file's mtime), sealed for the back office."""
    clip = replay_clip(tmp_path)
    config = feature_box_config(tmp_path)
    async with running_box(config) as box, box.client() as client:
        code, _ = await post(
            client, "/api/shift/start", {"officer_id": "BOA-42", "bodycam_serials": ["BC-7"]}
        )
        assert code == 200
        code, _ = await post(
            client, "/api/shift/start", {"officer_id": "BOA-43", "bodycam_serials": ["BC-8"]}
        )
        assert code == 200
        during_ms = time.time_ns() // 1_000_000
        await wait_for(lambda: time.time_ns() // 1_000_000 > during_ms, "the next millisecond")
        code, _ = await post(client, "/api/shift/end", {})
        assert code == 200
    after_ms = time.time_ns() // 1_000_000 + 60_000
    history = box.config.state_dir / "shift_history.json"
    assert history.exists()
    for needle in (b"BOA-42", b"BOA-43", b"BC-7", b"BC-8"):
        assert files_containing([box.config.state_dir], needle) == [], needle

    os.utime(clip, ns=(during_ms * 1_000_000, during_ms * 1_000_000))
    mvb = [str(MVB), "--config", str(config), "import", str(clip)]
    imports = [
        (["--bodycam", "BC-7"], "file_mtime", "BOA-42"),
        (["--bodycam", "BC-8", "--recorded-at", iso(during_ms)], "given", "BOA-43"),
        (["--bodycam", "BC-8", "--recorded-at", iso(after_ms)], "given", None),
    ]
    for args, _, officer in imports:
        done = await run_command(*mvb, *args)
        assert done.returncode == 0, done.stderr
        assert ("attributed to the officer" in done.stdout) == (officer is not None), done.stdout
    attributed = []
    for path in sorted(
        box.running.box.store.layout.sealed_files(), key=lambda p: p.stat().st_mtime
    ):
        with path.open("rb") as handle:
            read = read_evidence(handle, box.recipient, media_out=io.BytesIO())
        facts = next(m for m in read.metadata if m["type"] == "recording")
        sealed = facts["officer_id_sealed"]
        opened = None if sealed is None else open_sealed(sealed, box.recipient, "officer_id")
        attributed.append(
            (facts["bodycam_serial"], facts["clip_time_source"], opened and opened.decode())
        )
    assert attributed == [(args[1], source, who) for args, source, who in imports]


def iso(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="milliseconds")


async def test_a_policy_may_refuse_the_officers_recordings_without_a_shift(
    tmp_path: Path,
) -> None:
    """Issue 15, item 4: `[recording].officer_start_needs_shift` refuses the officer's start
    while no shift runs (409 `shift_required`, audited with who asked); with a shift it records."""
    config = feature_box_config(tmp_path)
    text = config.read_text()
    assert text.count("[recording]\n") == 1
    config.write_text(
        text.replace("[recording]\n", "[recording]\nofficer_start_needs_shift = true\n")
    )
    async with running_box(config) as box, box.client() as client:
        reply = await client.post("/api/record/start")
        assert (reply.status, (await reply.json())["error"]) == (409, "shift_required")
        assert box.running.service.recording is None
        refused = [fields for event, fields in box.audit_events("gateway.trigger_refused")]
        assert refused == [
            {"source": "officer", "reason": "no_shift", "channel": "cli", "account": "local"}
        ]
        code, _ = await post(client, "/api/shift/start", {"officer_id": "BOA-1"})
        assert code == 200
        recording_id = await record_once(box, client)
    (facts,) = [
        fields
        for event, fields in box.audit_events("gateway.trigger")
        if event == "gateway.trigger"
    ]
    assert (facts["source"], facts["channel"]) == ("officer", "cli")
    assert len(recording_id) == 32


async def test_a_shift_saved_before_duo_patrols_is_read_as_one_officer(tmp_path: Path) -> None:
    """A version 2 shift file (one officer, no count of officers) from a box updated mid-shift:
    the shift runs on, sealed, with one unknown officer; the first officer resumes it."""
    config = feature_box_config(tmp_path)
    recipient = RecipientPrivateKey.load(Path((tmp_path / "private-key-path").read_text()))
    sealed = seal(b'{"officer_id": "BOA-1"}', "shift", (recipient.public(),))
    state = tmp_path / "box" / "state"
    state.mkdir(parents=True, exist_ok=True)
    saved = {"since_ms": 1234, "bodycams": 0, "sealed": sealed}
    (state / "shift.json").write_text(json.dumps({"version": 2, "shift": saved}))
    async with running_box(config) as box, box.client() as client:
        shift = await (await client.get("/api/shift")).json()
        assert (shift["active"], shift["officers"], shift["officers_unknown"]) == (True, [], 1)
        assert shift["since_ms"] == 1234
        code, resumed = await post(client, "/api/shift/start", {"officer_id": "BOA-1"})
        assert (code, resumed["since_ms"], len(resumed["officers"])) == (200, 1234, 1)
    written = json.loads((state / "shift.json").read_text())
    assert (written["version"], written["shift"]["officers"]) == (3, 1)
