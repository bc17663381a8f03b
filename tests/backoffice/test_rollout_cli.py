"""`mvb-admin release rollout ...` on a real fleet repository and a real health store, without a
server (the served end to end is tests/backoffice/test_rollout_live.py): single boxes, a whole
group at once, the previous version, overlapping rollouts refused, `done` once every box runs
it, a start cut short by a crash, a damaged record."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backoffice import cli as admin_cli
from backoffice.fleet_health import FleetHealthStore
from backoffice.fleet_repo import FleetRepository, init_repository
from backoffice.fleet_trust_io import AdminTrust
from backoffice.rollout_docs import release_of, running_document
from backoffice.rollout_io import RolloutBook, plan, signed_docs
from protocol.health_report import Health

BOXES = ("MVB-0001", "MVB-0002", "MVB-0003")
GROUP_DOC = '[fleet]\nname = "H2O"\n[recording]\nprerecord_s = 60.0\n'


class Admin:
    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root, self.capsys = root, capsys
        init_repository(
            root / "repo", root / "keys", now=datetime.now(UTC), trust_dir=root / "trust"
        )
        self.store = FleetHealthStore(root / "store")
        document = root / "h2o.toml"
        document.write_text(GROUP_DOC)
        members = [arg for box in BOXES for arg in ("--box", box)]
        code, _, err = self.run("config", "sign", *self.signing(), "--path", "groups/h2o.toml",
                                "--file", document, "--group", "h2o", *members)  # fmt: skip
        assert code == 0, err

    def run(self, *args: str | Path) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = admin_cli.main([str(arg) for arg in args])
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def signing(self) -> list[str | Path]:
        return ["--repo", self.root / "repo", "--trust", self.root / "trust",
                "--targets-key", self.root / "keys" / "targets.key"]  # fmt: skip

    def release(self, command: str, *args: str | Path) -> tuple[int, str, str]:
        if command in ("rollout", "promote", "rollback"):
            return self.run("release", command, *self.signing(), *args)
        return self.run("release", command, "--repo", self.root / "repo", *self.trust(), *args)

    def trust(self) -> list[str | Path]:
        return ["--trust", self.root / "trust"]

    def report(self, box: str, version: str) -> None:
        health = Health(
            at_ms=0, software_version=version, uptime_s=1, recording=False,
            config_applied_serial=1, config_pending_serial=None, config_last_outcome="applied",
            config_reports_waiting=0, card_total_bytes=1, card_free_bytes=1, files_on_card=0,
            interrupted_files=0,
        )  # fmt: skip
        self.store.save(box, health, time.time_ns() // 1_000_000)

    def repo(self) -> FleetRepository:
        return FleetRepository(self.root / "repo", trust=AdminTrust.load(self.root / "trust"))

    def pinned(self, path: str) -> str | None:
        document = self.repo().signed_document(path)
        assert document is not None
        return release_of(document[0].decode())

    def runs(self) -> dict[str, tuple[str, str | None]]:
        """Per box: the document it takes (the highest serial) and the version it pins."""
        docs = signed_docs(self.repo())
        out = {}
        for box in BOXES:
            doc = running_document(box, docs)
            assert doc is not None
            out[box] = (doc.path, release_of(doc.text))
        return out

    def status(self) -> dict[str, object]:
        code, out, err = self.release("status", "--dir", self.root / "store", "--json")
        assert code == 0, err
        document: dict[str, object] = json.loads(out)
        return document


@pytest.fixture
def admin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Admin:
    return Admin(tmp_path, capsys)


def test_single_boxes_then_the_whole_group(admin: Admin) -> None:
    for box in BOXES:
        admin.report(box, "1.3.0")
    code, out, err = admin.release(
        "rollout", "--version", "1.4.0", "--box", "MVB-0002", "--dir", admin.root / "store"
    )
    assert code == 0, err
    assert "rollout 1.4.0-boxes: promoted" in out
    assert admin.pinned("boxes/MVB-0002.toml") == "1.4.0"
    assert admin.pinned("groups/h2o.toml") is None, "the others as they were"
    assert admin.status()["previous_version"] == "1.3.0", "what the boxes reported running"

    code, _, err = admin.release("rollout", "--version", "1.5.0", "--group", "h2o")
    assert code == 1
    assert "rollout 1.4.0-boxes (promoted) still holds MVB-0002" in err
    assert admin.release("pause")[0] == 1, "a promoted rollout has nothing to hold back"

    admin.report("MVB-0002", "1.4.0")
    status = admin.status()
    assert (status["phase"], status["on_version"]) == ("done", 1)

    code, _, err = admin.release("rollout", "--version", "1.5.0", "--group", "h2o")
    assert code == 1, "one document pins 1.4.0, two none; boxes run 1.3.0 and 1.4.0"
    assert "say --previous-version" in err
    code, out, err = admin.release(
        "rollout", "--version", "1.5.0", "--group", "h2o", "--previous-version", "1.4.0"
    )
    assert code == 0, err
    assert "signed groups/h2o.toml" in out
    assert "boxes/MVB-0002.toml" not in out, "its document was the group's and a pin: it gives way"
    assert admin.runs() == dict.fromkeys(BOXES, ("groups/h2o.toml", "1.5.0"))

    code, _, err = admin.release(
        "rollout", "--version", "1.5.0", "--box", "MVB-0001", "--previous-version", "1.4.0"
    )
    assert code == 1
    assert "still holds MVB-0001" in err
    code, out, err = admin.release("rollback")
    assert code == 0, err
    assert admin.runs() == dict.fromkeys(BOXES, ("groups/h2o.toml", "1.4.0"))
    code, _, err = admin.release("rollout", "--version", "1.4.0", "--group", "h2o")
    assert code == 1
    assert "every targeted box's document pins 1.4.0 already" in err
    assert admin.release("rollback")[0] == 1, "rolled_back is final"


def test_a_start_cut_short_is_finished_by_running_it_again(admin: Admin) -> None:
    book = RolloutBook(admin.root / "repo", admin.root / "trust")
    planned = plan(
        book, signed_docs(admin.repo()), version="1.4.0", group="h2o", boxes=(),
        canary_percent=50, previous_version="1.3.0", reports=(), at_ms=1,
    )  # fmt: skip
    book.save(planned)  # the crash: the record written, nothing signed
    code, out, err = admin.release(
        "rollout", "--version", "1.4.0", "--group", "h2o", "--canary-percent", "50",
        "--previous-version", "1.3.0",
    )  # fmt: skip
    assert code == 0, err
    assert "rollout 1.4.0-h2o: canary" in out, "the same id, not 1.4.0-h2o-2"
    assert book.load("1.4.0-h2o").canary == planned.canary
    for box in planned.canary:
        assert admin.pinned(f"boxes/{box}.toml") == "1.4.0"


def test_a_damaged_record_is_named_and_nothing_is_signed(admin: Admin) -> None:
    assert admin.release("rollout", "--version", "1.4.0", "--box", "MVB-0001",
                         "--previous-version", "1.3.0")[0] == 0  # fmt: skip
    record = admin.root / "trust" / "rollouts" / "1.4.0-boxes.json"
    record.write_text(record.read_text().replace('"promoted"', '"sideways"'))
    version = admin.repo().targets().signed.version
    code, _, err = admin.release("rollback")
    assert code == 2
    assert "1.4.0-boxes.json: not a rollout record" in err
    assert admin.repo().targets().signed.version == version


def test_a_pinned_document_passes_the_lint(admin: Admin) -> None:
    document = admin.root / "pinned.toml"
    document.write_text(GROUP_DOC + '[release]\nversion = "1.4.0"\n')
    code, _, err = admin.run("config", "lint", "--file", document, "--group", "h2o")
    assert code == 0, err


def test_the_servers_copy_of_a_record_is_never_what_a_step_signs_by(admin: Admin) -> None:
    """A server that rewrites a record (an old, vulnerable release as the previous version)
    cannot have the admin's key pin it: the admin's own copy counts, the server's is restored."""
    code, _, err = admin.release(
        "rollout", "--version", "1.4.0", "--box", "MVB-0001", "--previous-version", "1.3.0"
    )
    assert code == 0, err
    served = admin.root / "repo" / "rollouts" / "1.4.0-boxes.json"
    honest = served.read_bytes()
    served.write_text(
        served.read_text().replace('"previous_version": "1.3.0"', '"previous_version": "0.9.0"')
    )
    code, out, err = admin.release("rollback")
    assert code == 0, err
    assert "signed boxes/MVB-0001.toml as config_serial 3: version 1.3.0" in out
    assert "rollouts/1.4.0-boxes.json on the server differed from the admin's" in out
    assert b'"previous_version": "1.3.0"' in served.read_bytes()
    assert served.read_bytes() != honest, "and it holds the rollback now"

    # Without the trust (the back office's view) the served copies are read, nothing written.
    code, out, err = admin.run(
        "release", "status", "--repo", admin.root / "repo", "--dir", admin.root / "store"
    )
    assert code == 0, err
    assert "rollout 1.4.0-boxes: rolled_back" in out
    with pytest.raises(SystemExit, match="2"):  # argparse: --trust is required
        admin.run("release", "pause", "--repo", admin.root / "repo")


def test_another_admins_active_rollout_on_the_server_is_respected(admin: Admin) -> None:
    code, _, err = admin.release(
        "rollout", "--version", "1.4.0", "--box", "MVB-0001", "--previous-version", "1.3.0"
    )
    assert code == 0, err
    (admin.root / "trust" / "rollouts" / "1.4.0-boxes.json").rename(admin.root / "elsewhere.json")
    code, _, err = admin.release(
        "rollout", "--version", "1.5.0", "--group", "h2o", "--previous-version", "1.3.0"
    )
    assert code == 1
    assert "rollout 1.4.0-boxes on the server (not of this trust) is promoted" in err
