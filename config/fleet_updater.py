"""python-tuf's ngclient for the box's fleet clients: the downloads over our link, the updater.

Loaded at the first verification (config/fleet_client.py, config/release_client.py), not at
start: ngclient, tuf.api.metadata and urllib3 (which ngclient imports for its own fetcher) are
about 2.6 MiB of a box's memory that a box not yet paired, or between checks, does not need
(issue 18, docs/benchmarks.md).

Invariants:
- Every URL ngclient asks for is an absolute path of PATH_SEGMENTs, at most MAX_PATH_CHARS long,
  under the base paths given (no host name is ever looked up: the link is already pinned).
- No download returns more than `max_bytes` (LinkFetcher's ceiling) nor more than ngclient's own
  bound for that file; one byte more is a DownloadLengthMismatchError.
- A downloaded target lives only in a scratch directory under the working copy until read back.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tuf.api.exceptions import DownloadError, DownloadLengthMismatchError

# python-tuf documents these names in tuf.api.metadata, which re-exports them without __all__;
# mypy --strict (no implicit re-export) would otherwise refuse the documented import.
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from config.fleet_store import ROOT_FILE
from config.fleet_targets import PATH_SEGMENT
from transport.errors import TransportError

MAX_PATH_CHARS = 512

Fetch = Callable[[str, int], bytes]
"""config/fleet_client.py's Fetch, whose contract it states (spelled here: that module imports
this one at its first verification, and an import cycle is refused by tests/test_layering.py)."""


def checked_url_path(url: str) -> str:
    """ngclient builds URLs from our base paths, role names and signed target paths; refuse any
    that could leave those prefixes (a path with '..', a query, a scheme)."""
    if not url.startswith("/") or len(url) > MAX_PATH_CHARS:
        raise DownloadError(f"refusing to fetch {url[:80]!r}: not an absolute path")
    segments = url[1:].split("/")
    if not all(PATH_SEGMENT.fullmatch(segment) for segment in segments):
        raise DownloadError(f"refusing to fetch {url[:80]!r}: unexpected characters")
    return url


class LinkFetcher(FetcherInterface):
    """ngclient's downloads through an injected synchronous `fetch(url_path, max_bytes)`.

    The Updater's base URLs are plain paths (METADATA_PREFIX, TARGETS_PREFIX), so the URL that
    ngclient forms is the path sent over the pinned link: no host name is ever looked up.
    """

    def __init__(self, fetch: Fetch, max_bytes: int) -> None:
        self._fetch_fn = fetch
        self._max_bytes = max_bytes

    def _fetch(self, url: str) -> Iterator[bytes]:
        return iter((self._fetch_bounded(url, self._max_bytes),))

    @contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        # ngclient knows each file's bound (from signed lengths or its config): pass it down so
        # the link stops reading there instead of at the fetcher's ceiling.
        bound_bytes = min(max_length, self._max_bytes)
        try:
            body = self._fetch_bounded(url, bound_bytes)
        except (DownloadError, TransportError):
            raise
        except Exception as error:
            raise DownloadError(f"failed to download {url}") from error
        yield io.BytesIO(body)

    def _fetch_bounded(self, url: str, max_bytes: int) -> bytes:
        body = self._fetch_fn(checked_url_path(url), max_bytes)
        if len(body) > max_bytes:
            raise DownloadLengthMismatchError(f"{url}: more than {max_bytes} bytes")
        return body


def open_updater(
    working_dir: Path, fetch: Fetch, metadata_prefix: str, targets_prefix: str, max_bytes: int
) -> Updater:
    """The fleet configuration's Updater on a working copy of the metadata (no delegations)."""
    return Updater(
        metadata_dir=str(working_dir),
        metadata_base_url=metadata_prefix,
        target_base_url=targets_prefix,
        fetcher=LinkFetcher(fetch, max_bytes),
        config=UpdaterConfig(
            max_root_rotations=64,
            # The fleet uses no delegated targets roles: never walk into one.
            max_delegations=0,
            root_max_length=64 * 1024,
            timestamp_max_length=16 * 1024,
            snapshot_max_length=64 * 1024,
            targets_max_length=4 * 1024 * 1024,
        ),
        # The box's trust anchor is the root installed at pairing as advanced by verified
        # rotations: the working copy's root.json.
        bootstrap=None,
    )


def trusted_targets_keys(working_dir: Path) -> tuple[str, ...]:
    """The targets role's key ids in the root ngclient just verified and stored (the documents
    were verified under them): what orders serials (AppliedState.in_epoch)."""
    root = Metadata[Root].from_bytes((working_dir / ROOT_FILE).read_bytes())
    return tuple(sorted(root.signed.roles[Targets.type].keyids))


def download_target(updater: Updater, info: TargetFile, working_dir: Path) -> bytes:
    # ngclient verifies length and hashes while writing to a file; the copy lives only until it
    # has been read back, in the scratch directory (never on the card or in the state dir).
    with tempfile.TemporaryDirectory(dir=working_dir, prefix=".download-") as tmp:
        path = updater.download_target(info, filepath=str(Path(tmp) / "document"))
        return Path(path).read_bytes()
