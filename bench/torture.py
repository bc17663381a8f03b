"""Power-cut torture in bench mode: as many cuts as asked, with recovery time per start.

Run: `python -m bench.torture [--kills 500] [--seed N] [--power sigkill|strict|ext4]
[--max-delay-s 1.2] [--scenario evidence|fleet]`.
`sigkill` (the default) kills the writer only: the page cache keeps every byte, so it proves
recovery, not durability. `strict` and `ext4` put the card and the state directory on a labdisk
(labdisk/) and cut its power after every kill, with a torn last write (issue 14): what the box
claimed durable must survive (tests/torture_harness.py). The suite runs the same harness with
50 SIGKILLs and a few labdisk cuts per mode.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backoffice.keys import create_recording_keys
from gateway.box import AUDIT_LOG_NAME
from labdisk import LabDisk
from labdisk.durability import Mode
from storage.audit import format_report, verify_audit_log
from storage.devicekey import DevicePublicKey
from storage.envelope import RecipientPrivateKey
from tests.fleet_torture import FleetTortureResult, fleet_torture
from tests.torture_harness import PowerCut, TortureResult, torture

SCENARIOS = (
    "evidence: a recording writer (tests/torture_harness.py); fleet: pairing, fleet checks and "
    "applied serials (tests/fleet_torture.py, labdisk only)"
)


@contextlib.contextmanager
def power_for(power: str, root: Path, seed: int) -> Iterator[PowerCut | None]:
    """None for SIGKILL only; else a labdisk in that mode, unmounted at the end."""
    if power == "sigkill":
        yield None
        return
    mode: Mode = "strict" if power == "strict" else "ext4"
    mount = root / "disk"
    with LabDisk(root / "backing", mount, mode=mode, seed=seed) as disk:
        yield PowerCut(disk, mount)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--power", choices=("sigkill", "strict", "ext4"), default="sigkill")
    parser.add_argument(
        "--max-delay-s", type=float, default=1.2, help="kill at a random moment up to this"
    )
    parser.add_argument(
        "--scenario", choices=("evidence", "fleet"), default="evidence", help=SCENARIOS
    )
    args = parser.parse_args()
    if args.scenario == "fleet":
        fleet_main(args)
        return
    with tempfile.TemporaryDirectory(prefix="mvb-torture-") as tmp:
        root = Path(tmp)
        private_path, public_path = create_recording_keys(root / "backoffice")
        key = RecipientPrivateKey.load(private_path)
        started = time.perf_counter()
        result, cuts, audit_entries = TortureResult(), CutTotals(), 0
        for batch, kills in enumerate(batches(args.kills)):
            # A fresh card per batch of 25 (each with its own seeds): a card that only grows
            # slows the writer's start through FUSE until few cuts land while it records. A
            # line per batch: a long run cut short still says how far it got.
            batch_root, batch_seed = root / f"batch-{batch}", args.seed * 1000 + batch
            with power_for(args.power, batch_root, batch_seed) as power:
                part = torture(
                    batch_root / "box",
                    kills,
                    key,
                    public_path,
                    batch_seed,
                    max_delay_s=args.max_delay_s,
                    power=power,
                )
                data = batch_root / "box" if power is None else power.mount
                audit_entries += checked_audit(data / "state")
                cuts.add(power, *card_totals(data / "card"))
            add_into(result, part)
            print_progress(result, cuts if power else None, time.perf_counter() - started)
            shutil.rmtree(batch_root)
        elapsed_s = time.perf_counter() - started
    print_report(args, elapsed_s, result, cuts if args.power != "sigkill" else None)
    print(f"- audit logs: {audit_entries} entries, every chain and signature verifies")


@dataclass
class CutTotals:
    """The labdisk cuts of all batches, and what their cards held at the end."""

    cuts: int = 0
    bytes_lost: int = 0
    files_restored: int = 0
    entries_reverted: int = 0
    torn_pages_kept: int = 0
    torn_pages: int = 0
    card_files: int = 0
    card_bytes: int = 0

    def add(self, power: PowerCut | None, card_files: int, card_bytes: int) -> None:
        self.card_files += card_files
        self.card_bytes += card_bytes
        if power is not None:
            self.cuts += power.cuts
            self.bytes_lost += power.bytes_lost
            self.files_restored += power.files_restored
            self.entries_reverted += power.entries_reverted
            self.torn_pages_kept += power.torn_pages_kept
            self.torn_pages += power.torn_pages


def checked_audit(state: Path) -> int:
    """The whole chain of one card's box verifies; its entries. SystemExit(1) otherwise."""
    device = DevicePublicKey.load(state / "device_key.pub.pem")
    audit = verify_audit_log((state / AUDIT_LOG_NAME).read_bytes(), device)
    if not audit.ok:
        print(f"- {format_report(audit)}")
        raise SystemExit(1)
    return audit.entries


BATCH_KILLS = 25


def batches(kills: int) -> list[int]:
    return [min(BATCH_KILLS, kills - done) for done in range(0, kills, BATCH_KILLS)]


def add_into(total: TortureResult, part: TortureResult) -> None:
    total.kills += part.kills
    total.completed_runs += part.completed_runs
    total.recordings_checked += part.recordings_checked
    total.acked_bytes_checked += part.acked_bytes_checked
    total.interrupted_files += part.interrupted_files
    total.recovery_s += part.recovery_s


def print_progress(result: TortureResult, power: CutTotals | None, elapsed_s: float) -> None:
    runs = result.kills + result.completed_runs
    cut = "" if power is None else f", {power.cuts} cuts, {power.bytes_lost / 1e6:.1f} MB lost"
    print(
        f"... {runs} runs checked in {elapsed_s:.0f} s{cut}, "
        f"{result.recordings_checked} recordings, {result.acked_bytes_checked / 1e6:.1f} MB "
        "acknowledged media verified: nothing lost",
        flush=True,
    )


def fleet_main(args: argparse.Namespace) -> None:
    """The fleet-state torture (tests/fleet_torture.py) on a labdisk."""
    if args.power == "sigkill":
        raise SystemExit("--scenario fleet needs --power strict or ext4")
    with tempfile.TemporaryDirectory(prefix="mvb-fleet-torture-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        with power_for(args.power, root, args.seed) as power:
            assert power is not None
            began = time.perf_counter()

            def progress(so_far: FleetTortureResult) -> None:
                print(
                    f"... {so_far.runs} runs checked in {time.perf_counter() - began:.0f} s: "
                    f"{so_far.pairings_claimed} pairings, {so_far.serials_claimed} serials "
                    "claimed, nothing lost",
                    flush=True,
                )

            result = fleet_torture(
                root / "work", power, args.kills, args.seed, args.max_delay_s, progress
            )
            card_files, card_bytes = card_totals(power.mount / "state")
    print(f"# bench/torture.py --scenario fleet: {args.kills} runs, power {args.power}, seed "
          f"{args.seed}")  # fmt: skip
    print(f"- wall time: {time.perf_counter() - started:.0f} s")
    print(
        f"- labdisk cuts: {power.cuts}; thrown away: {power.bytes_lost / 1e6:.2f} MB not "
        f"durable, {power.files_restored} files restored, {power.entries_reverted} directory "
        f"entries reverted"
    )
    print(
        f"- claims checked: {result.pairings_claimed} pairings, {result.serials_claimed} applied "
        f"serials; re-pairs cut short (nothing claimed): {result.pairings_interrupted}"
    )
    print(f"- state directory at the end: {card_files} files, {card_bytes / 1e3:.0f} kB")
    print("- lost: nothing (every check passed after every cut)")


def card_totals(card: Path) -> tuple[int, int]:
    files = [path for path in card.rglob("*") if path.is_file()]
    return len(files), sum(path.stat().st_size for path in files)


def print_report(
    args: argparse.Namespace, elapsed_s: float, result: TortureResult, cuts: CutTotals | None
) -> None:
    print(f"# bench/torture.py: {args.kills} runs, power {args.power}, seed {args.seed}")
    print(f"- wall time: {elapsed_s:.0f} s")
    print(f"- killed mid-run: {result.kills}; finished before the kill: {result.completed_runs}")
    if cuts is not None:
        print(
            f"- labdisk cuts: {cuts.cuts}; thrown away: {cuts.bytes_lost / 1e6:.1f} MB not "
            f"durable, {cuts.files_restored} files restored, {cuts.entries_reverted} "
            f"directory entries reverted, torn pages kept {cuts.torn_pages_kept} of "
            f"{cuts.torn_pages}"
        )
    print(f"- recordings checked byte-exact: {result.recordings_checked}")
    print(f"- acknowledged media verified: {result.acked_bytes_checked / 1e6:.1f} MB")
    print(f"- files recovered as interrupted: {result.interrupted_files}")
    if cuts is not None:
        print(f"- on the cards at the end: {cuts.card_files} files, {cuts.card_bytes / 1e6:.1f} MB")
    print(
        f"- recovery at start: median {statistics.median(result.recovery_s) * 1000:.1f} ms, "
        f"max {max(result.recovery_s) * 1000:.1f} ms"
    )
    print("- lost: nothing (every check passed after every cut)")


if __name__ == "__main__":
    main()
