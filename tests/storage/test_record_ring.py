"""The writer's record ring: the digest is the SHA-256 of what went through, in order, and a
buffer is handed out again only after the hash has read it."""

from __future__ import annotations

import gc
import hashlib
import os
import threading
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.evidence_format import crc32
from storage.record_ring import HashedRecordRing


@settings(max_examples=30, deadline=None)
@given(pieces=st.lists(st.binary(min_size=0, max_size=64), min_size=0, max_size=30))
def test_the_digest_is_the_sha256_of_every_piece_in_order(pieces: list[bytes]) -> None:
    ring = HashedRecordRing(64, count=2)
    ring.hash_bytes(b"header")
    for piece in pieces:
        buffer = ring.take()
        buffer[: len(piece)] = piece
        ring.hash_record(memoryview(buffer)[: len(piece)], buffer)
    assert ring.hexdigest() == hashlib.sha256(b"header" + b"".join(pieces)).hexdigest()
    assert ring.hexdigest() == hashlib.sha256(b"header" + b"".join(pieces)).hexdigest()


def test_a_buffer_comes_back_only_after_the_hash_read_it() -> None:
    """Every buffer is reused many times with new bytes: had one come back before it was
    hashed, the digest would cover the later bytes instead."""
    ring = HashedRecordRing(1 << 16, count=2)
    expected = hashlib.sha256()
    for _ in range(200):
        data = os.urandom(1 << 16)
        buffer = ring.take()
        buffer[:] = data
        ring.hash_record(memoryview(buffer), buffer)
        expected.update(data)
    assert ring.hexdigest() == expected.hexdigest()


def test_take_blocks_while_every_buffer_waits_for_the_hash() -> None:
    ring = HashedRecordRing(8, count=1)
    buffer = ring.take()  # taken and never handed over: the ring is empty
    got: list[bytearray] = []
    taker = threading.Thread(target=lambda: got.append(ring.take()), daemon=True)
    taker.start()
    taker.join(timeout=0.2)
    assert taker.is_alive()  # still waiting for a buffer
    assert got == []
    ring.give_back(buffer)
    taker.join(timeout=10)
    assert got == [buffer]
    ring.close()


def test_a_closed_ring_gives_no_digest_and_stops_its_thread() -> None:
    ring = HashedRecordRing(8)
    ring.close()
    ring.close()
    assert not ring._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        ring.hexdigest()


def test_a_failed_hash_is_reported_not_swallowed() -> None:
    ring = HashedRecordRing(8)
    ring.hash_bytes("not bytes")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="SHA-256 failed"):
        ring.hexdigest()


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=5000), start=st.integers(0, 100))
def test_the_record_crc_is_zlibs(data: bytes, start: int) -> None:
    """ISA-L's CRC-32 is the format's (spec 4.2: ISO-HDLC, as zlib), also over a view."""
    assert crc32(data) == zlib.crc32(data)
    assert crc32(memoryview(data)[start:]) == zlib.crc32(data[start:])


def test_a_ring_dropped_without_close_ends_its_thread() -> None:
    """A writer that is dropped (a bug, or an error path) must not leave a thread behind."""
    ring = HashedRecordRing(8)
    thread = ring._thread
    del ring
    gc.collect()
    thread.join(timeout=10)  # returns as soon as the thread ends
    assert not thread.is_alive()
