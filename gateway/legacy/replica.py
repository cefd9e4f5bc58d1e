"""Entity-level access to the legacy Redis store: the phase router's and repair queue's `Replica`.

`read_entity(key)` returns the domain entity an `EntityKey` names as the legacy store holds it
(or None); `write_entity(key, value)` makes Redis hold exactly that entity state (an idempotent
upsert, merged onto the existing legacy value so legacy-only properties survive) or, for
`value=None`, removes it. Commands are never re-executed here (migration.md, "One execution,
then replication"); the import tool writes through the same two methods.

Key conventions are `gateway.domain.entities.EntityKey`'s: the coordinator's entities have an
empty scope and their own id (a claim's id is its `what`); the per-agent ones (checkpoint, dm,
memory) are scoped by the agent id (a DM's agent is its recipient, a memory's its owner); a
lock's id is its resource path.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, TypeVar

from gateway.clock import Clock
from gateway.domain.entities import Entity, EntityKey
from gateway.domain.jscompat import iso_from_ms
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
from gateway.errors import ApiError
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.client import Redis
from gateway.legacy.codec import Corrupt, decode_array, dumps
from gateway.legacy.records import Json, LegacyRecords, Written, remembering_writes, set_last_message

__all__ = ["LegacyReplica"]

E = TypeVar("E", Agent, Task, Zone, Claim, Handoff, Checkpoint, Lock, Memory)

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

    def __init__(self, records: LegacyRecords, clock: Clock) -> None:
        self.records = records
        self.clock = clock

    @staticmethod
    def remembering_writes() -> AbstractContextManager[Written]:
        """The phase router's scope around a command and its replication: `read_entity` takes
        what the command wrote (`gateway.legacy.records.remembering_writes`)."""
        return remembering_writes()

    # -- reads ------------------------------------------------------------------------------------

    async def read_entity(self, key: EntityKey) -> Entity | None:  # noqa: PLR0911 - one exit per domain
        """The entity as Redis holds it, or None (also for an unreadable value, which is reported).

        Inside `LegacyRecords.remembering_writes`, a value the current command wrote is taken from
        what it wrote instead of being read again (the phase router's replication).
        """
        r, d, i = self.records, key.domain, key.id
        if d == "agent":
            return r.agent_of(i, await self._raw(keys.ACTIVE_AGENTS, i))
        if d == "task":
            return r.task_of(i, await self._raw(keys.TASKS, i))
        if d == "zone":
            return r.zone_of(i, await self._raw(keys.ZONES, i))
        if d == "claim":
            return await r.claim(i, self.clock.now_ms())
        if d == "handoff":
            return r.handoff_of(i, await self._raw(keys.HANDOFFS, i))
        if d == "checkpoint":
            agent_id = key.scope or i
            return r.checkpoint_of(agent_id, await self._raw(keys.CHECKPOINTS, agent_id))
        if d == "lock":
            return r.lock_of(i, await self._raw(keys.LOCKS, i))
        if d == "chat":
            found, text = r.written(keys.MESSAGES, i)
            if found and text is not None:  # parsed once: the next chat read finds it parsed
                return r.parse_shared(text, keys.MESSAGES, None, m.chat_from_legacy)
            return await r.find_chat(i)
        if d == "dm":
            return self._written_dm(key.scope, i) or next(
                (dm for dm in await r.inbox(key.scope) if dm.id == i), None
            )
        if d == "memory":
            return await r.memory(i)
        raise ValueError(f"unknown entity domain {d!r}")

    async def _raw(self, key: str, fld: str) -> str | None:
        """The text of one hash field: as the current command wrote it, else from Redis."""
        found, text = self.records.written(key, fld)
        return text if found else await self.records.hget(key, fld)

    def _written_dm(self, to: str, dm_id: str) -> DirectMessage | None:
        """DM `dm_id` to `to`, from a conversation the current command wrote, as `inbox` maps it."""
        for _, text in self.records.written_of(keys.DM_MESSAGES):
            msgs = [] if text is None else decode_array(text, key=keys.DM_MESSAGES)
            if isinstance(msgs, Corrupt):
                continue
            for x in msgs:
                if isinstance(x, dict) and x.get("id") == dm_id and x.get("to") == to:
                    return m.dm_from_legacy(x)
        return None

    # -- writes -----------------------------------------------------------------------------------

    async def write_entity(self, key: EntityKey, value: Entity | None) -> None:
        """Make Redis hold `value` for `key` (upsert), or remove the entity when `value` is None."""
        if value is None:
            await self._delete(key)
        elif isinstance(value, Agent):
            await self._upsert_agent(value)
        elif isinstance(value, Task):
            await self._upsert(keys.TASKS, value.id, value, m.task_from_legacy, m.task_to_legacy)
        elif isinstance(value, Zone):
            zone_id = value.zone_id
            await self._upsert(
                keys.ZONES, zone_id, value, lambda v: m.zone_from_legacy(zone_id, v), m.zone_to_legacy
            )
        elif isinstance(value, Claim):
            await self._upsert_claim(value)
        elif isinstance(value, Handoff):
            await self._upsert(keys.HANDOFFS, value.id, value, m.handoff_from_legacy, m.handoff_to_legacy)
        elif isinstance(value, Checkpoint):
            agent_id = value.agent_id
            await self._upsert(
                keys.CHECKPOINTS,
                agent_id,
                value,
                lambda v: m.checkpoint_from_legacy(agent_id, v),
                m.checkpoint_to_legacy,
            )
        elif isinstance(value, Lock):
            path = value.resource_path
            await self._upsert(
                keys.LOCKS, path, value, lambda v: m.lock_from_legacy(path, v), m.lock_to_legacy
            )
        elif isinstance(value, GroupMessage):
            await self._append_chat(value)
        elif isinstance(value, DirectMessage):
            await self._upsert_dm(value, key.scope)
        elif isinstance(value, Memory):
            await self._upsert_memory(value, key.scope or m.memory_owner(value))
        else:  # pragma: no cover - the union above is exhaustive
            raise TypeError(f"not a domain entity: {type(value).__name__}")

    # Each upsert merges onto the legacy value already there, so properties only legacy writers
    # know are kept; a value that cannot be read is never overwritten.

    async def _upsert(
        self, key: str, fld: str, entity: E, read: Callable[[Json], E], write: Callable[[E], Json]
    ) -> None:
        raw = await self.records.hget(key, fld)
        old = None if raw is None else self.records.parse(raw, key, fld, read)
        if raw is not None and old is None:
            raise ApiError(
                409, {"error": "Legacy value is unreadable; not overwritten", "key": key, "field": fld}
            )
        merged = replace(entity, extra={**old.extra, **entity.extra}) if old is not None else entity
        await self.records.hset(key, fld, write(merged))

    async def _upsert_agent(self, agent: Agent) -> None:
        """An agent, merged onto the legacy record; presence follows the status."""
        agent_id = agent.agent_id
        await self._upsert(
            keys.ACTIVE_AGENTS, agent_id, agent, lambda v: m.agent_from_legacy(agent_id, v), m.agent_to_legacy
        )
        presence = "offline" if agent.status == "offline" else "online"
        await self.records.run("HSET presence", lambda r: r.hset(keys.AGENT_PRESENCE, agent_id, presence))

    async def _upsert_claim(self, claim: Claim) -> None:
        """A claim into its `{by}:{what}` field; other agents' stale fields for the same `what` are
        removed, as the store's claim does (the DO claim replaced them), fresh ones kept."""
        fld = keys.claim_field(claim.by, claim.what)
        await self._upsert(
            keys.CLAIMS, fld, replace(claim, stale=False), m.claim_from_legacy, m.claim_to_legacy
        )
        now_ms = self.clock.now_ms()

        async def drop_superseded(pipe: Any) -> None:
            # under WATCH, so a field the legacy API refreshes meanwhile is kept
            entries = await self.records.claims_matching(pipe, claim.what)
            group = self.records.claims_by_what(entries, now_ms).get(claim.what, [])
            stale = [f for f, cl in group if cl.by != claim.by and cl.stale]
            if stale:
                pipe.multi()
                _ = pipe.hdel(keys.CLAIMS, *stale)

        await self.records.optimistic(f"HDEL {keys.CLAIMS} superseded", (keys.CLAIMS,), drop_superseded)

    async def _upsert_memory(self, mem: Memory, agent_id: str) -> None:
        """An agent's memory (team-wide value with `createdBy`), plus its tag index sets."""
        await self._upsert(
            keys.SHARED_MEMORY, mem.id, mem, m.memory_from_legacy, lambda x: m.memory_to_legacy(x, agent_id)
        )
        tags = [t for t in mem.tags if isinstance(t, str)]

        async def index(r: Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                for tag in tags:
                    _ = pipe.sadd(keys.memory_tag(tag), mem.id)
                await pipe.execute()

        if tags:
            await self.records.run("SADD tag index", index)

    async def _upsert_dm(self, dm: DirectMessage, to: str) -> None:
        """A DM (new, or its read flag) into its conversation; counts are re-derived."""
        now_iso = iso_from_ms(self.clock.now_ms())

        def change(msgs: list[Any], conv: Json | None) -> tuple[list[Any], Json]:
            value, extra = self.records.dm_value(conv, dm, to, read_at=now_iso)
            index = next(
                (i for i, x in enumerate(msgs) if isinstance(x, dict) and x.get("id") == dm.id), None
            )
            if index is None:
                msgs = [*msgs, value][-keys.DM_MAX :]
            else:
                msgs = [*msgs[:index], {**msgs[index], **value}, *msgs[index + 1 :]]
            record = self.records.conversation_record(conv, dm, to, extra, msgs)
            if index is None and dm.timestamp >= str(record.get("updatedAt", "")):
                set_last_message(record, dm)
            return msgs, record

        await self.records.update_conversation(
            m.conversation_id(dm.from_agent, to), change, [dm.from_agent, to]
        )

    async def _append_chat(self, msg: GroupMessage) -> None:
        """A chat message: LPUSH + LTRIM 0 999 unless its id is already near the head."""
        text = dumps(m.chat_to_legacy(msg))
        marker = f'"id":{dumps(msg.id)}'

        async def push(pipe: Any) -> None:
            head = await pipe.lrange(keys.MESSAGES, 0, 99)
            if any(marker in x for x in head):
                return
            pipe.multi()
            _ = pipe.lpush(keys.MESSAGES, text)
            _ = pipe.ltrim(keys.MESSAGES, 0, keys.CHAT_MAX - 1)

        # idempotent by id, so safe to retry
        await self.records.optimistic(f"LPUSH {keys.MESSAGES}", (keys.MESSAGES,), push)

    # -- deletes ----------------------------------------------------------------------------------

    async def _delete(self, key: EntityKey) -> None:
        r, d, i = self.records, key.domain, key.id
        if d in _HASHES:
            await r.hdel(_HASHES[d], (key.scope or i) if d == "checkpoint" else i)
        elif d == "claim":
            current = await r.claim(i, self.clock.now_ms())
            if current is not None:  # the DO claim only; other agents' legacy fields stay
                await r.hdel(keys.CLAIMS, keys.claim_field(current.by, current.what))
        elif d == "memory":
            mem = await r.memory(i)

            async def forget(redis: Redis) -> None:
                async with redis.pipeline(transaction=True) as pipe:
                    _ = pipe.hdel(keys.SHARED_MEMORY, i)
                    for tag in mem.tags if mem is not None else []:
                        if isinstance(tag, str):
                            _ = pipe.srem(keys.memory_tag(tag), i)
                    await pipe.execute()

            await r.run(f"HDEL {keys.SHARED_MEMORY}", forget)
        elif d == "chat":
            await self._delete_chat(i)
        elif d == "dm":
            await self._delete_dm(key.scope, i)
        else:
            raise ValueError(f"unknown entity domain {d!r}")

    async def _delete_chat(self, msg_id: str) -> None:
        """LREM of the element holding `msg_id` (the legacy API never deletes one message)."""
        for raw in await self.records.chat_texts(0, -1):
            msg = self.records.parse(raw, keys.MESSAGES, None, m.chat_from_legacy)
            if msg is not None and msg.id == msg_id:
                await self.records.run(
                    f"LREM {keys.MESSAGES}",
                    lambda r, raw=raw: r.lrem(keys.MESSAGES, 1, raw),  # type: ignore[misc]
                )
                return

    async def _delete_dm(self, agent_id: str, dm_id: str) -> None:
        dm = next((x for x in await self.records.inbox(agent_id) if x.id == dm_id), None)
        if dm is None:
            return
        conv_id = str(dm.extra.get("conversationId") or m.conversation_id(dm.from_agent, agent_id))

        def change(msgs: list[Any], conv: Json | None) -> tuple[list[Any], Json]:
            kept = [x for x in msgs if not (isinstance(x, dict) and x.get("id") == dm_id)]
            record: Json = dict(conv) if conv else {"id": conv_id, "participants": []}
            record["unreadCount"] = self.records.unread_counts(record, kept)
            return kept, record

        await self.records.update_conversation(conv_id, change, [])
