"""Benchmark: box B's upload time while a thief with box A's certificate attacks the back office.

The real `mvb-admin serve` (pairing listener, ledger, fleet repository, every limit of
backoffice/serve_limits.py, RLIMIT_NOFILE 768), both boxes paired for real, B uploading with the
box's own tus session over its pinned link (tests/backoffice/attack_rig.py). The thief, in a
process of its own from an address of its own, floods as issue 13 found it: creations as fast as
it is answered, 260 slow POSTs at 2 KiB/s reconnecting as soon as answered, 450 bare TCP
connections to the pairing port reopened as soon as closed.

Each round uploads B's file `--uploads` times quiet, then starts the thief, lets it run for
`--settle-s`, uploads as many times under attack, and stops it; the quiet and attacked uploads
of a round are back to back, so a busy machine taxes both alike. Printed: the median times per
round and their ratio, the ratio of the medians over all rounds with the range of the per-round
ratios, the back office's CPU share while only the thief talks to it, and what the thief got.

`--thief-priority idle` (the default) runs the thief at nice 19: on a machine of its own it would
take nothing from the back office's CPU, and on this shared one it then takes only what box B
and the back office leave idle, so the ratio measures the back office's own work for the
attack. `equal` shows what sharing two cores with the attacker costs on top.

Run: `python -m bench.backoffice_attack [--rounds 5] [--uploads 5] [--mib 32]`
(`make bench-backoffice`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import tempfile
import time
from pathlib import Path

from tests.backoffice.attack_rig import (
    BOX_A,
    BOX_B,
    BackOffice,
    Box,
    back_office,
    evidence_file,
    paired_box,
    thief_attacking,
    upload,
)
from tests.tls_helpers import make_test_pki


async def _uploads(office: BackOffice, box: Box, path: Path, tag: str, count: int) -> float:
    times = []
    for number in range(count):
        outcome, seconds = await upload(office, box, path, f"{tag}-{number}")
        if outcome.attested_sha256_hex is None:
            raise RuntimeError("box B's upload was not attested")
        times.append(seconds)
    return statistics.median(times)


async def _run(args: argparse.Namespace, root: Path) -> None:
    pki = make_test_pki(root / "pki")
    with back_office(pki, root / "office") as office:
        thief = await paired_box(office, BOX_A)
        honest = await paired_box(office, BOX_B)
        evidence = evidence_file(root, "b.mvbe", args.mib << 20)
        await _uploads(office, honest, evidence, "warm", 2)
        ratios, quiet_all, attacked_all, cpu_shares = [], [], [], []
        totals: collections.Counter[str] = collections.Counter()
        print(f"box B uploads {args.mib} MiB in 4 MiB chunks; median of {args.uploads} per phase")
        print("| round | quiet s | attacked s | ratio | back office CPU share, attack only |")
        print("|---:|---:|---:|---:|---:|")
        for number in range(1, args.rounds + 1):
            quiet_s = await _uploads(office, honest, evidence, f"q{number}", args.uploads)
            yields = args.thief_priority == "idle"
            with thief_attacking(office, thief, yields=yields) as counts:
                cpu_before, wall_before = office.cpu_s(), time.monotonic()
                await asyncio.sleep(args.settle_s)
                share = (office.cpu_s() - cpu_before) / (time.monotonic() - wall_before)
                attacked_s = await _uploads(office, honest, evidence, f"a{number}", args.uploads)
            totals.update(counts)
            ratio = attacked_s / quiet_s
            ratios.append(ratio)
            quiet_all.append(quiet_s)
            attacked_all.append(attacked_s)
            cpu_shares.append(share)
            print(f"| {number} | {quiet_s:.3f} | {attacked_s:.3f} | {ratio:.2f} | {share:.2f} |")
        overall = statistics.median(attacked_all) / statistics.median(quiet_all)
        print(
            f"\nratio of medians (attacked / quiet): {overall:.2f} "
            f"(per round {min(ratios):.2f}..{max(ratios):.2f}); back office CPU share under "
            f"attack alone: median {statistics.median(cpu_shares):.2f} of one core"
        )
        print("what the thief got:", dict(sorted(totals.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uploads", type=int, default=5, help="uploads per phase of a round")
    parser.add_argument("--mib", type=int, default=32, help="size of box B's file")
    parser.add_argument("--settle-s", type=float, default=2.0, help="attack alone before B")
    parser.add_argument("--thief-priority", choices=("idle", "equal"), default="idle")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mvb-attack-") as directory:
        asyncio.run(_run(args, Path(directory)))


if __name__ == "__main__":
    main()
