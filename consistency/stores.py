"""What the legacy store tells the comparison besides its entities (the chat window, the known
claim conflicts). The stores themselves are the bulk layer's sources, and a repair into Redis
writes through its sink (`gateway.bulk.legacy_side.LegacySink`), as the migration tool does."""

from __future__ import annotations

from typing import Any, cast

from consistency.rules import Expectations
from gateway.bulk.legacy_side import LegacySource
from gateway.domain.entities import DOMAINS, actor_only
from gateway.domain.jscompat import parse_js_date
from gateway.legacy import keys
from gateway.legacy.client import Redis
from gateway.legacy.codec import Corrupt, decode_object

CHAT_TAIL = 100
"""The end of the legacy chat list the window rule looks at: the list is newest first, but not
strictly in time order (system messages, replicated ones), so a message no newer than any of
its last 100 elements counts as trimmed."""

ACTOR_ONLY_DOMAINS = frozenset(d for d in DOMAINS if actor_only(d))


def conflict_holder(field: str, what: str) -> str:
    """The holder named by a legacy claim field `{by}:{what}`."""
    suffix = ":" + what
    return field[: -len(suffix)] if field.endswith(suffix) else field


class LegacyExpectations:
    """The `ExpectationProbe` of a check against `source`."""

    def __init__(self, source: LegacySource) -> None:
        self.source = source

    async def __call__(self, now_ms: int) -> Expectations:
        async def op(r: Redis) -> tuple[int, Any]:
            async with r.pipeline(transaction=False) as pipe:
                _ = pipe.llen(keys.MESSAGES)
                _ = pipe.lrange(keys.MESSAGES, -CHAT_TAIL, -1)
                length, tail = await pipe.execute()
            return int(length), tail

        length, tail = await self.source.records.run("LLEN messages", op)
        oldest_ms = None
        if length >= keys.CHAT_MAX:
            times = []
            for text in tail:
                value = decode_object(cast("str", text), key=keys.MESSAGES)
                if not isinstance(value, Corrupt):
                    times.append(parse_js_date(str(value.get("timestamp", ""))) or 0)
            oldest_ms = max(times, default=None)
        conflicts = tuple(
            (c.what, conflict_holder(f, c.what)) for c in self.source.conflicts for f in c.others
        )
        return Expectations(
            now_ms, chat_oldest_ms=oldest_ms, claim_conflicts=conflicts, actor_only=ACTOR_ONLY_DOMAINS
        )
