"""Sealed values (storage/sealed.py): only the recording key opens them, a seal cannot be moved
to another label or altered, two seals of one id look unrelated, and the text fits an audit
field."""

from __future__ import annotations

import base64

import pytest

from storage.audit import MAX_STRING_CHARS
from storage.envelope import RecipientPrivateKey
from storage.errors import NoMatchingRecipient
from storage.sealed import SealedFormatError, is_sealed, label_of, open_sealed, seal


@pytest.fixture
def keys() -> tuple[RecipientPrivateKey, RecipientPrivateKey]:
    return RecipientPrivateKey.generate(), RecipientPrivateKey.generate()


def test_each_recording_key_opens_it_and_no_other(
    keys: tuple[RecipientPrivateKey, RecipientPrivateKey],
) -> None:
    main, backup = keys
    text = seal(b"BOA-1234", "officer_id", (main.public(), backup.public()))
    assert is_sealed(text)
    assert label_of(text) == "officer_id"
    assert open_sealed(text, main, "officer_id") == b"BOA-1234"
    assert open_sealed(text, backup) == b"BOA-1234"
    with pytest.raises(NoMatchingRecipient):
        open_sealed(text, RecipientPrivateKey.generate())


def test_a_seal_is_bound_to_its_label_and_to_every_byte(
    keys: tuple[RecipientPrivateKey, RecipientPrivateKey],
) -> None:
    main, _ = keys
    text = seal(b"BOA-1234", "officer_id", (main.public(),))
    with pytest.raises(SealedFormatError, match="not a sealed 'shift'"):
        open_sealed(text, main, "shift")
    moved = text.replace(":officer_id:", ":shift:")
    with pytest.raises(SealedFormatError, match="altered"):
        open_sealed(moved, main)
    prefix, label, _body = text.split(":")
    raw = bytearray(raw_body(text))
    raw[-20] ^= 1  # one bit of the ciphertext
    flipped = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(SealedFormatError, match="altered"):
        open_sealed(f"{prefix}:{label}:{flipped}", main)


def test_two_seals_of_one_id_share_nothing_a_thief_could_link(
    keys: tuple[RecipientPrivateKey, RecipientPrivateKey],
) -> None:
    main, _ = keys
    first = seal(b"BOA-1234", "officer_id", (main.public(),))
    second = seal(b"BOA-1234", "officer_id", (main.public(),))
    a, b = raw_body(first), raw_body(second)
    assert a[:16] != b[:16]  # seal ids
    assert a[25:57] != b[25:57]  # ephemeral keys (after the count and the key's id)
    assert a[17:25] == b[17:25]  # only the back office key's id is the same: it names no one
    assert a[57:] != b[57:]  # wrapped keys, ciphertexts and tags


def raw_body(text: str) -> bytes:
    body = text.split(":")[2]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def test_an_officer_id_sealed_to_two_keys_fits_an_audit_field(
    keys: tuple[RecipientPrivateKey, RecipientPrivateKey],
) -> None:
    main, backup = keys
    longest_id = b"A" * 32  # config.local OFFICER_ID
    text = seal(longest_id, "officer_id", (main.public(), backup.public()))
    assert len(text) <= MAX_STRING_CHARS


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mvb-sealed-v1:officer_id",
        "mvb-sealed-v2:officer_id:AAAA",
        "mvb-sealed-v1:Officer:AAAA",
        "mvb-sealed-v1:officer_id:!!!!",
        "mvb-sealed-v1:officer_id:AAAA",
        "mvb-sealed-v1:officer_id:" + base64.urlsafe_b64encode(bytes(16) + b"\x03").decode(),
    ],
)
def test_malformed_text_is_refused(
    keys: tuple[RecipientPrivateKey, RecipientPrivateKey], text: str
) -> None:
    with pytest.raises(SealedFormatError):
        open_sealed(text, keys[0])


def test_sealing_refuses_what_it_cannot_seal_well(
    keys: tuple[RecipientPrivateKey, RecipientPrivateKey],
) -> None:
    public = keys[0].public()
    with pytest.raises(ValueError, match="label"):
        seal(b"x", "Bad Label", (public,))
    with pytest.raises(ValueError, match="recipients"):
        seal(b"x", "officer_id", ())
    with pytest.raises(ValueError, match="at most"):
        seal(b"x" * 5000, "officer_id", (public,))
