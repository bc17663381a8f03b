"""The fleet-state torture, short (tests/fleet_torture.py): a few SIGKILLs plus labdisk cuts per
mode of a process that pairs, checks fleet configuration and records applied serials; after
each cut the pairing, the trust root and metadata, and the applied serial it reported are there.
`python -m bench.torture --scenario fleet` runs the long version."""

from __future__ import annotations

from pathlib import Path

import pytest

from labdisk.durability import Mode
from tests.fleet_torture import fleet_torture
from tests.labdisk.conftest import MakeDisk
from tests.torture_harness import PowerCut

pytestmark = pytest.mark.root

CUTS_PER_MODE = 4


@pytest.mark.parametrize("mode", ["strict", "ext4"])
def test_pairing_trust_and_serial_survive_power_cuts(
    make_disk: MakeDisk, tmp_path: Path, mode: Mode
) -> None:
    disk = make_disk(mode, seed=CUTS_PER_MODE)
    power = PowerCut(disk, tmp_path / "card")
    result = fleet_torture(tmp_path / "work", power, CUTS_PER_MODE, seed=20261206)
    assert result.runs == power.cuts == CUTS_PER_MODE
    assert result.pairings_claimed >= 1
    assert result.serials_claimed >= CUTS_PER_MODE // 2, "most lives must apply a document"
