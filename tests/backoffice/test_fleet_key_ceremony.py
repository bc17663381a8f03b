"""The key ceremony with the real commands (issue 17 item 6; docs/fleet-config.md 8): the
offline keys encrypted with a passphrase, a new targets key made and rotated in by the root key
holders, the targets re-signed with it, and a box that trusted root v1 following all of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from backoffice import cli
from backoffice.fleet_repo import FleetRepository
from config.fleet_client import FleetConfigClient, install_trust_root
from config.fleet_targets import AppliedState

PASSPHRASE = "a ceremony passphrase of some length"  # noqa: S105 (a test value)
LABEL = "-----BEGIN ENCRYPTED PRIVATE KEY-----"


def admin(*argv: str | Path) -> int:
    return cli.main([str(a) for a in argv])


def no_link(url_path: str, max_bytes: int) -> bytes:
    raise AssertionError(f"a pushed bundle needs no link (asked for {url_path})")


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A fleet made with an encrypted ceremony: repo, keys, trust, passphrase file."""
    repo, keys, trust = tmp_path / "repo", tmp_path / "keys", tmp_path / "trust"
    secret = tmp_path / "ceremony.pass"
    secret.write_text(PASSPHRASE + "\n")
    assert admin(
        "config", "init", "--repo", repo, "--keys", keys, "--trust", trust,
        "--passphrase-file", secret,
    ) == 0  # fmt: skip
    return repo, keys, trust, secret


def sign(repo: Path, trust: Path, key: Path, document: Path, *extra: str | Path) -> int:
    return admin(
        "config", "sign", "--repo", repo, "--trust", trust, "--targets-key", key,
        "--path", "boxes/MVB-1.toml", "--file", document, "--box", "MVB-1", *extra,
    )  # fmt: skip


def publish(repo: Path, trust: Path, keys: Path) -> int:
    return admin(
        "config", "publish", "--repo", repo, "--trust", trust,
        "--snapshot-key", keys / "snapshot.key", "--timestamp-key", keys / "timestamp.key",
    )  # fmt: skip


def test_the_offline_keys_are_encrypted_and_sign_only_with_their_passphrase(
    fleet: tuple[Path, Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keys, trust, secret = fleet
    for name in ("root-1.key", "root-2.key", "root-3.key", "targets.key"):
        assert (keys / name).read_text().startswith(LABEL), name
        assert (keys / name).stat().st_mode & 0o777 == 0o600
    for name in ("snapshot.key", "timestamp.key"):  # the timer signs with them unattended
        assert not (keys / name).read_text().startswith(LABEL), name
    document = tmp_path / "box.toml"
    document.write_text("[recording]\nprerecord_s = 60.0\n")
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the ceremony's")
    capsys.readouterr()

    assert sign(repo, trust, keys / "targets.key", document) == 2
    assert "is encrypted: give its passphrase" in capsys.readouterr().err
    assert sign(repo, trust, keys / "targets.key", document, "--passphrase-file", wrong) == 2
    err = capsys.readouterr().err
    assert "the passphrase does not open it" in err
    assert "not the ceremony's" not in err
    assert not (repo / "targets" / "boxes").exists(), "nothing signed"

    assert sign(repo, trust, keys / "targets.key", document, "--passphrase-file", secret) == 0
    assert publish(repo, trust, keys) == 0


def test_a_targets_key_rotation_from_keygen_to_a_box_that_follows_it(
    fleet: tuple[Path, Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keys, trust, secret = fleet
    metadata = tmp_path / "box-metadata"  # a box paired before the rotation
    install_trust_root(metadata, FleetRepository(repo).trust_root_bytes())
    new_secret = tmp_path / "admin.pass"
    new_secret.write_text("the new targets key's own passphrase")
    new_key = tmp_path / "admin" / "targets-2.key"
    new_key.parent.mkdir()
    assert admin("config", "keygen", "--out", new_key, "--passphrase-file", new_secret) == 0
    assert new_key.read_text().startswith(LABEL)
    assert new_key.with_suffix(".pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")

    rotate: list[str | Path] = [
        "config", "rotate-root", "--repo", repo, "--trust", trust,
        "--role-key", f"targets={new_key.with_suffix('.pub')}", "--passphrase-file", secret,
    ]  # fmt: skip
    assert admin(*rotate, "--root-key", keys / "root-1.key") == 2, "one root key of a 2 of 3"
    assert "root was signed by 1/2 keys" in capsys.readouterr().err
    assert admin(*rotate, "--root-key", keys / "root-1.key", "--root-key", keys / "root-3.key") == 0
    assert "signed root v2" in capsys.readouterr().out

    document = tmp_path / "box.toml"
    document.write_text("[recording]\nprerecord_s = 45.0\n")
    old = sign(repo, trust, keys / "targets.key", document, "--passphrase-file", secret)
    assert old != 0, "the retired targets key signs nothing any more"
    resign: list[str | Path] = [
        "config", "resign", "--repo", repo, "--trust", trust, "--targets-key", new_key,
        "--passphrase-file", new_secret,
    ]  # fmt: skip
    assert admin(*resign) == 0
    assert sign(repo, trust, new_key, document, "--passphrase-file", new_secret) == 0
    assert publish(repo, trust, keys) == 0
    bundle = tmp_path / "bundle.tar"
    assert admin("config", "bundle", "--repo", repo, "--out", bundle, "boxes/MVB-1.toml") == 0

    client = FleetConfigClient(metadata, "MVB-1", (), no_link, AppliedState())
    accepted = client.verify_bundle(bundle.read_bytes())
    assert accepted is not None, "the box followed root v2 and the new targets key"
    assert accepted.document == document.read_bytes()


def test_a_role_or_threshold_that_is_not_one_is_refused(
    fleet: tuple[Path, Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keys, trust, secret = fleet
    base: list[str | Path] = [
        "config", "rotate-root", "--repo", repo, "--trust", trust, "--root-key",
        keys / "root-1.key", "--root-key", keys / "root-2.key", "--passphrase-file", secret,
    ]  # fmt: skip
    assert admin(*base, "--threshold", "firmware=2") == 2
    assert "ROLE" in capsys.readouterr().err
    assert admin(*base, "--threshold", "root=zero") == 2
    assert admin(*base) == 0, "no change: a renewal of the root's expiry"
