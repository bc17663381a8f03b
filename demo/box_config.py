"""The demo box: its identity, the incident's timing, and its configuration file.

Two synthetic cameras, a short pre-record, files sealed every few seconds so that they upload
while the incident goes on, the simulated gpsd, the local API, the officer's page with one
account (its random password kept only as a PBKDF2 hash), and the uplink on; where to and the
credentials come from pairing. Pure, but for picking the loopback ports it listens on.
"""

from __future__ import annotations

import contextlib
import secrets
import socket

from config.local_sections import WebSection

DEVICE_SERIAL = "MVB-DEMO-0001"
VEHICLE_ID = "demo-vehicle-1"
CAMERAS = (  # (name, serial, bitrate)
    ("dashcam", "DC-DEMO-0042", 1_000_000),
    ("bodycam", "BC-DEMO-0117", 800_000),
)
PRERECORD_S = 10.0
POSTRECORD_S = 5.0
INCIDENT_S = 6.0  # lights on -> the officer's stop
FILE_TARGET_S = 3  # short files: they are sealed, and upload, while the incident goes on

OFFICER = "officer"  # the demo account's name: what the newcomer types
OFFICER_ID = "BOA-DEMO-7"
SYMBOLS = "abcdefghijkmnpqrstuvwxyz23456789"  # 32 symbols: no 0/o or 1/l to confuse
GROUPS, GROUP_SYMBOLS = 4, 4  # the demo password: 16 symbols of 5 bits, 80 random bits

CAMERA_TOML = """
[[cameras]]
name = "{name}"
kind = "synthetic"  # painted and encoded live (libx264): no hardware
serial = "{serial}"
width = 640
height = 360
fps = 25
bitrate_bps = {bitrate}
"""

# Paths are relative to this file's folder (config.local resolves them), so the tree is movable.
# Reserve and minimum free space are tiny so the demo runs on any disk; chunks are small so that a
# segment spans several chunks and the power cut lands between them.
BOX_TOML = """\
# Written by `make demo` (demo/run.py): a box with no hardware, on a folder as its SD card.
[box]
device_serial = "{device_serial}"
vehicle_id = "{vehicle_id}"
state_dir = "state"
card_dir = "../card"
recipient_keys = ["recording.pub"]

[storage]
chunk_max_bytes = 65536
file_target_s = {file_target_s}  # the box's default is 60 s; short files upload during the demo
file_target_bytes = 16777216
card_reserve_bytes = 4194304
min_free_to_start_bytes = 8388608
retention_days = 28

# The demo is short, so 10 s of pre-record. The municipalities' protocols ask 30 s (Borsele),
# 60 s (Hattem/Heerde/Oldebroek) or 120 s (Westerkwartier); the box's default is 30 s.
[recording]
prerecord_s = {prerecord_s:g}
postrecord_s = {postrecord_s:g}
# The officer's stop ends a recording at once unless the policy sets a post-record for it, as
# the demo does to show one (the box's default is 0 s: stop when the threat is over).
officer_stop_postrecord_s = {postrecord_s:g}

[gps]  # the simulated gpsd of demo/gps_sim.py
host = "127.0.0.1"
port = {gps_port}

[api]  # the local JSON API (loopback only)
host = "127.0.0.1"
port = {api_port}
{cameras}
[triggers.lights]  # the emergency lights: a trigger that may also stop
may_stop = true
postrecord_s = {postrecord_s:g}
"""

WEB_TOML = """
[web]  # the officer's page: HTTPS with the box's own certificate, on this machine only
host = "127.0.0.1"
https_port = {https_port}
http_port = 0  # no redirect listener: the HTTPS port itself redirects plain http://

[[accounts]]  # the demo's officer: the password was printed once; only its PBKDF2 hash is here
name = "{name}"
role = "officer"
officer_id = "{officer_id}"
password_hash = "{password_hash}"
"""

UPLINK_TOML = """
[uplink]  # where to, the pins and the credentials come from pairing (state/pairing/)
enabled = true

[[links]]  # the demo's one link: the default route (loopback)
name = "wifi"
cost_class = "wifi"
"""


def box_toml(gps_port: int, api_port: int, https_port: int, password_hash: str) -> str:
    """The demo box's configuration file."""
    cameras = "".join(
        CAMERA_TOML.format(name=name, serial=serial, bitrate=bitrate)
        for name, serial, bitrate in CAMERAS
    )
    base = BOX_TOML.format(
        device_serial=DEVICE_SERIAL,
        vehicle_id=VEHICLE_ID,
        file_target_s=FILE_TARGET_S,
        prerecord_s=PRERECORD_S,
        postrecord_s=POSTRECORD_S,
        gps_port=gps_port,
        api_port=api_port,
        cameras=cameras,
    )
    return base + web_toml(https_port, password_hash) + UPLINK_TOML


def web_toml(https_port: int, password_hash: str) -> str:
    return WEB_TOML.format(
        https_port=https_port, name=OFFICER, officer_id=OFFICER_ID, password_hash=password_hash
    )


def new_password() -> str:
    """A fresh random password for the demo officer, e.g. `kq7m-x2pd-9fwh-3ncv`."""
    groups = ("".join(secrets.choice(SYMBOLS) for _ in range(GROUP_SYMBOLS)) for _ in range(GROUPS))
    return "-".join(groups)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback TCP ports nobody listens on right now (held open together while
    the OS picks them, so it cannot hand out the same one twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def web_port(preferred: int = WebSection().https_port) -> int:
    """The configured default HTTPS port (8443) when it is free on loopback, else a free one.
    Probed as the web listener binds (socket.create_server), so "free" means the same to both."""
    try:
        with socket.create_server(("127.0.0.1", preferred)):
            return preferred
    except OSError:
        return free_ports(1)[0]
