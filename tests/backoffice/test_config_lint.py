"""`mvb-admin config lint`, and `config sign` refusing what a box would refuse (issue 17 item 6):
a misspelt key, a box's local key, a value out of range, accounts for a group; every example
document passes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from backoffice import cli
from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_trust_io import AdminTrust

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
MISSPELT = """\
[recording]
prerecrod_s = 60.0
[storage]
card_dir = "/tmp/elsewhere"
retention_days = 14
[triggers.crash]
upload_clas = "P0"
[sound]
on = true
"""


def admin(*argv: str | Path) -> int:
    return cli.main([str(a) for a in argv])


def lint(document: Path, *extra: str | Path) -> int:
    return admin("config", "lint", "--file", document, *extra)


FLEET_EXAMPLES = sorted(
    p.name for p in EXAMPLES.glob("*.toml") if "fleet" in tomllib.loads(p.read_text())
)
"""The example fleet documents (a [fleet] table); box-paired.toml beside them is a box's local
file (tests/config/test_example_configs.py)."""


def test_the_examples_hold_fleet_documents() -> None:
    assert len(FLEET_EXAMPLES) >= 3


@pytest.mark.parametrize("example", FLEET_EXAMPLES)
def test_every_example_document_passes(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert lint(EXAMPLES / example, "--group", example.removesuffix(".toml")) == 0
    assert "a box would apply it" in capsys.readouterr().out


def test_every_key_a_box_would_refuse_is_named_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = tmp_path / "fleet.toml"
    document.write_text(MISSPELT)
    assert lint(document, "--group", "all") == 1
    err = capsys.readouterr().err
    for name in ("recording.prerecrod_s", "storage.card_dir", "triggers.upload_clas", "[sound]"):
        assert f"{name} is not a fleet setting" in err
    assert "retention_days" not in err, "a key that is right is not named"


@pytest.mark.parametrize(
    ("text", "extra", "named"),
    [
        ("[storage]\nretention_days = 40\n", [], "retention_days"),
        ("[recording]\nprerecord_s = 'long'\n", [], "prerecord_s"),
        ("[recording\n", [], "not valid TOML"),
        ("[[links]]\nname = 'lte9'\nrate_cap_bytes_per_s = 1000\n", [], "not a link of this box"),
        (
            "[[accounts]]\nname = 'o'\nrole = 'officer'\npassword_hash = 'x'\n",
            ["--group", "all"],
            "accounts",
        ),
    ],
)
def test_a_value_a_box_would_refuse_is_named(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    extra: list[str],
    named: str,
) -> None:
    document = tmp_path / "fleet.toml"
    document.write_text(text)
    assert lint(document, *extra) == 1
    assert named in capsys.readouterr().err


def test_values_are_checked_against_the_fleets_box_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trigger naming a camera: unknown to the built-in defaults, known to the fleet's box."""
    document = tmp_path / "fleet.toml"
    document.write_text("[triggers.lights]\ncameras = ['dashcam']\n")
    box = tmp_path / "box.toml"
    box.write_text(
        "[box]\nrecipient_keys = ['k.pub']\n"
        "[[cameras]]\nname = 'dashcam'\nkind = 'rtsp_pull'\nurl = 'rtsp://127.0.0.1:8554/cam'\n"
        "auth = 'none'\nserial = 'DC-1'\n"
    )
    assert lint(document) == 1
    assert "dashcam" in capsys.readouterr().err
    assert lint(document, "--against", box) == 0, capsys.readouterr().err


def test_sign_refuses_what_lint_refuses_and_signs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keys, trust = tmp_path / "repo", tmp_path / "keys", tmp_path / "trust"
    document = tmp_path / "fleet.toml"
    document.write_text(MISSPELT)
    assert admin("config", "init", "--repo", repo, "--keys", keys, "--trust", trust) == 0
    sign: list[str | Path] = [
        "config", "sign", "--repo", repo, "--trust", trust, "--targets-key", keys / "targets.key",
        "--path", "groups/all.toml", "--file", document, "--group", "all", "--box", "MVB-1",
    ]  # fmt: skip
    targets_before = (repo / "metadata").glob("*targets.json")
    before = {p.name: p.read_bytes() for p in targets_before}
    assert admin(*sign) == 1
    err = capsys.readouterr().err
    assert "refused, nothing signed" in err
    assert "recording.prerecrod_s" in err
    after = {p.name: p.read_bytes() for p in (repo / "metadata").glob("*targets.json")}
    assert after == before
    assert FleetRepository(repo, trust=AdminTrust.load(trust)).next_config_serial() == 1

    document.write_text("[recording]\nprerecord_s = 60.0\n")
    assert admin(*sign) == 0
    assert FleetRepository(repo, trust=AdminTrust.load(trust)).next_config_serial() == 2


def test_sign_checks_values_only_against_a_box_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trigger naming the fleet's camera signs without --against (the admin's host has no
    box); with --against a box that lacks the camera it is refused."""
    repo, keys, trust = tmp_path / "repo", tmp_path / "keys", tmp_path / "trust"
    document = tmp_path / "fleet.toml"
    document.write_text("[triggers.lights]\ncameras = ['dashcam']\n")
    bare_box = tmp_path / "box.toml"
    bare_box.write_text("[box]\nrecipient_keys = ['k.pub']\n")
    assert admin("config", "init", "--repo", repo, "--keys", keys, "--trust", trust) == 0
    sign: list[str | Path] = [
        "config", "sign", "--repo", repo, "--trust", trust, "--targets-key", keys / "targets.key",
        "--path", "boxes/MVB-1.toml", "--file", document, "--box", "MVB-1",
    ]  # fmt: skip
    assert admin(*sign, "--against", bare_box) == 1
    assert "dashcam" in capsys.readouterr().err
    assert admin(*sign) == 0
