"""Legacy hash fields whose names are not UTF-8 (Redis takes any bytes as a name), planted for
the bulk readers' tests (checker, migration tool)."""

from __future__ import annotations

import redis.asyncio as aioredis

from gateway.legacy import keys

NAMED_BY_FIELD = {
    "agent": keys.ACTIVE_AGENTS,
    "task": keys.TASKS,
    "zone": keys.ZONES,
    "handoff": keys.HANDOFFS,
    "lock": keys.LOCKS,
    "checkpoint": keys.CHECKPOINTS,
    "claim": keys.CLAIMS,
    "memory": keys.SHARED_MEMORY,
}
"""The hashes whose field names are the entities' names (a claim's `{by}:{what}`, a memory's id)."""


async def plant_names_not_utf8(url: str, per_hash: int) -> list[bytes]:
    """`per_hash` fields whose names are not UTF-8 in each hash of `NAMED_BY_FIELD`, holding
    values that would map (an agent, a task, ...): Redis takes any bytes as a name."""
    r = aioredis.Redis.from_url(url)
    names = [b"bad\xff\xfe-" + str(i).encode() + b":x\xc3" for i in range(per_hash)]
    try:
        for key in NAMED_BY_FIELD.values():
            for i, name in enumerate(names):  # claims are keyed by `what`: one each
                await r.hset(key, name, b'{"title": "t", "status": "todo", "what": "w%d"}' % i)
    finally:
        await r.aclose()
    return names
