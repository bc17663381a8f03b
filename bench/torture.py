"""Power-cut torture in bench mode: as many SIGKILLs as asked, with recovery time per start.

Run: `python -m bench.torture [--kills 500] [--seed N]`. The suite runs the same harness with 50.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from backoffice.keys import create_recording_keys
from storage.audit import format_report, verify_audit_log
from storage.devicekey import DevicePublicKey
from storage.envelope import RecipientPrivateKey
from tests.torture_harness import audit_log_path, torture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mvb-torture-") as tmp:
        root = Path(tmp)
        private_path, public_path = create_recording_keys(root / "backoffice")
        started = time.perf_counter()
        result = torture(
            root / "box", args.kills, RecipientPrivateKey.load(private_path), public_path, args.seed
        )
        elapsed_s = time.perf_counter() - started
        device = DevicePublicKey.load(root / "box" / "state" / "device_key.pub.pem")
        audit = verify_audit_log(audit_log_path(root / "box").read_bytes(), device)
    print(f"# bench/torture.py: {args.kills} runs, seed {args.seed}, {elapsed_s:.0f} s")
    print(f"- killed mid-run: {result.kills}; finished before the kill: {result.completed_runs}")
    print(f"- recordings checked byte-exact: {result.recordings_checked}")
    print(f"- acknowledged media verified: {result.acked_bytes_checked / 1e6:.1f} MB")
    print(f"- files recovered as interrupted: {result.interrupted_files}")
    print(
        f"- recovery at start: median {statistics.median(result.recovery_s) * 1000:.1f} ms, "
        f"max {max(result.recovery_s) * 1000:.1f} ms"
    )
    print(f"- {format_report(audit)}")
    if not audit.ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
