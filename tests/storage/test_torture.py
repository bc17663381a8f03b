"""Power cuts at random moments: SIGKILL of a real writer process, 50 times on one card; and a
SIGKILL plus a labdisk cut, a few times per mode (the long runs: `make torture`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backoffice.keys import create_recording_keys
from labdisk import LabDisk
from labdisk.durability import Mode
from storage.audit import verify_audit_log
from storage.devicekey import DevicePublicKey
from storage.envelope import RecipientPrivateKey
from tests.labdisk.conftest import fuse_ready
from tests.torture_harness import PowerCut, audit_log_path, torture

KILLS = 50


@pytest.mark.slow
def test_every_acknowledged_segment_survives_sigkill(tmp_path: Path) -> None:
    private_path, public_path = create_recording_keys(tmp_path / "backoffice")
    key = RecipientPrivateKey.load(private_path)
    result = torture(tmp_path / "box", KILLS, key, public_path, rng_seed=20261123)
    assert result.kills + result.completed_runs == KILLS
    assert result.kills >= KILLS // 2, "most runs must actually be cut off"
    assert result.recordings_checked >= KILLS // 2, "the kill must mostly land while recording"
    assert result.acked_bytes_checked > 0
    assert result.interrupted_files > 0, "some kills must land mid-file"
    device_pub = DevicePublicKey.load(tmp_path / "box" / "state" / "device_key.pub.pem")
    report = verify_audit_log(audit_log_path(tmp_path / "box").read_bytes(), device_pub)
    assert report.ok, report.first_problem


# -- on labdisk: a SIGKILL plus a real power cut (issue 14) ----------------------------------------

CUTS_PER_MODE = 6


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["strict", "ext4"])
def test_every_acknowledged_segment_survives_a_power_cut(tmp_path: Path, mode: Mode) -> None:
    """Short version of `make torture`'s labdisk runs: card and state on one labdisk, cut (with
    a torn last write) after every kill; everything the box claimed durable is checked after
    each (tests/torture_harness.py)."""
    assert fuse_ready(), "labdisk needs root, /dev/fuse and fusermount3 (apt fuse3)"
    private_path, public_path = create_recording_keys(tmp_path / "backoffice")
    key = RecipientPrivateKey.load(private_path)
    mount = tmp_path / "disk"
    with LabDisk(tmp_path / "backing", mount, mode=mode, seed=CUTS_PER_MODE) as disk:
        power = PowerCut(disk, mount)
        result = torture(tmp_path / "box", CUTS_PER_MODE, key, public_path, 20261206, power=power)
    assert power.cuts == CUTS_PER_MODE
    assert result.recordings_checked >= CUTS_PER_MODE // 2
    assert result.acked_bytes_checked > 0
    assert power.bytes_lost > 0, "the cuts must throw away what was not durable"
