"""The audit shipper's pure core (transport/audit_shipping.py) and the wire's parser
(transport/audit_wire.py): what an answer means, where the box stands, what a body may be."""

from __future__ import annotations

import hashlib

import pytest

from storage.audit_head import AuditHead
from transport.audit_shipping import (
    Position,
    PositionUnreadable,
    Step,
    find_entry,
    step_after,
)
from transport.audit_wire import AppendRefused, parse_batch, parse_held, whole_lines

SENT = AuditHead(4, "ab" * 32)
OTHER = AuditHead(9, "cd" * 32)


@pytest.mark.parametrize(
    ("status", "held", "step"),
    [
        (204, SENT, Step.ADVANCE),
        (204, OTHER, Step.RESYNC),  # it holds more (a lost answer) or other: look it up
        (204, None, Step.RETRY),  # an answer without its head is no confirmation
        (416, OTHER, Step.RESYNC),
        (409, SENT, Step.REFUSED),
        (404, None, Step.NO_ROUTE),
        (405, None, Step.NO_ROUTE),
        (403, None, Step.WITHDRAWN),
        (429, None, Step.RETRY),
        (503, SENT, Step.RETRY),
        (400, None, Step.RETRY),
    ],
)
def test_what_an_answer_means(status: int, held: AuditHead | None, step: Step) -> None:
    assert step_after(status, held, SENT) is step


def test_a_position_reads_back_and_refuses_what_it_did_not_write() -> None:
    position = Position(SENT, 1234)
    assert Position.from_json(position.to_json()) == position
    assert Position.from_json(Position.start().to_json()) == Position.start()
    for text in ("", "{}", '{"seq": 1, "sha256": "x", "end_bytes": 1}',
                 f'{{"seq": 4, "sha256": "{"ab" * 32}", "end_bytes": -1}}',
                 f'{{"seq": 4, "sha256": "{"ab" * 32}", "end_bytes": true}}'):  # fmt: skip
        with pytest.raises(PositionUnreadable):
            Position.from_json(text)


def test_an_entry_is_found_by_its_seq_with_its_end_and_hash() -> None:
    lines = [b'{"seq":3}', b'{"seq":4}', b"not json", b'{"seq":5}']
    assert find_entry(lines, 100, 4) == (100 + 10 + 10, hashlib.sha256(lines[1]).hexdigest())
    assert find_entry(lines, 0, 5) == (10 + 10 + 9 + 10, hashlib.sha256(lines[3]).hexdigest())
    assert find_entry(lines, 0, 6) is None


def test_a_body_is_whole_contiguous_lines_of_one_chain() -> None:
    assert whole_lines(b"a\nb\nhalf") == b"a\nb\n"
    assert parse_batch(b"") is None
    with pytest.raises(AppendRefused, match="whole lines"):
        parse_batch(b'{"seq":0}')
    with pytest.raises(AppendRefused, match="line 1"):
        parse_batch(b"nonsense\n")
    with pytest.raises(AppendRefused, match="at most"):
        parse_batch(b"x" * (64 * 1024 + 1))


def test_the_held_header_is_a_head_not_a_signed_one() -> None:
    assert parse_held(" 4:" + "ab" * 32) == SENT
    for value in (None, "4", "4:" + "ab" * 32 + ":" + "A" * 86 + "=="):
        with pytest.raises(AppendRefused):
            parse_held(value)
