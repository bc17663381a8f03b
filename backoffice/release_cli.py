"""`mvb-admin release build|keygen|seal-keygen|delegate|sign`: the offline release bundle
(docs/releases.md 2) and releases as TUF targets of the `releases` role (7): its key (encrypted
with the ceremony's passphrase, like the targets key), the fleet's release sealing key (X25519:
the back office hands its private half to boxes at pairing), the delegation from `targets`,
and a bundle sealed and signed as a release. `config publish` then publishes it. `release
rollout|status|pause|resume|promote|rollback`: staged rollouts (backoffice/rollout_cli.py)."""

from __future__ import annotations

import argparse
import platform
from datetime import UTC, datetime
from pathlib import Path

from backoffice.config_keys_cli import TRUST_HELP, add_passphrase_file, new_passphrase, signer_from
from backoffice.fleet_keys import generate_key, load_public_key
from backoffice.fleet_releases import sign_release
from backoffice.fleet_repo import FleetRepository
from backoffice.fleet_trust_io import AdminTrust
from backoffice.release_build import build_release
from backoffice.rollout_cli import COMMANDS as ROLLOUT_COMMANDS
from backoffice.rollout_cli import add_rollout_parsers, run_rollout
from common.durable import atomic_create_bytes
from protocol.release_manifest import PLATFORMS, Manifest
from storage.envelope import RecipientPrivateKey, RecipientPublicKey


def add_release_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = sub.add_parser("release", help="software releases for the fleet")
    actions = release.add_subparsers(dest="release_command", required=True)
    build = actions.add_parser("build", help="build the offline bundle of HEAD for one platform")
    build.add_argument("--out", type=Path, required=True, help="directory for the bundle")
    build.add_argument("--repository", type=Path, default=Path(), help="a git checkout")
    build.add_argument(
        "--version",
        dest="release_version",
        help="release this version instead of pyproject.toml's (a candidate, or N+1 for a test)",
    )
    build.add_argument(
        "--platform",
        choices=PLATFORMS,
        default=platform.machine() if platform.machine() in PLATFORMS else PLATFORMS[0],
    )
    keygen = actions.add_parser("keygen", help="the releases role's signing key (NAME.key/.pub)")
    keygen.add_argument("--out", type=Path, required=True)
    add_passphrase_file(keygen)
    seal = actions.add_parser("seal-keygen", help="the fleet's release sealing key (X25519)")
    seal.add_argument("--out", type=Path, required=True, help="private key (back office only)")
    delegate = actions.add_parser("delegate", help="delegate releases/* to the releases key")
    delegate.add_argument("--repo", type=Path, required=True)
    delegate.add_argument("--trust", type=Path, required=True, help=TRUST_HELP)
    delegate.add_argument("--targets-key", type=Path, required=True)
    delegate.add_argument(
        "--releases-key", type=Path, action="append", required=True, help="a public key (.pub)"
    )
    delegate.add_argument("--threshold", type=int, default=1)
    add_passphrase_file(delegate)
    sign = actions.add_parser("sign", help="seal a bundle and sign it as a release target")
    sign.add_argument("--repo", type=Path, required=True)
    sign.add_argument("--trust", type=Path, required=True, help=TRUST_HELP)
    sign.add_argument("--bundle", type=Path, required=True)
    sign.add_argument("--releases-key", type=Path, required=True, help="the releases role's key")
    sign.add_argument("--seal-key", type=Path, required=True, help="the sealing key's .pub")
    add_passphrase_file(sign)
    add_rollout_parsers(actions)


def run_release(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    command = args.release_command
    if command in ROLLOUT_COMMANDS:
        return run_rollout(args)
    if command == "keygen":
        passphrase = new_passphrase(args, f"passphrase for {args.out.name} (empty: none): ")
        key = generate_key(args.out, passphrase or None)
        state = "encrypted" if passphrase else "NOT encrypted"
        print(f"created {args.out} ({state}) and {args.out.with_suffix('.pub')}")
        print(f"key id {key.keyid}: `release delegate` with the .pub file")
        return 0
    if command == "seal-keygen":
        private = RecipientPrivateKey.generate()
        atomic_create_bytes(args.out, private.pem().encode(), mode=0o600)
        public = private.public()
        atomic_create_bytes(args.out.with_suffix(".pub"), public.pem().encode(), mode=0o644)
        print(f"created {args.out} (the back office's, for pairing) and its .pub (for signing)")
        print(f"release key id {public.key_id.hex()}")
        return 0
    if command == "delegate":
        repo = FleetRepository(args.repo, trust=AdminTrust.load(args.trust))
        keys = [load_public_key(path) for path in args.releases_key]
        version = repo.delegate_releases(
            keys, args.threshold, signer_from(args.targets_key, args), now=now
        )
        print(f"signed targets v{version} delegating releases/* to {len(keys)} key(s), "
              f"threshold {args.threshold}; run `config publish` to release it")  # fmt: skip
        return 0
    if command == "sign":
        repo = FleetRepository(args.repo, trust=AdminTrust.load(args.trust))
        signed = sign_release(
            repo,
            args.bundle,
            RecipientPublicKey.load(args.seal_key),
            signer_from(args.releases_key, args),
            now=now,
        )
        print(f"signed {signed.target_path} ({signed.sealed_bytes} bytes sealed) in releases "
              f"v{signed.releases_version}; run `config publish` to release it")  # fmt: skip
        return 0
    bundle, manifest = build_release(
        args.repository.resolve(), args.out, args.platform, version=args.release_version
    )
    print(_summary(bundle, manifest))
    return 0


def _summary(bundle: Path, manifest: Manifest) -> str:
    size_mib = bundle.stat().st_size / 1024**2
    wheels = len(manifest.files) - 1
    commit = manifest.source_commit[:12]
    return (
        f"built {bundle} ({size_mib:.1f} MiB): release {manifest.version} for "
        f"{manifest.platform}, {wheels} wheels, commit {commit}, lock {manifest.lock_sha256[:12]}"
    )
