"""Generated ids: DO formats, unique within one millisecond."""

from __future__ import annotations

import random
import re

from gateway.domain.ids import IdGenerator


def test_formats_follow_the_do() -> None:
    """Each id kind has upstream's shape (lock history and anon gain a random part)."""
    g = IdGenerator(random.Random(1))
    ms = 1_795_627_727_041
    assert re.fullmatch(r"1795627727041-[0-9a-z]{6}", g.chat(ms))
    assert re.fullmatch(r"task-1795627727041-[0-9a-z]{4}", g.task(ms))
    assert re.fullmatch(r"msg-1795627727041-[0-9a-z]{4}", g.dm(ms))
    assert re.fullmatch(r"mem-1795627727041-[0-9a-z]{4}", g.memory(ms))
    assert re.fullmatch(r"handoff-1795627727041-[0-9a-z]{4}", g.handoff(ms))
    assert re.fullmatch(r"lock-1795627727041-[0-9a-z]{4}", g.lock_history(ms))
    assert re.fullmatch(r"anon-1795627727041-[0-9a-z]{4}", g.anon_agent(ms))


def test_ids_in_one_millisecond_are_unique() -> None:
    """20,000 ids made in the same millisecond never repeat (the counter is mixed in)."""
    g = IdGenerator(random.Random(2))
    made = {g.lock_history(5) for _ in range(20_000)}
    assert len(made) == 20_000


def test_new_millisecond_restarts_at_a_random_point() -> None:
    """Ids of different milliseconds differ in their time part and keep the width."""
    g = IdGenerator(random.Random(3))
    a, b = g.task(1), g.task(2)
    assert a.startswith("task-1-")
    assert b.startswith("task-2-")
    assert len(a.rsplit("-", 1)[1]) == len(b.rsplit("-", 1)[1]) == 4
