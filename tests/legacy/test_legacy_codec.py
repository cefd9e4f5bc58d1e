"""gateway.legacy.codec: tolerant legacy reads and JSON.stringify-exact writes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.legacy.codec import (
    UNDEFINED,
    Corrupt,
    CorruptionLog,
    decode,
    decode_array,
    decode_object,
    decode_presence,
    dumps,
    loads,
)

text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def test_plain_json_is_decoded() -> None:
    """A value stored once as JSON text decodes to the document."""
    assert loads('{"id":"phil","n":3}') == {"id": "phil", "n": 3}


def test_double_encoded_whole_value_is_decoded_twice() -> None:
    """A JSON string holding a JSON object (double-encoded) decodes to the object."""
    inner = '{"id":"phil"}'
    assert loads(json.dumps(inner)) == {"id": "phil"}
    assert loads(json.dumps('["a"]')) == ["a"]


def test_fields_inside_a_value_are_never_decoded() -> None:
    """A field holding JSON text (checkpoint recentContext) stays a string."""
    value = loads('{"recentContext":"{\\"version\\":2}"}')
    assert value == {"recentContext": '{"version":2}'}


def test_a_plain_string_that_does_not_look_like_json_stays_a_string() -> None:
    """Only strings starting with { or [ are decoded a second time."""
    assert loads('"hello"') == "hello"


@pytest.mark.parametrize(
    "raw", ['{"id":"truncated","title":', "not json at all", "undefined", "NaN", '"{bad"']
)
def test_corrupt_values_become_corrupt_results(raw: str) -> None:
    """Undecodable text gives a Corrupt naming key and field instead of raising."""
    result = decode(raw, key="agent-coord:tasks", field="task-x")
    assert isinstance(result, Corrupt)
    assert (result.key, result.field) == ("agent-coord:tasks", "task-x")
    assert result.reason


def test_wrong_json_type_is_corrupt_for_objects_and_arrays() -> None:
    """A value of the wrong JSON type for its family is reported as corrupt."""
    assert isinstance(decode_object("[1]", key="k"), Corrupt)
    assert isinstance(decode_array('{"a":1}', key="k"), Corrupt)
    assert decode_object('{"a":1}', key="k") == {"a": 1}
    assert decode_array("[1]", key="k") == [1]


def test_invalid_utf8_read_with_surrogateescape_is_corrupt() -> None:
    """Bytes that are not UTF-8 (as the client hands them over) are corrupt, not an exception."""
    raw = b'{"a":"\xff"}'.decode("utf-8", "surrogateescape")
    assert isinstance(decode(raw, key="k"), Corrupt)


def test_presence_accepts_bare_and_quoted_words() -> None:
    """Presence values are the bare words online/offline; anything else is corrupt."""
    assert decode_presence("online", key="p", field="a") == "online"
    assert decode_presence('"offline"', key="p", field="a") == "offline"
    assert isinstance(decode_presence("maybe", key="p", field="a"), Corrupt)


def test_dumps_is_compact_raw_utf8_in_insertion_order() -> None:
    """Writes look like JSON.stringify: no spaces, emoji raw, keys in insertion order."""
    text = dumps({"z": "👋 é", "a": [1, 2], "m": None})
    assert text == '{"z":"👋 é","a":[1,2],"m":null}'


def test_dumps_leaves_out_undefined_and_writes_integral_floats_as_ints() -> None:
    """UNDEFINED properties vanish (JS undefined); 3.0 is written 3, 0.5 stays 0.5."""
    assert dumps({"a": UNDEFINED, "b": 3.0, "c": 0.5, "d": [UNDEFINED]}) == '{"b":3,"c":0.5,"d":[null]}'


def test_dumps_escapes_lone_surrogates_like_json_stringify() -> None:
    """A lone surrogate is written as a \\u escape (well-formed JSON.stringify)."""
    assert dumps({"a": "x\ud800"}) == '{"a":"x\\ud800"}'


@given(json_values)
def test_dumps_then_loads_round_trips(value: object) -> None:
    """Every JSON value survives dumps then loads (except strings that look like JSON)."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        return
    assert loads(dumps(value)) == value


def test_corruption_log_counts_per_key() -> None:
    """Reported corrupt values are counted per key and sampled."""
    log = CorruptionLog(max_samples=1)
    log.report(Corrupt("k1", "f", "bad"))
    log.report(Corrupt("k1", "g", "bad"))
    log.report(Corrupt("k2", None, "bad"))
    assert log.as_dict() == {"k1": 2, "k2": 1}
    assert log.total == 3
    assert len(log.samples) == 1
