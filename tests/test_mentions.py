"""The mention test decides as upstream's regex did, on generated agent ids and chat texts."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.rules import mention_pattern

# the regex the gateway compiled per agent before `MentionMatcher` (docs/compatibility.md entry 18)
_W = "A-Za-z0-9_"
_BOUNDARY = f"(?:(?<=[{_W}])(?![{_W}])|(?<![{_W}])(?=[{_W}]))"


def regex(agent_id: str) -> re.Pattern[str]:
    alts = [re.escape(agent_id), "all", "everyone", "team"]
    return re.compile("|".join(f"@{a}{_BOUNDARY}" for a in alts), re.IGNORECASE)


# word and non-word characters, the letters of the group mentions, regex metacharacters, and
# the four non-ASCII letters that case-insensitive [A-Za-z] matches
ALPHABET = "@@@aAlLtTeEmMvVrRyYoOnN_19 -.+*()[]\\\n\u017f\u212a\u0130\u0131\u00e9\u00df"
ids = st.text(ALPHABET, min_size=1, max_size=6)


@settings(max_examples=1000, derandomize=True, deadline=None)
@given(agent_id=ids, parts=st.lists(st.one_of(st.text(ALPHABET, max_size=4), st.just("@")), max_size=8))
def test_the_matcher_agrees_with_the_regex(agent_id: str, parts: list[str]) -> None:
    # texts built around the id and the group names, so that matches are frequent
    pieces = [*parts, "@" + agent_id, agent_id.upper(), "@all", "@Team", "@everyone"]
    text = "".join(pieces[i % len(pieces)] for i in range(len(parts) + 2))
    for candidate in (text, text + "@" + agent_id, "@" + agent_id + text, text.swapcase()):
        assert mention_pattern(agent_id).search(candidate) == bool(regex(agent_id).search(candidate))


def test_examples() -> None:
    m = mention_pattern("bob")
    assert m.search("hi @bob")
    assert m.search("hi @BOB, see this")
    assert not m.search("hi @bobby")
    assert not m.search("hi bob@bob_x")
    assert m.search("@all hands")
    assert not m.search("@allison")
    assert m.search("@alli @team")
    assert not m.search("no mention here")
    dotted = mention_pattern("a.b")
    assert dotted.search("@a.b!")
    assert not dotted.search("@axb")  # the id is a literal, not a pattern
    assert not mention_pattern("x-").search("@x- y")  # '-' then ' ': no word boundary
    assert mention_pattern("x-").search("@x-y")  # '-' then 'y': a boundary
    # a letter that case-insensitive [A-Za-z] matches counts as a word character, as it did
    assert not mention_pattern("a").search("@a\u017f")
