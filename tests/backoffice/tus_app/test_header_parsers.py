"""The tus server core's header parsers (Upload-Metadata, Upload-Checksum): round trips, and
only their own error on any input."""

from __future__ import annotations

import base64
import contextlib

from hypothesis import given
from hypothesis import strategies as st

from backoffice.tus_app import (
    ChecksumHeaderError,
    MetadataError,
    parse_upload_checksum,
    parse_upload_metadata,
)

# -- metadata parser -------------------------------------------------------------------------

_KEYS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=","),
    min_size=1,
    max_size=20,
)


@given(st.dictionaries(_KEYS, st.binary(max_size=64), min_size=1, max_size=8))
def test_metadata_round_trips(pairs: dict[str, bytes]) -> None:
    header = ",".join(
        key if not value else f"{key} {base64.b64encode(value).decode()}"
        for key, value in pairs.items()
    )
    assert parse_upload_metadata(header) == pairs


@given(st.text(max_size=300))
def test_metadata_parser_only_ever_raises_metadata_error(header: str) -> None:
    with contextlib.suppress(MetadataError):
        parse_upload_metadata(header)


@given(st.text(max_size=100))
def test_checksum_parser_only_ever_raises_checksum_header_error(header: str) -> None:
    with contextlib.suppress(ChecksumHeaderError):
        parse_upload_checksum(header)
