"""Releases as TUF targets, the pure core shared by the box and the back office
(docs/releases.md 6 and 7).

A release is a target of the `releases` role, which the top-level `targets` role delegates with
its own keys and threshold, for the paths `releases/*` only. Its path names version and
platform (`releases/mvb-<version>-<platform>.sealed`), its bytes are the sealed bundle
(storage/release_seal.py), and its signed custom fields repeat version and platform and add the
SHA-256 of the bundle's manifest (`ReleaseCustom`): after opening the seal the box checks that
the bundle is the one the releases key signed for, not merely one that decrypts.

What a box does with a pinned version (`judge_pin`, docs/releases.md 7.3): nothing when it runs
that version; refuse one its own health check rolled back (`release_failed_health`) while the
switch's last outcome is that rollback; switch back, with no fetch, to a lower one that is the
release the box ran before (the A/B switch's `previous`, still installed): a fleet's rollback;
refuse any other lower one (`release_downgrade`); fetch a higher one. Versions are ordered by
PEP 440 for the subset release_manifest.is_version accepts (`version_key`).

Invariants: custom fields are closed (exactly version, platform, manifest_sha256, each checked);
a release target found anywhere but in the `releases` role is refused
(`release_not_delegated`); nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from tuf.api.exceptions import RepositoryError

from common.faults import RemoteFault
from protocol.release_manifest import PLATFORMS, is_version

RELEASES_ROLE: Final = "releases"
RELEASES_DIR: Final = "releases"
RELEASE_PATH_PATTERN: Final = f"{RELEASES_DIR}/*"
SEALED_SUFFIX: Final = ".sealed"
RELEASE_KEY_PATH: Final = "/fleet/release-key"
"""Where a paired box fetches the fleet's release key over its pinned mutual-TLS link."""
MAX_RELEASE_BYTES: Final = 512 * 1024 * 1024
"""A sealed release larger than this (by its signed length) is refused before it is fetched."""
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_VERSION_PARTS: Final = re.compile(
    r"(?P<release>[0-9]+(?:\.[0-9]+)*)(?:(?P<pre>a|b|rc)(?P<pre_n>[0-9]+))?"
    r"(?:\.post(?P<post>[0-9]+))?(?:\.dev(?P<dev>[0-9]+))?"
)
_PRE_RANK: Final = {"a": 0, "b": 1, "rc": 2}


class ReleaseRefused(RepositoryError, RemoteFault):
    """A release this box must not install although what signed it may verify. `code` is the
    refusal code reported (gateway/fleet_refusals.py)."""

    code = "release_refused"


class ReleaseDowngrade(ReleaseRefused):
    code = "release_downgrade"


class ReleaseFailedHealth(ReleaseRefused):
    """The pinned release was installed and switched to here, and the box's own health check
    rolled it back: it is not fetched and tried again while the switch's last outcome is that
    rollback (a loop of fetch, switch, rollback otherwise)."""

    code = "release_failed_health"


class ReleaseNotDelegated(ReleaseRefused):
    """The release is not a target of the `releases` role (signed by another role's key)."""

    code = "release_not_delegated"


class ReleaseMismatch(ReleaseRefused):
    """The opened bundle is not the one the signed custom fields describe, or its path and
    fields disagree."""

    code = "release_mismatch"


class ReleaseMissing(ReleaseRefused):
    """No release of the pinned version for this box's platform is signed."""

    code = "release_missing"


class PinVerdict(StrEnum):
    CURRENT = "current"  # the box runs the pinned version: nothing to do
    DOWNGRADE = "downgrade"  # lower than the running one and not the previous: refused
    SWITCH_BACK = "switch_back"  # lower, the release this box ran before: switch, no fetch
    FAILED_HEALTH = "failed_health"  # the box's health check rolled it back: refused
    UPGRADE = "upgrade"  # higher: fetch, open, install, switch


@dataclass(frozen=True, slots=True)
class SwitchHistory:
    """What the box's A/B switch says about releases other than the running one.

    `previous`: the release the box ran before its last switch, still completely installed
    (the release root's `previous` link), or None. `rolled_back`: the release the last
    finished switch rolled back (its health check failed), or None when the last switch
    succeeded or there was none."""

    previous: str | None = None
    rolled_back: str | None = None


def version_key(version: str) -> tuple[Any, ...]:
    """A sort key ordering versions as PEP 440 does (for is_version's subset); ValueError for
    another text."""
    match = _VERSION_PARTS.fullmatch(version)
    if match is None or not is_version(version):
        raise ValueError(f"{version!r} is not a release version")
    release = [int(part) for part in match["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()  # 1.0 == 1.0.0
    if match["pre"] is not None:
        pre: tuple[int, ...] = (0, _PRE_RANK[match["pre"]], int(match["pre_n"]))
    elif match["post"] is None and match["dev"] is not None:
        pre = (-1,)  # 1.0.dev1 comes before 1.0a1
    else:
        pre = (1,)
    post = (-1,) if match["post"] is None else (int(match["post"]),)
    dev = (1, 0) if match["dev"] is None else (0, int(match["dev"]))
    return (tuple(release), pre, post, dev)


def judge_pin(pinned: str, running: str, history: SwitchHistory) -> PinVerdict:
    """What a box running `running` does with the pinned version (ValueError: `pinned` or
    `running` not versions; a `history` entry that is not a version counts as absent).

    A rollback is not a downgrade attack: a lower pin is taken only when it is exactly the
    release this box ran before (still installed, verified when it was installed), and only as
    a switch back to it; any other lower pin could be an old, vulnerable release an attacker
    replays, and is refused."""
    pinned_key, running_key = version_key(pinned), version_key(running)
    if pinned_key == running_key:
        return PinVerdict.CURRENT
    if _same_version(history.rolled_back, pinned_key):
        return PinVerdict.FAILED_HEALTH
    if pinned_key > running_key:
        return PinVerdict.UPGRADE
    if _same_version(history.previous, pinned_key):
        return PinVerdict.SWITCH_BACK
    return PinVerdict.DOWNGRADE


def _same_version(version: str | None, key: tuple[Any, ...]) -> bool:
    if version is None:
        return False
    try:
        return version_key(version) == key
    except ValueError:
        return False


def release_target_path(version: str, platform: str) -> str:
    """`releases/mvb-<version>-<platform>.sealed` (ValueError for a bad version or platform)."""
    if not is_version(version) or platform not in PLATFORMS:
        raise ValueError(f"no release path for version {version!r} on platform {platform!r}")
    return f"{RELEASES_DIR}/mvb-{version}-{platform}{SEALED_SUFFIX}"


@dataclass(frozen=True, slots=True)
class ReleaseCustom:
    """The signed custom fields of a release target."""

    version: str
    platform: str
    manifest_sha256: str

    def to_custom(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "platform": self.platform,
            "manifest_sha256": self.manifest_sha256,
        }


def parse_release_custom(target_path: str, custom: object) -> ReleaseCustom:
    """The custom fields of the release target at `target_path`; ReleaseMismatch when they are
    not exactly the three fields, valid, and agreeing with the path."""
    if not isinstance(custom, dict) or set(custom) != {"version", "platform", "manifest_sha256"}:
        raise ReleaseMismatch(f"{target_path}: custom fields must be version, platform, manifest")
    version, platform, digest = custom["version"], custom["platform"], custom["manifest_sha256"]
    if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
        raise ReleaseMismatch(f"{target_path}: manifest_sha256 is not a SHA-256")
    if not (isinstance(version, str) and isinstance(platform, str)):
        raise ReleaseMismatch(f"{target_path}: version and platform must be text")
    try:
        expected = release_target_path(version, platform)
    except ValueError as error:
        raise ReleaseMismatch(f"{target_path}: {error}") from None
    if expected != target_path:
        raise ReleaseMismatch(f"{target_path}: its custom fields name {expected}")
    return ReleaseCustom(version, platform, digest)
