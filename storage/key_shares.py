"""Splitting a 32-byte data key into k-of-n shares and joining them (docs/evidence-format.md 3.5).

Pure. Shamir's secret sharing over GF(2^128), one polynomial per 16-byte half of the key; the
field arithmetic is pycryptodome's (`Crypto.Protocol.SecretSharing.Shamir`, the encoding the
spec names: big-endian, reduction polynomial x^128 + x^7 + x^2 + x + 1). Share i belongs to the
header's i-th stanza, i from 1.

Invariants: fewer than k shares say nothing about the key; with k = 1 every share is the key
itself (the constant polynomial), so the single-key and rotation cases need no special reader.
"""

from __future__ import annotations

from collections.abc import Mapping

DATA_KEY_BYTES = 32
HALF_BYTES = 16
MAX_SHARES = 8
"""The header's limit on recipients (one byte, spec 4.1: 1 to 8)."""


def split_key(data_key: bytes | bytearray, threshold: int, shares: int) -> tuple[bytes, ...]:
    """The `shares` shares of `data_key` (share i at position i - 1), any `threshold` of which
    recover it. The random coefficients come from the CSPRNG and are dropped on return."""
    _check_split(threshold, shares)
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError(f"a data key is {DATA_KEY_BYTES} bytes")
    if threshold == 1:
        return tuple(bytes(data_key) for _ in range(shares))  # p(x) = key: every share is it
    # imported here: only k of n needs it, so a box at k = 1 loads no second cryptography
    # library (issue 18)
    from Crypto.Protocol.SecretSharing import Shamir

    halves = (bytes(data_key[:HALF_BYTES]), bytes(data_key[HALF_BYTES:]))
    # pycryptodome numbers its shares 1..n, the spec's stanza positions.
    split = [Shamir.split(threshold, shares, half) for half in halves]
    return tuple(high + low for (_, high), (_, low) in zip(split[0], split[1], strict=True))


def join_shares(shares: Mapping[int, bytes]) -> bytes:
    """The key through the points (position, share) given (positions from 1, at least one).

    Uses every share: shares that lie on no common polynomial of the threshold's degree give a
    key that fails the header MAC, instead of one subset's key going unchecked (spec 3.5).
    """
    if not shares:
        raise ValueError("no share to join")
    for position, share in shares.items():
        if not 1 <= position <= MAX_SHARES or len(share) != DATA_KEY_BYTES:
            raise ValueError(f"share {position} is not a {DATA_KEY_BYTES}-byte share of 1..8")
    points = sorted(shares.items())
    if len(points) == 1:
        return points[0][1]  # the constant through one point (k = 1)
    from Crypto.Protocol.SecretSharing import Shamir

    high = Shamir.combine([(i, share[:HALF_BYTES]) for i, share in points])
    low = Shamir.combine([(i, share[HALF_BYTES:]) for i, share in points])
    return high + low


def _check_split(threshold: int, shares: int) -> None:
    if not 1 <= shares <= MAX_SHARES:
        raise ValueError(f"{shares} shares: a header holds 1 to {MAX_SHARES}")
    if not 1 <= threshold <= shares:
        raise ValueError(f"threshold {threshold} is not in 1..{shares}")
