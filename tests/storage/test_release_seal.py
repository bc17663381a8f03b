"""A sealed release (storage/release_seal.py, docs/releases.md 6): it opens to exactly the
bundle with the fleet's key, and every change to its bytes is refused before anything of the
plaintext is trusted: a flipped bit anywhere, a cut, an extension, chunks swapped, another
fleet's key. What a copy reveals: its size only (two seals of one bundle share no bytes past
the magic)."""

from __future__ import annotations

import io
import os

import pytest

from storage.envelope import RecipientPrivateKey
from storage.errors import NoMatchingRecipient
from storage.evidence_format import RECORD_FRAMING_BYTES, TAG_BYTES
from storage.release_seal import (
    CHUNK_BYTES,
    HEADER_BYTES,
    MAGIC,
    ReleaseSealError,
    open_release,
    seal_release,
)

KEY = RecipientPrivateKey.generate()
PLAIN = os.urandom(2 * CHUNK_BYTES + 12345)  # three chunks, the last one short
RECORD = RECORD_FRAMING_BYTES + CHUNK_BYTES + TAG_BYTES


def seal(plain: bytes = PLAIN, key: RecipientPrivateKey = KEY) -> bytes:
    out = io.BytesIO()
    written = seal_release(io.BytesIO(plain), out, key.public())
    assert written == len(out.getvalue())
    return out.getvalue()


def opened(sealed: bytes, key: RecipientPrivateKey = KEY) -> bytes:
    out = io.BytesIO()
    open_release(io.BytesIO(sealed), out, key)
    return out.getvalue()


SEALED = seal()


@pytest.mark.parametrize("size", [1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, len(PLAIN)])
def test_it_opens_to_exactly_the_bundle(size: int) -> None:
    assert opened(seal(PLAIN[:size])) == PLAIN[:size]


def test_a_copy_reveals_its_size_and_nothing_else() -> None:
    again = seal()
    assert len(again) == len(SEALED) == HEADER_BYTES + len(PLAIN) + 3 * 32
    assert again[: len(MAGIC) + 5] == SEALED[: len(MAGIC) + 5]  # magic, version, chunk size
    same = sum(
        a == b for a, b in zip(again[len(MAGIC) + 5 :], SEALED[len(MAGIC) + 5 :], strict=True)
    )
    assert same < len(SEALED) // 100  # unrelated bytes (about 1 in 256 agree by chance)
    assert PLAIN[:64] not in SEALED


@pytest.mark.parametrize(
    "at", [3, len(MAGIC) + 2, 40, HEADER_BYTES - 1, HEADER_BYTES + 5, HEADER_BYTES + 20, -1]
)
def test_a_flipped_bit_anywhere_is_refused(at: int) -> None:
    position = at % len(SEALED)
    tampered = SEALED[:position] + bytes([SEALED[position] ^ 0x10]) + SEALED[position + 1 :]
    with pytest.raises((ReleaseSealError, NoMatchingRecipient, ValueError)):
        opened(tampered)


def test_a_cut_an_extension_and_swapped_chunks_are_refused() -> None:
    with pytest.raises(ReleaseSealError, match="truncated"):
        opened(SEALED[: HEADER_BYTES + 2 * RECORD])  # ends on a whole chunk: not the LAST
    with pytest.raises(ReleaseSealError):
        opened(SEALED[:-1])
    with pytest.raises(ReleaseSealError, match="after the LAST"):
        opened(SEALED + b"\0")
    first = SEALED[HEADER_BYTES : HEADER_BYTES + RECORD]
    second = SEALED[HEADER_BYTES + RECORD : HEADER_BYTES + 2 * RECORD]
    swapped = SEALED[:HEADER_BYTES] + second + first + SEALED[HEADER_BYTES + 2 * RECORD :]
    with pytest.raises(ReleaseSealError):
        opened(swapped)


def test_another_fleets_key_opens_nothing() -> None:
    with pytest.raises(NoMatchingRecipient):
        opened(SEALED, RecipientPrivateKey.generate())


def test_garbage_is_not_a_sealed_release() -> None:
    for garbage in (b"", b"MVBRSEAL", os.urandom(HEADER_BYTES + 100)):
        with pytest.raises((ReleaseSealError, NoMatchingRecipient)):
            opened(garbage)


def test_an_empty_bundle_is_not_sealed() -> None:
    with pytest.raises(ValueError, match="empty"):
        seal(b"")
