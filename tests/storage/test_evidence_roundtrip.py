"""Evidence files: what goes in comes out byte-exact, and every kind of tampering is named."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.envelope import RecipientPrivateKey, RecordingKey
from storage.errors import (
    BadHeaderMac,
    CorruptChunk,
    EvidenceError,
    MalformedHeader,
    NoMatchingRecipient,
    NotEvidenceFile,
    ReorderedChunk,
    SplicedChunk,
    TrailingData,
    TruncatedFile,
    UnsupportedVersion,
    WrongKey,
)
from storage.evidence_format import (
    FIXED_HEADER_BYTES,
    MAGIC,
    decode_framing,
    decode_header,
)
from storage.reader import ReadReport, read_evidence
from tests.evidence_helpers import write_file


def read_bytes(data: bytes, key: RecipientPrivateKey) -> tuple[ReadReport, bytes]:
    media = io.BytesIO()
    report = read_evidence(io.BytesIO(data), key, media_out=media)
    return report, media.getvalue()


def record_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of every record after the header."""
    _, offset = decode_header(data)
    spans = []
    while offset < len(data):
        framing = decode_framing(data[offset : offset + 16])
        end = offset + framing.record_len()
        spans.append((offset, end))
        offset = end
    return spans


@pytest.fixture
def sealed(tmp_path: Path, recipient: RecipientPrivateKey) -> tuple[bytes, bytes]:
    media = os.urandom(50_000)
    written = write_file(tmp_path, recipient, media, segments=5)
    return written.path.read_bytes(), media


def test_roundtrip_is_byte_exact_with_metadata(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    data, media = sealed
    report, out = read_bytes(data, recipient)
    assert out == media
    types = [m["type"] for m in report.metadata]
    assert types[0] == "recording"
    assert types.count("segment") == 5
    assert types[-1] == "end"
    assert report.metadata[-1]["media_bytes"] == len(media)
    assert report.interrupted_at_chunk is None


@settings(max_examples=25, deadline=None)
@given(
    media=st.binary(min_size=0, max_size=20_000),
    segments=st.integers(1, 7),
    chunk=st.sampled_from([64, 1000, 4096]),
)
def test_roundtrip_property(
    tmp_path_factory: pytest.TempPathFactory,
    recipient: RecipientPrivateKey,
    media: bytes,
    segments: int,
    chunk: int,
) -> None:
    card = tmp_path_factory.mktemp("card")
    written = write_file(card, recipient, media, segments=segments, chunk_max_bytes=chunk)
    _, out = read_bytes(written.path.read_bytes(), recipient)
    assert out == media


def test_plaintext_media_never_on_disk(tmp_path: Path, recipient: RecipientPrivateKey) -> None:
    marker = b"PLAINTEXT-FOOTAGE-MARKER" * 400
    write_file(tmp_path, recipient, marker, segments=3)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"PLAINTEXT-FOOTAGE" not in path.read_bytes(), path


def test_second_recipient_can_decrypt(
    tmp_path: Path, recipient: RecipientPrivateKey, second_recipient: RecipientPrivateKey
) -> None:
    key = RecordingKey(os.urandom(16), (recipient.public(), second_recipient.public()))
    media = os.urandom(9000)
    written = write_file(tmp_path, recipient, media, key=key)
    data = written.path.read_bytes()
    assert read_bytes(data, recipient)[1] == media
    assert read_bytes(data, second_recipient)[1] == media


def test_wrong_key_is_reported(sealed: tuple[bytes, bytes]) -> None:
    with pytest.raises(NoMatchingRecipient):
        read_bytes(sealed[0], RecipientPrivateKey.generate())


def test_damaged_wrapped_key_is_wrong_key(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    data = bytearray(sealed[0])
    data[FIXED_HEADER_BYTES + 8 + 32 + 3] ^= 0x01  # inside the wrapped data key
    with pytest.raises(WrongKey):
        read_bytes(bytes(data), recipient)


def test_flipped_bit_in_chunk_is_corrupt(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    data = bytearray(sealed[0])
    start, end = record_spans(sealed[0])[3]
    data[(start + 16 + end) // 2] ^= 0x10
    with pytest.raises(CorruptChunk) as info:
        read_bytes(bytes(data), recipient)
    assert info.value.chunk_index == 3
    assert "bits damaged" in str(info.value)


def test_a_header_edited_after_sealing_fails_its_mac(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    data = bytearray(sealed[0])
    data[50] ^= 0x01  # created_at_ms: plaintext, but covered by the header MAC
    with pytest.raises(BadHeaderMac):  # refused before any chunk is opened
        read_bytes(bytes(data), recipient)


def test_swapped_chunks_are_reordered(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    data = sealed[0]
    spans = record_spans(data)
    (a0, a1), (b0, b1) = spans[2], spans[3]
    swapped = data[:a0] + data[b0:b1] + data[a0:a1] + data[b1:]
    with pytest.raises(ReorderedChunk) as info:
        read_bytes(swapped, recipient)
    assert info.value.chunk_index == 2


def test_removed_middle_chunk_is_reported(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    data = sealed[0]
    start, end = record_spans(data)[2]
    with pytest.raises(ReorderedChunk, match="position 2 holds chunk 3"):
        read_bytes(data[:start] + data[end:], recipient)


def test_chunk_spliced_from_another_file(tmp_path: Path, recipient: RecipientPrivateKey) -> None:
    key = RecordingKey(os.urandom(16), (recipient.public(),))
    one = write_file(tmp_path, recipient, os.urandom(30_000), key=key).path.read_bytes()
    two = write_file(tmp_path, recipient, os.urandom(30_000), key=key).path.read_bytes()
    s1, s2 = record_spans(one)[2], record_spans(two)[2]
    spliced = one[: s1[0]] + two[s2[0] : s2[1]] + one[s1[1] :]
    with pytest.raises(SplicedChunk) as info:
        read_bytes(spliced, recipient)
    assert info.value.chunk_index == 2


@pytest.mark.parametrize("cut", ["record_boundary", "mid_record", "mid_framing"])
def test_truncation_is_reported(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey, cut: str
) -> None:
    data = sealed[0]
    start, end = record_spans(data)[-1]
    at = {"record_boundary": start, "mid_record": (start + end) // 2, "mid_framing": start + 5}[cut]
    with pytest.raises(TruncatedFile):
        read_bytes(data[:at], recipient)


def test_dropping_the_last_flag_is_detected(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    data = bytearray(sealed[0])
    start, _ = record_spans(sealed[0])[-1]
    data[start + 8] &= 0xFE  # claim the final chunk is not final
    with pytest.raises(CorruptChunk):
        read_bytes(bytes(data), recipient)


def test_trailing_data_is_reported(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    with pytest.raises(TrailingData):
        read_bytes(sealed[0] + b"extra", recipient)


def test_header_errors_are_distinct(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    data = sealed[0]
    with pytest.raises(NotEvidenceFile):
        read_bytes(b"GIF89a" + data[6:], recipient)
    with pytest.raises(UnsupportedVersion):
        read_bytes(MAGIC + b"\x00\x07" + data[10:], recipient)
    with pytest.raises(MalformedHeader):
        read_bytes(data[:40], recipient)
    with pytest.raises(MalformedHeader):
        read_bytes(data[:67] + b"\x05" + data[68:], recipient)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # `sealed` is only read, so sharing it across examples is sound
@given(position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_bit_is_an_evidence_error(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey, position: int, bit: int
) -> None:
    data = bytearray(sealed[0])
    data[position % len(data)] ^= 1 << bit
    with pytest.raises(EvidenceError):
        read_bytes(bytes(data), recipient)


def test_a_flipped_crc_on_an_authentic_chunk_is_corruption(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    data = bytearray(sealed[0])
    first_record_start, _ = record_spans(bytes(data))[0]
    data[first_record_start + 12] ^= 0x01  # framing bytes 12..15 hold the crc32
    with pytest.raises(CorruptChunk, match="crc32"):
        read_bytes(bytes(data), recipient)


def test_every_byte_of_header_first_records_and_tail_is_covered(
    sealed: tuple[bytes, bytes], recipient: RecipientPrivateKey
) -> None:
    """Exhaustive over the structured parts, where the random test may miss a 4-byte field."""
    data = sealed[0]
    _, second_record_end = record_spans(data)[1]
    positions = [*range(second_record_end), *range(len(data) - 200, len(data))]
    undetected = []
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        try:
            read_bytes(bytes(damaged), recipient)
        except EvidenceError:
            continue
        undetected.append(position)
    assert undetected == []
