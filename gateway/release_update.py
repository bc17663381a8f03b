"""The box follows the release its fleet document pins (docs/releases.md 7): fetch the sealed
release through ngclient (config/release_client.py), open the seal with the fleet's release key
(storage/release_seal.py), check the bundle is the one signed for, and hand it to the install
and the A/B switch (gateway/release_install.py, gateway/release_switch_io.py: never while
recording, the switch waits for stand-by).

What a pin means (config/release_targets.py `judge_pin`): the running version, nothing; the
release this box ran before (still installed), a switch back to it with no fetch (a fleet's
rollback, gateway/release_handoff.py); any other lower one, refused (`release_downgrade`); one
the box's own health check rolled back, refused (`release_failed_health`) while the switch's
last outcome is that rollback; a higher one, fetched. Every outcome that is not "nothing to
do" is audited once per (version, outcome) and shown to the fleet admin: refusals as a code
(gateway/fleet_refusals.py) in the fleet sync's status (health `config_last_outcome`) and the
sticky alarm `release_refused`; a hand-off as `release.requested`.

Invariants:
- A bundle reaches the hand-off only after ngclient verified the releases role and the sealed
  bytes, the seal opened intact with this fleet's key, and the opened bundle's manifest has the
  SHA-256, version and platform the releases key signed. Anything else removes what was
  written and refuses.
- The hand-off is a configuration, never a fallback: on a box (`gateway/run.py`) always
  `hand_to_inbox` (root verifies again and installs, docs/releases.md 7.6); `install_and_request`
  only where the caller names it (tests: no second user exists there).
- A lower pin is never fetched: it is the previous release's switch back or a refusal.
- A refusal for good (downgrade, wrong role, tampered, mismatch, wrong seal key) is not fetched
  again for the same version until the pin changes or the service restarts;
- a hand-off to root (`verdicts` given) is `requested` until root's verdict for it arrives
  (gateway/release_verdict.py, only one written after the hand-off): a refusal by root becomes
  this box's refusal (its code, the alarm, the audit with `by: root`), settled like its own;
  `installed` (or `switch_back`) becomes `installed`; a malformed verdict is ignored; a link that
  failed, a release not signed yet or a missing release key are tried again every round.
- The release key lives in `pairing/release.key` (0600, beside the TLS client key): fetched once
  over the pinned mutual-TLS link (`RELEASE_KEY_PATH`), and gone with the pairing.
- Blocking work (ngclient, AES, pip) runs in worker threads; nothing here stops recording.
  One follow runs at a time (a round over the link and a pushed stick share `work_dir`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from tuf.api.exceptions import DownloadError, RepositoryError

from common.alarms import Alarms
from common.durable import atomic_write_bytes, make_dirs
from config.fleet_client import Fetch
from config.fleet_targets import METADATA_PREFIX
from config.release_targets import (
    RELEASE_KEY_PATH,
    RELEASES_ROLE,
    PinVerdict,
    ReleaseCustom,
    ReleaseDowngrade,
    ReleaseFailedHealth,
    ReleaseMismatch,
    ReleaseMissing,
    ReleaseRefused,
    judge_pin,
)
from gateway.fleet_refusals import (
    RELEASE_INSTALL_FAILED,
    RELEASE_NO_KEY,
    reason_codes,
    refusal_code,
)
from gateway.release_handoff import SwitchAccess
from gateway.release_inbox import InboxItem, put_item
from gateway.release_install import install_release, is_installed
from gateway.release_switch import Event, EventKind, SwitchRefused, step
from gateway.release_switch_io import ReleaseRoot, SwitchStateError
from gateway.release_verdict import Verdict, read_verdict
from protocol.release_manifest import MANIFEST, BundleError, Manifest
from storage.audit_io import AuditLog
from storage.envelope import RecipientKeyError, RecipientPrivateKey
from storage.errors import EvidenceError
from storage.release_seal import ReleaseSealError, open_release
from transport.errors import TransportError

log = logging.getLogger(__name__)

ALARM: Final = "release_refused"
RELEASE_KEY_FILE: Final = "release.key"
RELEASE_WORK_DIR: Final = "release-incoming"
"""In the state directory: a release being fetched and opened (emptied after each attempt)."""
RELEASE_INBOX_DIR: Final = "release-inbox"
"""In the state directory: releases verified here for root's installer (docs/releases.md 7.6)."""
RELEASE_STAGING_DIR: Final = "release-staging"
"""In the state directory: an inbox item being built (moved into the inbox by one rename)."""
MAX_KEY_BYTES: Final = 16 * 1024
MAX_ROOT_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class HandOver:
    """A release verified and opened by the box: the opened `bundle`, the `sealed` bytes as
    signed, the release key that opened them, and the metadata files the verification read
    (`metadata`: name -> bytes, the root chain from 2 included) so that root can verify it
    again from its own anchor (docs/releases.md 7.6)."""

    bundle: Path
    version: str
    sealed: Path
    key_pem: bytes
    metadata: dict[str, bytes]


HandOff = Callable[[HandOver], None]
"""`hand_off(release)`: install it and ask for the switch, or leave it for root (blocking)."""
_FOR_GOOD: Final = (RepositoryError, ReleaseSealError, EvidenceError)


@dataclass(frozen=True, slots=True)
class ReleaseOutcome:
    """What became of a pin: `requested` (handed to the switch, or to root), `installed` (root
    installed it and requested the switch), `current`, `refused` (with `code`; `by` "root"
    when root's installer refused it), or `waiting` (transient: tried again next round)."""

    version: str
    outcome: Literal["current", "requested", "installed", "refused", "waiting"]
    code: str = ""
    reason: str = ""
    by: str = ""


def install_and_request(root: Path) -> HandOff:
    """The hand-off of a box whose service may write the release root (`/opt/mvb`): install
    beside the running release, then ask for the switch as `mvb release request` does."""

    def hand_off(release: HandOver) -> None:
        releases = root / "releases"
        if not is_installed(releases / release.version):
            install_release(release.bundle, releases)
        release_root = ReleaseRoot(root)
        state, _ = step(release_root.load(), Event(EventKind.REQUEST, version=release.version))
        release_root.save(state)

    return hand_off


def hand_to_inbox(inbox: Path, staging: Path) -> HandOff:
    """The hand-off of a box whose service may not write the release root (user `mvb` under
    systemd/mvb.service): the sealed release, its key and metadata into the inbox, for root's
    `mvb release install-inbox` to verify again and install (docs/releases.md 7.6). `staging`
    is on the file system of the inbox and of the work directory (each move is one rename)."""

    def hand_off(release: HandOver) -> None:
        item = InboxItem("install", release.version, release.key_pem, metadata=release.metadata)
        put_item(inbox, staging, item, sealed_file=release.sealed)

    return hand_off


class ReleaseUpdater:
    """One box's release updater. `work_dir`: where a fetched release is opened (the state
    directory's `releases-incoming/`, emptied after each attempt)."""

    def __init__(
        self,
        *,
        metadata_dir: Path,
        work_dir: Path,
        pairing_dir: Path,
        running_version: str,
        platform: str,
        hand_off: HandOff,
        switch: SwitchAccess,
        audit: AuditLog,
        alarms: Alarms,
        verdicts: Path | None = None,
    ) -> None:
        self.metadata_dir = metadata_dir
        self.work_dir = work_dir
        self.key_file = pairing_dir / RELEASE_KEY_FILE
        self.running_version = running_version
        self.platform = platform
        self.hand_off = hand_off
        self.switch = switch
        self.audit = audit
        self.alarms = alarms
        self.verdicts = verdicts
        # The version handed to root and the judgement of the verdict seen before (a verdict
        # left from an earlier hand-over of that version is not this one's): None, not waiting.
        self._awaiting: tuple[str, str | None] | None = None
        self.last: ReleaseOutcome | None = None
        self._settled: dict[str, ReleaseOutcome] = {}
        self._audited: set[tuple[str, str, str]] = set()
        # One follow at a time: a round over the link and a pushed stick share `work_dir`.
        self._one_at_a_time = asyncio.Lock()

    async def follow(
        self, pinned: str | None, fetch: Fetch, *, key_fetch: Fetch | None = None
    ) -> ReleaseOutcome | None:
        """Act on `pinned` (None: no pin, nothing to do). `fetch` serves the repository (the
        link, or a pushed bundle's files); `key_fetch` fetches the release key when the box
        has none (the link only)."""
        if pinned is None:
            return None
        async with self._one_at_a_time:
            outcome = self._settled.get(pinned)
            if outcome is None:
                outcome = await self._follow(pinned, fetch, key_fetch)
            elif outcome.outcome == "requested":
                outcome = await self._roots_verdict(outcome)
            if outcome.outcome in ("requested", "installed", "refused"):
                self._settled = {pinned: outcome}  # a new pin forgets the old ones
            await self._show(outcome)
            return outcome

    async def _roots_verdict(self, requested: ReleaseOutcome) -> ReleaseOutcome:
        """What root said of the hand-off of `requested` (the module's invariant); `requested`
        itself while root has not judged it."""
        if self.verdicts is None or self._awaiting is None:
            return requested
        version, seen_before = self._awaiting
        if version != requested.version:
            return requested
        verdict = await asyncio.to_thread(read_verdict, self.verdicts, version)
        if verdict is None or verdict.judgement == seen_before:
            return requested
        self._awaiting = None
        return outcome_of(verdict)

    async def _await_verdict(self, version: str) -> None:
        """Before a hand-off to root: remember the verdict already there (module invariant)."""
        if self.verdicts is not None:
            before = await asyncio.to_thread(read_verdict, self.verdicts, version)
            self._awaiting = (version, None if before is None else before.judgement)

    async def _follow(self, pinned: str, fetch: Fetch, key_fetch: Fetch | None) -> ReleaseOutcome:
        history = await asyncio.to_thread(self.switch.history)
        try:
            verdict = judge_pin(pinned, self.running_version, history)
        except ValueError as error:
            return ReleaseOutcome(pinned, "refused", "release_mismatch", str(error))
        if verdict is PinVerdict.CURRENT:
            return ReleaseOutcome(pinned, "current")
        if verdict is PinVerdict.DOWNGRADE:
            lower = ReleaseDowngrade(f"{pinned} is lower than the running {self.running_version}")
            return ReleaseOutcome(pinned, "refused", refusal_code(lower), str(lower))
        if verdict is PinVerdict.FAILED_HEALTH:
            failed = ReleaseFailedHealth(
                f"{pinned} failed its health check here and was rolled back"
            )
            return ReleaseOutcome(pinned, "refused", refusal_code(failed), str(failed))
        if verdict is PinVerdict.SWITCH_BACK:
            return await self._switch_back(pinned)
        key = await self._release_key(key_fetch)
        if key is None:
            why = "the box has no release key: it is fetched over the link (or pair again)"
            return ReleaseOutcome(pinned, "waiting", RELEASE_NO_KEY, why)
        return await self._update(pinned, fetch, key)

    async def _update(self, version: str, fetch: Fetch, key: RecipientPrivateKey) -> ReleaseOutcome:
        await asyncio.to_thread(make_dirs, self.work_dir)
        sealed, opened = self.work_dir / "release.sealed", self.work_dir / "release.tar"
        # python-tuf's client loads with the first release the box fetches (issue 18).
        from config.release_client import ReleaseClient

        try:
            client = ReleaseClient(self.metadata_dir, fetch, platform=self.platform)
            custom = await asyncio.to_thread(client.fetch_release, version, sealed)
            await asyncio.to_thread(open_checked, sealed, opened, key, custom)
            metadata = await asyncio.to_thread(metadata_for_root, self.metadata_dir, fetch)
            key_pem = await asyncio.to_thread(self.key_file.read_bytes)
            release = HandOver(opened, version, sealed, key_pem, metadata)
            await self._await_verdict(version)
            await asyncio.to_thread(self.hand_off, release)
        except (DownloadError, TransportError) as error:
            return ReleaseOutcome(version, "waiting", "link", type(error).__name__)
        except ReleaseMissing as error:
            return ReleaseOutcome(version, "waiting", refusal_code(error), str(error)[:300])
        except _FOR_GOOD as error:
            return ReleaseOutcome(version, "refused", refusal_code(error), _reason(error))
        except (BundleError, OSError) as error:
            return ReleaseOutcome(version, "refused", RELEASE_INSTALL_FAILED, _reason(error))
        finally:
            await asyncio.to_thread(shutil.rmtree, self.work_dir, True)
        return ReleaseOutcome(version, "requested")

    async def _switch_back(self, version: str) -> ReleaseOutcome:
        """A fleet's rollback to the release this box ran before: no fetch, no install, the
        switch's own request (it waits for stand-by)."""
        try:
            await self._await_verdict(version)
            await asyncio.to_thread(self.switch.switch_back, version)
        except SwitchRefused as error:  # a switch is under way: ask again next round
            return ReleaseOutcome(version, "waiting", "", str(error)[:300])
        except (SwitchStateError, OSError) as error:
            return ReleaseOutcome(version, "refused", RELEASE_INSTALL_FAILED, _reason(error))
        return ReleaseOutcome(version, "requested", reason="switch back to the previous release")

    async def ensure_key(self, key_fetch: Fetch) -> None:
        """Fetch the release key if the box has none (every round with a link: the first one
        after pairing gets it, so a box whose links are down later can open a release from a
        stick)."""
        await self._release_key(key_fetch)

    async def _release_key(self, key_fetch: Fetch | None) -> RecipientPrivateKey | None:
        """The fleet's release key: from `pairing/release.key`, else fetched and kept there."""
        if not self.key_file.exists() and key_fetch is not None:
            try:
                pem = await asyncio.to_thread(key_fetch, RELEASE_KEY_PATH, MAX_KEY_BYTES)
            except (DownloadError, TransportError) as error:
                log.debug("release key not fetched: %s", type(error).__name__)  # each round
                return None
            try:
                await asyncio.to_thread(keep_release_key, self.key_file, pem)
            except RecipientKeyError as error:
                log.error("release key refused: %s", error)
                return None
        try:
            return await asyncio.to_thread(RecipientPrivateKey.load, self.key_file)
        except RecipientKeyError as error:
            if self.key_file.exists():
                log.error("the release key is unusable: %s", error)
            return None

    async def _show(self, outcome: ReleaseOutcome) -> None:
        """Audit once per (version, outcome, code); the alarm follows the last outcome."""
        self.last = outcome
        if outcome.outcome == "refused":
            message = f"release {outcome.version} refused: {outcome.code}"
            self.alarms.raise_(ALARM, message, sticky=True)
        elif outcome.outcome in ("current", "requested", "installed"):
            self.alarms.clear(ALARM)
        mark = (outcome.version, outcome.outcome, outcome.code)
        if outcome.outcome == "current" or mark in self._audited:
            return
        self._audited.add(mark)
        log.info("release %s: %s %s %s", *mark, outcome.reason)
        fields: dict[str, str] = {"version": outcome.version}
        if outcome.code:
            fields["code"] = outcome.code
            fields["reason"] = outcome.reason[:300]
        if outcome.by:
            fields["by"] = outcome.by
        await asyncio.to_thread(self.audit.append, f"release.{outcome.outcome}", **fields)


def outcome_of(verdict: Verdict) -> ReleaseOutcome:
    """Root's verdict as the box's outcome: a refusal keeps root's code when the page knows it
    (gateway/fleet_refusals.py), else the general `release_refused`."""
    if verdict.outcome == "installed":
        return ReleaseOutcome(verdict.version, "installed", reason="installed by root", by="root")
    if verdict.outcome == "switch_back":
        why = "root requested the switch back"
        return ReleaseOutcome(verdict.version, "installed", reason=why, by="root")
    code = verdict.code if verdict.code in reason_codes() else ReleaseRefused.code
    why = f"root's installer refused it: {verdict.code}"
    return ReleaseOutcome(verdict.version, "refused", code, why, by="root")


def metadata_for_root(metadata_dir: Path, fetch: Fetch) -> dict[str, bytes]:
    """The metadata the box verified, named as the repository serves it (consistent
    snapshots: `N.snapshot.json`, `N.targets.json`, `N.releases.json`; `timestamp.json`), and
    every `N.root.json` from 2 to the box's trusted root: root's anchor may be older than the
    box's and follows the rotations from its own. A root the source does not have is left
    out (root then refuses the item if it needs it). What root verifies, not what it trusts."""
    from tuf.api.metadata import Metadata, Root  # loaded by the fetch before this (issue 18)

    files = {"timestamp.json": (metadata_dir / "timestamp.json").read_bytes()}
    for role in ("snapshot", "targets", RELEASES_ROLE):
        data = (metadata_dir / f"{role}.json").read_bytes()
        files[f"{Metadata.from_bytes(data).signed.version}.{role}.json"] = data
    root = (metadata_dir / "root.json").read_bytes()
    newest = Metadata[Root].from_bytes(root).signed.version
    files[f"{newest}.root.json"] = root
    for version in range(2, newest):
        name = f"{version}.root.json"
        try:
            files[name] = fetch(METADATA_PREFIX + name, MAX_ROOT_BYTES)
        except (DownloadError, TransportError):
            continue
    return files


def open_checked(
    sealed: Path, opened: Path, key: RecipientPrivateKey, custom: ReleaseCustom
) -> None:
    """Open the seal into `opened` and check its manifest against the signed custom fields
    (ReleaseSealError, NoMatchingRecipient/WrongKey, ReleaseMismatch); `opened` is removed
    when anything fails."""
    try:
        with sealed.open("rb") as source, opened.open("wb") as out:
            open_release(source, out, key)
        manifest_bytes = _manifest_bytes(opened)
        if hashlib.sha256(manifest_bytes).hexdigest() != custom.manifest_sha256:
            raise ReleaseMismatch("the opened bundle's manifest is not the one signed for it")
        manifest = Manifest.from_json(manifest_bytes)
        if (manifest.version, manifest.platform) != (custom.version, custom.platform):
            raise ReleaseMismatch("the opened bundle is another version or platform")
    except BaseException:
        opened.unlink(missing_ok=True)
        raise


def _manifest_bytes(bundle: Path) -> bytes:
    try:
        with tarfile.open(bundle, mode="r:") as tar:
            member = tar.extractfile(MANIFEST)
            return member.read() if member is not None else b""
    except (tarfile.TarError, KeyError) as error:
        raise ReleaseMismatch(f"the opened bundle has no readable manifest: {error}") from None


def keep_release_key(path: Path, pem: bytes) -> None:
    """Keep the fetched key only if it is an X25519 private key (0600, durable);
    RecipientKeyError otherwise (nothing kept)."""
    from Crypto.PublicKey import ECC  # here: the box loads pycryptodome only when it must

    try:
        key = ECC.import_key(pem)
    except (ValueError, IndexError, TypeError):
        raise RecipientKeyError("the back office's release key is not readable") from None
    if key.curve != "Curve25519" or not key.has_private():
        raise RecipientKeyError("the back office's release key is not an X25519 private key")
    atomic_write_bytes(path, pem, mode=0o600)


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]
