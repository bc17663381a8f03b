"""Which box a file id belongs to: the first box that claimed it (docs/tus-profile.md 4.1).

A box names each evidence file by its `file_id` (Upload-Metadata), and the back office keeps a
finished file as `complete/<file_id>.mvbe`. Without an owner per file id, any paired box that
learnt another box's file id could upload other bytes under it first, and the real box's file
would land in `corrupt/` while it was told its bytes were stored. So a file id is bound, at the
first creation that names it, to the client id (certificate CN) of the box that created it,
for good: another box's creation naming it is refused (FileIdClaimed) and never reaches the
disk.

Layout under the store root: `claims/<file_id>` holds one JSON object, `client_id`,
`upload_id` (the creation that claimed it) and `claimed_at` (ISO 8601 UTC).

Invariants:
- a claim is durable before the creation that made it is acknowledged, and never replaced or
  removed (atomic_create_bytes refuses to replace: a claim is written once);
- a claim file is at most MAX_CLAIM_BYTES; one that does not parse is a StorageFault, never
  read as "no owner" (an unreadable claim refuses every box until a person looks);
- the store calls this from one thread (the event loop), so a check and the claim that
  follows it cannot interleave with another creation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from common.durable import atomic_create_bytes
from common.faults import RemoteFault, StorageFault

CLAIMS_DIR: Final = "claims"
MAX_CLAIM_BYTES: Final = 4096


class FileIdClaimed(RemoteFault):
    """A box named a file id that another box claimed first (409; an incident)."""

    def __init__(self, file_id: str, owner: str) -> None:
        super().__init__(f"file id {file_id} belongs to another box")
        self.file_id = file_id
        self.owner = owner


class ClaimDamaged(StorageFault):
    """A claim file this store did not write (too large, not parsable)."""


@dataclass(frozen=True, slots=True)
class Claim:
    file_id: str
    client_id: str
    upload_id: str
    claimed_at: str


class FileClaims:
    """The claims under `root/claims/`, a directory the store makes (file ids are already
    checked against FILE_ID_PATTERN by the caller: they are safe file names)."""

    def __init__(self, root: Path) -> None:
        self.directory = root / CLAIMS_DIR

    def owner(self, file_id: str) -> Claim | None:
        """The claim on `file_id`, or None when no box claimed it yet."""
        path = self.directory / file_id
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_CLAIM_BYTES + 1)
        except FileNotFoundError:
            return None
        try:
            if len(raw) > MAX_CLAIM_BYTES:
                raise ValueError("too large")
            value = json.loads(raw)
            return Claim(file_id, value["client_id"], value["upload_id"], value["claimed_at"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ClaimDamaged(f"{path} is not a claim this store wrote: {exc}") from None

    def check(self, file_id: str, client_id: str) -> bool:
        """True when `client_id` already owns `file_id`, False when nobody does; FileIdClaimed
        when another box does."""
        claim = self.owner(file_id)
        if claim is None:
            return False
        if claim.client_id != client_id:
            raise FileIdClaimed(file_id, claim.client_id)
        return True

    def claim(self, file_id: str, client_id: str, upload_id: str, claimed_at: str = "") -> None:
        """Bind `file_id` to `client_id`, durably; FileExistsError if it is bound already."""
        stamp = claimed_at or datetime.now(UTC).isoformat(timespec="seconds")
        document = {"client_id": client_id, "upload_id": upload_id, "claimed_at": stamp}
        data = json.dumps(document, sort_keys=True).encode()
        atomic_create_bytes(self.directory / file_id, data, mode=0o600)
