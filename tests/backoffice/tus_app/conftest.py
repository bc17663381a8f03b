"""The tus server core through `TusApp.handle`, on a real UploadStore in a temporary directory.

Every rule of backoffice/tus_app.py is driven by requests (no HTTP: the adapter is tested in
test_server_https.py); every bad input must get its status and leave the server working.
These fixtures serve every test of this directory; the requests are built by
tests/backoffice/tus_requests.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backoffice.tus_app import TusApp
from backoffice.upload_store import UploadStore
from tests.backoffice.tus_requests import MAX_CHUNK_BYTES, MAX_UPLOAD_BYTES


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UploadStore]:
    with UploadStore.open(tmp_path / "store", reserve_bytes=0) as opened:
        yield opened


@pytest.fixture
def app(store: UploadStore) -> TusApp:
    return TusApp(store, max_upload_bytes=MAX_UPLOAD_BYTES, max_chunk_bytes=MAX_CHUNK_BYTES)
