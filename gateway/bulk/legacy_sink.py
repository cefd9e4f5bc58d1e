"""The legacy Redis store as the target of an import (`EntitySink`), beside a live gateway.

A batch is written in a few round trips, and no entity the gateway changed meanwhile is
overwritten with an older copy:

1. what Redis holds is read for the whole batch at once (HMGET per hash, in one pipeline);
2. each entity is decided (`gateway.bulk.versions`): unchanged, left alone (Redis holds a newer
   version, or a value it cannot read), or written;
3. the written ones go out as one compare-and-set script for the batch: a field is set only if
   it still holds the value step 1 read. A field the gateway changed in between fails its
   compare; those entities are decided again from a fresh read (so a newer write is left alone);
4. the side effects follow for the fields that were set: an agent's presence, a memory's tags.

Every value is merged onto the legacy value it replaces, so properties only legacy writers know
survive (as `LegacyReplica` does for replication). DMs are written per conversation, in one
optimistic transaction each, and a message Redis already marked read is never made unread;
claims (several fields per `what`) and chat (a capped list) go through `LegacyReplica`, one
entity at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, cast

import structlog

from gateway.bulk.items import WriteResult
from gateway.bulk.legacy_side import LegacySource
from gateway.bulk.pause import pause_point
from gateway.bulk.versions import newer
from gateway.clock import Clock
from gateway.do.replica import Outcome
from gateway.domain.entities import Entity, EntityKey, Unreadable, actor_only
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.model import Agent, DirectMessage, GroupMessage, Memory
from gateway.errors import ApiError
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.client import Redis
from gateway.legacy.codec import Corrupt, decode_object, dumps
from gateway.legacy.records import Json, ms, set_last_message
from gateway.legacy.replica import LegacyReplica

__all__ = ["LegacySink", "same_in_legacy"]

log = structlog.get_logger(__name__)

_CAS_MANY_LUA: Final = """
local out = {}
for i = 1, #ARGV, 5 do
  local key = KEYS[tonumber(ARGV[i])]
  local cur = redis.call('HGET', key, ARGV[i + 1])
  local ok
  if ARGV[i + 2] == 'missing' then ok = (cur == false) else ok = (cur == ARGV[i + 3]) end
  if ok then
    redis.call('HSET', key, ARGV[i + 1], ARGV[i + 4])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""
"""Compare-and-set of many hash fields at once: ARGV holds (key index, field, 'missing'|'match',
expected, new) per field; the answer is 1 (set) or 0 (changed since read) per field."""

ROUNDS: Final = 5
"""Times an entity whose field changed under the batch is decided again before it is left alone
(a field rewritten that often during one batch has a writer far newer than the import)."""


@dataclass(frozen=True, slots=True)
class _Family:
    """Where a domain's entity lives (one field of one hash) and how it is written."""

    hash_key: str
    parse: Callable[[str, Json], Any]
    dump: Callable[[Any, EntityKey], Json]

    def field(self, key: EntityKey) -> str:
        return key.scope if key.domain == "checkpoint" else key.id


def _memory_to_legacy(mem: Memory, key: EntityKey) -> Json:
    return m.memory_to_legacy(mem, key.scope or m.memory_owner(mem))


_FAMILIES: Final[dict[str, _Family]] = {
    "agent": _Family(keys.ACTIVE_AGENTS, m.agent_from_legacy, lambda e, _k: m.agent_to_legacy(e)),
    "task": _Family(keys.TASKS, lambda _f, v: m.task_from_legacy(v), lambda e, _k: m.task_to_legacy(e)),
    "zone": _Family(keys.ZONES, m.zone_from_legacy, lambda e, _k: m.zone_to_legacy(e)),
    "handoff": _Family(
        keys.HANDOFFS, lambda _f, v: m.handoff_from_legacy(v), lambda e, _k: m.handoff_to_legacy(e)
    ),
    "checkpoint": _Family(
        keys.CHECKPOINTS, m.checkpoint_from_legacy, lambda e, _k: m.checkpoint_to_legacy(e)
    ),
    "lock": _Family(keys.LOCKS, m.lock_from_legacy, lambda e, _k: m.lock_to_legacy(e)),
    "memory": _Family(keys.SHARED_MEMORY, lambda _f, v: m.memory_from_legacy(v), _memory_to_legacy),
}


def same_in_legacy(current: Entity, incoming: Entity) -> bool:
    """Redis already holds `incoming`: the same canonical entity, and every property `incoming`
    carries is there with the same value (Redis keeps properties only it knows, and where a
    DM or a memory lives comes back as extra properties; neither makes a write necessary)."""
    if m.canonical(current) != m.canonical(incoming):
        return False
    return all(current.extra.get(k) == v for k, v in incoming.extra.items())


def _decide(current: Entity | Unreadable | None, incoming: Entity) -> Outcome:
    if isinstance(current, Unreadable):
        return "skipped"  # never overwritten, as by the gateway
    if current is None:
        return "written"
    if same_in_legacy(current, incoming):
        return "unchanged"
    return "skipped" if newer(current, incoming) else "written"


class LegacySink:
    """Redis as the target of an import (module docstring)."""

    name = "legacy"

    def __init__(self, source: LegacySource, clock: Clock) -> None:
        self.source = source
        self.records = source.records
        self.clock = clock
        self.replica = LegacyReplica(source.records, clock)
        self._cas_many = self.records.client.redis.register_script(_CAS_MANY_LUA)

    async def write_batch(
        self, items: Sequence[tuple[EntityKey, Entity | None]], *, dry_run: bool = False
    ) -> WriteResult:
        result = WriteResult()
        hashed: list[tuple[EntityKey, Entity]] = []
        dms: list[tuple[EntityKey, DirectMessage]] = []
        others: list[tuple[EntityKey, Entity | None]] = []
        for key, value in items:
            if actor_only(key.domain):
                continue  # Redis has no such family
            if value is None:
                others.append((key, value))  # a deletion (a repair's): through LegacyReplica
            elif key.domain in _FAMILIES:
                hashed.append((key, value))
            elif isinstance(value, DirectMessage):
                dms.append((key, value))
            else:
                others.append((key, value))
        await self._hashed(hashed, result, dry_run=dry_run)
        await self._dms(dms, result, dry_run=dry_run)
        await self._one_by_one(others, result, dry_run=dry_run)
        return result

    # -- one field of a hash: agents, tasks, zones, handoffs, checkpoints, locks, memories ------

    async def _read_raw(self, items: Sequence[tuple[EntityKey, Entity]]) -> list[str | None]:
        async def op(r: Redis) -> list[str | None]:
            async with r.pipeline(transaction=False) as pipe:
                for key, _v in items:
                    family = _FAMILIES[key.domain]
                    _ = pipe.hget(family.hash_key, family.field(key))
                return cast("list[str | None]", await pipe.execute())

        return await self.records.run("HGET batch", op)

    def _current(self, key: EntityKey, raw: str | None) -> Entity | Unreadable | None:
        if raw is None:
            return None
        family = _FAMILIES[key.domain]
        fld = family.field(key)
        value = decode_object(raw, key=family.hash_key, field=fld)
        if isinstance(value, Corrupt):
            return Unreadable(key, raw, f"{family.hash_key} {fld}: {value.reason}")
        try:
            entity: Entity = family.parse(fld, value)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            return Unreadable(key, raw, f"{family.hash_key} {fld}: unmappable value: {e!r}")
        return entity

    async def _hashed(
        self, items: list[tuple[EntityKey, Entity]], result: WriteResult, *, dry_run: bool
    ) -> None:
        pending = items
        for attempt in range(ROUNDS):
            if not pending:
                return
            raws = await self._read_raw(pending)
            to_write: list[tuple[EntityKey, Entity, str | None, str]] = []
            for (key, value), raw in zip(pending, raws, strict=True):
                current = self._current(key, raw)
                outcome = _decide(current, value)
                if outcome != "written" or dry_run:
                    result.add(key, outcome)
                    continue
                merged = value
                if isinstance(current, type(value)) and not isinstance(current, Unreadable):
                    merged = replace(value, extra={**current.extra, **value.extra})
                to_write.append((key, value, raw, dumps(_FAMILIES[key.domain].dump(merged, key))))
            if not to_write:
                return
            if attempt == 0:
                await pause_point("legacy_sink.before_write", [k for k, *_ in to_write])
            done = await self._set_many(to_write)
            await self._side_effects([(k, v) for (k, v, *_), ok in zip(to_write, done, strict=True) if ok])
            pending = []
            for (key, value, *_), ok in zip(to_write, done, strict=True):
                if ok:
                    result.add(key, "written")
                else:
                    pending.append((key, value))  # changed since read: decide again
        for key, _v in pending:
            log.warning("bulk.legacy_write_contended", key=str(key), rounds=ROUNDS)
            result.add(key, "skipped")

    async def _set_many(self, writes: list[tuple[EntityKey, Entity, str | None, str]]) -> list[bool]:
        hash_keys: list[str] = []
        index: dict[str, int] = {}
        args: list[str] = []
        for key, _v, expected, new in writes:
            family = _FAMILIES[key.domain]
            if family.hash_key not in index:
                hash_keys.append(family.hash_key)
                index[family.hash_key] = len(hash_keys)
            args += [
                str(index[family.hash_key]),
                family.field(key),
                "missing" if expected is None else "match",
                expected or "",
                new,
            ]

        async def op(r: Redis) -> list[int]:
            return cast("list[int]", await self._cas_many(keys=hash_keys, args=args, client=r))

        # not retried blindly: a retry of a compare-and-set that went through fails its compare
        done = await self.records.run("CAS batch", op, idempotent=False)
        return [bool(x) for x in done]

    async def _side_effects(self, written: list[tuple[EntityKey, Entity]]) -> None:
        """An agent's presence follows its status; a memory is listed under each of its tags."""
        presence: dict[str, str] = {}
        tagged: list[tuple[str, str]] = []  # (tag, memory id)
        for _key, value in written:
            if isinstance(value, Agent):
                presence[value.agent_id] = "offline" if value.status == "offline" else "online"
            elif isinstance(value, Memory):
                tagged.extend((tag, value.id) for tag in value.tags if isinstance(tag, str))
        if not presence and not tagged:
            return

        async def op(r: Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for agent_id, state in presence.items():
                    _ = pipe.hset(keys.AGENT_PRESENCE, agent_id, state)
                for tag, mem_id in tagged:
                    _ = pipe.sadd(keys.memory_tag(tag), mem_id)
                await pipe.execute()

        await self.records.run("HSET presence / SADD tags", op)

    # -- DMs: one conversation at a time ---------------------------------------------------------

    async def _dms(
        self, items: list[tuple[EntityKey, DirectMessage]], result: WriteResult, *, dry_run: bool
    ) -> None:
        if not items:
            return
        current = await self.source.read_many([k for k, _ in items])
        by_conv: dict[str, list[tuple[EntityKey, DirectMessage]]] = {}
        for key, dm in items:
            outcome = _decide(current.get(key), dm)
            if outcome != "written" or dry_run:
                result.add(key, outcome)
                continue
            by_conv.setdefault(m.conversation_id(dm.from_agent, key.scope), []).append((key, dm))
        if by_conv:
            await pause_point("legacy_sink.before_write", [k for g in by_conv.values() for k, _ in g])
        for conv_id, group in by_conv.items():
            left_alone = await self._write_conversation(conv_id, group)
            for key, _dm in group:
                result.add(key, "skipped" if key in left_alone else "written")

    async def _write_conversation(
        self, conv_id: str, group: list[tuple[EntityKey, DirectMessage]]
    ) -> set[EntityKey]:
        """The group's messages into their conversation, in one optimistic transaction; the keys
        left alone because Redis marked them read meanwhile (a read message stays read)."""
        now_iso = iso_from_ms(self.clock.now_ms())
        left_alone: set[EntityKey] = set()

        def change(msgs: list[Any], conv: Json | None) -> tuple[list[Any], Json]:
            left_alone.clear()  # the transaction may run again on fresh values
            record: Json = conv or {}
            for key, dm in group:
                to = key.scope
                value, extra = self.records.dm_value(conv, dm, to, read_at=now_iso)
                index = next(
                    (i for i, x in enumerate(msgs) if isinstance(x, dict) and x.get("id") == dm.id), None
                )
                if index is None:
                    msgs = [*msgs, value][-keys.DM_MAX :]
                elif msgs[index].get("read") is True and not dm.read:
                    left_alone.add(key)  # marked read since the batch was read: newer
                    continue
                else:
                    msgs = [*msgs[:index], {**msgs[index], **value}, *msgs[index + 1 :]]
                record = self.records.conversation_record(conv, dm, to, extra, msgs)
                if index is None and dm.timestamp >= str(record.get("updatedAt", "")):
                    set_last_message(record, dm)
                conv = record
            return msgs, record

        users = sorted({u for key, dm in group for u in (dm.from_agent, key.scope)})
        try:
            await self.records.update_conversation(conv_id, change, users)
        except ApiError as e:  # the conversation is unreadable: left in place
            log.warning("bulk.legacy_write_refused", conversation=conv_id, error=str(e))
            return {k for k, _ in group}
        return left_alone

    # -- claims and chat: through the replication's writer -------------------------------------

    async def _one_by_one(
        self, items: list[tuple[EntityKey, Entity | None]], result: WriteResult, *, dry_run: bool
    ) -> None:
        if not items:
            return
        current = await self.source.read_many([k for k, _ in items])
        chat_floor = await self._chat_floor() if any(k.domain == "chat" for k, _ in items) else None
        for key, value in items:
            now = current.get(key)
            outcome: Outcome
            if value is None:
                outcome = (
                    "skipped" if isinstance(now, Unreadable) else "unchanged" if now is None else "written"
                )
            elif isinstance(value, GroupMessage) and not isinstance(now, Unreadable):
                if now is not None:  # the legacy list keeps a message as posted
                    outcome = "unchanged" if same_in_legacy(now, value) else "skipped"
                elif chat_floor is not None and (ms(value.timestamp) or 0) <= chat_floor:
                    # the list is full: a message older than its oldest would be trimmed at once
                    # (docs/mapping.md, the newest 1,000), and pushing it would trim a newer one
                    outcome = "unchanged"
                else:
                    outcome = "written"
            else:
                outcome = _decide(now, value)
            if outcome == "written" and not dry_run:
                try:
                    await self.replica.write_entity(key, value)
                except ApiError as e:  # an unreadable value on the way (a 409): left in place
                    log.warning("bulk.legacy_write_refused", key=str(key), error=str(e))
                    outcome = "skipped"
            result.add(key, outcome)

    async def _chat_floor(self) -> int | None:
        """The time of the oldest message of a full chat list (None while it has room)."""

        async def op(r: Redis) -> tuple[int, list[str]]:
            async with r.pipeline(transaction=False) as pipe:
                _ = pipe.llen(keys.MESSAGES)
                _ = pipe.lrange(keys.MESSAGES, -1, -1)
                length, tail = await pipe.execute()
            return int(length), cast("list[str]", tail)

        length, tail = await self.records.run("LLEN messages", op)
        if length < keys.CHAT_MAX or not tail:
            return None
        value = decode_object(tail[0], key=keys.MESSAGES)
        return None if isinstance(value, Corrupt) else ms(str(value.get("timestamp", ""))) or 0
