"""The back office's recording key pair (and, with later issues, its signing keys)."""

from __future__ import annotations

from pathlib import Path

from common.durable import atomic_create_bytes, make_dirs
from storage.envelope import RecipientPrivateKey

RECORDING_PRIVATE = "recording.key"
RECORDING_PUBLIC = "recording.pub"


def create_recording_keys(directory: Path) -> tuple[Path, Path]:
    """Create `recording.key` (0600) and `recording.pub` in `directory`; never overwrite."""
    make_dirs(directory, mode=0o700)
    private_path = directory / RECORDING_PRIVATE
    public_path = directory / RECORDING_PUBLIC
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; refusing to overwrite a recording key")
    key = RecipientPrivateKey.generate()
    atomic_create_bytes(private_path, (key.pem() + "\n").encode(), mode=0o600)
    atomic_create_bytes(public_path, (key.public().pem() + "\n").encode(), mode=0o644)
    return private_path, public_path
