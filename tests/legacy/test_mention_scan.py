"""The legacy /work and chat mention scan: `marked_texts` finds what a test of each chat element
would, and `LegacyStore._mentions_in` answers as the element-by-element scan it replaced."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.domain import rules
from gateway.domain.model import Agent, GroupMessage
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.records import MENTION_CURSOR, MENTION_CURSOR_ID, ms
from gateway.legacy.store import LegacyStore, marked_texts
from gateway.settings import Settings

# no command is sent: `_mentions_in` parses the texts it is given (this port is never dialled)
STORE = LegacyStore.from_url("redis://127.0.0.1:9/0", Settings(), clock=FakeClock(0))
AGENT = "phil"

texts_st = st.lists(st.text(alphabet="ab@\x00m12 é", max_size=12), max_size=30)


def brute_marked(texts: list[str], start: int, cursor: str | None) -> list[int]:
    return [
        k for k in range(start, len(texts)) if "@" in texts[k] or (cursor is not None and cursor in texts[k])
    ]


@given(texts_st, st.integers(0, 32), st.none() | st.text(alphabet="ab@\x00m12", max_size=3))
@settings(max_examples=400, deadline=None)
def test_marked_texts_are_the_texts_holding_an_at_or_the_cursor(
    texts: list[str], start: int, cursor: str | None
) -> None:
    assert list(marked_texts(texts, start, cursor)) == brute_marked(texts, start, cursor)


def test_marked_texts_on_a_chat_window_without_mentions_is_empty() -> None:
    window = [f'{{"id":"{i}","author":"a","message":"mix message {i}"}}' for i in range(1200)]
    assert list(marked_texts(window, 1, None)) == []
    window[700] = window[700].replace("mix", "@phil")
    assert list(marked_texts(window, 1, None)) == [700]
    assert list(marked_texts(window, 1, '"id":"5"')) == [5, 700]


def reference_scan(texts: list[str], agent: Agent | None, agent_id: str) -> tuple[list[GroupMessage], str]:
    """The element-by-element scan `_mentions_in` used before `marked_texts` (same rules)."""
    extra = agent.extra if agent is not None else {}
    cursor_id, cursor = extra.get(MENTION_CURSOR_ID), extra.get(MENTION_CURSOR)
    cursor_ms = ms(cursor) if isinstance(cursor, str) and not isinstance(cursor_id, str) else None
    head, found = "", []
    pattern = rules.mention_pattern(agent_id)
    for text in texts:
        is_cursor = isinstance(cursor_id, str) and cursor_id in text
        if head and not is_cursor and "@" not in text:
            continue
        msg = STORE.records.parse_shared(text, keys.MESSAGES, None, m.chat_from_legacy)
        if msg is None:
            continue
        head = head or msg.id
        if is_cursor and msg.id == cursor_id:
            break
        if cursor_ms is not None and (ms(msg.timestamp) or 0) <= cursor_ms:
            continue
        if msg.author != agent_id and pattern.search(msg.message):
            found.append(msg)
    return list(reversed(found[: STORE.limits.list_limit_max])), head


ids = st.sampled_from(["", "m1", "m2", "m3", "m10", "@phil"])
messages = st.sampled_from(["hi", "@phil look", "@all", "mail a@b", "m1", "see m2", "@phi", "x\x00@phil"])
stamps = st.sampled_from(["2026-12-06T10:00:00.000Z", "2026-12-06T11:00:00.000Z", "garbage"])


@st.composite
def chat_text(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:  # an unreadable element
        return draw(st.sampled_from(["not json", "@phil broken", "{}", '"m1"', "\x00"]))
    value = {
        "id": draw(ids),
        "author": draw(st.sampled_from(["a", AGENT])),
        "message": draw(messages),
        "timestamp": draw(stamps),
    }
    return orjson.dumps(value).decode()


@st.composite
def agent_st(draw: st.DrawFn) -> Agent | None:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return None
    extra: dict[str, object] = {}
    if kind in (1, 3):
        extra[MENTION_CURSOR_ID] = draw(ids)
    if kind in (2, 3):
        extra[MENTION_CURSOR] = draw(stamps)
    return Agent(AGENT, extra=extra)


@given(st.lists(chat_text(), max_size=40), agent_st())
@settings(max_examples=400, deadline=None)
def test_mentions_in_answers_as_the_element_by_element_scan(texts: list[str], agent: Agent | None) -> None:
    got, head = STORE._mentions_in(texts, agent, AGENT)
    want, want_head = reference_scan(texts, agent, AGENT)
    assert head == want_head
    assert [(msg.id, msg.message) for msg in got] == [(msg.id, msg.message) for msg in want]
