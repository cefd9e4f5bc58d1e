"""The checker on the real stores: the bulk layer's sources, and what the legacy store tells the
comparison besides its entities (the chat window, the known claim conflicts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import structlog

from consistency.rules import Expectations
from gateway.bulk.items import WriteResult
from gateway.bulk.legacy_side import LegacySource
from gateway.bulk.versions import decide
from gateway.clock import Clock
from gateway.domain.entities import DOMAINS, Entity, EntityKey, Unreadable, actor_only
from gateway.domain.jscompat import parse_js_date
from gateway.errors import ApiError
from gateway.legacy import keys
from gateway.legacy.client import Redis
from gateway.legacy.codec import Corrupt, decode_object
from gateway.legacy.replica import LegacyReplica

log = structlog.get_logger(__name__)

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


class LegacyTarget:
    """Redis as the target of a repair (`EntitySink`): each entity through `LegacyReplica`, the
    replication's own writer, after the bulk layer's decision (`gateway.bulk.versions.decide`),
    so a copy older than what Redis holds now is left alone. A value Redis holds but cannot
    read is never overwritten (as by the gateway): it is reported as left alone."""

    name = "legacy"

    def __init__(self, source: LegacySource, clock: Clock) -> None:
        self.source = source
        self.replica = LegacyReplica(source.records, clock)

    async def write_batch(
        self, items: Sequence[tuple[EntityKey, Entity | None]], *, dry_run: bool = False
    ) -> WriteResult:
        current = await self.source.read_many([k for k, _ in items])
        result = WriteResult()
        for key, value in items:
            now = current.get(key)
            if isinstance(now, Unreadable):
                result.add(key, "skipped")
                continue
            outcome = decide(key, now, value)
            if outcome == "written" and key.domain == "chat" and now is not None and value is not None:
                # the legacy list keeps a message as posted: the replica only appends new ones
                log.warning("consistency.repair_chat_unchangeable", key=str(key))
                outcome = "skipped"
            if outcome == "written" and not dry_run:
                try:
                    await self.replica.write_entity(key, value)
                except ApiError as e:  # an unreadable value on the way (a 409): left in place
                    log.warning("consistency.repair_refused", key=str(key), error=str(e))
                    outcome = "skipped"
            result.add(key, outcome)
        return result
