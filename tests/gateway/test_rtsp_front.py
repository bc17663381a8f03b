"""The digest front of an RTSP push (gateway/capture/rtsp_front.py, pure): nothing reaches PyAV
before a request proves the password; then CSeq is shifted both ways and frames pass as they are.
The digest answer is computed here from RFC 2617's formula, independently of the module."""

from __future__ import annotations

import hashlib

import pytest

from gateway.capture.camera_trust import BAD_CREDENTIALS, NO_CREDENTIALS, PROTOCOL_ERROR
from gateway.capture.credentials import Credentials
from gateway.capture.rtsp_front import (
    MAX_ATTEMPTS,
    MAX_HEADER_BYTES,
    FramingError,
    RtspFramer,
    RtspFront,
    RtspMessage,
)

PASSWORD = "s3cret"  # noqa: S105 (a test camera's)
CREDENTIALS = Credentials("bc1", PASSWORD)
REALM = "MVB camera bodycam"
NONCE = "0123456789abcdef0123456789abcdef"
URI = "rtsp://192.168.50.1:8554/bodycam"
FRAME = b"$\x00\x00\x05hello"


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def request(method: str, cseq: int, *, authorization: str | None = None, uri: str = URI) -> bytes:
    lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {cseq}"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def digest(method: str, password: str = PASSWORD, *, user: str = "bc1", nonce: str = NONCE) -> str:
    ha1 = md5(f"{user}:{REALM}:{password}")
    response = md5(f"{ha1}:{nonce}:{md5(f'{method}:{URI}')}")
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
        f'response="{response}"'
    )


def front(credentials: Credentials | None = CREDENTIALS) -> RtspFront:
    return RtspFront(credentials, REALM, NONCE)


def parsed(data: bytes) -> list[RtspMessage | bytes]:
    return RtspFramer().feed(data)


def test_a_request_without_credentials_is_challenged_and_nothing_is_forwarded() -> None:
    step = front().from_camera(request("OPTIONS", 1))
    assert step.forward == b""
    assert not step.admitted
    assert step.refused is None
    (reply,) = parsed(step.reply)
    assert isinstance(reply, RtspMessage)
    assert reply.start_line == "RTSP/1.0 401 Unauthorized"
    assert reply.cseq() == 1
    assert reply.header("WWW-Authenticate") == f'Digest realm="{REALM}", nonce="{NONCE}"'


def test_the_right_answer_is_admitted_and_forwarded_as_cseq_1() -> None:
    camera = front()
    camera.from_camera(request("OPTIONS", 1))
    step = camera.from_camera(request("OPTIONS", 2, authorization=digest("OPTIONS")))
    assert step.admitted
    assert step.reply == b""
    assert step.path == "/bodycam"
    (forwarded,) = parsed(step.forward)
    assert isinstance(forwarded, RtspMessage)
    assert forwarded.cseq() == 1, "PyAV's listener counts from 1"
    announce = camera.from_camera(request("ANNOUNCE", 3) + FRAME).forward
    message, frame = parsed(announce)
    assert isinstance(message, RtspMessage)
    assert message.cseq() == 2
    assert frame == FRAME, "interleaved frames pass as they came"
    answer = camera.from_box(b"RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n")
    (back,) = parsed(answer)
    assert isinstance(back, RtspMessage)
    assert back.cseq() == 3, "the camera's own numbering"


@pytest.mark.parametrize(
    "authorization",
    [
        digest("OPTIONS", "wrong"),
        digest("OPTIONS", user="bc2"),
        digest("OPTIONS", nonce="f" * 32),  # an answer to another challenge (a replay)
        digest("DESCRIBE"),  # computed for another method
        "Basic YmMxOnMzY3JldA==",  # the right password, in the clear: never accepted
    ],
)
def test_a_wrong_answer_is_challenged_again_then_refused(authorization: str) -> None:
    camera = front()
    for cseq in range(1, MAX_ATTEMPTS + 1):
        step = camera.from_camera(request("OPTIONS", cseq, authorization=authorization))
        assert not step.admitted
        assert step.refused is None
        assert step.forward == b""
    last = camera.from_camera(request("OPTIONS", MAX_ATTEMPTS + 1, authorization=authorization))
    assert last.refused == BAD_CREDENTIALS


def test_a_sender_that_never_tries_credentials_is_refused_as_such() -> None:
    camera = front()
    for cseq in range(1, MAX_ATTEMPTS + 2):
        step = camera.from_camera(request("OPTIONS", cseq))
    assert step.refused == NO_CREDENTIALS
    assert camera.refusal_so_far() == NO_CREDENTIALS


def test_the_uri_of_the_answer_must_be_the_request_uri() -> None:
    other = request("OPTIONS", 1, authorization=digest("OPTIONS"), uri=URI + "2")
    assert not front().from_camera(other).admitted


@pytest.mark.parametrize(
    "data",
    [
        FRAME,  # media before any request
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not RTSP
        b"OPTIONS " + b"x" * (MAX_HEADER_BYTES + 10),  # a header without end
        b"ANNOUNCE " + URI.encode() + b" RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 999999\r\n\r\n",
        b"OPTIONS " + URI.encode() + b" RTSP/1.0\r\n\r\n",  # no CSeq
    ],
)
def test_what_is_not_an_rtsp_request_is_a_protocol_error(data: bytes) -> None:
    assert front().from_camera(data).refused == PROTOCOL_ERROR


def test_messages_split_anywhere_are_framed_whole() -> None:
    whole = request("ANNOUNCE", 7) + FRAME + request("RECORD", 8)
    framer = RtspFramer()
    items = [item for byte in whole for item in framer.feed(bytes([byte]))]
    assert [i.cseq() if isinstance(i, RtspMessage) else i for i in items] == [7, FRAME, 8]


def test_a_body_is_kept_with_its_message() -> None:
    sdp = b"v=0\r\nm=video 0 RTP/AVP 96\r\n"
    head = f"ANNOUNCE {URI} RTSP/1.0\r\nCSeq: 3\r\nContent-Length: {len(sdp)}\r\n\r\n"
    (message,) = parsed(head.encode() + sdp)
    assert isinstance(message, RtspMessage)
    assert message.body == sdp
    assert message.with_cseq(1).encode() == head.replace("CSeq: 3", "CSeq: 1").encode() + sdp


def test_without_credentials_the_first_request_is_admitted_as_it_is() -> None:
    step = front(None).from_camera(request("OPTIONS", 1))
    assert step.admitted
    assert step.forward == request("OPTIONS", 1)


def test_a_box_answer_that_is_not_rtsp_is_a_framing_error() -> None:
    camera = front(None)
    camera.from_camera(request("OPTIONS", 1))
    with pytest.raises(FramingError):
        camera.from_box(b"HTTP/1.1 200 OK\r\n\r\n")
