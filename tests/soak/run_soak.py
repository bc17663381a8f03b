"""`make soak`: the whole-box soak for as long as asked, with a summary at the end.

    python -m tests.soak.run_soak --minutes 30 [--seed S] [--kills 22] [--keep DIR]
                                  [--power strict|ext4|none]

`--power` (default strict): the box's card and state directory on a labdisk, cut after every
SIGKILL in that mode (real power-loss semantics, issue 14); `none`: SIGKILL only.

Exit status 0 when the oracle found nothing, 1 when it did (the problems are listed), 2 when the
soak itself could not run to its end (the traceback says where). The seed is printed first:
`--seed S` replays the same script of cycles.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

from labdisk.durability import Mode
from tests.soak.soak_rig import run_soak
from tests.soak.soak_settings import SoakSettings
from tests.tls_helpers import make_test_pki


def power_mode(name: str) -> Mode | None:
    if name == "none":
        return None
    return "strict" if name == "strict" else "ext4"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="wall time to keep cycling")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--kills", type=int, default=22, help="at least this many power cuts")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    parser.add_argument("--power", choices=("strict", "ext4", "none"), default="strict")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    settings = SoakSettings(
        seed=seed,
        min_kills=args.kills,
        minutes=args.minutes,
        drain_timeout_s=max(180.0, args.minutes * 20),
        power=power_mode(args.power),
    )
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: not empty (a soak starts from nothing)")
    with tempfile.TemporaryDirectory(prefix="mvb-soak-") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(run_soak(settings, root / "soak", make_test_pki(root / "pki")))
        print(report.summary(), flush=True)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
