"""Sizes and times of a release update's own steps (issue 17 item 2; docs/benchmarks.md):
`python -m bench.release_fetch [--bundle B]`.

The real release bundle of this tree (built here unless `--bundle` names one), sealed to a
fleet release key and signed into the `releases` role of a fleet repository
(backoffice/fleet_releases.py); then the box's steps, each timed: ngclient's verification and
download of the sealed release (config/release_client.py, served from the repository's files:
the link's time is the size over its rate, printed for 200 kbit/s and 5 Mbit/s), the seal
opened and checked against the signed manifest (gateway/release_update.py `open_checked`), the
offline install (gateway/release_install.py). Baselines in the same run: one SHA-256 pass and
one plain copy of the bundle's bytes (what any handling of 48 MiB costs on this machine).
The A/B switch after it is bench.release_update's. About 1-2 minutes; run it niced.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from backoffice.fleet_releases import bundle_custom, sign_release
from backoffice.release_build import build_release
from config.release_client import ReleaseClient
from gateway.release_install import install_release
from gateway.release_update import open_checked
from tests.release_target_helpers import paired_metadata, release_fleet, repo_fetch

REPOSITORY = Path(__file__).resolve().parents[1]
LINKS_BIT_PER_S = {"200 kbit/s": 200e3, "5 Mbit/s": 5e6}


def timed(step: str, figures: list[str], action: object) -> float:
    started = time.monotonic()
    assert callable(action)
    action()
    seconds = time.monotonic() - started
    figures.append(f"{step}: {seconds:.2f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, help="a bundle of `mvb-admin release build`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mvb-bench-release-fetch-") as work_text:
        work = Path(work_text)
        bundle = args.bundle
        if bundle is None:
            machine = os.uname().machine
            bundle, _ = build_release(REPOSITORY, work / "bundles", machine, version="1.0.1")
        custom = bundle_custom(bundle)
        fleet = release_fleet(work / "office")
        figures: list[str] = []
        now = datetime.now(UTC)
        seal_s = timed(
            "seal + sign (back office)",
            figures,
            lambda: sign_release(
                fleet.repo, bundle, fleet.seal_key.public(), fleet.releases_signer, now=now
            ),
        )
        fleet.publish()
        plain_bytes = bundle.stat().st_size
        sealed_bytes = sum(
            p.stat().st_size for p in (fleet.repo.targets_dir / "releases").iterdir()
        )
        box = work / "box"
        box.mkdir()
        client = ReleaseClient(
            paired_metadata(box / "metadata", fleet.repo),
            repo_fetch(fleet.repo),
            platform=custom.platform,
        )
        sealed, opened = box / "release.sealed", box / "release.tar"
        fetch_s = timed(
            "ngclient verify + download (from disk)",
            figures,
            lambda: client.fetch_release(custom.version, sealed),
        )
        open_s = timed(
            "open the seal + check the manifest",
            figures,
            lambda: open_checked(sealed, opened, fleet.seal_key, custom),
        )
        sha_s = timed("baseline: SHA-256 of the bundle", figures, lambda: _sha256(bundle))
        copy_s = timed("baseline: copy of the bundle", figures, lambda: _copy(bundle, box))
        install_s = timed(
            "offline install", figures, lambda: install_release(opened, box / "releases")
        )
        print(f"bundle {plain_bytes / 1024**2:.1f} MiB, sealed {sealed_bytes / 1024**2:.1f} MiB "
              f"(+{sealed_bytes - plain_bytes} bytes)")  # fmt: skip
        for line in figures:
            print(line)
        print(f"open / SHA-256: {open_s / sha_s:.1f}x; open / copy: {open_s / copy_s:.1f}x")
        print(f"fetch / SHA-256: {fetch_s / sha_s:.1f}x; seal+sign / open: {seal_s / open_s:.1f}x")
        for name, rate in LINKS_BIT_PER_S.items():
            print(f"the sealed release over {name}: {sealed_bytes * 8 / rate / 60:.1f} min")
        print(f"box's steps without the link: {fetch_s + open_s + install_s:.1f} s")


def _sha256(path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(1024 * 1024):
            digest.update(piece)


def _copy(path: Path, directory: Path) -> None:
    shutil.copyfile(path, directory / "copy.tar")
    os.sync()


if __name__ == "__main__":
    main()
