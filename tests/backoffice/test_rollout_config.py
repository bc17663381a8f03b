"""A staged rollout of a group's configuration (backoffice/rollout_config.py), pure on in-memory
documents and through `mvb-admin config rollout` on a real repository: the canary runs the new
document, the members with their own documents keep them, the group follows at promote, a
rollback gives back the text from before, a release pin is never dropped."""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

from backoffice.fleet_health import FleetHealthStore
from backoffice.rollout import Event, Phase, Rollout
from backoffice.rollout_config import (
    config_box_edits,
    config_group_edits,
    config_label,
    config_rollback_edits,
    config_targets,
)
from backoffice.rollout_docs import Doc, Edit, release_of, running_document
from protocol.health_report import Health
from tests.backoffice.test_rollout_cli import Admin

HOLD = '[[holds]]\nrecording_id = "0123456789abcdef0123456789abcdef"\nground = "complaint"\n'
OLD = (
    '[fleet]\nname = "H2O"\n[recording]\nprerecord_s = 60.0\n[release]\nversion = "1.3.0"\n' + HOLD
)
NEW = '[fleet]\nname = "H2O"\n[recording]\nprerecord_s = 90.0\n'
OWN = "[recording]\nprerecord_s = 30.0\n"
MEMBERS = ("MVB-0001", "MVB-0002", "MVB-0003")


def fleet() -> dict[str, Doc]:
    return {
        "groups/h2o.toml": Doc("groups/h2o.toml", OLD, MEMBERS, ("h2o",), 1),
        "boxes/MVB-0003.toml": Doc("boxes/MVB-0003.toml", OWN, ("MVB-0003",), (), 2),
    }


def signed(docs: dict[str, Doc], edits: Sequence[Edit]) -> dict[str, Doc]:
    serial = max(doc.config_serial for doc in docs.values())
    after = dict(docs)
    for edit in edits:
        serial += 1
        after[edit.path] = Doc(edit.path, edit.text, edit.boxes, edit.groups, serial)
    return after


def runs(docs: dict[str, Doc]) -> dict[str, tuple[float, str | None]]:
    out = {}
    for box in MEMBERS:
        doc = running_document(box, docs)
        assert doc is not None
        out[box] = (tomllib.loads(doc.text)["recording"]["prerecord_s"], release_of(doc.text))
    return out


def rollout() -> Rollout:
    return Rollout(
        "c-h2o", config_label(NEW), config_label(OLD), "h2o", ("MVB-0001", "MVB-0002"),
        ("MVB-0002",), 50, Phase.PLANNED, 0, kind="config", documents=(NEW, OLD),
    )  # fmt: skip


def test_canary_promote_and_rollback_of_a_configuration() -> None:
    docs = fleet()
    assert config_targets("h2o", docs) == ("MVB-0001", "MVB-0002"), "MVB-0003 runs its own"
    label = config_label(NEW)
    canary = signed(docs, config_box_edits(["MVB-0002"], NEW, label, docs))
    assert runs(canary) == {
        "MVB-0001": (60.0, "1.3.0"),
        "MVB-0002": (90.0, "1.3.0"),  # the new text, the release pin kept
        "MVB-0003": (30.0, None),
    }
    copy = tomllib.loads(canary["boxes/MVB-0002.toml"].text)
    assert copy["holds"] == tomllib.loads(HOLD)["holds"], "the group's hold is kept"
    started = rollout().after(Event.START_CANARY, 1)
    back = signed(canary, config_rollback_edits(started, canary))
    assert runs(back) == runs(docs), "a canary's rollback: the text from before"

    edits = config_group_edits("h2o", NEW, label, canary)
    assert [e.path for e in edits] == ["groups/h2o.toml", "boxes/MVB-0003.toml"]
    assert edits[1].text == OWN, "its own document, signed again unchanged, stays ahead"
    promoted = signed(canary, edits)
    assert runs(promoted) == {
        "MVB-0001": (90.0, "1.3.0"),
        "MVB-0002": (90.0, "1.3.0"),
        "MVB-0003": (30.0, None),
    }
    assert config_group_edits("h2o", NEW, label, promoted) == [], "run again: nothing"
    rolled = signed(promoted, config_rollback_edits(started.after(Event.PROMOTE, 2), promoted))
    assert runs(rolled) == runs(docs)


def test_config_rollout_through_the_commands(admin: Admin) -> None:
    new = admin.root / "new.toml"
    new.write_text('[fleet]\nname = "H2O"\n[recording]\nprerecord_s = 90.0\n')
    config_rollout = ["config", "rollout", *admin.signing(), "--group", "h2o", "--file", new]
    code, out, err = admin.run(*config_rollout, "--canary-percent", "33")
    assert code == 0, err
    (rollout_id,) = [line.split()[-1] for line in out.splitlines() if "--rollout" in line]
    (canary,) = [line.split(": ")[1] for line in out.splitlines() if line.startswith("canary")]
    prerecord = dict.fromkeys(admin.runs(), 60.0)
    assert {box: _prerecord(admin, box) for box in prerecord} == {
        **prerecord, canary: 90.0
    }  # fmt: skip
    assert admin.run(*config_rollout)[0] == 1, "one rollout per group at a time"

    status = admin.status()
    assert (status["kind"], status["phase"], status["on_version"]) == ("config", "canary", 0)
    serial = admin.repo().signed_documents()[f"boxes/{canary}.toml"][1].config_serial
    health = Health(
        at_ms=0, software_version="1.3.0", uptime_s=1, recording=False,
        config_applied_serial=serial, config_pending_serial=None, config_last_outcome="applied",
        config_reports_waiting=0, card_total_bytes=1, card_free_bytes=1, files_on_card=0,
        interrupted_files=0,
    )  # fmt: skip
    FleetHealthStore(admin.root / "store").save(canary, health, time.time_ns() // 1_000_000)
    assert admin.status()["canary_healthy"] is True, "the canary applied its document"

    code, out, err = admin.release(
        "promote", "--dir", admin.root / "store", "--rollout", rollout_id
    )
    assert code == 0, err
    assert {box: _prerecord(admin, box) for box in prerecord} == dict.fromkeys(prerecord, 90.0)
    code, out, err = admin.release("rollback", "--rollout", rollout_id)
    assert code == 0, err
    assert {box: _prerecord(admin, box) for box in prerecord} == prerecord
    record = json.loads((admin.root / "trust" / "rollouts" / f"{rollout_id}.json").read_text())
    assert record["kind"] == "config"

    new.write_text('[fleet]\nname = "H2O"\n[recording]\nprerecrod_s = 90.0\n')
    code, _, err = admin.run(*config_rollout)
    assert code == 1
    assert "recording.prerecrod_s is not a fleet setting" in err


def _prerecord(admin: Admin, box: str) -> float:
    docs = {
        path: Doc(path, data.decode(), custom.boxes, custom.groups, custom.config_serial)
        for path, (data, custom) in admin.repo().signed_documents().items()
    }
    doc = running_document(box, docs)
    assert doc is not None
    value: float = tomllib.loads(doc.text)["recording"]["prerecord_s"]
    return value


@pytest.fixture
def admin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Admin:
    return Admin(tmp_path, capsys)
