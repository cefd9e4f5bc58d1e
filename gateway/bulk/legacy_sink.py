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
from dataclasses import dataclass, field, replace
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
from gateway.domain.model import Agent, Claim, DirectMessage, GroupMessage, Memory
from gateway.errors import ApiError
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.client import Redis
from gateway.legacy.codec import Corrupt, decode_array, decode_object, dumps
from gateway.legacy.records import Json, LegacyRecords, ms, set_last_message
from gateway.legacy.replica import LegacyReplica

__all__ = ["LegacySink", "legacy_text", "same_in_legacy"]

log = structlog.get_logger(__name__)

_UNPACK_LUA: Final = """
local ARGS = {}
do
  local s, pos = ARGV[1], 1
  while pos <= #s do
    local colon = string.find(s, ':', pos, true)
    local n = tonumber(string.sub(s, pos, colon - 1))
    ARGS[#ARGS + 1] = string.sub(s, colon + 1, colon + n)
    pos = colon + n + 1
  end
end
"""
"""The scripts' arguments arrive packed in one (`_pack`): a command of 5,000 arguments cost
more to encode in the client than to run."""

_CAS_MANY_LUA: Final = (
    _UNPACK_LUA
    + """
local ARGV = ARGS
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
)
"""Compare-and-set of many hash fields at once: ARGV holds (key index, field, 'missing'|'match',
expected, new) per field; the answer is 1 (set) or 0 (changed since read) per field."""

_CAS_GROUPS_LUA: Final = (
    _UNPACK_LUA
    + """
local ARGV = ARGS
local out = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  i = i + 1
  local ok = true
  for j = 0, n - 1 do
    local b = i + j * 6
    local cur = redis.call('HGET', KEYS[tonumber(ARGV[b + 1])], ARGV[b + 2])
    if ARGV[b + 3] == 'missing' then
      if cur ~= false then ok = false end
    elseif cur ~= ARGV[b + 4] then
      ok = false
    end
  end
  if ok then
    for j = 0, n - 1 do
      local b = i + j * 6
      if ARGV[b] == 'set' then
        redis.call('HSET', KEYS[tonumber(ARGV[b + 1])], ARGV[b + 2], ARGV[b + 5])
      else
        redis.call('HDEL', KEYS[tonumber(ARGV[b + 1])], ARGV[b + 2])
      end
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  i = i + n * 6
end
return out
"""
)
"""Compare-and-set of groups of hash fields, each group all or nothing: ARGV holds, per group,
its number of fields, then per field ('set'|'del', key index, field, 'missing'|'match',
expected, new); a group is applied only if every field still holds what it was read as. The
answer is 1 (applied) or 0 (a field changed since read) per group."""

_CHAT_LUA: Final = (
    _UNPACK_LUA
    + """
local ARGV = ARGS
local pushed = 0
for i = 2, #ARGV, 2 do
  local head = redis.call('LRANGE', KEYS[1], 0, 99)
  local seen = false
  for _, x in ipairs(head) do
    if string.find(x, ARGV[i + 1], 1, true) then
      seen = true
      break
    end
  end
  if not seen then
    redis.call('LPUSH', KEYS[1], ARGV[i])
    redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]))
    pushed = pushed + 1
  end
end
return pushed
"""
)
"""Chat messages pushed in order, as `LegacyReplica` pushes one (LPUSH + LTRIM to the newest
1,000, unless its id is already near the head): ARGV holds the last index kept, then (value,
id marker) per message."""

_Op = tuple[str, str, str, str | None, str]
"""One field of a compare-and-set group: ('set'|'del', hash key, field, expected or None
(missing), new value)."""

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


def legacy_text(key: EntityKey, value: Entity) -> str | None:
    """The legacy text `value` is written as where Redis holds nothing for `key` (None: not a
    one-field family), as `LegacySink` writes it: for `LegacySink.prepared`."""
    family = _FAMILIES.get(key.domain)
    return None if family is None else dumps(family.dump(value, key))


def _pack(args: list[str], encode: Callable[[str], bytes]) -> bytes:
    """`args` as one script argument: each as its byte length, `:`, its bytes (`_UNPACK_LUA`)."""
    parts: list[bytes] = []
    for arg in args:
        data = encode(arg)
        parts.append(b"%d:" % len(data))
        parts.append(data)
    return b"".join(parts)


def _index_claim(index: dict[str, set[str]], fld: str) -> None:
    """File claim field `fld` under each `what` it may be the field of (`*:{what}`)."""
    at = fld.find(":")
    while at >= 0:
        index.setdefault(fld[at + 1 :], set()).add(fld)
        at = fld.find(":", at + 1)


def _unindex_claim(index: dict[str, set[str]], fld: str) -> None:
    at = fld.find(":")
    while at >= 0:
        index.get(fld[at + 1 :], set()).discard(fld)
        at = fld.find(":", at + 1)


def _one_outcome(now: Entity | Unreadable | None, value: Entity | None, chat_floor: int | None) -> Outcome:
    """What `_one_by_one` does with `value` (None: a deletion) given Redis's copy `now`."""
    if value is None:
        return "skipped" if isinstance(now, Unreadable) else "unchanged" if now is None else "written"
    if isinstance(value, GroupMessage) and not isinstance(now, Unreadable):
        if now is not None:  # the legacy list keeps a message as posted
            return "unchanged" if same_in_legacy(now, value) else "skipped"
        if chat_floor is not None and (ms(value.timestamp) or 0) <= chat_floor:
            # the list is full: a message older than its oldest would be trimmed at once
            # (docs/mapping.md, the newest 1,000), and pushing it would trim a newer one
            return "unchanged"
        return "written"
    return _decide(now, value)


@dataclass(slots=True)
class _DmView:
    """What Redis holds for a batch of DMs (`LegacySink._read_dms`): raw values as read (the
    compare-and-set expects them), decoded ones, and each recipient's inbox by message id."""

    raw_lists: dict[str, str | None] = field(default_factory=dict)
    lists: dict[str, list[str] | Corrupt] = field(default_factory=dict)
    raw_msgs: dict[str, str | None] = field(default_factory=dict)
    msgs: dict[str, list[Any] | Corrupt] = field(default_factory=dict)
    raw_convs: dict[str, str | None] = field(default_factory=dict)
    convs: dict[str, Json | Corrupt] = field(default_factory=dict)
    inboxes: dict[str, dict[str, DirectMessage]] = field(default_factory=dict)

    def inbox(self, agent_id: str) -> dict[str, DirectMessage]:
        """The agent's inbox as `LegacyRecords.inbox` reads it (its listed conversations'
        messages to it, newest first), by id as `LegacySource.read_many` keeps them."""
        lst = self.lists.get(agent_id)
        out: list[DirectMessage] = []
        for conv_id in lst if isinstance(lst, list) else []:
            msgs = self.msgs.get(conv_id)
            if isinstance(msgs, list):
                out.extend(
                    m.dm_from_legacy(x) for x in msgs if isinstance(x, dict) and x.get("to") == agent_id
                )
        out.sort(key=lambda d: d.timestamp, reverse=True)
        return {d.id: d for d in out}

    def current(self, key: EntityKey) -> DirectMessage | None:
        return self.inboxes.get(key.scope, {}).get(key.id)


class LegacySink:
    """Redis as the target of an import (module docstring)."""

    name = "legacy"

    def __init__(self, source: LegacySource, clock: Clock) -> None:
        self.source = source
        self.records = source.records
        self.clock = clock
        self.replica = LegacyReplica(source.records, clock)
        self._cas_many = self.records.client.redis.register_script(_CAS_MANY_LUA)
        self._cas_groups_script = self.records.client.redis.register_script(_CAS_GROUPS_LUA)
        self._chat_script = self.records.client.redis.register_script(_CHAT_LUA)
        self._claim_index: dict[str, set[str]] | None = None
        self.prepared: dict[EntityKey, str] = {}
        """Legacy texts of incoming values made ahead (`legacy_text`, by a reader process): the
        text an entity is written as where Redis holds nothing for its key. Used (and dropped)
        when its batch is written; where Redis holds a value the merge onto it is made here."""
        encoder = self.records.client.redis.get_encoder()  # type: ignore[no-untyped-call]
        self._encode = cast("Callable[[str], bytes]", encoder.encode)  # the client's codec

    async def write_batch(
        self, items: Sequence[tuple[EntityKey, Entity | None]], *, dry_run: bool = False
    ) -> WriteResult:
        result = WriteResult()
        hashed: list[tuple[EntityKey, Entity]] = []
        dms: list[tuple[EntityKey, DirectMessage]] = []
        claims: list[tuple[EntityKey, Claim]] = []
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
            elif isinstance(value, Claim):
                claims.append((key, value))
            else:
                others.append((key, value))
        await self._hashed(hashed, result, dry_run=dry_run)
        await self._dms(dms, result, dry_run=dry_run)
        await self._claims(claims, result, dry_run=dry_run)
        await self._one_by_one(others, result, dry_run=dry_run)
        return result

    # -- one field of a hash: agents, tasks, zones, handoffs, checkpoints, locks, memories ------

    async def _read_raw(self, items: Sequence[tuple[EntityKey, Entity]]) -> list[str | None]:
        """What Redis holds for each item: one HMGET per hash, in one pipeline."""
        by_hash: dict[str, list[int]] = {}
        fields: list[str] = []
        for i, (key, _v) in enumerate(items):
            family = _FAMILIES[key.domain]
            by_hash.setdefault(family.hash_key, []).append(i)
            fields.append(family.field(key))

        async def op(r: Redis) -> list[list[str | None]]:
            async with r.pipeline(transaction=False) as pipe:
                for hash_key, at in by_hash.items():
                    _ = pipe.hmget(hash_key, [fields[i] for i in at])
                return cast("list[list[str | None]]", await pipe.execute())

        out: list[str | None] = [None] * len(items)
        for at, values in zip(by_hash.values(), await self.records.run("HMGET batch", op), strict=True):
            for i, value in zip(at, values, strict=True):
                out[i] = value
        return out

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

    def _take_prepared(self, items: list[tuple[EntityKey, Entity]]) -> dict[EntityKey, str]:
        """The batch's texts made ahead (`prepared`), taken out of it."""
        if not self.prepared:
            return {}
        return {k: t for k, _v in items if (t := self.prepared.pop(k, None)) is not None}

    async def _hashed(
        self, items: list[tuple[EntityKey, Entity]], result: WriteResult, *, dry_run: bool
    ) -> None:
        pending = items
        made = self._take_prepared(items)
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
                text = made.get(key) if current is None else None
                if text is None:
                    merged = value
                    if isinstance(current, type(value)) and not isinstance(current, Unreadable):
                        merged = replace(value, extra={**current.extra, **value.extra})
                    text = dumps(_FAMILIES[key.domain].dump(merged, key))
                to_write.append((key, value, raw, text))
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

        packed = _pack(args, self._encode)

        async def op(r: Redis) -> list[int]:
            return cast("list[int]", await self._cas_many(keys=hash_keys, args=[packed], client=r))

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
        """DMs, a batch at a time: the recipients' inboxes and the conversations are read in
        three HMGETs, each DM decided against its inbox copy, and each conversation's
        messages and record written as one compare-and-set group (then the participants'
        conversation lists); a conversation changed since read is decided again."""
        pending = items
        for attempt in range(ROUNDS):
            if not pending:
                return
            view = await self._read_dms(pending)
            by_conv: dict[str, list[tuple[EntityKey, DirectMessage]]] = {}
            for key, dm in pending:
                outcome = _decide(view.current(key), dm)
                if outcome != "written" or dry_run:
                    result.add(key, outcome)
                    continue
                by_conv.setdefault(m.conversation_id(dm.from_agent, key.scope), []).append((key, dm))
            if not by_conv:
                return
            if attempt == 0:
                await pause_point("legacy_sink.before_write", [k for g in by_conv.values() for k, _ in g])
            writes = self._conversation_writes(by_conv, view, result)
            done = await self._cas_groups([ops for *_, ops in writes])
            pending = []
            listed: dict[str, list[str]] = {}
            for (conv_id, group, left_alone, _ops), ok in zip(writes, done, strict=True):
                if not ok:
                    pending += group  # changed since read: decide again
                    continue
                for key, dm in group:
                    result.add(key, "skipped" if key in left_alone else "written")
                    for user in (dm.from_agent, key.scope):
                        listed.setdefault(user, []).append(conv_id)
            await self._list_conversations(listed)
        for key, _v in pending:
            log.warning("bulk.legacy_write_contended", key=str(key), rounds=ROUNDS)
            result.add(key, "skipped")

    def _conversation_writes(
        self, by_conv: dict[str, list[tuple[EntityKey, DirectMessage]]], view: _DmView, result: WriteResult
    ) -> list[tuple[str, list[tuple[EntityKey, DirectMessage]], set[EntityKey], list[_Op]]]:
        """Per conversation: its DMs, those left alone, and the compare-and-set group that
        writes its messages and record; an unreadable conversation is left in place."""
        writes: list[tuple[str, list[tuple[EntityKey, DirectMessage]], set[EntityKey], list[_Op]]] = []
        for conv_id, group in by_conv.items():
            msgs, conv = view.msgs.get(conv_id, []), view.convs.get(conv_id)
            if isinstance(msgs, Corrupt) or isinstance(conv, Corrupt):
                log.warning("bulk.legacy_write_refused", conversation=conv_id, error="unreadable")
                for key, _dm in group:
                    result.add(key, "skipped")
                continue
            new_msgs, record, left_alone = self._change_conversation(group, msgs, conv)
            text = dumps(new_msgs[-keys.DM_MAX :])
            ops: list[_Op] = [
                ("set", keys.DM_MESSAGES, conv_id, view.raw_msgs.get(conv_id), text),
                ("set", keys.DM_CONVOS, conv_id, view.raw_convs.get(conv_id), dumps(record)),
            ]
            writes.append((conv_id, group, left_alone, ops))
        return writes

    async def _read_dms(self, items: list[tuple[EntityKey, DirectMessage]]) -> _DmView:
        """What Redis holds for a batch of DMs: the recipients' conversation lists, the
        messages of every conversation they list or the batch writes, and the records of the
        latter."""
        users = sorted({u for key, dm in items for u in (dm.from_agent, key.scope)})
        targets = sorted({m.conversation_id(dm.from_agent, key.scope) for key, dm in items})
        view = _DmView()
        for user, raw in zip(users, await self._hmget(keys.DM_USER_CONVOS, users), strict=True):
            view.raw_lists[user] = raw
            if raw is not None:
                got = decode_array(raw, key=keys.DM_USER_CONVOS, field=user)
                view.lists[user] = got if isinstance(got, Corrupt) else [str(x) for x in got]
        scopes = {key.scope for key, _dm in items}
        wanted = set(targets)
        for scope in scopes:
            lst = view.lists.get(scope)
            if isinstance(lst, list):
                wanted.update(lst)
        conv_ids = sorted(wanted)
        for conv_id, raw in zip(conv_ids, await self._hmget(keys.DM_MESSAGES, conv_ids), strict=True):
            view.raw_msgs[conv_id] = raw
            if raw is not None:
                view.msgs[conv_id] = decode_array(raw, key=keys.DM_MESSAGES, field=conv_id)
        for conv_id, raw in zip(targets, await self._hmget(keys.DM_CONVOS, targets), strict=True):
            view.raw_convs[conv_id] = raw
            if raw is not None:
                got_conv = decode_object(raw, key=keys.DM_CONVOS, field=conv_id)
                view.convs[conv_id] = got_conv
        for scope in scopes:
            view.inboxes[scope] = view.inbox(scope)
        return view

    def _change_conversation(
        self, group: list[tuple[EntityKey, DirectMessage]], msgs: list[Any], conv: Json | None
    ) -> tuple[list[Any], Json, set[EntityKey]]:
        """The conversation's messages and record with the group's DMs written in, and the keys
        left alone because Redis has them marked read (a read message stays read).

        What `LegacyRecords.update_conversation` does with one DM at a time, in one pass over
        the array: a message is found by id in a map, appended or updated in place, the oldest
        trimmed beyond 500, and the unread counts derived once from the final array."""
        now_iso = iso_from_ms(self.clock.now_ms())
        left_alone: set[EntityKey] = set()
        record: Json = conv or {}
        out = list(msgs)
        start = 0  # out[:start] were trimmed (the array keeps the newest DM_MAX)
        where: dict[Any, int] = {}
        for i, x in enumerate(out):
            if isinstance(x, dict):
                where.setdefault(x.get("id"), i)
        changed = False
        for key, dm in group:
            to = key.scope
            value, extra = self.records.dm_value(conv, dm, to, read_at=now_iso)
            index = where.get(dm.id)
            if index is not None and index < start:  # trimmed: a later copy of the id, if any
                index = next(
                    (
                        i
                        for i in range(start, len(out))
                        if isinstance(out[i], dict) and out[i].get("id") == dm.id
                    ),
                    None,
                )
            if index is None:
                out.append(value)
                where.setdefault(dm.id, len(out) - 1)
                start = max(start, len(out) - keys.DM_MAX)
            elif out[index].get("read") is True and not dm.read:
                left_alone.add(key)  # marked read since the batch was read: newer
                continue
            else:
                out[index] = {**out[index], **value}
            record = self.records.conversation_record(conv, dm, to, extra, [])
            if index is None and dm.timestamp >= str(record.get("updatedAt", "")):
                set_last_message(record, dm)
            conv = record
            changed = True
        final = out[start:]
        if changed:
            record["unreadCount"] = self.records.unread_counts(record, final)
        return final, record, left_alone

    async def _list_conversations(self, listed: dict[str, list[str]]) -> None:
        """Add the conversations to each user's list that lacks them (compare-and-set per user,
        decided again from a fresh read when a live write changed the list meanwhile); a list
        that cannot be read is never overwritten."""
        pending = {u: list(dict.fromkeys(c)) for u, c in listed.items()}  # in the order written
        for _attempt in range(ROUNDS):
            if not pending:
                return
            users = sorted(pending)
            groups: list[list[_Op]] = []
            asked: list[str] = []
            for user, raw in zip(users, await self._hmget(keys.DM_USER_CONVOS, users), strict=True):
                convs = [] if raw is None else decode_array(raw, key=keys.DM_USER_CONVOS)
                if isinstance(convs, Corrupt):
                    continue  # never overwrite what we cannot read
                have = {str(x) for x in convs}
                missing = [c for c in pending[user] if c not in have]
                if missing:
                    groups.append([("set", keys.DM_USER_CONVOS, user, raw, dumps([*convs, *missing]))])
                    asked.append(user)
            done = await self._cas_groups(groups)
            pending = {u: pending[u] for u, ok in zip(asked, done, strict=True) if not ok}
        for user in pending:
            log.warning("bulk.legacy_write_contended", key=f"{keys.DM_USER_CONVOS} {user}", rounds=ROUNDS)

    # -- claims: several fields per `what`, one compare-and-set group per claim ----------------

    async def _cas_groups(self, groups: list[list[_Op]]) -> list[bool]:
        """Apply each group of field writes all or nothing, if its fields still hold what they
        were read as (`_CAS_GROUPS_LUA`); per group, whether it was applied."""
        if not groups:
            return []
        hash_keys: list[str] = []
        index: dict[str, int] = {}
        args: list[str] = []
        for ops in groups:
            args.append(str(len(ops)))
            for op, hash_key, fld, expected, new in ops:
                if hash_key not in index:
                    hash_keys.append(hash_key)
                    index[hash_key] = len(hash_keys)
                args += [
                    op,
                    str(index[hash_key]),
                    fld,
                    "missing" if expected is None else "match",
                    expected or "",
                    new,
                ]

        packed = _pack(args, self._encode)

        async def run(r: Redis) -> list[int]:
            return cast("list[int]", await self._cas_groups_script(keys=hash_keys, args=[packed], client=r))

        # not retried blindly: a retry of a compare-and-set that went through fails its compare
        done = await self.records.run("CAS groups", run, idempotent=False)
        return [bool(x) for x in done]

    async def _hmget(self, hash_key: str, fields: list[str]) -> list[str | None]:
        async def op(r: Redis) -> list[str | None]:
            return cast("list[str | None]", await r.hmget(hash_key, fields))

        return await self.records.run(f"HMGET {hash_key}", op) if fields else []

    async def _claim_fields(self) -> dict[str, set[str]]:
        """Every claim field of Redis under each `what` its name may hold (`{by}:{what}`, the
        part after any `:`): read once per run (one HSCAN), then kept up to date with this
        sink's own writes. A field a live gateway adds later is not in it: its claim is newer
        than the import's copy and stays the DO claim (`LegacyRecords.winner`) beside it."""
        if self._claim_index is None:

            async def op(r: Redis) -> list[str]:
                return [str(f) async for f, _v in r.hscan_iter(keys.CLAIMS, count=1000)]

            index: dict[str, set[str]] = {}
            for fld in await self.records.run(f"HSCAN {keys.CLAIMS}", op):
                _index_claim(index, fld)
            self._claim_index = index
        return self._claim_index

    async def _claims(
        self, items: list[tuple[EntityKey, Claim]], result: WriteResult, *, dry_run: bool
    ) -> None:
        """Claims, decided on the DO claim of their `what` (the winner of its fields) and each
        written with the removal of other agents' stale fields of the `what`, as one
        compare-and-set group (what `LegacyReplica` does in three steps per claim)."""
        if not items:
            return
        index = await self._claim_fields()
        pending = items
        for attempt in range(ROUNDS):
            if not pending:
                return
            now_ms = self.clock.now_ms()
            own = {keys.claim_field(c.by, c.what) for _k, c in pending}
            fields = sorted(own.union(*(index.get(c.what, set()) for _k, c in pending)))
            raws = dict(zip(fields, await self._hmget(keys.CLAIMS, fields), strict=True))
            groups = self.records.claims_by_what(((f, r) for f, r in raws.items() if r is not None), now_ms)
            writes: list[tuple[EntityKey, Claim, list[_Op]]] = []
            for key, claim in pending:
                outcome, ops = self._claim_ops(claim, groups.get(claim.what, []), raws)
                if outcome != "written" or dry_run:
                    result.add(key, outcome)
                else:
                    writes.append((key, claim, ops))
            if not writes:
                return
            if attempt == 0:
                await pause_point("legacy_sink.before_write", [k for k, *_ in writes])
            done = await self._cas_groups([ops for *_, ops in writes])
            pending = []
            for (key, claim, ops), ok in zip(writes, done, strict=True):
                if not ok:
                    pending.append((key, claim))  # changed since read: decide again
                    continue
                result.add(key, "written")
                for op, _h, fld, _e, _n in ops:
                    (_index_claim if op == "set" else _unindex_claim)(index, fld)
        for key, _v in pending:
            log.warning("bulk.legacy_write_contended", key=str(key), rounds=ROUNDS)
            result.add(key, "skipped")

    def _claim_ops(
        self, claim: Claim, group: list[tuple[str, Claim]], raws: dict[str, str | None]
    ) -> tuple[Outcome, list[_Op]]:
        """The outcome for `claim` given its `what`'s readable fields (`group`), and when it is
        written the field writes: its own field merged onto what it holds (legacy-only
        properties survive), other agents' stale fields of the `what` removed."""
        outcome = _decide(None if not group else LegacyRecords.winner(group), claim)
        fld = keys.claim_field(claim.by, claim.what)
        raw = raws.get(fld)
        old = None if raw is None else self.records.parse(raw, keys.CLAIMS, fld, m.claim_from_legacy)
        if outcome == "written" and raw is not None and old is None:
            outcome = "skipped"  # a value Redis cannot read is never overwritten
        if outcome != "written":
            return outcome, []
        plain = replace(claim, stale=False)
        merged = replace(plain, extra={**old.extra, **claim.extra}) if old is not None else plain
        ops: list[_Op] = [("set", keys.CLAIMS, fld, raw, dumps(m.claim_to_legacy(merged)))]
        ops += [("del", keys.CLAIMS, f, raws[f], "") for f, cl in group if cl.by != claim.by and cl.stale]
        return outcome, ops

    # -- claims and chat: through the replication's writer -------------------------------------

    async def _one_by_one(
        self, items: list[tuple[EntityKey, Entity | None]], result: WriteResult, *, dry_run: bool
    ) -> None:
        if not items:
            return
        current = await self.source.read_many([k for k, _ in items])
        chat_floor = await self._chat_floor() if any(k.domain == "chat" for k, _ in items) else None
        chat: list[tuple[EntityKey, GroupMessage]] = []
        for key, value in items:
            outcome = _one_outcome(current.get(key), value, chat_floor)
            if outcome == "written" and not dry_run and isinstance(value, GroupMessage):
                chat.append((key, value))  # pushed together below, in order
                continue
            if outcome == "written" and not dry_run:
                try:
                    await self.replica.write_entity(key, value)
                except ApiError as e:  # an unreadable value on the way (a 409): left in place
                    log.warning("bulk.legacy_write_refused", key=str(key), error=str(e))
                    outcome = "skipped"
            result.add(key, outcome)
        if chat:
            await self._push_chat([msg for _k, msg in chat])
            for key, _msg in chat:
                result.add(key, "written")

    async def _push_chat(self, msgs: list[GroupMessage]) -> None:
        """Chat messages pushed in one script, each as `LegacyReplica` pushes one (LPUSH and
        LTRIM to the newest 1,000, unless its id is already near the head)."""
        args: list[str] = [str(keys.CHAT_MAX - 1)]
        for msg in msgs:
            args += [dumps(m.chat_to_legacy(msg)), f'"id":{dumps(msg.id)}']

        packed = _pack(args, self._encode)

        async def op(r: Redis) -> int:
            return int(await self._chat_script(keys=[keys.MESSAGES], args=[packed], client=r))

        await self.records.run(f"LPUSH {keys.MESSAGES} batch", op)  # idempotent by id

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
