"""`mvb release activate|request|boot|status` on a release root (gateway/release_cli.py): what
the admin and the units see, refusals with a message and exit 2, nothing changed by a refusal.
The switch itself against real releases and processes: tests/test_release_switch_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.release_switch_io import ReleaseRoot
from tests.release_switch_helpers import fake_install


def mvb(root: Path, *args: str) -> int:
    return main(["release", *args, "--root", str(root)])


@pytest.fixture
def root(tmp_path: Path) -> ReleaseRoot:
    root = ReleaseRoot(tmp_path / "opt")
    for version in ("1.0.0", "1.0.1"):
        fake_install(root, version)
    return root


def status(root: ReleaseRoot, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert mvb(root.path, "status") == 0
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


def test_a_request_waits_and_boot_keeps_the_good_release(
    root: ReleaseRoot, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mvb(root.path, "activate", "1.0.0") == 0
    assert {n: root.linked_version(n) for n in ("current", "previous", "good")} == dict.fromkeys(
        ("current", "previous", "good"), "1.0.0"
    )
    assert mvb(root.path, "request", "1.0.1") == 0
    assert status(root, capsys)["phase"] == "pending"
    assert mvb(root.path, "boot") == 0
    assert root.linked_version("current") == "1.0.0", "nothing switched before stand-by"
    assert status(root, capsys)["target"] == "1.0.1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("activate", "1.0.1"), "current already"),
        (("request", "1.0.2"), "not installed"),
        (("request", "../etc"), "not a release version"),
        (("request", "1.0.0"), "running release already"),
    ],
)
def test_refusals_say_why_and_change_nothing(
    root: ReleaseRoot, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    assert mvb(root.path, "activate", "1.0.0") == 0
    before = root.state_file.read_bytes()
    capsys.readouterr()
    assert mvb(root.path, *args) == 2
    assert message in capsys.readouterr().err
    assert root.state_file.read_bytes() == before
    assert root.linked_version("current") == "1.0.0"


def test_a_second_request_while_one_is_pending_is_refused(
    root: ReleaseRoot, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mvb(root.path, "activate", "1.0.0") == 0
    assert mvb(root.path, "request", "1.0.1") == 0
    capsys.readouterr()
    assert mvb(root.path, "request", "1.0.1") == 2
    assert "not allowed while pending" in capsys.readouterr().err


def test_a_damaged_state_file_is_refused_with_its_name(
    root: ReleaseRoot, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mvb(root.path, "activate", "1.0.0") == 0
    root.state_file.write_text('{"format": 1, "phase": "idle"}')
    capsys.readouterr()
    assert mvb(root.path, "boot") == 2
    assert "switch.json" in capsys.readouterr().err
    assert root.linked_version("current") == "1.0.0"


def test_a_root_with_no_release_says_how_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mvb(tmp_path, "status") == 2
    assert "mvb release activate VERSION" in capsys.readouterr().err
