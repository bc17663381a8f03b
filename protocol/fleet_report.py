"""The box's signed statement of the fleet configuration it applied (docs/fleet-config.md).

`POST /fleet/report` on the mutual-TLS listener carries one JSON object with exactly
REPORT_FIELDS. The signature is the box's device key (Ed25519) over `signed_message`:
b"mvb-config-report-v1" then the box id, serial, sha256, target path and at_ms, one per line.
The box id is the client certificate's CN, never a member of the body, so a box cannot sign for
another.
"""

from __future__ import annotations

from typing import Final

MAX_REPORT_BYTES: Final = 8 * 1024
REPORT_LABEL: Final = "mvb-config-report-v1"
REPORT_FIELDS: Final = frozenset(
    {"config_serial", "sha256", "target_path", "at_ms", "device_public_key", "signature"}
)


def signed_message(box_id: str, serial: int, sha256: str, target_path: str, at_ms: int) -> bytes:
    """The bytes the device key signs for one report (the same on both sides, byte for byte)."""
    lines = [REPORT_LABEL, box_id, str(serial), sha256, target_path, str(at_ms)]
    return "\n".join(lines).encode()
