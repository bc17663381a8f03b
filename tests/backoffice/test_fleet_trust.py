"""The fleet tools refuse to build on what they cannot verify (issue 13, item 4).

As found: `mvb-admin config sign` built on the newest `N.targets.json` on the server's disk
without verifying it. Someone who owns the server (and so the online keys) wrote a forged
targets file; the admin then signed an unrelated document, and the genuine targets key signed
the forged entry, which the box applied. Here the same forgery against a real repository on disk
and the real `mvb-admin config sign` / `publish`, which now verify it against the admin's own
trusted root first; then the library's rules one by one (backoffice/fleet_trust.py).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Root, Targets

from backoffice.fleet_repo import FleetRepository, FleetSigners, init_repository, load_fleet_signers
from backoffice.fleet_trust import UntrustedMetadata
from backoffice.fleet_trust_io import AdminTrust
from config.fleet_client import FleetConfigClient, install_trust_root
from config.fleet_targets import AppliedState, FleetCustom, box_target_path
from tests.config.tuf_attacks import plant, plant_root, publish_unchecked, sign_targets_unchecked

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
BOX = "MVB-1"
GENUINE = b"[recording]\nprerecord_s = 60\n"
UNRELATED = b"[recording]\nprerecord_s = 90\n"
FORGED = b'[[accounts]]\nname = "attacker"\nrole = "admin"\n'


def _now() -> datetime:
    return datetime.now(UTC)


def admin(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MVB_ADMIN), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def metadata_names(repo: Path) -> set[str]:
    return {path.name for path in (repo / "metadata").iterdir()}


def box_takes(repo: Path, tmp_path: Path) -> bytes | None:
    """What a box paired with this fleet would apply from the repository as published."""
    metadata = tmp_path / "box-metadata"
    shutil.rmtree(metadata, ignore_errors=True)
    install_trust_root(metadata, (repo / "metadata" / "1.root.json").read_bytes())

    def fetch(url_path: str, max_bytes: int) -> bytes:
        served = FleetRepository(repo).served_path(url_path)
        if served is None:
            raise DownloadHTTPError(f"{url_path} not found", 404)
        return served.read_bytes()[: max_bytes + 1]

    document = FleetConfigClient(metadata, BOX, (), fetch, AppliedState()).check()
    return None if document is None else document.document


# --- the scenario, with the real commands ------------------------------------------------


def test_config_sign_refuses_to_build_on_a_forged_targets_file(tmp_path: Path) -> None:
    repo, keys, trust = tmp_path / "repo", tmp_path / "keys", tmp_path / "trust"
    assert admin("config", "init", "--repo", repo, "--keys", keys, "--trust", trust).returncode == 0
    genuine, unrelated = tmp_path / "genuine.toml", tmp_path / "unrelated.toml"
    genuine.write_bytes(GENUINE)
    unrelated.write_bytes(UNRELATED)
    sign: list[str | Path] = ["config", "sign", "--repo", repo, "--trust", trust]
    sign += ["--targets-key", keys / "targets.key"]
    online: list[str | Path] = ["--snapshot-key", keys / "snapshot.key"]
    online += ["--timestamp-key", keys / "timestamp.key"]
    publish: list[str | Path] = ["config", "publish", "--repo", repo, "--trust", trust, *online]
    signed = admin(*sign, "--path", box_target_path(BOX), "--file", genuine, "--box", BOX)
    assert signed.returncode == 0, signed.stderr
    assert admin(*publish).returncode == 0
    assert box_takes(repo, tmp_path) == GENUINE

    # The server is owned: its online keys sign a targets file naming the attacker's document
    # for the box, and publish it. A box refuses it (not the targets key).
    server = load_fleet_signers(keys)
    unverified = FleetRepository(repo)
    forged_version = sign_targets_unchecked(
        unverified,
        {box_target_path(BOX): (FORGED, FleetCustom((BOX,), (), 99))},
        server.snapshot,
    )
    publish_unchecked(unverified, server.snapshot, server.timestamp, now=_now())
    with pytest.raises(Exception, match="targets was signed by 0/1 keys"):
        box_takes(repo, tmp_path)
    before = metadata_names(repo)

    # The admin signs an unrelated document: refused, nothing signed; publish refuses too.
    refused = admin(*sign, "--path", "boxes/MVB-2.toml", "--file", unrelated, "--box", "MVB-2")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.strip() == (
        f"mvb-admin config sign: refused, nothing signed: metadata/{forged_version}.targets.json "
        "is not signed by the fleet's targets key (root v1): someone wrote it without that key. "
        "Nothing was signed. Keep the file for the investigation, move it out of metadata/ and "
        "run the command again"
    )
    assert metadata_names(repo) == before
    held = admin("config", "hold", "--repo", repo, "--trust", trust, "--targets-key",
                 keys / "targets.key", "--path", box_target_path(BOX), "--recording", "ab" * 16,
                 "--ground", "request")  # fmt: skip
    assert held.returncode == 1
    assert "not signed by the fleet's targets key" in held.stderr
    assert admin(*publish).returncode == 1
    assert metadata_names(repo) == before
    without_trust = admin("config", "sign", "--repo", repo, "--targets-key",
                          keys / "targets.key", "--path", "boxes/MVB-2.toml", "--file", unrelated,
                          "--box", "MVB-2")  # fmt: skip
    assert without_trust.returncode == 2, "--trust is required"

    # After the investigation the forged file goes: the admin's signature covers only what
    # the admin signed, and the box never sees the attacker's document.
    evidence = tmp_path / "investigation"
    evidence.mkdir()
    (repo / "metadata" / f"{forged_version}.targets.json").rename(evidence / "forged.json")
    signed = admin(*sign, "--path", "boxes/MVB-2.toml", "--file", unrelated, "--box", "MVB-2")
    assert signed.returncode == 0, signed.stderr
    assert admin(*publish).returncode == 0, "numbers its snapshot above the forged one's"
    assert box_takes(repo, tmp_path) == GENUINE
    newest = FleetRepository(repo, trust=AdminTrust.load(trust)).verified_targets().signed
    assert (
        newest.targets[box_target_path(BOX)].hashes["sha256"] == hashlib.sha256(GENUINE).hexdigest()
    )


def test_a_second_admin_starts_trust_from_a_root_given_out_of_band(tmp_path: Path) -> None:
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    assert admin("config", "init", "--repo", repo, "--keys", keys, "--trust", tmp_path / "a")
    root_file = repo / "metadata" / "1.root.json"
    started = admin("config", "trust", "--trust", tmp_path / "b", "--root", root_file)
    assert started.returncode == 0, started.stderr
    digest = hashlib.sha256(root_file.read_bytes()).hexdigest()
    assert f"sha256 of 1.root.json: {digest}" in started.stdout
    assert "targets: 1 of [" in started.stdout
    again = admin("config", "trust", "--trust", tmp_path / "b", "--root", root_file)
    assert again.returncode == 2
    assert "already holds a trusted fleet root" in again.stderr
    not_a_root = admin("config", "trust", "--trust", tmp_path / "c", "--root", repo / "metadata"
                       / "1.targets.json")  # fmt: skip
    assert not_a_root.returncode == 1
    assert not (tmp_path / "c" / "root.json").exists()


# --- the rules, on the library -------------------------------------------------------------------


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[FleetRepository, FleetSigners]:
    repo = init_repository(tmp_path / "repo", tmp_path / "keys", now=_now())
    return repo, load_fleet_signers(tmp_path / "keys")


def _sign(repo: FleetRepository, signers: FleetSigners, serial: int) -> None:
    repo.add_config(
        box_target_path(BOX),
        GENUINE + f"# {serial}\n".encode(),
        boxes=(BOX,),
        config_serial=serial,
        targets_signer=signers.targets,
        now=_now(),
    )


def test_a_forged_root_stops_every_step(fleet: tuple[FleetRepository, FleetSigners]) -> None:
    repo, signers = fleet
    attacker = [CryptoSigner.generate_ecdsa() for _ in range(3)]
    plant_root(repo, attacker, role_keys={Root.type: [s.public_key for s in attacker]}, now=_now())
    for step in (
        lambda: _sign(repo, signers, 1),
        lambda: repo.publish(signers.snapshot, signers.timestamp, now=_now()),
        lambda: repo.next_config_serial(),
        lambda: repo.rotate_root(signers.root[:2], now=_now()),
    ):
        with pytest.raises(
            UntrustedMetadata, match=r"2\.root\.json is not signed by the threshold"
        ):
            step()


def test_a_root_beyond_a_gap_and_a_replaced_trusted_root_are_refused(
    fleet: tuple[FleetRepository, FleetSigners],
) -> None:
    repo, signers = fleet
    repo.rotate_root(signers.root[:2], now=_now())
    repo.rotate_root(signers.root[:2], now=_now())
    assert repo.verified_root().signed.version == 3
    (repo.metadata_dir / "2.root.json").unlink()
    plant(repo.metadata_dir / "4.root.json", (repo.metadata_dir / "3.root.json").read_bytes())
    (repo.metadata_dir / "3.root.json").unlink()
    with pytest.raises(UntrustedMetadata, match=r"3\.root\.json is missing or differs"):
        repo.verified_root()


def test_a_targets_rollback_is_refused(fleet: tuple[FleetRepository, FleetSigners]) -> None:
    repo, signers = fleet
    _sign(repo, signers, 1)
    _sign(repo, signers, 2)
    (repo.metadata_dir / "3.targets.json").unlink()  # the newest version removed
    with pytest.raises(UntrustedMetadata, match=r"newest targets on disk is v2, but you .* v3"):
        _sign(repo, signers, 3)


def test_a_document_swapped_on_disk_is_not_edited(
    fleet: tuple[FleetRepository, FleetSigners],
) -> None:
    repo, signers = fleet
    _sign(repo, signers, 1)
    [stored] = (repo.targets_dir / "boxes").iterdir()
    stored.write_bytes(FORGED)
    with pytest.raises(UntrustedMetadata, match="does not match the length and SHA-256"):
        repo.signed_document(box_target_path(BOX))


def test_after_a_targets_key_rotation_only_the_admins_own_targets_may_be_re_signed(
    fleet: tuple[FleetRepository, FleetSigners],
) -> None:
    repo, signers = fleet
    _sign(repo, signers, 1)
    new_key = CryptoSigner.generate_ecdsa()
    repo.rotate_root(signers.root[:2], role_keys={Targets.type: [new_key.public_key]}, now=_now())
    # The thief of the retired key wrote a targets version before the rotation took effect.
    stolen = FleetRepository(repo.repo_dir)
    sign_targets_unchecked(
        stolen,
        {box_target_path(BOX): (FORGED, FleetCustom((BOX,), (), 2**31 - 1))},
        signers.targets,
    )
    with pytest.raises(UntrustedMetadata, match=r"3\.targets\.json is not signed by the fleet's"):
        repo.sign_targets(new_key, now=_now())
    (repo.metadata_dir / "3.targets.json").unlink()
    assert repo.sign_targets(new_key, now=_now()) == 3  # the admin's own v2, re-signed
    repo.publish(signers.snapshot, signers.timestamp, now=_now())


def test_a_repository_without_the_admins_trust_can_be_read_but_not_signed(
    fleet: tuple[FleetRepository, FleetSigners],
) -> None:
    repo, signers = fleet
    served = FleetRepository(repo.repo_dir)
    assert served.root().signed.version == 1
    with pytest.raises(Exception, match="without the admin's trusted root"):
        served.publish(signers.snapshot, signers.timestamp, now=_now())
