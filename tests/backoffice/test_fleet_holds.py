"""The fleet admin's holds (docs/fleet-config.md 11): a document's text with one `[[holds]]`
table more or less, the rest of it (comments included) untouched; `mvb-admin config hold` and
`release` sign it again for the same boxes, and a box verifies and reads the holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from backoffice import cli
from backoffice.fleet_holds import HoldEditError, holds_of, with_hold, without_hold
from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_trust_io import AdminTrust
from config.fleet_client import FleetConfigClient, install_trust_root
from config.fleet_schema import fleet_holds
from config.fleet_targets import AppliedState

RID = "ab" * 16
OTHER = "cd" * 16
DOCUMENT = "# Borsele, 2024\n[recording]\nprerecord_s = 30.0  # art. 2.2\n"


def test_a_hold_is_appended_and_removed_leaving_the_rest_as_written() -> None:
    held = with_hold(DOCUMENT, RID, "police_demand")
    assert held.startswith(DOCUMENT), "comments and layout are kept"
    both = with_hold(held, OTHER, "complaint")
    assert holds_of(both) == {RID: "police_demand", OTHER: "complaint"}
    released = without_hold(both, RID)
    assert holds_of(released) == {OTHER: "complaint"}
    assert without_hold(released, OTHER).rstrip() == DOCUMENT.rstrip()
    # The box reads the same holds by its own rule.
    assert fleet_holds(released, "test") == {OTHER: "complaint"}


def test_a_hold_written_by_hand_between_other_tables_is_released_cleanly() -> None:
    text = (
        f'[[holds]]\nrecording_id = "{RID}"  # case 17\nground = "request"\n\n'
        "[storage]\nretention_days = 14\n"
    )
    assert without_hold(text, RID) == "[storage]\nretention_days = 14\n"


@pytest.mark.parametrize(
    ("text", "edit", "message"),
    [
        (DOCUMENT, lambda t: with_hold(t, RID, "curiosity"), "ground must be one of"),
        (DOCUMENT, lambda t: with_hold(t, "not-hex", "request"), "32 lower-case hex"),
        (with_hold(DOCUMENT, RID, "request"), lambda t: with_hold(t, RID, "request"), "already"),
        (DOCUMENT, lambda t: without_hold(t, RID), "does not hold"),
        # An inline array of holds: the tool cannot remove one table of it by a checked edit.
        (
            f'holds = [{{recording_id = "{RID}", ground = "request"}}]\n',
            lambda t: without_hold(t, RID),
            "edit the document by hand",
        ),
        ("[recording\n", lambda t: with_hold(t, RID, "request"), "not valid TOML"),
    ],
)
def test_what_the_tool_cannot_do_by_a_checked_edit_is_refused(
    text: str, edit: object, message: str
) -> None:
    with pytest.raises((HoldEditError, ValueError), match=message):
        edit(text)  # type: ignore[operator]


def admin(*argv: str | Path) -> int:
    return cli.main([str(a) for a in argv])


def no_link(url_path: str, max_bytes: int) -> bytes:
    raise AssertionError(f"a pushed bundle needs no link (asked for {url_path})")


def test_hold_and_release_sign_the_document_again_for_the_same_boxes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keys, trust = tmp_path / "repo", tmp_path / "keys", tmp_path / "trust"
    document = tmp_path / "box.toml"
    document.write_text(DOCUMENT)
    assert admin("config", "init", "--repo", repo, "--keys", keys, "--trust", trust) == 0
    targets: list[str | Path] = [
        "--repo", repo, "--trust", trust, "--targets-key", keys / "targets.key"
    ]  # fmt: skip
    path = "boxes/MVB-1.toml"
    assert (
        admin("config", "sign", *targets, "--path", path, "--file", document, "--box", "MVB-1") == 0
    )
    capsys.readouterr()

    hold = ["config", "hold", *targets, "--path", path, "--recording", RID]
    assert admin(*hold, "--ground", "police_demand") == 0
    assert f"config_serial 2: it holds recording {RID}" in capsys.readouterr().out
    assert admin(*hold, "--ground", "police_demand") == 1, "already held: nothing signed"
    assert "already holds" in capsys.readouterr().err
    other = ["config", "hold", *targets, "--path", "boxes/MVB-9.toml", "--recording", RID]
    assert admin(*other, "--ground", "request") == 1
    assert "no document is signed at boxes/MVB-9.toml" in capsys.readouterr().err
    online: list[str | Path] = [
        "--snapshot-key", keys / "snapshot.key", "--timestamp-key", keys / "timestamp.key"
    ]  # fmt: skip
    assert admin("config", "publish", "--repo", repo, "--trust", trust, *online) == 0
    bundle = tmp_path / "bundle.tar"
    assert admin("config", "bundle", "--repo", repo, "--out", bundle, path) == 0

    metadata = tmp_path / "box-metadata"
    install_trust_root(metadata, FleetRepository(repo).trust_root_bytes())
    client = FleetConfigClient(metadata, "MVB-1", (), no_link, AppliedState())
    accepted = client.verify_bundle(bundle.read_bytes())
    assert accepted is not None
    assert (accepted.config_serial, accepted.boxes) == (2, ("MVB-1",))
    assert fleet_holds(accepted.document.decode(), "bundle") == {RID: "police_demand"}

    release = ["config", "release", *targets, "--path", path, "--recording", RID]
    assert admin(*release) == 0
    signed = FleetRepository(repo, trust=AdminTrust.load(trust)).signed_document(path)
    assert signed is not None
    assert signed[0].decode().rstrip() == DOCUMENT.rstrip()
    assert signed[1].config_serial == 3
