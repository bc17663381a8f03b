"""The kernel's GPIO character device ABI (linux/gpio.h, v2 uAPI), pure: layouts and codecs.

`pack_line_request` builds a `gpio_v2_line_request`, `line_request_fd` reads back the line fd the
kernel wrote into it, `decode_line_events` decodes what a line fd returns. No file is opened here:
the shell that issues the ioctls and reads the fd is `GpioChardevInput` (gateway/inputs_io.py).

Invariant: every struct is spelled out field by field with native byte order and no implicit
padding, so its size and offsets are the header's; the ioctl numbers are computed from those sizes
exactly as the kernel's `_IOWR` does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# asm-generic ioctl encoding (x86, arm, arm64, riscv): dir:2 | size:14 | type:8 | nr:8.
_IOC_WRITE = 1
_IOC_READ = 2


def iowr(ioc_type: int, nr: int, size: int) -> int:
    """`_IOWR(type, nr, size)` as the kernel header computes it."""
    if not 0 <= size < 1 << 14:
        raise ValueError(f"ioctl argument size {size} does not fit 14 bits")
    return ((_IOC_READ | _IOC_WRITE) << 30) | (size << 16) | (ioc_type << 8) | nr


# Layouts with native byte order and no implicit padding ("="): every kernel field is spelled
# out, so the offsets are the header's (config at 288, num_lines at 560, fd at 588).
_ATTR_FORMAT = "IIQQ"  # gpio_v2_line_config_attribute: {attr: id, padding, union u64}, mask
_MAX_LINES = 64
_MAX_ATTRS = 10
LINE_REQUEST = struct.Struct(
    f"={_MAX_LINES}I32s" + "QI5I" + _ATTR_FORMAT * _MAX_ATTRS + "II5Ii"
)  # offsets[64], consumer[32], config {flags, num_attrs, padding[5], attrs[10]}, num_lines,
#   event_buffer_size, padding[5], fd
LINE_EVENT = struct.Struct("=QIIII6I")  # timestamp_ns, id, offset, seqno, line_seqno, padding[6]
LINE_VALUES = struct.Struct("=QQ")  # gpio_v2_line_values: bits, mask

GPIO_V2_GET_LINE_IOCTL = iowr(0xB4, 0x07, LINE_REQUEST.size)
GPIO_V2_LINE_GET_VALUES_IOCTL = iowr(0xB4, 0x0E, LINE_VALUES.size)

GPIO_V2_LINE_FLAG_INPUT = 1 << 2
GPIO_V2_LINE_FLAG_EDGE_RISING = 1 << 4
GPIO_V2_LINE_FLAG_EDGE_FALLING = 1 << 5
GPIO_V2_LINE_EVENT_RISING_EDGE = 1
GPIO_V2_LINE_EVENT_FALLING_EDGE = 2
_FD_OFFSET = LINE_REQUEST.size - 4


@dataclass(frozen=True, slots=True)
class LineEvent:
    """One decoded `struct gpio_v2_line_event`. `rising`: the physical line went high."""

    timestamp_ns: int
    rising: bool
    offset: int
    seqno: int
    line_seqno: int


def pack_line_request(offset: int, consumer: str) -> bytearray:
    """A `gpio_v2_line_request` for one input line with edge events on both edges.

    No ACTIVE_LOW flag and no kernel debounce: the line is reported physically and
    `InputDebouncer` applies the rule, so sysfs, chardev and simulation behave the same.
    """
    label = consumer.encode()[:31]  # NUL-terminated in 32 bytes
    flags = GPIO_V2_LINE_FLAG_INPUT | GPIO_V2_LINE_FLAG_EDGE_RISING | GPIO_V2_LINE_FLAG_EDGE_FALLING
    offsets = [offset] + [0] * (_MAX_LINES - 1)
    attrs = [0] * (len(_ATTR_FORMAT) * _MAX_ATTRS)
    config = [flags, 0, *([0] * 5), *attrs]
    tail = [1, 0, *([0] * 5), -1]  # num_lines, event_buffer_size (kernel default), padding, fd
    return bytearray(LINE_REQUEST.pack(*offsets, label, *config, *tail))


def line_request_fd(request: bytes | bytearray) -> int:
    """The line fd the kernel wrote back into a request after GPIO_V2_GET_LINE_IOCTL."""
    (fd,) = struct.unpack_from("=i", request, _FD_OFFSET)
    return int(fd)


def decode_line_events(data: bytes) -> list[LineEvent]:
    """Decode whole events as read from a line fd (the kernel never returns part of one)."""
    if len(data) % LINE_EVENT.size:
        raise ValueError(f"{len(data)} bytes is not a whole number of line events")
    return [_decode_event(fields) for fields in LINE_EVENT.iter_unpack(data)]


def _decode_event(fields: tuple[int, ...]) -> LineEvent:
    timestamp_ns, event_id, offset, seqno, line_seqno = fields[:5]
    if event_id not in (GPIO_V2_LINE_EVENT_RISING_EDGE, GPIO_V2_LINE_EVENT_FALLING_EDGE):
        raise ValueError(f"unknown line event id {event_id}")
    return LineEvent(
        timestamp_ns, event_id == GPIO_V2_LINE_EVENT_RISING_EDGE, offset, seqno, line_seqno
    )
