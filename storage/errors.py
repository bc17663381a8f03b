"""Errors by fault (DESIGN principle 5) for the evidence store.

`EvidenceError` and its children describe a file that is not what was written: tampering,
truncation, wrong key. They are never retried. `StoreError` children are the box's own
operational faults (card full, refused recording).
"""

from __future__ import annotations


class EvidenceError(Exception):
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


class StoreError(Exception):
    """An operational fault of the box's own store (not of a file's content)."""


class WriterClosed(StoreError):
    pass
