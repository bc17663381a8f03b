"""Power cuts at random moments (SIGKILL of a real writer process), 50 times on one card."""

from __future__ import annotations

from pathlib import Path

import pytest

from backoffice.keys import create_recording_keys
from storage.audit import verify_audit_log
from storage.devicekey import DevicePublicKey
from storage.envelope import RecipientPrivateKey
from tests.torture_harness import audit_log_path, torture

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
