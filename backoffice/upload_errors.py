"""The upload store's errors, by fault (common/faults.py); backoffice/upload_store.py
re-exports every name here."""

from __future__ import annotations

from common.faults import ConfigurationFault, MisuseFault, StorageFault, TransientFault


class UploadStoreError(Exception):
    """Base of the upload store's errors: a family of different kinds (each class below has its
    root in common/faults.py), never raised itself. Named apart from the box's own
    `storage.errors.StoreError`, which is another store."""


class UploadNotFound(UploadStoreError, MisuseFault):
    """No upload with that id (or the id is malformed)."""


class UploadBusy(UploadStoreError, TransientFault):
    """Another request is appending to (or finishing) this upload right now."""


class UploadFinished(UploadStoreError, MisuseFault):
    """The upload has all its bytes; they are evidence and cannot be appended to or deleted."""


class OffsetMismatch(UploadStoreError, MisuseFault):
    """An append did not start at the stored offset."""


class UploadIncomplete(UploadStoreError, MisuseFault):
    """`complete` of an upload that does not have all its bytes yet."""


class AppendReleased(UploadStoreError, MisuseFault):
    """An Appender used after it was released."""


class InsufficientStorage(UploadStoreError, StorageFault):
    """Accepting the bytes would leave less than the configured reserve free (for a creation:
    beside the bytes promised to every unfinished upload)."""


class ClientShareExceeded(UploadStoreError, TransientFault):
    """The box's unfinished uploads would hold more than its share of the disk; it may create
    again once some of them are finished, terminated or expired."""


class UploadDamaged(UploadStoreError, StorageFault):
    """An upload's info.json is not one this store wrote (too large, not parsable)."""


class StoreLocked(UploadStoreError, ConfigurationFault):
    """Another process (or another open store) already serves this directory."""
