"""`mvb release install-inbox`: root verifies each release the box left in its inbox again, on its
own, and installs it (docs/releases.md 7.6). Runs as root (mvb-release-install.service).

Root's trust is its own: the fleet metadata directory `<root>/trust/` (root-owned, started by
`mvb release trust-fleet` from the fleet's root.json, grown only by verified root rotations).
Nothing the `mvb` user wrote is trusted: the item is read whole within its bounds
(gateway/release_inbox.py), then ngclient verifies the chain from root's anchor to the releases
role and the sealed release, the seal is opened, its manifest checked against the signed one,
the version judged against root's own reading of the switch (only higher than the running good
release, never one the health check rolled back; a switch back only to the previous release),
installed (which checks every file against the manifest) and the switch requested.

Invariants:
- every item is removed from the inbox once judged, installed or refused; a refusal is one line
  naming its code and changes nothing under the release root but root's own scratch (emptied);
- one bad item never stops the others, and the command's exit status is 0 for refusals (the
  path unit must keep watching);
- with a verdict directory, every item named by a version gets root's verdict there
  (gateway/release_verdict.py) after it was judged and before it is removed, so that the box
  learns a refusal (a verdict that cannot be written is a journal line, nothing more).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tuf.api.exceptions import DownloadError, DownloadHTTPError, RepositoryError

from common.durable import atomic_write_bytes, make_dirs
from config.fleet_client import Fetch, install_trust_root
from config.fleet_store import has_trust_root
from config.fleet_targets import METADATA_PREFIX, TARGETS_PREFIX
from config.release_targets import (
    PinVerdict,
    ReleaseDowngrade,
    ReleaseFailedHealth,
    ReleaseRefused,
    judge_pin,
)
from gateway.fleet_refusals import NO_TRUST_ANCHOR, RELEASE_INSTALL_FAILED, refusal_code
from gateway.fleet_refusals import RELEASE_NOT_PREVIOUS as NOT_PREVIOUS
from gateway.release_handoff import RootSwitch
from gateway.release_inbox import InboxItem, InboxItemRefused, item_names, read_item, remove_item
from gateway.release_install import install_release, is_installed
from gateway.release_switch import SwitchRefused
from gateway.release_switch_io import ReleaseRoot, SwitchStateError
from gateway.release_update import open_checked
from gateway.release_verdict import VerdictOutcome, new_verdict, write_verdict
from protocol.release_manifest import BundleError, is_version
from storage.envelope import RecipientKeyError, RecipientPrivateKey
from storage.errors import EvidenceError
from storage.release_seal import ReleaseSealError

TRUST_DIR: Final = "trust"
SCRATCH_DIR: Final = ".inbox-work"
_REFUSED: Final = (
    RepositoryError,
    ReleaseSealError,
    EvidenceError,
    RecipientKeyError,
    BundleError,
    SwitchStateError,
    SwitchRefused,
    OSError,
)


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    name: str
    outcome: str  # "installed", "switch_back", "refused"
    code: str = ""
    reason: str = ""


def trust_fleet(root: Path, root_json: bytes, *, replace: bool = False) -> int:
    """Pin the fleet's root.json as root's own anchor (`<root>/trust/`, 0700); its version.
    FileExistsError when one is pinned and not `replace`."""
    make_dirs(root, mode=0o755)
    return install_trust_root(root / TRUST_DIR, root_json, replace=replace)


def install_inbox(
    root: Path,
    inbox: Path,
    *,
    platform: str,
    verdicts: Path | None = None,
    say: Callable[[str], None] = print,
) -> list[ItemOutcome]:
    """Judge, install or refuse, and remove every item in `inbox`; each verdict into
    `verdicts` when given (module invariants)."""
    outcomes = []
    for name in item_names(inbox):
        outcome = _one(root, inbox, name, platform)
        if verdicts is not None and is_version(name):
            _write_verdict(verdicts, name, outcome, say)
        remove_item(inbox, name)
        detail = " ".join(filter(None, (outcome.code, outcome.reason)))
        say(f"release inbox {name}: {outcome.outcome} {detail}".rstrip())
        outcomes.append(outcome)
    return outcomes


def _one(root: Path, inbox: Path, name: str, platform: str) -> ItemOutcome:
    try:
        item = read_item(inbox, name)
    except InboxItemRefused as error:
        return ItemOutcome(name, "refused", error.code, str(error)[:300])
    if not has_trust_root(root / TRUST_DIR):
        why = "root has no fleet trust anchor: `mvb release trust-fleet` first"
        return ItemOutcome(name, "refused", NO_TRUST_ANCHOR, why)
    scratch = root / SCRATCH_DIR
    try:
        if item.kind == "switch_back":
            return _switch_back(root, item)
        shutil.rmtree(scratch, ignore_errors=True)
        make_dirs(scratch, mode=0o700)
        _verify_and_install(root, scratch, item, platform)
        return ItemOutcome(name, "installed")
    except ReleaseRefused as error:
        return ItemOutcome(name, "refused", refusal_code(error), str(error)[:300])
    except DownloadError as error:  # a metadata file or the release missing from the item
        return ItemOutcome(name, "refused", InboxItemRefused.code, _reason(error))
    except (BundleError, SwitchStateError, SwitchRefused, OSError) as error:
        return ItemOutcome(name, "refused", RELEASE_INSTALL_FAILED, _reason(error))
    except _REFUSED as error:
        return ItemOutcome(name, "refused", refusal_code(error), _reason(error))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_verdict(
    verdicts: Path, name: str, outcome: ItemOutcome, say: Callable[[str], None]
) -> None:
    judged: VerdictOutcome = "refused"
    if outcome.outcome == "installed":
        judged = "installed"
    elif outcome.outcome == "switch_back":
        judged = "switch_back"
    try:
        write_verdict(verdicts, new_verdict(name, judged, outcome.code, int(time.time())))
    except OSError as error:  # VerdictDirUnsafe among them
        say(f"release inbox {name}: verdict not written ({error})")


def _switch_back(root: Path, item: InboxItem) -> ItemOutcome:
    switch = RootSwitch(root)
    if switch.history().previous != item.version:
        why = f"{item.version} is not the release this box ran before"
        return ItemOutcome(item.version, "refused", NOT_PREVIOUS, why)
    switch.switch_back(item.version)
    return ItemOutcome(item.version, "switch_back")


def _verify_and_install(root: Path, scratch: Path, item: InboxItem, platform: str) -> None:
    """Everything the box checked, again, from root's anchor; then install and request."""
    switch = RootSwitch(root)
    good = ReleaseRoot(root).load().good
    verdict = judge_pin(item.version, good, switch.history())
    if verdict is PinVerdict.FAILED_HEALTH:
        raise ReleaseFailedHealth(f"{item.version} was rolled back here by its health check")
    if verdict is not PinVerdict.UPGRADE:
        raise ReleaseDowngrade(f"{item.version} is not higher than the running {good}")
    # python-tuf's client loads here, not in the box that imports this module (issue 18).
    from config.release_client import ReleaseClient

    sealed, opened, key_file = scratch / "release.sealed", scratch / "release.tar", scratch / "key"
    client = ReleaseClient(root / TRUST_DIR, inbox_fetch(item), platform=platform)
    custom = client.fetch_release(item.version, sealed)
    atomic_write_bytes(key_file, item.key_pem, mode=0o600)
    open_checked(sealed, opened, RecipientPrivateKey.load(key_file), custom)
    releases = root / "releases"
    if not is_installed(releases / item.version):
        install_release(opened, releases)
    switch.request(item.version)


def inbox_fetch(item: InboxItem) -> Fetch:
    """The item's files as ngclient's fetch: metadata by name, the one target (whatever
    consistent-snapshot name ngclient asks for: it checks the signed length and hashes)."""
    metadata: Mapping[str, bytes] = item.metadata or {}

    def fetch(url_path: str, max_bytes: int) -> bytes:
        if url_path.startswith(METADATA_PREFIX):
            body = metadata.get(url_path.removeprefix(METADATA_PREFIX))
        elif url_path.startswith(TARGETS_PREFIX):
            body = item.sealed
        else:
            body = None
        if body is None:
            raise DownloadHTTPError(f"{url_path} is not in the inbox item", 404)
        return body[: max_bytes + 1]

    return fetch


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def default_platform() -> str:
    return os.uname().machine
