"""Version 2 headers: the header MAC commits every reader to one data key, and a threshold of k
keeps fewer than k key holders out (docs/evidence-format.md 3.5, 4.1.1).

The forged files are made as a malicious box would make them: with the box's own knowledge (the
data key of a recording it writes) and the public recipient keys, never with a private key.
"""

from __future__ import annotations

import io
import itertools
import os
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.envelope import (
    RecipientPrivateKey,
    RecipientSet,
    RecordingKey,
    derive_header_mac_key,
    wrap_share,
)
from storage.errors import (
    BadHeaderMac,
    NoMatchingRecipient,
    SplicedChunk,
    TooFewShares,
    WrongKey,
)
from storage.evidence_format import (
    HEADER_MAC_BYTES,
    STANZA_BYTES,
    V2_FIXED_HEADER_BYTES,
    EvidenceHeader,
    decode_header,
)
from storage.key_shares import join_shares, split_key
from storage.reader import ReadReport, read_evidence
from tests.evidence_helpers import write_file


@pytest.fixture(scope="module")
def holders() -> tuple[RecipientPrivateKey, ...]:
    return tuple(RecipientPrivateKey.generate() for _ in range(3))


def read(data: bytes, *keys: RecipientPrivateKey) -> tuple[ReadReport, bytes]:
    media = io.BytesIO()
    report = read_evidence(io.BytesIO(data), list(keys), media_out=media)
    return report, media.getvalue()


def four_eyes_file(
    card: Path, holders: tuple[RecipientPrivateKey, ...], threshold: int, media: bytes
) -> bytes:
    recipients = RecipientSet(tuple(h.public() for h in holders), threshold)
    key = RecordingKey(uuid.uuid4().bytes, recipients)
    return write_file(card, holders[0], media, key=key).path.read_bytes()


def resealed(data: bytes, header: EvidenceHeader, data_key: bytes) -> bytes:
    """`data` with its header replaced by `header`, MACed with `data_key` (what the box can do)."""
    _, length = decode_header(data)
    mac_key = derive_header_mac_key(data_key, header.file_id)
    return header.encode(mac_key) + data[length:]


def test_the_header_ends_in_its_mac_and_the_threshold_precedes_the_stanzas(
    tmp_path: Path, holders: tuple[RecipientPrivateKey, ...]
) -> None:
    data = four_eyes_file(tmp_path, holders, 2, os.urandom(3000))
    header, length = decode_header(data)
    assert data[8:10] == b"\x00\x02"  # format version 2
    assert length == V2_FIXED_HEADER_BYTES + 3 * STANZA_BYTES + HEADER_MAC_BYTES
    assert data[67:69] == b"\x03\x02"  # three recipients, threshold two
    assert header.header_mac == data[length - HEADER_MAC_BYTES : length]
    assert [s.key_id for s in header.recipients] == [h.public().key_id for h in holders]


@pytest.mark.parametrize(("threshold", "count"), [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3)])
def test_any_threshold_of_the_holders_decrypts_and_fewer_are_refused(
    tmp_path: Path, holders: tuple[RecipientPrivateKey, ...], threshold: int, count: int
) -> None:
    media = os.urandom(9000)
    data = four_eyes_file(tmp_path, holders[:count], threshold, media)
    for size in range(1, count + 1):
        for present in itertools.combinations(holders[:count], size):
            if size >= threshold:
                report, out = read(data, *present)
                assert out == media
                assert report.key_committed
                assert report.key_ids == tuple(h.public().key_id.hex() for h in present)
            else:
                with pytest.raises(TooFewShares, match=f"needs {threshold} of its {count}"):
                    read(data, *present)


def test_a_stranger_key_is_no_share(
    tmp_path: Path, holders: tuple[RecipientPrivateKey, ...]
) -> None:
    data = four_eyes_file(tmp_path, holders[:2], 2, os.urandom(3000))
    stranger = RecipientPrivateKey.generate()
    with pytest.raises(NoMatchingRecipient):
        read(data, stranger)
    with pytest.raises(TooFewShares):  # the holder and a stranger are still one holder
        read(data, holders[0], stranger)


def test_a_recipient_rewrapped_to_another_data_key_is_refused(
    tmp_path: Path, holders: tuple[RecipientPrivateKey, ...]
) -> None:
    """A malicious box gives recipient B a different data key than A (threshold 1, two keys)
    and writes the whole file so (its chunks under the true key). A reads the recording; B is
    refused at the MAC before any chunk is opened. MACed for B's key instead, A is refused:
    no two readers ever accept different data keys."""
    a, b = holders[0], holders[1]
    key = RecordingKey(uuid.uuid4().bytes, (a.public(), b.public()))
    true_key = bytes(key._data_key)  # the box knows it: it writes the recording
    other_key = os.urandom(32)
    key.stanzas = (
        key.stanzas[0],
        wrap_share(other_key, b.public(), key.recording_id, threshold=1, count=2, position=2),
    )
    media = os.urandom(5000)
    data = write_file(tmp_path, a, media, key=key).path.read_bytes()

    assert read(data, a)[1] == media
    with pytest.raises(BadHeaderMac):
        read(data, b)
    with pytest.raises(BadHeaderMac):  # both keys present: they disagree, refused
        read(data, a, b)
    header, _ = decode_header(data)
    sealed_for_b = resealed(data, header, other_key)
    with pytest.raises(BadHeaderMac):
        read(sealed_for_b, a)
    assert true_key != other_key


def test_inconsistent_shares_are_refused_by_every_set_that_includes_them(
    tmp_path: Path, holders: tuple[RecipientPrivateKey, ...]
) -> None:
    """2 of 3, with holder C's share taken from another split: A and B read the recording; any
    set with C in it is refused, whatever the box hoped C would see."""
    a, b, c = holders
    key = RecordingKey(uuid.uuid4().bytes, RecipientSet((a.public(), b.public(), c.public()), 2))
    foreign_share = split_key(os.urandom(32), 2, 3)[2]
    key.stanzas = (
        *key.stanzas[:2],
        wrap_share(foreign_share, c.public(), key.recording_id, threshold=2, count=3, position=3),
    )
    media = os.urandom(5000)
    data = write_file(tmp_path, a, media, key=key).path.read_bytes()

    assert read(data, a, b)[1] == media
    for present in ((a, c), (b, c), (a, b, c)):
        with pytest.raises(BadHeaderMac):
            read(data, *present)


def test_a_header_remaced_by_the_box_after_sealing_fails_the_chunks(
    tmp_path: Path, holders: tuple[RecipientPrivateKey, ...]
) -> None:
    """Even with the data key (the box while it records), an edited header with a fresh MAC
    changes H, which every chunk's associated data holds."""
    key = RecordingKey(uuid.uuid4().bytes, (holders[0].public(),))
    data = write_file(tmp_path, holders[0], os.urandom(5000), key=key).path.read_bytes()
    header, _ = decode_header(data)
    edited = resealed(
        data, replace(header, created_at_ms=header.created_at_ms - 3_600_000), bytes(key._data_key)
    )
    with pytest.raises(SplicedChunk):
        read(edited, holders[0])


def test_a_share_moved_to_another_position_does_not_unwrap(
    tmp_path: Path, holders: tuple[RecipientPrivateKey, ...]
) -> None:
    data = four_eyes_file(tmp_path, holders[:2], 2, os.urandom(3000))
    header, length = decode_header(data)
    swapped = replace(header, recipients=header.recipients[::-1])
    tampered = swapped.authenticated_bytes() + header.header_mac + data[length:]
    with pytest.raises(WrongKey):
        read(tampered, *holders[:2])


def test_a_lowered_threshold_does_not_let_one_holder_in(
    tmp_path: Path, holders: tuple[RecipientPrivateKey, ...]
) -> None:
    data = four_eyes_file(tmp_path, holders[:2], 2, os.urandom(3000))
    lowered = bytearray(data)
    lowered[68] = 1  # threshold 2 -> 1, as someone with a hex editor would
    with pytest.raises(WrongKey):  # the share is bound to its split (spec 3.3)
        read(bytes(lowered), holders[0])


@settings(max_examples=40, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    split=st.integers(1, 8).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))),
    data=st.data(),
)
def test_any_threshold_subset_joins_to_the_key(
    key: bytes, split: tuple[int, int], data: st.DataObject
) -> None:
    threshold, count = split
    shares = split_key(key, threshold, count)
    positions = data.draw(
        st.lists(st.integers(1, count), min_size=threshold, max_size=count, unique=True)
    )
    assert join_shares({p: shares[p - 1] for p in positions}) == key
    if threshold > 1:
        fewer = positions[: threshold - 1]
        assert join_shares({p: shares[p - 1] for p in fewer}) != key
