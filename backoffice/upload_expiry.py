"""tus `expiration` for the reference back office: unfinished uploads do not live for ever.

An upload that received no byte for `expiry_s` (default DEFAULT_UPLOAD_EXPIRY_S) is removed: the
orphans a box leaves when a creation's answer is lost (docs/tus-profile.md 7), and uploads a box
abandoned without terminating them. TusApp announces `expiration` in Tus-Extension and sends
`Upload-Expires` (an HTTP date) on every answer about an unfinished upload (201 to a creation, 204
to a PATCH, 200 to a HEAD); a request for an expired upload is answered 410 and the upload
removed then; `expire_uploads` removes them all, at start and on a timer (`expire_periodically`,
run by `mvb-admin serve`).

Invariants:
- only unfinished uploads expire: finished bytes are evidence (`complete/`, `corrupt/`) and are
  never removed here;
- an upload an append holds is never removed (it is active by definition);
- the last activity is the data file's modification time: every append changes it, so nothing
  is written to keep the clock (wall clock: expiration is the server's own housekeeping).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final

from backoffice.upload_store import UploadBusy, UploadFinished, UploadNotFound, UploadStore

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_EXPIRY_S: Final = 7 * 86_400.0
"""A box offline for a week resumes its upload; one offline longer starts that file again
(bounded by the file), while orphans never hold disk for more than a week."""
MAX_SWEEP_INTERVAL_S: Final = 3600.0


def http_date(epoch_s: float) -> str:
    """An IMF-fixdate (RFC 9110 5.6.7), as Upload-Expires carries it."""
    return format_datetime(datetime.fromtimestamp(epoch_s, tz=UTC), usegmt=True)


def sweep_interval_s(expiry_s: float) -> float:
    """How often the sweep runs: a tenth of the expiry, at most hourly, at least every second."""
    return min(MAX_SWEEP_INTERVAL_S, max(1.0, expiry_s / 10))


class Expiration:
    """When the unfinished uploads of one store expire, and their removal."""

    def __init__(
        self, store: UploadStore, expiry_s: float, clock_s: Callable[[], float] = time.time
    ) -> None:
        if expiry_s <= 0:
            raise ValueError(f"expiry_s must be > 0, got {expiry_s}")
        self.store = store
        self.expiry_s = expiry_s
        self._clock_s = clock_s

    def expires_at_s(self, upload_id: str) -> float:
        return self.store.last_activity_s(upload_id) + self.expiry_s

    def headers(self, upload_id: str, finished: bool) -> dict[str, str]:
        """`Upload-Expires` for an unfinished upload; nothing for a finished one."""
        if finished:
            return {}
        try:
            return {"Upload-Expires": http_date(self.expires_at_s(upload_id))}
        except UploadNotFound:
            return {}

    def expire_if_due(self, upload_id: str) -> bool:
        """Remove the upload if it is unfinished, idle and past its expiry; True if removed."""
        if self.store.is_busy(upload_id):
            return False
        try:
            if self.expires_at_s(upload_id) > self._clock_s():
                return False
            status = self.store.status(upload_id)
            self.store.delete(upload_id)
        except (UploadNotFound, UploadBusy, UploadFinished):
            return False
        info = status.info
        log.info(
            "upload expired upload_id=%s file_id=%s client_id=%s offset_bytes=%d",
            info.upload_id,
            info.file_id,
            info.client_id,
            status.offset_bytes,
        )
        return True

    def expire_uploads(self) -> list[str]:
        """Remove every expired upload; their ids. On the event loop, like every other change
        of the store (a worker thread could remove an upload a request is about to append to):
        a stat per unfinished upload, and a removal per expired one."""
        return [u for u in self.store.receiving_ids() if self.expire_if_due(u)]


async def expire_periodically(expiration: Expiration) -> None:
    """The sweep, now and then every `sweep_interval_s`, until cancelled."""
    interval_s = sweep_interval_s(expiration.expiry_s)
    while True:
        try:
            expiration.expire_uploads()
        except OSError:
            log.exception("expiring uploads failed; trying again later")
        await asyncio.sleep(interval_s)
