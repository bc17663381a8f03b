"""A push camera's listener bound to an interface accepts only what arrives on that interface
(gateway/capture/listener.py, SO_BINDTODEVICE), tried across two network namespaces joined by a
veth pair (labnet/netns.py): the camera network's side reaches the listener bound to the link's
device, and not the one bound to loopback, on the same address and with the same kind of socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from labnet.netns import EmulatedLink, is_available

REPO = Path(__file__).resolve().parents[2]
LINK_PORT, LOOPBACK_PORT = 19000, 19001

# Runs inside the box's namespace: two listeners on every address, one bound to the link's device
# and one to loopback; prints every accepted peer as "<port> <address>", then "READY" first.
LISTENERS = """
import sys, time
from gateway.capture.listener import CameraListener, ListenOn
device, link_port, loopback_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
listeners = [CameraListener(ListenOn("", device, link_port)),
             CameraListener(ListenOn("", "lo", loopback_port))]
for listener in listeners:
    listener.open()
print("READY", flush=True)
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    for listener in listeners:
        got = listener.accept(lambda: time.monotonic() > deadline, lambda: None)
        if got is not None:
            print(listener.port, got[1], flush=True)
            got[0].close()
"""

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as exc:
    print("refused", type(exc).__name__)
"""

pytestmark = pytest.mark.root


def test_a_listener_bound_to_the_camera_networks_interface_accepts_only_from_it() -> None:
    assert is_available(), "root, ip, tc, nft and /dev/net/tun are needed (make test installs them)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with EmulatedLink(
        f"cl{os.getpid() % 100000}", rate_mbit=100, rtt_ms=0, loss_fraction=0
    ) as link:
        box = link.popen(
            link.box_ns,
            [sys.executable, "-c", LISTENERS, link.box_dev, str(LINK_PORT), str(LOOPBACK_PORT)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert box.stdout is not None
        assert box.stdout.readline().strip() == "READY"

        def connect(ns: str, port: int, address: str = link.box_addr) -> str:
            done = link.run(ns, [sys.executable, "-c", CONNECT, address, str(port)])
            return done.stdout.strip()

        # The camera network's side reaches the link's listener, not loopback's, at one address.
        assert connect(link.bo_ns, LINK_PORT) == "connected"
        assert connect(link.bo_ns, LOOPBACK_PORT).startswith("refused")
        assert connect(link.box_ns, LOOPBACK_PORT, "127.0.0.1") == "connected"
        box.terminate()
        output, _ = box.communicate(timeout=10)
    accepted = sorted(line.split() for line in output.splitlines())
    assert accepted == sorted([[str(LINK_PORT), link.bo_addr], [str(LOOPBACK_PORT), "127.0.0.1"]])
