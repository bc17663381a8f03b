"""The box's side of signed fleet configuration: a python-tuf ngclient over our own link.

A fleet configuration document is a TUF target in the back office's TUF repository
(`backoffice/fleet_repo.py`, spec in `docs/fleet-config.md`). The box trusts one TUF root,
installed at pairing (`install_trust_root`) and advanced only by root rotations that python-tuf
verified against the previous root's threshold and the new one's.

This module is the shell: ngclient, the downloads over the link, pushed bundles, the metadata
directory. What a target is and which one is this box's document (custom fields, selection,
serials, the applied state) is pure, in config/fleet_targets.py, shared with the back office.

Invariants:
- A document is returned only after ngclient verified root -> timestamp -> snapshot -> targets
  (signature thresholds, versions against the box's stored metadata, expiry, hashes) and the
  document's bytes against the signed length and SHA-256.
- A document is returned only if its signed custom fields name this box or one of its groups,
  its `config_serial` is strictly greater than the highest serial applied under the same targets
  keys (config/fleet_targets.py `AppliedState.in_epoch`), and its signed length
  is at most `max_document_bytes` (checked before any byte of it is fetched).
- Nothing here changes the applied state: the caller applies the document (schema, health check)
  and then calls `record_applied`, and persists `state.to_json()` itself.
- Every download is bounded: `fetch` is told the most bytes ngclient will accept for that file.
- ngclient is synchronous and its fetches block: run `check` and `verify_bundle` off the event loop
  (`await asyncio.to_thread(client.check)`). A lock per metadata directory (in this process,
  across clients: config/fleet_store.py) serialises them, because one metadata directory serves
  one Updater and one commit at a time.

Errors by fault: `tuf.api.exceptions.RepositoryError` subclasses for metadata or bytes that fail
verification (a hostile or broken back office, or a tampered bundle); `ConfigRejected` subclasses
for correctly signed documents this box must refuse; `tuf.api.exceptions.DownloadError` for a link
that failed (retry later); `transport.errors.TransportError` raised by `fetch` passes through
unchanged, so a pin mismatch stays a pin mismatch. A file longer than its signed length is a
`LengthOrHashMismatchError` (hostile), not a DownloadError.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tuf.api.exceptions import (
    DownloadError,
    DownloadHTTPError,
    DownloadLengthMismatchError,
    LengthOrHashMismatchError,
    RepositoryError,
)

from common.durable import durable_unlink, remove_tree
from common.faults import RemoteFault
from config.fleet_store import (
    ROLE_FILES,
    ROOT_HISTORY_DIR,
    NoTrustRoot,
    WorkingCopy,
    checked_root,
    directory_lock,
    has_trust_root,
    install_root_files,
    trusted_root,
    working_copy,
)
from config.fleet_targets import (
    BUNDLE_METADATA_DIR,
    BUNDLE_TARGETS_DIR,
    MAX_DOCUMENT_BYTES,
    METADATA_PREFIX,
    PATH_SEGMENT,
    TARGETS_PREFIX,
    AppliedState,
    FleetDocument,
    WrongBox,
    candidate_from_targetinfo,
    candidate_paths,
    check_size,
    is_newer,
    select_candidate,
)
from config.release_targets import MAX_RELEASE_BYTES

logger = logging.getLogger(__name__)

Fetch = Callable[[str, int], bytes]
"""`fetch(url_path, max_bytes) -> body`: GET `url_path` on the back office over the pinned,
mutually authenticated link. It MUST raise `DownloadHTTPError(message, status)` for an answer other
than 200 (a 404 ends ngclient's search for newer roots) and MUST NOT return more than `max_bytes`
bytes (it should stop reading there). Any other exception is a failed download."""

FETCH_CEILING_BYTES = 4 * 1024 * 1024
"""No single file the client fetches is larger (the targets metadata bound)."""
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_RELEASE_BUNDLE_BYTES = MAX_RELEASE_BYTES + MAX_BUNDLE_BYTES
"""A pushed bundle that carries a sealed release (docs/releases.md 7.4) besides metadata and
documents: the box's push routes read at most this much."""
MAX_BUNDLE_MEMBERS = 1024


class BadBundle(RepositoryError, RemoteFault):
    """A pushed bundle is not a readable bundle, or lacks a file the verification needs."""


def install_trust_root(metadata_dir: Path, root_json: bytes, *, replace: bool = False) -> int:
    """Install the fleet's root metadata (received at pairing) as this box's trust anchor.

    The root must be signed by its own threshold. Refuses to replace an installed root unless
    `replace` (an explicit re-pair), which also drops all stored metadata. Returns its version.
    Durable on return, `fleet-metadata/` in its parent too (config/fleet_store.py): a power cut
    right after pairing keeps the root the box says it is paired under.
    """
    try:
        version = checked_root(root_json)
    except ValueError as error:
        raise RepositoryError(f"the trust root is not root metadata: {error}") from error
    if has_trust_root(metadata_dir) and not replace:
        raise FileExistsError(f"{metadata_dir}: the box is paired; re-pair explicitly")
    # The new root replaces the old in place first, the metadata verified under the old goes
    # after: a power cut in between never leaves the box without a root (the fleet torture
    # found a re-pair cut after its unlinks: no root.json, only an old history).
    install_root_files(metadata_dir, root_json)
    _drop_stored_metadata(metadata_dir)
    return version


def _drop_stored_metadata(metadata_dir: Path) -> None:
    """Forget what ngclient verified under an earlier root (only its own files: the directory
    may hold others). Stale files left by a cut are harmless: ngclient verifies every local
    file against the trusted root and replaces what fails."""
    for name in ROLE_FILES:
        durable_unlink(metadata_dir / name)
    with contextlib.suppress(OSError):  # as before: a root_history that will not go is no fault
        remove_tree(metadata_dir / ROOT_HISTORY_DIR)


def read_bundle(
    bundle_bytes: bytes,
    *,
    metadata_prefix: str = METADATA_PREFIX,
    targets_prefix: str = TARGETS_PREFIX,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> dict[str, bytes]:
    """A push bundle (an uncompressed POSIX tar of `metadata/...` and `targets/...`) as a map from
    the URL path the Updater will ask for to the member's bytes. Raises BadBundle. `max_bytes`:
    MAX_RELEASE_BUNDLE_BYTES where a bundle may carry a release."""
    if len(bundle_bytes) > max_bytes:
        raise BadBundle(f"bundle is {len(bundle_bytes)} bytes; at most {max_bytes}")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(bundle_bytes), mode="r:") as archive:
            for count, member in enumerate(archive, start=1):
                if count > MAX_BUNDLE_MEMBERS:
                    raise BadBundle(f"bundle holds more than {MAX_BUNDLE_MEMBERS} files")
                url_path = _bundle_url_path(member, metadata_prefix, targets_prefix)
                if url_path is None:
                    continue
                if url_path in files:
                    raise BadBundle(f"bundle holds {member.name!r} twice")
                budget_bytes = max_bytes - sum(len(data) for data in files.values())
                files[url_path] = _read_member(archive, member, budget_bytes)
    except (tarfile.TarError, EOFError, ValueError) as error:
        raise BadBundle(f"bundle is not a readable tar: {error}") from error
    return files


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo, budget_bytes: int) -> bytes:
    # A sparse member can claim far more bytes than the archive holds: refuse it, and never
    # unpack more than the whole bundle may be.
    if member.issparse() or member.size > budget_bytes:
        raise BadBundle(f"bundle member {member.name!r} is sparse or too large")
    handle = archive.extractfile(member)
    if handle is None:
        raise BadBundle(f"bundle member {member.name!r} is unreadable")
    return handle.read(budget_bytes + 1)


def _bundle_url_path(
    member: tarfile.TarInfo, metadata_prefix: str, targets_prefix: str
) -> str | None:
    """None for a directory entry; BadBundle for anything but a regular file in our two folders."""
    if member.isdir():
        return None
    if not member.isreg():
        raise BadBundle(f"bundle member {member.name!r} is not a regular file")
    top, _, rest = member.name.partition("/")
    segments = rest.split("/")
    if not rest or not all(PATH_SEGMENT.fullmatch(segment) for segment in segments):
        raise BadBundle(f"bundle member {member.name!r} has an unexpected path")
    if top == BUNDLE_METADATA_DIR and len(segments) == 1:
        return metadata_prefix + rest
    if top == BUNDLE_TARGETS_DIR:
        return targets_prefix + rest
    raise BadBundle(f"bundle member {member.name!r} is outside metadata/ and targets/")


def serve_from(files: Mapping[str, bytes]) -> Fetch:
    def fetch(url_path: str, max_bytes: int) -> bytes:
        body = files.get(url_path)
        if body is None:
            raise DownloadHTTPError(f"{url_path} is not in the bundle", 404)
        return body[: max_bytes + 1]  # one byte over is enough for the fetcher to refuse

    return fetch


class FleetConfigClient:
    """One box's fleet configuration client over a local TUF metadata directory.

    `metadata_dir` holds the trusted metadata (root installed at pairing, then whatever ngclient
    verified); pull (`check`) and push (`verify_bundle`) share it, so neither can roll back what
    the other has seen. `state` is the applied state the caller persisted.
    """

    def __init__(
        self,
        metadata_dir: Path,
        box_id: str,
        groups: Sequence[str],
        fetch: Fetch,
        state: AppliedState,
        *,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
        metadata_prefix: str = METADATA_PREFIX,
        targets_prefix: str = TARGETS_PREFIX,
    ) -> None:
        self._paths = candidate_paths(box_id, groups)
        if not has_trust_root(metadata_dir):
            raise FileNotFoundError(f"{metadata_dir}: no fleet trust root; pair the box first")
        self._metadata_dir = metadata_dir
        self._box_id = box_id
        self._groups = tuple(groups)
        self._fetch = fetch
        self._state = state
        self._max_document_bytes = max_document_bytes
        self._metadata_prefix = metadata_prefix
        self._targets_prefix = targets_prefix
        self._lock = threading.Lock()
        self.repaired: str | None = None
        """Set when a verification had to start from the durable trust root because the stored
        metadata was unusable (config/fleet_store.py): the caller alarms and audits it."""

    @property
    def state(self) -> AppliedState:
        return self._state

    def check(self) -> FleetDocument | None:
        """Refresh over the link; the newer document for this box, or None (none published for
        it, or the applied one is still current). Blocking: call via asyncio.to_thread."""
        with self._lock:
            return self._verify(self._fetch, require_document=False)

    def verify_bundle(self, bundle_bytes: bytes) -> FleetDocument | None:
        """The same verification for a pushed bundle (web upload or USB stick), no network.

        Returns None when the bundle's document for this box is the one applied. Raises WrongBox
        when the bundle holds no document for this box, BadBundle when it is unreadable or lacks
        a file. Blocking: call via asyncio.to_thread.
        """
        files = read_bundle(
            bundle_bytes,
            metadata_prefix=self._metadata_prefix,
            targets_prefix=self._targets_prefix,
        )
        return self.verify_files(files)

    def verify_files(self, files: Mapping[str, bytes]) -> FleetDocument | None:
        """`verify_bundle` of a bundle already read (`read_bundle`)."""
        with self._lock:
            try:
                return self._verify(serve_from(files), require_document=True)
            except DownloadError as error:
                raise BadBundle(f"the bundle is incomplete: {error}") from error

    def record_applied(self, document: FleetDocument) -> AppliedState:
        """Call once `document` is applied and healthy; persist the returned state's JSON."""
        with self._lock:
            self._state = self._state.after_applying(document)
            return self._state

    def _verify(self, fetch: Fetch, *, require_document: bool) -> FleetDocument | None:
        try:
            return self._run_updater(fetch, require_document=require_document)
        except DownloadLengthMismatchError as error:
            # More bytes than the signed (or configured) length: a hostile or mixed-up server,
            # not a flaky link, so not a DownloadError that a caller would retry.
            raise LengthOrHashMismatchError(str(error)) from error

    def _run_updater(self, fetch: Fetch, *, require_document: bool) -> FleetDocument | None:
        """ngclient on a working copy of the metadata; what it verified is committed durably
        afterwards, also when it raised (config/fleet_store.py)."""
        with directory_lock(self._metadata_dir):
            return self._run_updater_locked(fetch, require_document=require_document)

    def _run_updater_locked(self, fetch: Fetch, *, require_document: bool) -> FleetDocument | None:
        try:
            trust = trusted_root(self._metadata_dir)
        except NoTrustRoot:
            self.repaired = "no usable fleet trust root: pair the box again"
            raise
        if trust.repaired is not None:
            self.repaired = trust.repaired
            logger.warning("fleet metadata repaired: %s", trust.repaired)
        with working_copy(self._metadata_dir, trust.root_bytes) as copy:
            try:
                return self._verify_in(copy, fetch, require_document=require_document)
            finally:
                copy.commit()

    def _verify_in(
        self, copy: WorkingCopy, fetch: Fetch, *, require_document: bool
    ) -> FleetDocument | None:
        # python-tuf's client (and urllib3, which it imports) loads at the first verification:
        # a box that is not paired, or has not checked yet, does not carry it (issue 18).
        from config.fleet_updater import download_target, open_updater, trusted_targets_keys

        updater = open_updater(
            copy.path, fetch, self._metadata_prefix, self._targets_prefix, FETCH_CEILING_BYTES
        )
        updater.refresh()
        found = [updater.get_targetinfo(path) for path in self._paths]
        candidates = [candidate_from_targetinfo(info) for info in found if info is not None]
        chosen = select_candidate(candidates, self._box_id, self._groups)
        if chosen is None:
            if require_document:
                raise WrongBox(f"no document for box {self._box_id}")
            return None
        targets_keys = trusted_targets_keys(copy.path)
        state = self._state.in_epoch(targets_keys)
        if not is_newer(state, chosen.custom.config_serial, chosen.sha256):
            return None
        check_size(chosen, self._max_document_bytes)
        document = download_target(updater, chosen.info, copy.path)
        logger.info(
            "fleet document %s serial %d verified", chosen.target_path, chosen.custom.config_serial
        )
        return FleetDocument(
            chosen.target_path,
            chosen.custom.config_serial,
            chosen.sha256,
            chosen.custom.boxes,
            chosen.custom.groups,
            document,
            targets_keys,
        )
