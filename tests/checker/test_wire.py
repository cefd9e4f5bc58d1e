"""The batches the legacy scan's second process sends (`consistency.legacy_proc`): what arrives
is classified exactly as what was read, whichever form a DM's message object is kept in
(`gateway.bulk.legacy_side._message_text`)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from consistency.compare import Kind, classify
from consistency.legacy_form import same_as_read
from consistency.legacy_proc import _from_wire, _to_wire
from consistency.rules import Expectations
from gateway.bulk.legacy_side import Deferred, _message_text
from gateway.domain.entities import EntityKey
from gateway.domain.model import DirectMessage
from gateway.legacy import mapping as m

T = "2025-12-03T20:00:00.000Z"
NOW = 1_764_792_000_000
KEY = EntityKey("dm", "bob", "m1")
DM = DirectMessage("m1", "alice", "note", "hello", T, False, {})


def sent(raw: Any) -> Deferred:
    """A DM's message object as the second process's scan keeps it, then as the checking process
    gets it."""
    items: list[Any] = [(KEY, Deferred(KEY, _message_text(raw)))]
    batch = pickle.loads(pickle.dumps(_to_wire(items)))  # noqa: S301 - our own data
    ((key, got),) = _from_wire(batch)
    assert key == KEY
    assert isinstance(got, Deferred)
    return got


def test_a_dm_travels_as_its_json_text_and_is_compared_as_read() -> None:
    msg = m.dm_to_legacy(DM, "bob")
    got = sent(msg)
    assert isinstance(got.raw, str)  # one string on the wire, not a dict of fields
    assert same_as_read(KEY, got.raw, DM)
    assert same_as_read(KEY, msg, DM)
    assert got.entity() == Deferred(KEY, msg).entity()
    exp = Expectations(NOW)
    assert classify(KEY, got, DM, exp).kind is Kind.SAME


@pytest.mark.parametrize(
    ("what", "change", "kind", "as_text"),
    [
        ("another text", {"message": "hello there"}, Kind.DIFFERS, True),
        ("a read flag that is not a boolean (reads as unread)", {"read": 1}, Kind.SAME, True),
        ("another key order", None, Kind.SAME, True),
        ("a number beyond 64 bits", {"custom": 2**70}, Kind.SAME, False),
        ("a lone surrogate", {"message": "x\ud800y"}, Kind.DIFFERS, False),
        ("unmappable", {"timestamp": ["not", "a", "date"]}, Kind.UNREADABLE, True),
    ],
)
def test_a_dm_that_differs_is_classified_as_it_was_read(
    what: str, change: dict[str, Any] | None, kind: Kind, as_text: bool
) -> None:
    """Whatever the message object holds, the finding after the wire is the finding without
    it: the same kind, fields and both values shown (an unreadable one's raw text included).
    What orjson cannot write travels as the object."""
    msg = m.dm_to_legacy(DM, "bob")
    msg = dict(reversed(msg.items())) if change is None else {**msg, **change}
    exp = Expectations(NOW)
    here = classify(KEY, Deferred(KEY, msg), DM, exp)
    got = sent(msg)
    assert isinstance(got.raw, str) is as_text, what
    assert classify(KEY, got, DM, exp) == here, what
    assert here.kind is kind, what
