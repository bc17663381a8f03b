"""`mvb-admin config init|sign|publish|bundle`, and a box verifying what the admin made."""

from __future__ import annotations

from pathlib import Path

import pytest

from backoffice import cli
from backoffice.fleet_repo import FleetRepository
from config.fleet_client import FleetConfigClient, install_trust_root
from config.fleet_targets import AppliedState


def no_link(url_path: str, max_bytes: int) -> bytes:
    raise AssertionError(f"a pushed bundle needs no link (asked for {url_path})")


def admin(*argv: str | Path) -> int:
    return cli.main([str(a) for a in argv])


def test_admin_signs_publishes_and_bundles_a_document_a_box_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keys, trust = tmp_path / "repo", tmp_path / "keys", tmp_path / "trust"
    document = tmp_path / "box.toml"
    document.write_text("[recording]\nprerecord_s = 60.0\n")
    assert admin("config", "init", "--repo", repo, "--keys", keys, "--trust", trust) == 0
    sign: list[str | Path] = [
        "config", "sign", "--repo", repo, "--trust", trust, "--targets-key", keys / "targets.key"
    ]  # fmt: skip
    assert admin(*sign, "--path", "boxes/MVB-1.toml", "--file", document, "--box", "MVB-1") == 0
    assert "config_serial 1" in capsys.readouterr().out
    online: list[str | Path] = [
        "--snapshot-key", keys / "snapshot.key", "--timestamp-key", keys / "timestamp.key"
    ]  # fmt: skip
    assert admin("config", "publish", "--repo", repo, "--trust", trust, *online) == 0
    bundle = tmp_path / "bundle.tar"
    assert admin("config", "bundle", "--repo", repo, "--out", bundle, "boxes/MVB-1.toml") == 0

    metadata = tmp_path / "box-metadata"
    install_trust_root(metadata, FleetRepository(repo).trust_root_bytes())
    client = FleetConfigClient(metadata, "MVB-1", (), no_link, AppliedState())
    accepted = client.verify_bundle(bundle.read_bytes())
    assert accepted is not None
    assert accepted.config_serial == 1
    assert accepted.document == document.read_bytes()


def test_signing_with_a_key_that_is_not_the_targets_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keys, trust = tmp_path / "repo", tmp_path / "keys", tmp_path / "trust"
    document = tmp_path / "box.toml"
    document.write_text("[recording]\nprerecord_s = 60.0\n")
    assert admin("config", "init", "--repo", repo, "--keys", keys, "--trust", trust) == 0
    wrong: list[str | Path] = ["--targets-key", keys / "timestamp.key"]
    code = admin("config", "sign", "--repo", repo, "--trust", trust, *wrong,
                 "--path", "groups/all.toml", "--file", document, "--group", "all")  # fmt: skip
    assert code == 2
    assert "mvb-admin:" in capsys.readouterr().err
