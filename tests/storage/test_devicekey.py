"""Tests for the device signing key: files, modes, RFC 8032 behaviour, error messages."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from storage.devicekey import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    DeviceKey,
    DeviceKeyError,
    DevicePublicKey,
    ed25519_point_decodes,
)

# RFC 8032 section 7.1, TEST 2 (one-byte message).
RFC_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC_MESSAGE = bytes.fromhex("72")
RFC_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)

Mutation = Callable[[bytes, bytes], tuple[bytes, bytes]]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_writes_private_key_with_mode_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"  # does not exist yet: load_or_create makes it
    DeviceKey.load_or_create(state)

    private = state / PRIVATE_KEY_FILE
    assert _mode(private) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert _mode(state) & 0o077 == 0


def test_create_writes_matching_public_key_file(tmp_path: Path) -> None:
    key = DeviceKey.load_or_create(tmp_path)

    public_path = tmp_path / PUBLIC_KEY_FILE
    assert _mode(public_path) & 0o022 == 0  # nobody but the owner may change it
    assert public_path.read_bytes() == key.public_pem()
    assert DevicePublicKey.load(public_path) == key.public_key()


def test_reload_returns_the_same_key(tmp_path: Path) -> None:
    first = DeviceKey.load_or_create(tmp_path)
    private_before = (tmp_path / PRIVATE_KEY_FILE).read_bytes()

    second = DeviceKey.load_or_create(tmp_path)

    assert second.key_id() == first.key_id()
    assert (tmp_path / PRIVATE_KEY_FILE).read_bytes() == private_before
    assert first.public_key().verify(b"hello", second.sign(b"hello"))


def test_reload_heals_missing_or_foreign_public_file(tmp_path: Path) -> None:
    key = DeviceKey.load_or_create(tmp_path)
    public_path = tmp_path / PUBLIC_KEY_FILE

    public_path.unlink()
    DeviceKey.load_or_create(tmp_path)
    assert public_path.read_bytes() == key.public_pem()

    public_path.write_bytes(DeviceKey.generate().public_pem())
    DeviceKey.load_or_create(tmp_path)
    assert public_path.read_bytes() == key.public_pem()


def test_sign_is_pure_ed25519_rfc8032() -> None:
    key = DeviceKey.from_seed(RFC_SEED)

    assert key.public_key().raw() == RFC_PUBLIC
    assert key.sign(RFC_MESSAGE) == RFC_SIGNATURE
    assert key.public_key().verify(RFC_MESSAGE, RFC_SIGNATURE)


def test_sign_verify_round_trip() -> None:
    key = DeviceKey.generate()
    signature = key.sign(b"evidence")

    assert len(signature) == 64
    assert key.public_key().verify(b"evidence", signature)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda m, s: (m + b"!", s), id="message-changed"),
        pytest.param(lambda m, s: (m, bytes([s[0] ^ 1]) + s[1:]), id="signature-bit-flipped"),
        pytest.param(lambda m, s: (m, s[:63]), id="signature-short"),
        pytest.param(lambda m, s: (m, s + b"\0"), id="signature-long"),
        pytest.param(lambda m, s: (m, b""), id="signature-empty"),
        pytest.param(lambda m, s: (m, b"\xff" * 64), id="signature-not-a-point"),
    ],
)
def test_verify_returns_false_for_bad_signatures(mutate: Mutation) -> None:
    key = DeviceKey.generate()
    message = b"evidence"
    bad_message, bad_signature = mutate(message, key.sign(message))

    assert key.public_key().verify(bad_message, bad_signature) is False


def test_verify_rejects_signature_of_other_key() -> None:
    signature = DeviceKey.generate().sign(b"evidence")
    assert DeviceKey.generate().public_key().verify(b"evidence", signature) is False


def test_key_id_is_sha256_prefix_of_raw_public_key() -> None:
    public = DeviceKey.from_seed(RFC_SEED).public_key()
    assert public.key_id() == hashlib.sha256(RFC_PUBLIC).hexdigest()[:16]


def test_public_pem_round_trip() -> None:
    public = DeviceKey.generate().public_key()
    again = DevicePublicKey.from_pem(public.pem())

    assert again == public
    assert again.key_id() == public.key_id()
    assert public.pem().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert public.pem().endswith(b"-----END PUBLIC KEY-----\n")


def test_garbage_private_key_file_names_the_file(tmp_path: Path) -> None:
    private = tmp_path / PRIVATE_KEY_FILE
    secret_looking = b"-----BEGIN PRIVATE KEY-----\nTOPSECRETMATERIAL\n-----END PRIVATE KEY-----\n"
    private.write_bytes(secret_looking)
    private.chmod(0o600)

    with pytest.raises(DeviceKeyError, match="not a PEM Ed25519 key") as caught:
        DeviceKey.load_or_create(tmp_path)

    assert str(private) in str(caught.value)
    assert "TOPSECRET" not in str(caught.value)
    assert caught.value.__suppress_context__  # the parser's exception (and input) is not chained
    assert private.read_bytes() == secret_looking  # an existing key file is never replaced


def test_binary_garbage_public_key_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.pub.pem"
    path.write_bytes(b"\x00\xff\xfe garbage")

    with pytest.raises(DeviceKeyError) as caught:
        DevicePublicKey.load(path)

    assert str(path) in str(caught.value)


def test_missing_public_key_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"
    with pytest.raises(DeviceKeyError, match="cannot read key file") as caught:
        DevicePublicKey.load(path)
    assert str(path) in str(caught.value)


def test_loose_private_key_permissions_are_refused(tmp_path: Path) -> None:
    DeviceKey.load_or_create(tmp_path)
    (tmp_path / PRIVATE_KEY_FILE).chmod(0o644)

    with pytest.raises(DeviceKeyError, match="accessible by group or others"):
        DeviceKey.load_or_create(tmp_path)


def test_public_key_in_private_key_file_is_refused(tmp_path: Path) -> None:
    private = tmp_path / PRIVATE_KEY_FILE
    private.write_bytes(DeviceKey.generate().public_pem())
    private.chmod(0o600)

    with pytest.raises(DeviceKeyError, match="holds only a public key"):
        DeviceKey.load_or_create(tmp_path)


def test_a_key_file_written_by_pycryptodome_loads_and_signs_the_same(tmp_path: Path) -> None:
    """Boxes made their device key with pycryptodome until issue 18: the file still loads, and
    the key signs as pycryptodome's did (RFC 8032 is deterministic)."""
    old = ECC.construct(curve="Ed25519", seed=RFC_SEED)
    private = tmp_path / PRIVATE_KEY_FILE
    private.write_bytes(old.export_key(format="PEM").encode() + b"\n")
    private.chmod(0o600)
    key = DeviceKey.load_or_create(tmp_path)
    message = b"gateway.started"
    assert key.sign(message) == eddsa.new(old, "rfc8032").sign(message)
    assert key.public_key().raw() == old.public_key().export_key(format="raw")


def test_private_key_pem_is_refused_as_public_key() -> None:
    private_pem = ECC.generate(curve="Ed25519").export_key(format="PEM").encode()
    with pytest.raises(DeviceKeyError, match="holds a private key"):
        DevicePublicKey.from_pem(private_pem)


def test_other_curve_is_refused() -> None:
    p256_pem = ECC.generate(curve="P-256").public_key().export_key(format="PEM").encode()
    with pytest.raises(DeviceKeyError, match="expected Ed25519"):
        DevicePublicKey.from_pem(p256_pem, source="fleet.pem")


def test_repr_shows_only_the_key_id() -> None:
    key = DeviceKey.generate()
    assert repr(key) == f"DeviceKey(key_id={key.key_id()!r})"
    assert repr(key.public_key()) == f"DevicePublicKey(key_id={key.key_id()!r})"


def test_a_raw_public_key_must_be_a_point_of_the_curve_as_pycryptodome_judges_it() -> None:
    def pycryptodome_accepts(raw: bytes) -> bool:
        try:
            eddsa.import_public_key(raw)  # the reference the box used before issue 18
        except ValueError:
            return False
        return True

    generated = [DeviceKey.generate().public_key().raw() for _ in range(20)]
    random_bytes = [os.urandom(32) for _ in range(400)]
    edge = [
        b"\xff" * 32,
        (1 | 1 << 255).to_bytes(32, "little"),
        (2**255 - 19).to_bytes(32, "little"),
    ]
    verdicts = {raw: ed25519_point_decodes(raw) for raw in generated + random_bytes + edge}
    assert all(verdicts[raw] for raw in generated)
    assert {verdicts[raw] for raw in random_bytes} == {True, False}  # about half are points
    assert not any(verdicts[raw] for raw in edge)
    assert verdicts == {raw: pycryptodome_accepts(raw) for raw in verdicts}
    with pytest.raises(DeviceKeyError, match="not a point"):
        DevicePublicKey.from_raw(b"\xff" * 32)
