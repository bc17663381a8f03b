"""Start the real @tus/server (tests/peers/tus_node/server.js) on loopback for a test."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.tls_helpers import TestPki

SERVER_JS = Path(__file__).parent / "tus_node" / "server.js"


@dataclass(frozen=True)
class TusNodePeer:
    port: int
    directory: Path

    def stored_files(self) -> list[Path]:
        """The upload data files of @tus/server's file store (it writes `<id>` and `<id>.json`)."""
        return [p for p in self.directory.iterdir() if p.is_file() and p.suffix != ".json"]


@contextlib.contextmanager
def tus_node_server(directory: Path, pki: TestPki) -> Iterator[TusNodePeer]:
    """Run @tus/server over HTTPS requiring a client certificate from the test CA."""
    node = shutil.which("node")
    if node is None or not (SERVER_JS.parent / "node_modules").is_dir():
        raise RuntimeError("the @tus/server peer is not installed: run `make npm-peers`")
    directory.mkdir(parents=True, exist_ok=True)
    argv = [node, str(SERVER_JS), str(directory), str(pki.server_cert), str(pki.server_key)]
    argv.append(str(pki.ca_cert))
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening "):
            _, err = process.communicate(timeout=5)
            raise RuntimeError(f"@tus/server did not start: {line!r} {err[-500:]!r}")
        yield TusNodePeer(int(line.split()[1]), directory)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
