"""The back office's recording key pair (and, with later issues, its signing keys)."""

from __future__ import annotations

import os
from pathlib import Path

from storage.envelope import RecipientPrivateKey

RECORDING_PRIVATE = "recording.key"
RECORDING_PUBLIC = "recording.pub"


def create_recording_keys(directory: Path) -> tuple[Path, Path]:
    """Create `recording.key` (0600) and `recording.pub` in `directory`; never overwrite."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path = directory / RECORDING_PRIVATE
    public_path = directory / RECORDING_PUBLIC
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; refusing to overwrite a recording key")
    key = RecipientPrivateKey.generate()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.pem() + "\n")
    public_path.write_text(key.public().pem() + "\n")
    public_path.chmod(0o644)
    return private_path, public_path
