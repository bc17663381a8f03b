"""HTTP/3 for the uplink, the pure core: stream guard, header blocks, what a connection's end means.

Shared by the box's transport (the shell, transport/h3_io.py) and the back office's HTTP/3
listener (backoffice/h3_server.py); nothing here opens a socket, reads a file or keeps a clock:
- `H3StreamGuard` follows the frame headers of one stream ahead of aioquic and refuses what would
  make aioquic buffer beyond our bounds (H3LimitExceeded);
- `request_header_fields`, `split_header_fields`, `field_section_bytes`, `parse_response_head`
  build and read header blocks (RFC 9114 section 4.2);
- `termination_error` says what the end of a connection means for the box (errors by fault).

Invariants:
- A header block (either direction) that passes is at most MAX_FIELD_SECTION_BYTES as RFC 9114
  counts it; a response without a valid final :status is HostileServer, never a guess.
- A request's header block never carries a connection-specific field (aioquic would close the
  whole connection on one) nor a caller's own host / content-length: the transport sets those.
- A certificate alert at the end of a connection is PinMismatch (a person must act), anything
  else TransientNetworkError (the outcome of requests in flight is unknown).
"""

from __future__ import annotations

import enum

from aioquic.h3.connection import FrameType, StreamType
from aioquic.h3.events import Headers
from aioquic.quic.connection import stream_is_unidirectional
from aioquic.quic.events import ConnectionTerminated
from aioquic.quic.packet import QuicErrorCode
from aioquic.tls import AlertDescription

from common.faults import RemoteFault
from transport.checksum import checksum_header
from transport.errors import HostileServer, PinMismatch, TransientNetworkError, TransportError
from transport.http import HttpRequest

MAX_FIELD_SECTION_BYTES = 16 * 1024
"""Largest header block (either direction) aioquic may buffer for us; tus headers are tiny."""

FIELD_OVERHEAD_BYTES = 32
"""Per-field overhead in the field section size (RFC 9114 section 4.2.2)."""

PRELUDE_SLACK_BYTES = 1024
"""Room for frame headers and reserved ("grease") frames before a stream's header block."""

REASON_PHRASE_MAX_CHARS = 200
"""A peer's close reason is quoted in error messages, cut to this length."""

CONNECTION_SPECIFIC_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
"""HTTP/1.1 hop-by-hop fields that HTTP/3 forbids (RFC 9114 section 4.2); aioquic would close
the whole connection on receiving one, so senders drop them."""

_SET_BY_TRANSPORT = frozenset({"host", "content-length"})
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

CERTIFICATE_ALERTS = frozenset(
    {
        AlertDescription.bad_certificate,
        AlertDescription.unsupported_certificate,
        AlertDescription.certificate_revoked,
        AlertDescription.certificate_expired,
        AlertDescription.certificate_unknown,
        AlertDescription.unknown_ca,
        AlertDescription.certificate_required,
    }
)
"""TLS alerts that mean "this certificate is not accepted" (QUIC sends them as CRYPTO_ERROR)."""


def certificate_error_code(alert: AlertDescription) -> int:
    """The QUIC error code carrying TLS `alert` (RFC 9001 section 4.8)."""
    return int(QuicErrorCode.CRYPTO_ERROR) + int(alert)


# --- pure helpers -------------------------------------------------------------------------


class H3LimitExceeded(RemoteFault):
    """A peer sent something on a stream that would make aioquic buffer beyond our bounds."""


class _Expect(enum.Enum):
    """What the next varint on a guarded stream is (or that the rest needs no parsing)."""

    STREAM_TYPE = enum.auto()
    FRAME_TYPE = enum.auto()
    FRAME_LENGTH = enum.auto()
    NOTHING = enum.auto()


class _Kind(enum.Enum):
    REQUEST = enum.auto()
    CONTROL = enum.auto()


def _complete_varint(encoded: bytearray) -> int | None:
    """The QUIC variable-length integer in `encoded`, or None while bytes are missing."""
    length_bytes = 1 << (encoded[0] >> 6)
    if len(encoded) < length_bytes:
        return None
    value = encoded[0] & 0x3F
    for byte in encoded[1:length_bytes]:
        value = (value << 8) | byte
    return value


class H3StreamGuard:
    """Follows the HTTP/3 frame headers of one stream, ahead of aioquic, to keep it bounded.

    aioquic buffers a HEADERS frame (and a SETTINGS frame) whole before decoding it, and while a
    header block waits for QPACK encoder data ("blocked") it buffers everything after it on that
    stream. So before bytes reach aioquic:
    - request streams: everything up to the end of the first HEADERS frame fits
      `limit_bytes` + PRELUDE_SLACK_BYTES; a second HEADERS frame (trailers, or a final response
      after an interim one) and PUSH_PROMISE are refused, so only the first block can block;
      after that block, until its event was delivered (`headers_delivered()`), at most
      `limit_bytes` more may arrive (`check_undelivered()`, called after aioquic's turn);
    - unidirectional streams: a control stream's SETTINGS and MAX_PUSH_ID frames fit
      `limit_bytes`; push streams are refused (neither end uses server push); QPACK streams and
      unknown ones pass (aioquic bounds the former by its table capacity, discards the latter).
    Only frame headers (at most 16 bytes each) are parsed; payloads are skipped in bulk.
    Violations raise H3LimitExceeded.
    """

    def __init__(self, stream_id: int, limit_bytes: int = MAX_FIELD_SECTION_BYTES) -> None:
        self._limit_bytes = limit_bytes
        if stream_is_unidirectional(stream_id):
            self._kind: _Kind | None = None
            self._expect = _Expect.STREAM_TYPE
        else:
            self._kind = _Kind.REQUEST
            self._expect = _Expect.FRAME_TYPE
        self._varint = bytearray()
        self._frame_type = 0
        self._payload_left_bytes = 0
        self._offset_bytes = 0
        self._headers_frames = 0
        self._headers_end_bytes: int | None = None
        self._headers_delivered = False

    def feed(self, data: bytes) -> None:
        """Account for the next `data` of the stream; H3LimitExceeded if it must not pass."""
        position = 0
        while position < len(data) and self._expect != _Expect.NOTHING:
            if self._payload_left_bytes:
                step = min(self._payload_left_bytes, len(data) - position)
                self._payload_left_bytes -= step
                position += step
                continue
            self._varint.append(data[position])
            position += 1
            value = _complete_varint(self._varint)
            if value is not None:
                self._varint.clear()
                self._on_varint(value, self._offset_bytes + position)
        self._offset_bytes += len(data)
        if (
            self._kind == _Kind.REQUEST
            and self._headers_frames == 0
            and self._offset_bytes > self._limit_bytes + PRELUDE_SLACK_BYTES
        ):
            raise H3LimitExceeded(f"no header block within the first {self._offset_bytes} bytes")

    def headers_delivered(self) -> None:
        """aioquic decoded the header block: it no longer holds the stream's bytes back."""
        self._headers_delivered = True

    def check_undelivered(self) -> None:
        """H3LimitExceeded if aioquic holds too much behind a header block it cannot decode."""
        if self._headers_end_bytes is None or self._headers_delivered:
            return
        if self._offset_bytes - self._headers_end_bytes > self._limit_bytes:
            raise H3LimitExceeded("a header block stays undecodable while data piles up behind it")

    def _on_varint(self, value: int, offset_bytes: int) -> None:
        if self._expect == _Expect.STREAM_TYPE:
            self._on_stream_type(value)
        elif self._expect == _Expect.FRAME_TYPE:
            self._frame_type = value
            self._expect = _Expect.FRAME_LENGTH
        else:
            self._check_frame(self._frame_type, value, offset_bytes + value)
            self._payload_left_bytes = value
            self._expect = _Expect.FRAME_TYPE

    def _on_stream_type(self, stream_type: int) -> None:
        if stream_type == StreamType.CONTROL:
            self._kind = _Kind.CONTROL
            self._expect = _Expect.FRAME_TYPE
        elif stream_type == StreamType.PUSH:
            raise H3LimitExceeded("server push is not accepted")
        else:
            self._expect = _Expect.NOTHING

    def _check_frame(self, frame_type: int, length_bytes: int, end_offset_bytes: int) -> None:
        if self._kind == _Kind.CONTROL:
            buffered_whole = frame_type in (FrameType.SETTINGS, FrameType.MAX_PUSH_ID)
            if buffered_whole and length_bytes > self._limit_bytes:
                raise H3LimitExceeded(f"control frame of {length_bytes} bytes")
            return
        if frame_type == FrameType.PUSH_PROMISE:
            raise H3LimitExceeded("server push is not accepted")
        if frame_type != FrameType.HEADERS:
            return
        self._headers_frames += 1
        if self._headers_frames > 1:
            raise H3LimitExceeded("a second header block (trailers, interim response) is refused")
        if end_offset_bytes > self._limit_bytes + PRELUDE_SLACK_BYTES:
            raise H3LimitExceeded(f"header block of {length_bytes} bytes")
        self._headers_end_bytes = end_offset_bytes


def field_section_bytes(headers: Headers) -> int:
    """The decoded size of a header block as RFC 9114 section 4.2.2 counts it."""
    return sum(len(name) + len(value) + FIELD_OVERHEAD_BYTES for name, value in headers)


def split_header_fields(headers: Headers) -> tuple[dict[str, str], dict[str, str]]:
    """(pseudo-header fields, regular fields) with text keys; repeated fields joined by ", "."""
    pseudo: dict[str, str] = {}
    regular: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        target = pseudo if name.startswith(":") else regular
        target[name] = f"{target[name]}, {value}" if name in target else value
    return pseudo, regular


def request_header_fields(
    request: HttpRequest, body: bytes | bytearray | None, authority: str
) -> list[tuple[bytes, bytes]]:
    """The header block of `request`: pseudo-headers first, names lower-case, the transport's
    own content-length (and Upload-Checksum when the slice asks for one)."""
    fields = [
        (":method", request.method),
        (":scheme", "https"),
        (":authority", authority),
        (":path", request.target),
    ]
    for name, value in request.headers:
        lowered = name.lower()
        if lowered not in CONNECTION_SPECIFIC_HEADERS and lowered not in _SET_BY_TRANSPORT:
            fields.append((lowered, value))
    if request.body is not None and request.body.checksum_algorithm is not None:
        name, value = checksum_header(request.body.checksum_algorithm, body or b"")
        fields.append((name.lower(), value))
    if body is not None or request.method in _METHODS_WITH_BODY:
        fields.append(("content-length", str(len(body or b""))))
    return [(name.encode("ascii"), value.encode("latin-1")) for name, value in fields]


def parse_response_head(headers: Headers) -> tuple[int, dict[str, str]]:
    """(status, lower-case headers) of a final response; HostileServer if there is none."""
    if field_section_bytes(headers) > MAX_FIELD_SECTION_BYTES:
        raise HostileServer(f"response header block exceeds {MAX_FIELD_SECTION_BYTES} bytes")
    pseudo, regular = split_header_fields(headers)
    status_text = pseudo.get(":status", "")
    if len(status_text) != 3 or not status_text.isdigit():
        raise HostileServer(f"response without a valid :status ({status_text[:8]!r})")
    status = int(status_text)
    if status < 200:
        raise HostileServer(f"interim response {status} is not accepted")
    return status, regular


def termination_error(
    event: ConnectionTerminated, *, server_certificate_accepted: bool
) -> TransportError:
    """What the end of the connection means for the box (errors by fault).

    A certificate alert before we accepted the server's certificate is our own chain / host name
    check failing; after it, it is the back office refusing the box's certificate. Both need a
    person, never a retry, hence PinMismatch. Anything else leaves requests' outcome unknown.
    """
    reason = event.reason_phrase[:REASON_PHRASE_MAX_CHARS] or "no reason given"
    alert_code = event.error_code - QuicErrorCode.CRYPTO_ERROR
    if alert_code in {int(alert) for alert in CERTIFICATE_ALERTS}:
        alert_name = AlertDescription(alert_code).name
        if server_certificate_accepted:
            return PinMismatch(
                f"the back office refused this box's client certificate "
                f"(TLS alert {alert_name}: {reason}); connection dropped"
            )
        return PinMismatch(
            f"the back office certificate chain or host name did not verify "
            f"(TLS alert {alert_name}: {reason}); connection dropped"
        )
    return TransientNetworkError(f"QUIC connection ended (code {event.error_code:#x}: {reason})")
