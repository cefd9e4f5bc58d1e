"""Entity-level access to the legacy Redis store: the phase router's and repair queue's `Replica`.

`read_entity(key)` returns the domain entity an `EntityKey` names as the legacy store holds it
(or None); `write_entity(key, value)` makes Redis hold exactly that entity state (an idempotent
upsert, merged onto the existing legacy value so legacy-only properties survive) or, for
`value=None`, removes it. Commands are never re-executed here (migration.md, "One execution,
then replication").

Key conventions are those of `gateway.do.replica` (`gateway.phases.entities.EntityKey`): the
coordinator's entities have an empty scope and their own id (a claim's id is its `what`); the
per-agent ones (checkpoint, dm, memory) are scoped by the agent id (a DM's agent is its
recipient, a memory's its owner); a lock's id is its resource path.
"""

# The replica is the store's own entity-level face: it uses the store's private read helpers.

from __future__ import annotations

from typing import Any, cast

from gateway import mapping as m
from gateway.domain.model import (
    Agent,
    Checkpoint,
    Claim,
    DirectMessage,
    GroupMessage,
    Handoff,
    Lock,
    Memory,
    Task,
    Zone,
)
from gateway.legacy import keys
from gateway.legacy.client import Redis
from gateway.legacy.store import LegacyStore
from gateway.phases.entities import EntityKey

__all__ = ["Entity", "LegacyReplica"]

Entity = Agent | GroupMessage | Task | Zone | Claim | Handoff | Checkpoint | DirectMessage | Memory | Lock

_HASHES = {
    "agent": keys.ACTIVE_AGENTS,
    "task": keys.TASKS,
    "zone": keys.ZONES,
    "handoff": keys.HANDOFFS,
    "checkpoint": keys.CHECKPOINTS,
    "lock": keys.LOCKS,
}


class LegacyReplica:
    """Reads and writes single entities in the legacy Redis layout."""

    def __init__(self, store: LegacyStore) -> None:
        self.store = store

    # -- reads ------------------------------------------------------------------------------------

    async def read_entity(self, key: EntityKey) -> Entity | None:  # noqa: PLR0911 - one exit per domain
        """The entity as Redis holds it, or None (also for an unreadable value, which is reported)."""
        s, d, i = self.store, key.domain, key.id
        if d == "agent":
            agent, _ = await s._agent(i)
            return agent
        if d == "task":
            raw = await s._hget(keys.TASKS, i)
            return None if raw is None else s._parse(raw, keys.TASKS, i, m.task_from_legacy)
        if d == "zone":
            raw = await s._hget(keys.ZONES, i)
            return None if raw is None else s._parse(raw, keys.ZONES, i, lambda v: m.zone_from_legacy(i, v))
        if d == "claim":
            return await s.get_claim(i, s.clock.now_ms())
        if d == "handoff":
            return await s.get_handoff(i)
        if d == "checkpoint":
            return await s.get_checkpoint(key.scope or i)
        if d == "lock":
            lock, _ = await s._lock(i)
            return lock
        if d == "chat":
            return await self._find_chat(i)
        if d == "dm":
            return next((dm for dm in await s._inbox(key.scope) if dm.id == i), None)
        if d == "memory":
            raw = await s._hget(keys.SHARED_MEMORY, i)
            return None if raw is None else s._parse(raw, keys.SHARED_MEMORY, i, m.memory_from_legacy)
        raise ValueError(f"unknown entity domain {d!r}")

    # -- writes -----------------------------------------------------------------------------------

    async def write_entity(self, key: EntityKey, value: Entity | None) -> None:
        """Make Redis hold `value` for `key` (upsert), or remove the entity when `value` is None."""
        if value is None:
            await self._delete(key)
            return
        s = self.store
        if isinstance(value, Agent):
            await s.upsert_agent(value)
        elif isinstance(value, Task):
            await s.upsert_task(value)
        elif isinstance(value, Zone):
            await s.upsert_zone(value)
        elif isinstance(value, Claim):
            await s.upsert_claim(value)
        elif isinstance(value, Handoff):
            await s.upsert_handoff(value)
        elif isinstance(value, Checkpoint):
            await s.upsert_checkpoint(value)
        elif isinstance(value, Lock):
            await s.upsert_lock(value)
        elif isinstance(value, GroupMessage):
            await s.append_chat(value)
        elif isinstance(value, DirectMessage):
            await s.upsert_dm(value, key.scope)
        elif isinstance(value, Memory):
            await s.upsert_memory(value, key.scope or m.memory_owner(value))
        else:  # pragma: no cover - the union above is exhaustive
            raise TypeError(f"not a domain entity: {type(value).__name__}")

    async def _delete(self, key: EntityKey) -> None:
        s, d, i = self.store, key.domain, key.id
        if d in _HASHES:
            fld = (key.scope or i) if d == "checkpoint" else i
            await s._run(f"HDEL {_HASHES[d]}", lambda r: r.hdel(_HASHES[d], fld))
        elif d == "claim":
            current = await s.get_claim(i, s.clock.now_ms())
            if current is not None:  # the DO claim only; other agents' legacy fields stay
                await s.delete_claim(current.by, current.what)
        elif d == "memory":
            mem = await self.read_entity(key)

            async def forget(r: Redis) -> None:
                async with r.pipeline(transaction=True) as pipe:
                    _ = pipe.hdel(keys.SHARED_MEMORY, i)
                    for tag in cast("Memory", mem).tags if mem is not None else []:
                        if isinstance(tag, str):
                            _ = pipe.srem(keys.memory_tag(tag), i)
                    await pipe.execute()

            await s._run(f"HDEL {keys.SHARED_MEMORY}", forget)
        elif d == "chat":
            await self._delete_chat(i)
        elif d == "dm":
            await self._delete_dm(key.scope, i)
        else:
            raise ValueError(f"unknown entity domain {d!r}")

    async def _find_chat(self, msg_id: str) -> GroupMessage | None:
        """The message `msg_id` in the chat list (newest first; a new one is near the head).

        Only elements whose text contains the id are decoded: replication reads the message it
        just posted on every chat write in write-through, and decoding the whole list (up to
        1,200 elements) cost milliseconds per post.
        """

        for first, last in ((0, 99), (100, keys.CHAT_MAX + 199)):  # the head first: a new message is there

            async def lrange(r: Redis, first: int = first, last: int = last) -> list[str]:
                return cast("list[str]", await r.lrange(keys.MESSAGES, first, last))

            for raw in await self.store._run(f"LRANGE {keys.MESSAGES}", lrange):
                if msg_id in raw:
                    msg = self.store._parse(raw, keys.MESSAGES, None, m.chat_from_legacy)
                    if msg is not None and msg.id == msg_id:
                        return msg
        return None

    async def _delete_chat(self, msg_id: str) -> None:
        """LREM of the element holding `msg_id` (the legacy API never deletes one message)."""

        async def lrange(r: Redis) -> list[str]:
            return cast("list[str]", await r.lrange(keys.MESSAGES, 0, -1))

        for raw in await self.store._run(f"LRANGE {keys.MESSAGES}", lrange):
            msg = self.store._parse(raw, keys.MESSAGES, None, m.chat_from_legacy)
            if msg is not None and msg.id == msg_id:
                await self.store._run(
                    f"LREM {keys.MESSAGES}",
                    lambda r, raw=raw: r.lrem(keys.MESSAGES, 1, raw),  # type: ignore[misc]
                )
                return

    async def _delete_dm(self, agent_id: str, dm_id: str) -> None:
        dm = next((x for x in await self.store._inbox(agent_id) if x.id == dm_id), None)
        if dm is None:
            return
        conv_id = str(dm.extra.get("conversationId") or m.conversation_id(dm.from_agent, agent_id))

        def change(msgs: list[Any], conv: dict[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
            kept = [x for x in msgs if not (isinstance(x, dict) and x.get("id") == dm_id)]
            record: dict[str, Any] = dict(conv) if conv else {"id": conv_id, "participants": []}
            record["unreadCount"] = self.store._unread_counts(record, kept)
            return kept, record

        await self.store._update_conversation(conv_id, change, [])
