"""Whether the switcher may stop the box (gateway/release_switch_io.py `box_activity`), asked of
a real HTTP peer on loopback: only a box that says stand-by, or no box at all, is stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.release_switch_io import box_activity, fetch_status
from tests.cameras import free_port

ANSWERS = {
    "/standby/api/status": (200, b'{"state": "standby"}'),
    "/recording/api/status": (200, b'{"state": "recording"}'),
    "/post/api/status": (200, b'{"state": "postrecord"}'),
    "/broken/api/status": (500, b"{}"),
    "/garbage/api/status": (200, b"not json"),
}


@pytest.fixture(scope="module")
def peer() -> Iterator[str]:
    class Box(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = ANSWERS.get(self.path, (404, b""))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Box)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("box", "activity"),
    [
        ("standby", "standby"),
        ("recording", "busy"),
        ("post", "busy"),
        ("broken", "busy"),
        ("garbage", "busy"),
    ],
)
def test_only_a_box_in_standby_may_be_stopped(peer: str, box: str, activity: str) -> None:
    assert box_activity(f"{peer}/{box}") == activity


def test_no_box_listening_is_absent_and_has_no_status() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    assert box_activity(closed) == "absent"
    assert fetch_status(closed) is None
