"""An emulated SD card for tests and benchmarks (placeholder docstring)."""

from labdisk.control_io import ControlError, LabDiskClient
from labdisk.faults import Delay
from labdisk.mount_io import LabDisk, is_mounted, labdisk_mounts, unmount

__all__ = [
    "ControlError",
    "Delay",
    "LabDisk",
    "LabDiskClient",
    "is_mounted",
    "labdisk_mounts",
    "unmount",
]
