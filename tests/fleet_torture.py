"""The fleet-state torture (issue 14): pairing, fleet checks and applied serials through power cuts.

A child process plays both sides in a loop: the back office publishes a new document for the box
(and now and then renews its root, so the box walks a rotation), and the box re-pairs now and
then (`install_credentials`), checks (`FleetConfigClient.check` over the repository's files) and
records the applied serial (`fleet-state.json`), printing each claim once it returned:
`PAIRING n` / `PAIRED n`, `APPLIED serial`, `ROOT version`. The parent SIGKILLs it at a random
moment, cuts the labdisk that holds the state directory, and checks what the box claimed:

- paired: the pairing directory is whole and holds the last pairing it reported (or a later one
  whose install finished unreported);
- the trust root and the metadata: every file in `fleet-metadata/` is whole, the root is at least
  the version it reported, and a new check starts from it without a repair;
- the applied serial is at least the one it reported, unless a re-pair (which forgets it by
  design, docs/fleet-config.md 8) was under way at the cut.

The repository lives outside the card (it is the back office's). Used by
tests/labdisk/test_fleet_torture.py (short) and bench/torture.py `--scenario fleet` (long). Run
as a script, this module is the child: `python -m tests.fleet_torture WORK STATE SEED`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tuf.api.exceptions import RepositoryError

from backoffice.fleet_repo import FleetRepository, init_repository, load_fleet_signers
from backoffice.fleet_trust_io import AdminTrust
from common.durable import atomic_write_text
from config.fleet_client import FleetConfigClient
from config.fleet_store import checked_root, trusted_root
from config.fleet_targets import AppliedState, box_target_path
from gateway.fleet_sync import STATE_FILE
from gateway.pairing import PairedCredentials
from gateway.pairing_client import (
    CLIENT_CERT_FILE,
    fleet_metadata_dir,
    install_credentials,
    is_paired,
    pairing_files,
    recover_pairing_dir,
)
from protocol.pairing_messages import ServiceEndpoint
from tests.config.test_fleet_client import RepoLink
from tests.torture_harness import PowerCut

BOX = "MVB-FLEET-TORTURE"
RE_PAIR_CHANCE = 0.15
ROOT_RENEW_CHANCE = 0.1
PIN = "sha256/" + "A" * 43 + "="
PROGRESS_EVERY = 25


def credentials(marker: int, root_json: bytes) -> PairedCredentials:
    """Credentials told apart by `marker` (in the client certificate's bytes: only this torture
    reads them back)."""
    return PairedCredentials(
        box_id=BOX,
        address="127.0.0.1:8443",
        certificate_pem=f"CERT {marker}\n".encode(),
        key_pem=f"KEY {marker}\n".encode(),
        ca_certificate_pem=b"CA\n",
        pins=(PIN,),
        tuf_root=root_json,
        service=ServiceEndpoint.of("127.0.0.1:8443", "backoffice.test", 0),
    )


def applied_state(state_dir: Path) -> AppliedState:
    try:
        return AppliedState.from_json((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return AppliedState()


def child_main(work: Path, state_dir: Path, seed: int) -> None:
    rng = random.Random(seed)
    repo = FleetRepository(work / "repo", trust=AdminTrust.load(work / "trust"))
    signers = load_fleet_signers(work / "keys")
    marker = seed * 1000
    print("READY", flush=True)  # the kill's delay counts from here, not from Python's start
    if not _usable_trust(state_dir) or rng.random() < RE_PAIR_CHANCE:
        marker += 1
        print(f"PAIRING {marker}", flush=True)
        install_credentials(state_dir, credentials(marker, repo.trust_root_bytes()), re_pair=True)
        print(f"PAIRED {marker}", flush=True)
    while True:
        now = datetime.now(UTC)
        if rng.random() < ROOT_RENEW_CHANCE:
            repo.rotate_root(signers.root, now=now)
        repo.add_config(
            box_target_path(BOX),
            f"[recording]\nprerecord_s = {rng.randint(5, 60)}\n".encode(),
            boxes=(BOX,),
            config_serial=repo.next_config_serial(),
            targets_signer=signers.targets,
            now=now,
        )
        repo.publish(signers.snapshot, signers.timestamp, now=now)
        metadata = fleet_metadata_dir(state_dir)
        client = FleetConfigClient(metadata, BOX, (), RepoLink(repo), applied_state(state_dir))
        document = client.check()
        if document is not None:
            state = client.record_applied(document)
            atomic_write_text(state_dir / STATE_FILE, state.to_json(), mode=0o600)
            print(f"APPLIED {document.config_serial}", flush=True)
        print(f"ROOT {checked_root((metadata / 'root.json').read_bytes())}", flush=True)
        time.sleep(rng.uniform(0, 0.05))


def _usable_trust(state_dir: Path) -> bool:
    """Paired, with a trust root to check from (a re-pair cut short may leave neither: the
    admin pairs again, as this child does)."""
    if not is_paired(state_dir):
        return False
    try:
        trusted_root(fleet_metadata_dir(state_dir))
    except RepositoryError:
        return False
    return True


@dataclass
class Claims:
    """What the child reported (the parent's memory of the box's promises). A re-pair under way
    at the cut (`PAIRING` without `PAIRED`) promised nothing: the state found is the new
    baseline (`rebase`)."""

    paired: int = 0
    serial: int = 0
    root_version: int = 0
    pairing_interrupted: bool = False

    def take(self, output: str) -> None:
        for line in output.splitlines():
            word, _, value = line.partition(" ")
            if word == "PAIRING":
                self.pairing_interrupted = True
            elif word == "PAIRED":
                self.paired, self.serial, self.root_version = int(value), 0, 0
                self.pairing_interrupted = False
            elif word == "APPLIED":
                self.serial = int(value)
            elif word == "ROOT":
                self.root_version = max(self.root_version, int(value))

    def rebase(self, state_dir: Path) -> None:
        self.pairing_interrupted = False
        self.paired = _marker(state_dir) if is_paired(state_dir) else 0
        self.serial = applied_state(state_dir).config_serial
        try:
            self.root_version = checked_root(trusted_root(fleet_metadata_dir(state_dir)).root_bytes)
        except RepositoryError:
            self.root_version = 0  # the child pairs again at its start


def _marker(state_dir: Path) -> int:
    cert = pairing_files(state_dir).directory / CLIENT_CERT_FILE
    return int(cert.read_text().split()[1])


@dataclass
class FleetTortureResult:
    runs: int = 0
    pairings_claimed: int = 0
    serials_claimed: int = 0
    pairings_interrupted: int = 0


def check_claims(state_dir: Path, claims: Claims) -> None:
    """AssertionError naming what the box lost of what it claimed (module docstring)."""
    recover_pairing_dir(state_dir)  # as `mvb run` does at start
    if claims.pairing_interrupted:
        claims.rebase(state_dir)
        return
    if not claims.paired:
        return  # not paired yet
    assert is_paired(state_dir), "the box said paired; the pairing directory is gone"
    marker = _marker(state_dir)
    assert marker == claims.paired, f"pairing {claims.paired} reported, {marker} on disk"
    pairing_files(state_dir).pins()  # whole and valid
    metadata = fleet_metadata_dir(state_dir)
    trust = trusted_root(metadata)
    assert trust.repaired is None, f"fleet metadata torn: {trust.repaired}"
    for path in metadata.rglob("*"):
        assert path.is_dir() or path.stat().st_size > 0, f"{path.name} is empty after the cut"
    version = checked_root(trust.root_bytes)
    assert version >= claims.root_version, f"root v{claims.root_version} lost (v{version})"
    serial = applied_state(state_dir).config_serial
    assert serial >= claims.serial, f"applied serial {claims.serial} lost ({serial})"


def fleet_torture(
    work: Path,
    power: PowerCut,
    runs: int,
    seed: int,
    max_delay_s: float = 1.0,
    progress: Callable[[FleetTortureResult], None] | None = None,
) -> FleetTortureResult:
    """`runs` lives of the child, each SIGKILLed and cut; the checks after every one;
    `progress(result so far)` every PROGRESS_EVERY runs."""
    init_repository(work / "repo", work / "keys", now=datetime.now(UTC), trust_dir=work / "trust")
    power.prepare()
    state_dir = power.mount / "state"
    rng = random.Random(seed)
    claims = Claims()
    result = FleetTortureResult()
    for run in range(runs):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fleet_torture",
                str(work),
                str(state_dir),
                str(seed + run),
            ],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert child.stdout is not None
        ready = child.stdout.readline()
        assert ready == b"READY\n", f"the child did not start: {ready!r}"
        time.sleep(rng.uniform(0.0, max_delay_s))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()  # waits until it has exited: nothing lands after the cut
        power.cut()
        claims.take(out.decode())
        result.runs += 1
        result.pairings_claimed += out.count(b"PAIRED ")
        result.serials_claimed += out.count(b"APPLIED ")
        result.pairings_interrupted += int(claims.pairing_interrupted)
        try:
            check_claims(state_dir, claims)
        except RepositoryError as error:
            raise AssertionError(f"run {run}: the box lost its fleet trust: {error}") from error
        if progress is not None and result.runs % PROGRESS_EVERY == 0:
            progress(result)
    return result


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    child_main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
