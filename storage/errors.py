"""Errors by fault (DESIGN principle 5) for the evidence store.

`EvidenceError` and its children describe a file that is not what was written: tampering,
truncation, wrong key. They are never retried (root: RemoteFault, common/faults.py). `StoreError`
and its children are the box's own operational faults (card full, refused recording, a failed or
refused write; root: StorageFault). `CardFullError` (storage/space.py) is a StoreError too.
"""

from __future__ import annotations

from common.faults import RemoteFault, StorageFault


class EvidenceError(RemoteFault):
    """An evidence file cannot be read as written. The message is one line, fit for a CLI."""


class NotEvidenceFile(EvidenceError):
    pass


class UnsupportedVersion(EvidenceError):
    pass


class MalformedHeader(EvidenceError):
    pass


class NoMatchingRecipient(EvidenceError):
    pass


class WrongKey(EvidenceError):
    pass


class TooFewShares(EvidenceError):
    """Fewer of the given keys are recipients than the file's threshold: one key holder of a
    four-eyes file (docs/four-eyes.md). Nothing was decrypted."""


class BadHeaderMac(EvidenceError):
    """The data key the shares give does not verify the header MAC: the header was changed after
    sealing, or the recipients were given keys that disagree (spec 4.1.1). Nothing decrypted."""


class ChunkError(EvidenceError):
    """A problem located at one chunk; `chunk_index` is the position where it was found."""

    def __init__(self, message: str, chunk_index: int) -> None:
        super().__init__(message)
        self.chunk_index = chunk_index


class SplicedChunk(ChunkError):
    pass


class ReorderedChunk(ChunkError):
    pass


class CorruptChunk(ChunkError):
    pass


class TruncatedFile(ChunkError):
    pass


class TrailingData(ChunkError):
    pass


class BadInterruptionRecord(ChunkError):
    pass


class StoreError(StorageFault):
    """An operational fault of the box's own store (not of a file's content)."""


class WriterClosed(StoreError):
    pass


class WriterPoisoned(StoreError):
    """A write or fsync of an evidence file failed once: its writer refuses every later call.

    Why refuse rather than carry on: the chunk that failed already spent its nonce, and what the
    card holds after a failed write or fsync is unknown (part of a record may be on the flash).
    The file keeps the whole records before the failure; recovery closes it at the next start.
    """


class RecordingRefused(StoreError):
    """A new recording cannot start (full card); the message says why, for the officer."""
