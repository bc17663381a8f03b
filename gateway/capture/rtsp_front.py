"""The box's RTSP front for a pushing camera: digest authentication, then CSeq-shifted relay
(pure: bytes in, bytes and a verdict out; gateway/capture/rtsp_push.py does the I/O).

FFmpeg's RTSP listener (what PyAV records a push with) authenticates nobody. So the camera talks
to this front first: every request is answered `401 Unauthorized` with a digest challenge
(RFC 2617 without qop, what RTSP cameras and FFmpeg speak) until one carries the right answer
for the user and password of the camera's `credentials_file`. From that request on, everything
the camera sends goes to PyAV's listener on loopback and everything PyAV answers goes back.
PyAV's listener insists on CSeq 1, 2, 3..., so the front shifts the camera's CSeq down by the
requests it answered itself, and PyAV's answers back up.

Invariants:
- Nothing reaches PyAV before a request proved the password (with `credentials` None, the
  `auth = "none"` form, the first request is admitted as it is).
- A sender gets MAX_ATTEMPTS answers; then it is refused: `bad_credentials` if it ever sent an
  Authorization, else `no_credentials`. Interleaved data before admission, a message larger
  than MAX_HEADER_BYTES / MAX_BODY_BYTES or one that is not RTSP/1.0 is `protocol_error`.
- The password never leaves this module: only the digest response is compared
  (constant-time), and nothing here logs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field, replace

from common.faults import RemoteFault
from gateway.capture.camera_trust import BAD_CREDENTIALS, NO_CREDENTIALS, PROTOCOL_ERROR
from gateway.capture.credentials import Credentials

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
MAX_ATTEMPTS = 4  # FFmpeg needs two (one challenge, one answer); a little room for others
INTERLEAVED = 0x24  # '$': an RTP/RTCP frame on the RTSP connection (RFC 2326 10.12)
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


class FramingError(ValueError, RemoteFault):
    """Bytes that are not RTSP/1.0 messages and interleaved frames (a protocol error)."""


@dataclass(frozen=True, slots=True)
class RtspMessage:
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def cseq(self) -> int | None:
        value = self.header("CSeq")
        return int(value) if value is not None and value.strip().isdigit() else None

    def with_cseq(self, cseq: int) -> RtspMessage:
        headers = tuple(
            (key, str(cseq) if key.lower() == "cseq" else value) for key, value in self.headers
        )
        return replace(self, headers=headers)

    def encode(self) -> bytes:
        lines = [self.start_line, *(f"{key}: {value}" for key, value in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


Item = RtspMessage | bytes  # a message, or one interleaved frame as it came


@dataclass
class RtspFramer:
    """Splits a byte stream into RTSP messages and interleaved frames, bounded."""

    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Item]:
        self._buffer += data
        items: list[Item] = []
        while self._buffer:
            item = self._next()
            if item is None:
                break
            items.append(item)
        return items

    def _next(self) -> Item | None:
        buffer = self._buffer
        if buffer[0] == INTERLEAVED:
            if len(buffer) < 4:
                return None
            end = 4 + int.from_bytes(buffer[2:4], "big")
            if len(buffer) < end:
                return None
            frame = bytes(buffer[:end])
            del buffer[:end]
            return frame
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise FramingError("RTSP header too long")
            return None
        if head_end > MAX_HEADER_BYTES:
            raise FramingError("RTSP header too long")
        message = _parse_head(bytes(buffer[:head_end]))
        length = _content_length(message)
        total = head_end + 4 + length
        if len(buffer) < total:
            return None
        body = bytes(buffer[head_end + 4 : total])
        del buffer[:total]
        return replace(message, body=body)


def _parse_head(raw: bytes) -> RtspMessage:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FramingError("RTSP header is not UTF-8") from exc
    start_line, *lines = text.split("\r\n")
    if "RTSP/1.0" not in start_line:
        raise FramingError("not an RTSP/1.0 message")
    headers = []
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise FramingError("malformed RTSP header line")
        headers.append((key.strip(), value.strip()))
    return RtspMessage(start_line, tuple(headers))


def _content_length(message: RtspMessage) -> int:
    value = message.header("Content-Length")
    if value is None:
        return 0
    if not value.isdigit() or int(value) > MAX_BODY_BYTES:
        raise FramingError("bad or oversized Content-Length")
    return int(value)


def encode_items(items: list[Item]) -> bytes:
    return b"".join(item if isinstance(item, bytes) else item.encode() for item in items)


# --- digest -------------------------------------------------------------------------------------


def _md5_hex(text: str) -> str:
    # RTSP digest is MD5 by its RFC; what it protects is said in docs/capture.md (the weakest
    # accepted form).
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def digest_response(credentials: Credentials, realm: str, nonce: str, method: str, uri: str) -> str:
    """The RFC 2617 response without qop: MD5(HA1:nonce:HA2)."""
    ha1 = _md5_hex(f"{credentials.user}:{realm}:{credentials.password}")
    ha2 = _md5_hex(f"{method}:{uri}")
    return _md5_hex(f"{ha1}:{nonce}:{ha2}")


def digest_params(header: str) -> dict[str, str] | None:
    """The parameters of a `Digest ...` Authorization header, or None for another scheme."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    return {m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _PARAM.finditer(rest)}


def request_line(message: RtspMessage) -> tuple[str, str]:
    """(method, request URI) of a request; FramingError for a response or a bad line."""
    parts = message.start_line.split(" ")
    if len(parts) != 3 or parts[2] != "RTSP/1.0" or parts[0].startswith("RTSP/"):
        raise FramingError("not an RTSP request")
    return parts[0], parts[1]


# --- the front ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrontStep:
    """What the shell does after feeding bytes: send `reply` to the camera; send `forward` to
    PyAV (only once `admitted`); close with `refused` (a reason code) when set."""

    reply: bytes = b""
    forward: bytes = b""
    admitted: bool = False
    refused: str | None = None
    path: str = "/"  # the request URI's path of the admitted request (PyAV listens on it)


@dataclass
class RtspFront:
    """One camera connection: challenge until admitted, then shift CSeq both ways."""

    credentials: Credentials | None
    realm: str
    nonce: str
    admitted: bool = False
    shift: int = 0  # the camera's CSeq minus PyAV's
    _answered: int = 0
    _tried_credentials: bool = False
    _from_camera: RtspFramer = field(default_factory=RtspFramer)
    _from_box: RtspFramer = field(default_factory=RtspFramer)

    def from_camera(self, data: bytes) -> FrontStep:
        """Bytes the camera sent. Before admission: replies or a refusal; after: forwards."""
        try:
            items = self._from_camera.feed(data)
            if self.admitted:
                return FrontStep(forward=self._shift_down(items), admitted=True)
            return self._authenticate(items)
        except FramingError:
            return FrontStep(refused=PROTOCOL_ERROR)

    def refusal_so_far(self) -> str:
        """Why a sender that gives up before it is admitted is refused."""
        return BAD_CREDENTIALS if self._tried_credentials else NO_CREDENTIALS

    def from_box(self, data: bytes) -> bytes:
        """Bytes PyAV answered, CSeq shifted back to the camera's. FramingError propagates."""
        items = self._from_box.feed(data)
        return encode_items(
            [
                item.with_cseq(cseq + self.shift)
                if isinstance(item, RtspMessage) and (cseq := item.cseq()) is not None
                else item
                for item in items
            ]
        )

    def _authenticate(self, items: list[Item]) -> FrontStep:
        replies = b""
        for index, item in enumerate(items):
            if isinstance(item, bytes):
                return FrontStep(reply=replies, refused=PROTOCOL_ERROR)
            method, uri = request_line(item)
            cseq = item.cseq()
            if cseq is None:
                return FrontStep(reply=replies, refused=PROTOCOL_ERROR)
            if self._proves(item, method, uri):
                self.admitted = True
                self.shift = cseq - 1
                forward = self._shift_down(items[index:])
                return FrontStep(replies, forward, admitted=True, path=_path_of(uri))
            if self._answered >= MAX_ATTEMPTS:
                return FrontStep(reply=replies, refused=self.refusal_so_far())
            self._answered += 1
            replies += self._challenge(cseq)
        return FrontStep(reply=replies)

    def _proves(self, message: RtspMessage, method: str, uri: str) -> bool:
        if self.credentials is None:
            return True
        header = message.header("Authorization")
        if header is None:
            return False
        self._tried_credentials = True
        params = digest_params(header)
        if params is None:  # Basic (a password in the clear) is never accepted
            return False
        if (params.get("realm"), params.get("nonce"), params.get("uri")) != (
            self.realm,
            self.nonce,
            uri,
        ):
            return False
        if not hmac.compare_digest(params.get("username", ""), self.credentials.user):
            return False
        expected = digest_response(self.credentials, self.realm, self.nonce, method, uri)
        return hmac.compare_digest(params.get("response", "").lower(), expected)

    def _challenge(self, cseq: int) -> bytes:
        challenge = f'Digest realm="{self.realm}", nonce="{self.nonce}"'
        return RtspMessage(
            "RTSP/1.0 401 Unauthorized",
            (("CSeq", str(cseq)), ("WWW-Authenticate", challenge), ("Content-Length", "0")),
        ).encode()

    def _shift_down(self, items: list[Item]) -> bytes:
        return encode_items(
            [
                item.with_cseq(cseq - self.shift)
                if isinstance(item, RtspMessage) and (cseq := item.cseq()) is not None
                else item
                for item in items
            ]
        )


def _path_of(uri: str) -> str:
    """The path of an RTSP request URI (`rtsp://host:port/path` or `*`)."""
    if "://" not in uri:
        return "/"
    rest = uri.split("://", 1)[1]
    slash = rest.find("/")
    return "/" if slash < 0 else rest[slash:]
