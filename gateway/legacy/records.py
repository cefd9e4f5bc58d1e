"""`LegacyRecords`: reading and writing single records of the legacy Redis layout.

The legacy store (DO commands) and the legacy replica (entity upserts and deletes) both work on
records through this one public face: every read decodes a value tolerantly (double-encoded
JSON, every legacy writer's shape, through `gateway.legacy.mapping`) and reports and skips a
corrupt one (`CorruptionLog`), never deleting what it could not read; every write goes through
the pooled client (`LegacyClient.run`), retried only when it is safe to repeat.

Atomic changes of one hash field use a compare-and-set Lua script (`cas`): it only writes when
the field still holds the value that was read, so it also loses cleanly to the legacy API's own
HGET/HSETNX sequences. A DM conversation's fields (its messages, its record, its users' lists)
change together through a compare-and-set of every field read (`update_conversation`); claims
and the chat list run under WATCH/MULTI with a bounded number of optimistic retries
(`optimistic`).

Listings (every agent, every task, the chat window) read whole hashes and lists on every request,
and most values have not changed since the last one. `parse_shared` keeps what a value's exact
text parsed to (`DecodedValues`), so an unchanged value is looked up instead of decoded and
mapped again. The text is the key: whoever wrote Redis meanwhile, a changed value is a new text
and is parsed anew, so the cache can never serve a stale entity. What it returns is shared
between requests and must not be changed in place (listings only render it; the agent, lock and
checkpoint records are decided on by rules that make new records). The agent, lock and
checkpoint a write decides on are mostly the text this process last wrote or read there, which
the replication of that write (or the read) parsed already.

Writes remember what they wrote (`remembering_writes`): while the phase router replicates a
command the legacy store just ran, the replica reads the entity from the text the command wrote
instead of asking Redis for it again (one round trip less per replicated entity). The router
serialises the writes of one entity in this process, so that text is what Redis holds; a legacy
writer outside the gateway that changes it in between is not replicated either way (its writes
never reach the actors in write-through).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Final, TypeVar, cast

import orjson
import redis.exceptions

from gateway.domain.jscompat import parse_js_date
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
from gateway.errors import ApiError, StoreUnavailable
from gateway.keyed_locks import KeyedLocks
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.client import LegacyClient, LuaScript, Redis
from gateway.legacy.codec import Corrupt, CorruptionLog, decode_array, decode_object, dumps
from gateway.legacy.tracking import CAS_GUARD_LUA, Command

__all__ = [
    "CAS_ATTEMPTS",
    "CHAT_SCAN",
    "MENTION_CURSOR",
    "MENTION_CURSOR_ID",
    "Json",
    "LegacyRecords",
    "Written",
    "ms",
    "remembering_writes",
    "set_last_message",
    "unreadable",
]

T = TypeVar("T")
Json = dict[str, Any]

_NOT_SEEN: Final = object()

CAS_ATTEMPTS: Final = 16  # optimistic retries under contention before giving up with a 503
CHAT_SCAN: Final = keys.CHAT_MAX + 200  # the whole legacy window (user posts trim it to 1000)
MENTION_CURSOR: Final = "lastChatCheck"  # the agent's mention cursor: the time of its last check
MENTION_CURSOR_ID: Final = "lastChatCheckId"  # the newest message id seen then ("" = chat was empty)

# Set the hash field to ARGV[4] (or delete it when ARGV[5] == "del") only if it still holds
# ARGV[2] (or is missing when ARGV[3] == "missing"). {1} = written; {0, current value (nil when
# missing)} = someone else changed it: the caller decides again on what it holds now.
_CAS_LUA: Final = LuaScript(
    CAS_GUARD_LUA
    + """if ARGV[5] == 'del' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
end
return {1}
"""
)


# Several hash fields at once: every field of the first ARGV[1] checks (key index, field,
# 'missing' or 'match', expected text) must still hold what was decided on; then the writes (key
# index, field, text) are made. {1} = written; {0, each checked field's text now (nil: missing)}
# = one of them changed meanwhile, nothing written (the caller decides again on those).
_CAS_FIELDS_LUA: Final = LuaScript("""
local n = tonumber(ARGV[1])
local i = 2
for _ = 1, n do
  local cur = redis.call('HGET', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
  if (ARGV[i + 2] == 'missing' and cur) or (ARGV[i + 2] ~= 'missing' and cur ~= ARGV[i + 3]) then
    local out = {0}
    local j = 2
    for _ = 1, n do
      out[#out + 1] = redis.call('HGET', KEYS[tonumber(ARGV[j])], ARGV[j + 1])
      j = j + 4
    end
    return out
  end
  i = i + 4
end
local writes = tonumber(ARGV[i])
i = i + 1
for _ = 1, writes do
  redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
return {1}
""")

# /work's first read: the agent, the cursor id this script finds in it (`lastChatCheckId`, or
# false), the chat list's length, then its first ARGV[2] elements and, after them, only those that
# can matter for the pending mentions: with an '@', or holding the cursor id. The caller checks
# the cursor against its own reading of the agent (`LegacyRecords.agent_and_chat`).
_AGENT_AND_CHAT_LUA: Final = LuaScript("""
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local cursor = false
if raw then
  local ok, v = pcall(cjson.decode, raw)
  if ok and type(v) == 'string' then ok, v = pcall(cjson.decode, v) end
  if ok and type(v) == 'table' and type(v['lastChatCheckId']) == 'string' then
    cursor = v['lastChatCheckId']
  end
end
local all = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[3]))
local out = {raw, cursor, #all}
local first = tonumber(ARGV[2])
for i = 1, #all do
  local x = all[i]
  if i <= first or string.find(x, '@', 1, true) or (cursor and string.find(x, cursor, 1, true)) then
    out[#out + 1] = x
  end
end
return out
""")


# /agent/<id>/state's reads: the agent's conversation list (KEYS[1]), every memory (KEYS[2]), its
# checkpoint (KEYS[3]), the ids this script reads in the list (false when it is no JSON array it
# can read) and those conversations' message arrays (KEYS[4]; false when there are more than
# ARGV[2] ids). The caller checks the ids against its own reading of the list
# (`LegacyRecords.agent_state_values`).
_AGENT_STATE_LUA: Final = LuaScript("""
local ids = redis.call('HGET', KEYS[1], ARGV[1])
local names = false
local arrays = false
if ids then
  local ok, v = pcall(cjson.decode, ids)
  if ok and type(v) == 'string' then ok, v = pcall(cjson.decode, v) end
  if ok and type(v) == 'table' then
    names = {}
    for _, x in ipairs(v) do
      if type(x) ~= 'string' then names = false break end
      names[#names + 1] = x
    end
    if names and #names <= tonumber(ARGV[2]) then
      arrays = {}
      if #names > 0 then arrays = redis.call('HMGET', KEYS[4], unpack(names)) end
    end
  end
end
return {ids, redis.call('HGETALL', KEYS[2]), redis.call('HGET', KEYS[3], ARGV[1]), names, arrays}
""")

_STATE_IDS_MAX: Final = 1_000  # conversations read by the state script (Lua's unpack has a limit)


@functools.lru_cache(maxsize=16_384)
def _parse_date(iso: str) -> int | None:
    return parse_js_date(iso)


def ms(iso: str | None) -> int | None:
    """Epoch ms of a legacy date text (None when absent or unreadable); a pure function of the
    text, cached, since listings compare the same `lastSeen` and `createdAt` texts every time."""
    return None if not iso else _parse_date(iso)


Written = dict[tuple[str, str], str | None]
"""What one command wrote: (Redis key, field) -> the text written there (None: deleted). Chat
messages are under (`keys.MESSAGES`, message id), DM conversations under (`keys.DM_MESSAGES`,
conversation id)."""

_WRITTEN: ContextVar[Written | None] = ContextVar("legacy_written", default=None)


@contextlib.contextmanager
def remembering_writes() -> Iterator[Written]:
    """Remember, in this task and for the block, every value written (module docstring)."""
    written: Written = {}
    token = _WRITTEN.set(written)
    try:
        yield written
    finally:
        _WRITTEN.reset(token)


DECODED_MAX: Final = 20_000  # entries (a few MiB): more than the values of the listings a mix reads

_HINTED: Final = frozenset(
    {keys.LOCKS, keys.CHECKPOINTS, keys.DM_MESSAGES, keys.DM_CONVOS, keys.DM_USER_CONVOS}
)
"""The hashes whose values read or written here are kept as guesses (`LegacyRecords.hint`)."""
HINT_CHARS_MAX: Final = 16 * 1024 * 1024
"""The guesses are dropped whole once this many characters were kept (a DM conversation's array
holds up to 500 messages), or `DECODED_MAX` of them."""


_WINDOWS_KEPT: Final = 16
"""`chat_window`'s answers kept for one state of the chat list (by `count`: a page's limit)."""


class DecodedValues:
    """Parsed legacy values by (key, field, exact text); emptied whole when it reaches `limit`.

    Content-addressed: a value whose text changed is a miss, so no invalidation is needed.
    Only successful parses are kept, so a corrupt value is reported on every read as before.
    """

    def __init__(self, limit: int = DECODED_MAX) -> None:
        self.limit = limit
        self._values: dict[tuple[str, str | None, str], Any] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: str, field: str | None, raw: str) -> Any:
        found = self._values.get((key, field, raw))
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: str, field: str | None, raw: str, value: Any) -> None:
        if len(self._values) >= self.limit:
            self._values.clear()
        self._values[(key, field, raw)] = value


def unreadable(what: str, key: str, fld: str | None, **ids: Any) -> ApiError:
    """The 409 of a write that would overwrite a value it cannot read (corrupt or unmappable):
    it names the Redis key and field, so an operator can look at the value and fix it."""
    return ApiError(
        409, {"error": f"{what} is unreadable in the legacy store", **ids, "key": key, "field": fld}
    )


class LegacyRecords:
    """Single records of the legacy layout, read tolerantly and written through the pooled client."""

    def __init__(self, client: LegacyClient, corruption: CorruptionLog | None = None) -> None:
        self.client = client
        self.corruption = corruption or CorruptionLog()
        self.decoded = DecodedValues()
        self._json: dict[int, tuple[Any, orjson.Fragment]] = {}  # id -> (record, its JSON)
        self._watch_locks: dict[str, asyncio.Lock] = {}
        self._field_locks = KeyedLocks()
        self.watch_conflicts = 0  # optimistic changes retried because what they read changed
        self._hints: dict[tuple[str, str], str | None] = {}  # (key, field) -> text last seen (`hint`)
        self._hint_chars = 0  # characters kept in `_hints` since it was last emptied (at most)
        # `chat_window`'s answers read whole from one tracked chat list: (that list, count -> answer)
        self._window_kept: tuple[list[str], dict[int, list[GroupMessage]]] | None = None

    async def close(self) -> None:
        """Close the client's connection pool."""
        await self.client.close()

    # -- plumbing ---------------------------------------------------------------------------------

    @staticmethod
    def remember(key: str, fld: str, text: str | None) -> None:
        """Note a value written (or deleted, `text` None) inside `remembering_writes`."""
        written = _WRITTEN.get()
        if written is not None:
            written[(key, fld)] = text

    def hint(self, key: str, fld: str) -> tuple[bool, str | None]:
        """(True, text) when this process last saw `text` in (key, field) of the lock, checkpoint
        or DM hashes (None: missing), read or written; (False, None) when it has not seen it.

        Only a guess: another writer may have changed it since. A lock acquire, a checkpoint save
        or a DM decides on it and writes with a compare-and-set (`cas_or_current`,
        `update_conversation`), which writes only if the guess still holds and else answers what
        Redis holds now: one round trip instead of a read and a write. Nothing is ever answered
        from a guess that was not confirmed by that write."""
        found = self._hints.get((key, fld), _NOT_SEEN)
        return (False, None) if found is _NOT_SEEN else (True, cast("str | None", found))

    def _saw(self, key: str, fld: str, text: str | None) -> None:
        if key in _HINTED:
            self._hint_chars += len(text or "")
            if len(self._hints) >= DECODED_MAX or self._hint_chars > HINT_CHARS_MAX:
                self._hints.clear()
                self._hint_chars = len(text or "")
            self._hints[(key, fld)] = text

    @staticmethod
    def written(key: str, fld: str) -> tuple[bool, str | None]:
        """(True, text) when the current command wrote (key, fld) (text None: deleted)."""
        written = _WRITTEN.get()
        if written is None or (key, fld) not in written:
            return False, None
        return True, written[(key, fld)]

    @staticmethod
    def written_of(key: str) -> list[tuple[str, str | None]]:
        """Every (field, text) the current command wrote under `key`."""
        written = _WRITTEN.get()
        return [] if written is None else [(f, t) for (k, f), t in written.items() if k == key]

    async def run(self, what: str, op: Callable[[Redis], Awaitable[T]], *, idempotent: bool = True) -> T:
        """Run `op` on Redis (`LegacyClient.run`): retried on transient errors when `idempotent`."""
        return await self.client.run(what, op, idempotent=idempotent)

    def decode(self, raw: str, key: str, field: str | None) -> Json | None:
        """A JSON object value, or None (reported) when it is not one."""
        value = decode_object(raw, key=key, field=field)
        if isinstance(value, Corrupt):
            self.corruption.report(value)
            return None
        return value

    def parse(self, raw: str, key: str, field: str | None, parse: Callable[[Json], T]) -> T | None:
        """Decode and map one value; a corrupt or unmappable value is reported and skipped."""
        value = self.decode(raw, key, field)
        if value is None:
            return None
        try:
            return parse(value)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self.corruption.report(Corrupt(key, field, f"unmappable value: {exc!r}", raw[:120]))
            return None

    def parse_shared(self, raw: str, key: str, field: str | None, parse: Callable[[Json], T]) -> T | None:
        """`parse`, through the cache of parsed values (module docstring): for listings and for
        the agent, lock and checkpoint records (`agent_of`, `lock_of`, `checkpoint_of`), whose
        callers never change what they get (the rules make new records), with one mapping per
        `key`. Not for tasks: an update changes the task it read."""
        found: T | None = self.decoded.get(key, field, raw)
        if found is None:
            found = self.parse(raw, key, field, parse)
            if found is not None:
                self.decoded.put(key, field, raw, found)
        return found

    async def pipelined(self, what: str, commands: list[Command]) -> list[Any]:
        """The raw replies of `commands`, sent in one round trip (no MULTI: Redis runs them in
        order, a write before the reads that follow it). Retried on transient errors: only for
        commands that are safe to repeat (reads, an HSET of a whole value). An HGETALL's reply
        is a flat list of fields and values (`as_dict`)."""
        return await self.client.pipeline(what, commands)

    @staticmethod
    def as_dict(reply: Any) -> dict[str, str]:
        """An HGETALL's raw reply (a flat list, or the pool's dict) as a dict."""
        if isinstance(reply, dict):
            return reply
        return dict(zip(reply[::2], reply[1::2], strict=True))

    async def hgetall(
        self, key: str, parse: Callable[[str, Json], T], *, shared: bool = False
    ) -> list[tuple[str, T]]:
        """Every readable field of a hash, mapped by `parse(field, value)`; with `shared`,
        through the cache of parsed values (`parse_shared`: the caller changes nothing)."""
        return self.fields_of(key, await self.hgetall_raw(key), parse, shared=shared)

    def fields_of(
        self, key: str, raw: dict[str, str], parse: Callable[[str, Json], T], *, shared: bool = False
    ) -> list[tuple[str, T]]:
        """`hgetall` of the hash's raw fields `raw` (read already)."""
        out: list[tuple[str, T]] = []
        if shared:
            # the values unchanged since the last listing are looked up without a call each (a
            # listing of every task walks a thousand of them per request)
            cached = self.decoded.get
            for fld, text in raw.items():
                entity = cached(key, fld, text)
                if entity is None:
                    entity = self.parse(text, key, fld, lambda v, f=fld: parse(f, v))  # type: ignore[misc]
                    if entity is None:
                        continue
                    self.decoded.put(key, fld, text, entity)
                out.append((fld, entity))
            return out
        for fld, text in raw.items():
            entity = self.parse(text, key, fld, lambda v, f=fld: parse(f, v))  # type: ignore[misc]
            if entity is not None:
                out.append((fld, entity))
        return out

    def fragment(self, record: Any) -> orjson.Fragment:
        """`record`'s read-back JSON, rendered once per record object: a listing's records are
        the shared parsed values (`parse_shared`), the same object while their text is unchanged
        and never changed in place, so an unchanged task or agent is not rendered again."""
        hit = self._json.get(id(record))
        if hit is not None and hit[0] is record:
            return hit[1]
        fragment = orjson.Fragment(orjson.dumps(record.to_json()))
        if len(self._json) >= DECODED_MAX:
            self._json.clear()
        self._json[id(record)] = (record, fragment)  # the record is held: its id is not reused
        return fragment

    async def hgetall_raw(self, key: str) -> dict[str, str]:
        """The hash's raw fields; a tracked hash from memory while Redis says it is unchanged
        (`gateway.legacy.tracking`): then the dict is shared, and must not be changed."""
        tracked = self.client.tracked

        async def op(r: Redis) -> dict[str, str]:
            if tracked is not None and key in tracked.hashes:
                got = await tracked.read((key,))
                if got is not None:
                    return cast("dict[str, str]", got[0])
            return cast("dict[str, str]", await r.hgetall(key))

        return await self.run(f"HGETALL {key}", op)

    def appended(self, key: str, before: dict[str, str], after: dict[str, str]) -> list[str] | None:
        """The fields the tracked hash `after` added at its end to `before` by the gateway's own
        writes, when the tracked cache knows (`TrackedHashes.appended`); None when it does not."""
        tracked = self.client.tracked
        return None if tracked is None else tracked.appended(key, before, after)

    async def write_then_read(self, what: str, writes: list[Command], keys_: tuple[str, ...]) -> list[Any]:
        """Run `writes` (commands safe to repeat), then read the whole hashes `keys_`, in one round
        trip; the replies of the writes, then the hashes. Tracked hashes come from memory
        (`hgetall_raw`); else one pipeline, as Redis runs the writes before the reads."""
        tracked = self.client.tracked

        async def op(r: Redis) -> list[Any]:
            if tracked is not None and all(k in tracked.hashes for k in keys_):
                got = await tracked.read(keys_, writes)
                if got is not None:  # the writes' replies are not kept: they raise on an error
                    return [*([None] * len(writes)), *got]
            async with r.pipeline(transaction=False) as pipe:
                for cmd in writes:
                    _ = pipe.execute_command(*cmd)
                for key in keys_:
                    _ = pipe.hgetall(key)
                return await pipe.execute()

        return await self.run(what, op)

    async def write_tracked(self, what: str, writes: list[Command], *, idempotent: bool = True) -> list[Any]:
        """Run `writes` in one transaction (MULTI/EXEC) and return their replies: through the
        tracking connection when it is on, so the tracked hashes they change stay in memory
        (`gateway.legacy.tracking`), else through the pool."""
        tracked = self.client.tracked

        async def op(r: Redis) -> list[Any]:
            if tracked is not None:
                replies = await tracked.write(writes)
                if replies is not None:
                    return replies
            async with r.pipeline(transaction=True) as pipe:
                for cmd in writes:
                    _ = pipe.execute_command(*cmd)
                return await pipe.execute()

        return await self.run(what, op, idempotent=idempotent)

    async def hget(self, key: str, fld: str) -> str | None:
        return cast("str | None", await self.client.call(f"HGET {key}", "HGET", key, fld))

    def _is_tracked(self, key: str) -> bool:
        tracked = self.client.tracked
        return tracked is not None and key in tracked.hashes

    async def hset(self, key: str, fld: str, value: Json) -> None:
        """Write one whole value (idempotent, so retried)."""
        text = dumps(value)
        if self._is_tracked(key):
            await self.write_tracked(f"HSET {key}", [("HSET", key, fld, text)])
        else:
            await self.client.call(f"HSET {key}", "HSET", key, fld, text)
        self.remember(key, fld, text)
        self._saw(key, fld, text)

    async def hsetnx(self, key: str, fld: str, text: str) -> bool:
        """Write a value only where there is none; True when written (sent once, never retried:
        a repeat after a lost reply would report False for a value it did write)."""
        if self._is_tracked(key):
            writes: list[Command] = [("HSETNX", key, fld, text)]
            created = (await self.write_tracked(f"HSETNX {key}", writes, idempotent=False))[0]
        else:
            created = await self.client.call(f"HSETNX {key}", "HSETNX", key, fld, text, idempotent=False)
        if created:
            self.remember(key, fld, text)
        return bool(created)

    async def hdel(self, key: str, fld: str, *, idempotent: bool = True) -> bool:
        """Remove one field; True when it was there."""
        if self._is_tracked(key):
            replies = await self.write_tracked(f"HDEL {key}", [("HDEL", key, fld)], idempotent=idempotent)
            removed = bool(replies[0])
        else:
            removed = bool(await self.client.call(f"HDEL {key}", "HDEL", key, fld, idempotent=idempotent))
        self.remember(key, fld, None)
        self._saw(key, fld, None)
        return removed

    async def cas(self, key: str, fld: str, expected: str | None, new: str | None) -> bool:
        """Compare-and-set one hash field atomically; False when it changed since it was read.

        `expected` None: the field must be missing; `new` None: delete the field.
        """
        done, _ = await self.cas_or_current(key, fld, expected, new)
        return done

    async def cas_or_current(
        self, key: str, fld: str, expected: str | None, new: str | None, *, idempotent: bool = False
    ) -> tuple[bool, str | None]:
        """`cas`, answering (True, new) when written, else (False, the field's text now; None:
        missing). Sent once unless `idempotent` (the caller decides again on what a repeat after
        a lost reply finds: its own write)."""
        args = [
            fld,
            expected or "",
            "missing" if expected is None else "match",
            new or "",
            "del" if new is None else "set",
        ]
        reply = await self.client.script(f"CAS {key}", _CAS_LUA, [key], args, idempotent=idempotent)
        if reply[0]:
            self.remember(key, fld, new)
            self._saw(key, fld, new)
            return True, new
        current = cast("str | None", reply[1])
        self._saw(key, fld, current)
        return False, current

    async def optimistic(
        self,
        what: str,
        watch: tuple[str, ...],
        body: Callable[[Any], Awaitable[T]],
        *,
        idempotent: bool = True,
    ) -> T:
        """Run `body(pipe)` under WATCH of `watch`, retried when a watched key changed meanwhile.

        `body` reads through the pipe (immediate mode), then calls `pipe.multi()` and queues its
        writes; the writes are executed when it returns.

        The watched keys are whole hashes (every DM conversation is in one), so two of this
        process's own transactions on them would abort each other: under load (64 connections,
        a DM every few milliseconds) that used up the attempts and answered 503. They take the
        watched keys' in-process locks first, so WATCH only retries for other writers of Redis.
        """

        async def op(r: Redis) -> T:
            for _ in range(CAS_ATTEMPTS):
                async with r.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(*watch)
                        result = await body(pipe)
                        if pipe.explicit_transaction:
                            await pipe.execute()
                    except redis.exceptions.WatchError:
                        self.watch_conflicts += 1
                        continue
                    return result
            raise StoreUnavailable(f"legacy store unavailable: {what} too contended")

        async with self._watching(watch):
            return await self.run(what, op, idempotent=idempotent)

    @contextlib.asynccontextmanager
    async def _watching(self, watch: tuple[str, ...]) -> AsyncIterator[None]:
        """Hold the in-process locks of `watch`, taken in sorted order (no lock-order cycles)."""
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(set(watch)):
                await stack.enter_async_context(self._watch_locks.setdefault(key, asyncio.Lock()))
            yield

    # -- one record of a hash -----------------------------------------------------------------------

    async def agent(self, agent_id: str) -> tuple[Agent | None, str | None]:
        """The agent and its raw value (a raw value with no agent: unreadable, reported)."""
        raw = await self.hget(keys.ACTIVE_AGENTS, agent_id)
        return self.agent_of(agent_id, raw), raw

    def agent_of(self, agent_id: str, raw: str | None) -> Agent | None:
        """The agent a raw value of `active-agents` holds (None: absent, or unreadable and reported)."""
        if raw is None:
            return None
        return self.parse_shared(
            raw, keys.ACTIVE_AGENTS, agent_id, lambda v: m.agent_from_legacy(agent_id, v)
        )

    async def put_agent(self, agent: Agent, presence: str | None) -> None:
        """Write the agent's value, and its presence (`online`/`offline`) when given, at once."""
        text = dumps(m.agent_to_legacy(agent))
        writes: list[Command] = [("HSET", keys.ACTIVE_AGENTS, agent.agent_id, text)]
        if presence is not None:
            writes.append(("HSET", keys.AGENT_PRESENCE, agent.agent_id, presence))
        await self.write_tracked(f"HSET {keys.ACTIVE_AGENTS}", writes)
        self.remember(keys.ACTIVE_AGENTS, agent.agent_id, text)

    def agent_hint(self, agent_id: str) -> tuple[bool, str | None]:
        """The agent's value as the tracked cache holds it (`TrackedHashes.peek`): a guess, to
        write with `put_agent_if`; (False, None) when the cache is off or does not hold the hash."""
        tracked = self.client.tracked
        return (False, None) if tracked is None else tracked.peek(keys.ACTIVE_AGENTS, agent_id)

    async def put_agent_if(
        self, agent: Agent, presence: str | None, expected: str | None
    ) -> tuple[bool, str | None] | None:
        """`put_agent`, only if the agent's value is still `expected` (None: missing), in one round
        trip on the tracking connection: (True, text written) or (False, the value now); None
        when the cache went off (nothing written). Safe to repeat: a repeat after a lost reply
        finds this write and the caller decides again on it."""
        text = dumps(m.agent_to_legacy(agent))
        also = [] if presence is None else [(keys.AGENT_PRESENCE, agent.agent_id, presence)]
        tracked = self.client.tracked

        async def op(_r: Redis) -> tuple[bool, str | None] | None:
            if tracked is None:
                return None
            return await tracked.set_if(keys.ACTIVE_AGENTS, agent.agent_id, expected, text, also)

        done = await self.run(f"HSET {keys.ACTIVE_AGENTS} if unchanged", op)
        if done is not None and done[0]:
            self.remember(keys.ACTIVE_AGENTS, agent.agent_id, text)
        return done

    async def task(self, task_id: str) -> tuple[Task | None, str | None]:
        """The task and its raw value."""
        raw = await self.hget(keys.TASKS, task_id)
        return self.task_of(task_id, raw), raw

    def task_of(self, task_id: str, raw: str | None) -> Task | None:
        return None if raw is None else self.parse(raw, keys.TASKS, task_id, m.task_from_legacy)

    async def zone(self, zone_id: str) -> tuple[Zone | None, str | None]:
        """The zone and its raw value."""
        raw = await self.hget(keys.ZONES, zone_id)
        return self.zone_of(zone_id, raw), raw

    def zone_of(self, zone_id: str, raw: str | None) -> Zone | None:
        if raw is None:
            return None
        return self.parse(raw, keys.ZONES, zone_id, lambda v: m.zone_from_legacy(zone_id, v))

    async def handoff(self, handoff_id: str) -> tuple[Handoff | None, str | None]:
        """The handoff and its raw value."""
        raw = await self.hget(keys.HANDOFFS, handoff_id)
        return self.handoff_of(handoff_id, raw), raw

    def handoff_of(self, handoff_id: str, raw: str | None) -> Handoff | None:
        return None if raw is None else self.parse(raw, keys.HANDOFFS, handoff_id, m.handoff_from_legacy)

    async def checkpoint(self, agent_id: str) -> tuple[Checkpoint | None, str | None]:
        """The checkpoint and its raw value."""
        raw = await self.hget(keys.CHECKPOINTS, agent_id)
        self._saw(keys.CHECKPOINTS, agent_id, raw)
        return self.checkpoint_of(agent_id, raw), raw

    def checkpoint_of(self, agent_id: str, raw: str | None) -> Checkpoint | None:
        if raw is None:
            return None
        return self.parse_shared(
            raw, keys.CHECKPOINTS, agent_id, lambda v: m.checkpoint_from_legacy(agent_id, v)
        )

    async def lock(self, path: str) -> tuple[Lock | None, str | None]:
        """The lock and its raw value (a raw value with no lock: unreadable, reported)."""
        raw = await self.hget(keys.LOCKS, path)
        self._saw(keys.LOCKS, path, raw)
        return self.lock_of(path, raw), raw

    def lock_of(self, path: str, raw: str | None) -> Lock | None:
        if raw is None:
            return None
        return self.parse_shared(raw, keys.LOCKS, path, lambda v: m.lock_from_legacy(path, v))

    async def memory(self, memory_id: str) -> Memory | None:
        raw = await self.hget(keys.SHARED_MEMORY, memory_id)
        return None if raw is None else self.parse(raw, keys.SHARED_MEMORY, memory_id, m.memory_from_legacy)

    # -- chat -------------------------------------------------------------------------------------

    async def chat_window(self, count: int) -> list[GroupMessage]:
        """The newest `count` readable messages, newest first (the legacy list order).

        Corrupt elements are skipped and do not count toward `count`: the list is read on in
        growing pages (through at most the legacy window, `CHAT_SCAN`, or `count` elements when
        more) until `count` messages are found. A message seen twice (a post moved the list
        between two pages) is kept once.

        Read from the tracked chat list (`chat_texts`) with every element readable, the answer
        is kept with that list and handed out again (the same list object: never change it)
        while Redis says the list is unchanged: the tracked cache replaces its list on every
        change, never changes it in place, so the same list object means the same elements.
        """
        out: list[GroupMessage] = []
        seen: set[str] = set()
        first, page, end = 0, max(count + 16, 64), max(count, CHAT_SCAN)
        source: list[str] | None = None  # the tracked list every page came from, if one did
        whole = True  # every page from that one list, every element readable
        while len(out) < count and first < end:
            last = min(first + page, end) - 1
            texts, source_now = await self._chat_slice(first, last)
            if first == 0:
                kept = self._window_kept
                if source_now is not None and kept is not None and kept[0] is source_now:
                    hit = kept[1].get(count)
                    if hit is not None:
                        return hit
                source = source_now
            whole = whole and source_now is not None and source_now is source
            for text in texts:
                msg = self.parse_shared(text, keys.MESSAGES, None, m.chat_from_legacy)
                if msg is None:
                    whole = False
                elif msg.id not in seen:
                    seen.add(msg.id)
                    out.append(msg)
                    if len(out) == count:
                        break
            if len(texts) <= last - first:
                break  # the end of the list
            first, page = last + 1, page * 2
        if whole and source is not None:
            kept = self._window_kept
            if kept is None or kept[0] is not source or len(kept[1]) >= _WINDOWS_KEPT:
                kept = self._window_kept = (source, {})
            kept[1][count] = out
        return out

    def messages_of(self, texts: list[str], count: int) -> list[GroupMessage]:
        """The first `count` readable messages of chat list elements `texts` (newest first),
        each id once: `chat_window` of a list read already."""
        out: list[GroupMessage] = []
        seen: set[str] = set()
        for text in texts:
            if len(out) == count:
                break
            msg = self.parse_shared(text, keys.MESSAGES, None, m.chat_from_legacy)
            if msg is not None and msg.id not in seen:
                seen.add(msg.id)
                out.append(msg)
        return out

    async def agent_and_chat(self, agent_id: str, first: int) -> tuple[str | None, list[str], int]:
        """The agent's raw value and the chat list elements its pending mentions and the newest
        messages need, in one round trip: the list's first `first` elements, then, of the rest of
        the legacy window (`CHAT_SCAN`), only those with an '@' or the agent's cursor id in them
        (the others are never parsed: `LegacyStore._mentions_in`). Returns (raw agent, elements,
        how many elements were read in Redis).

        The script finds the cursor id in the agent's JSON itself; when that is not the id this
        gateway reads from the agent (a value it cannot parse alike), the whole window is read
        instead, so the answer is the same either way."""
        names = [keys.ACTIVE_AGENTS, keys.MESSAGES]
        args: list[str | int] = [agent_id, first, CHAT_SCAN - 1]
        what = f"EVALSHA agent and chat {keys.ACTIVE_AGENTS}"
        reply = await self.client.script(what, _AGENT_AND_CHAT_LUA, names, args, idempotent=True)
        raw, seen_cursor, total, *texts = reply
        if self._cursor_of(agent_id, raw) != seen_cursor:
            texts = await self.chat_texts(0, CHAT_SCAN - 1)
        return raw, texts, int(total)

    def _cursor_of(self, agent_id: str, raw: str | None) -> str | None:
        """The mention cursor id this gateway reads in an agent's raw value (None: none)."""
        agent = self.agent_of(agent_id, raw)
        found = None if agent is None else agent.extra.get(MENTION_CURSOR_ID)
        return found if isinstance(found, str) else None

    async def touch_and_read(
        self, agent_id: str, first: int, expected: str | None, touched: str
    ) -> tuple[list[str], int, dict[str, str], dict[str, str]] | None:
        """/work in one round trip, while the agents hash is in memory: on the tracking connection,
        the heartbeat `touched` written only if the agent's value is still `expected`
        (`TrackedHashes.set_if_then_read`), then `agent_and_chat`'s script (after the heartbeat:
        the same cursor) and the `tasks` and `active-agents` hashes; while the chat list is kept
        there too, it is read with them instead of the script. Returns (chat elements,
        elements in Redis, tasks, agents); None when the heartbeat was not written (another
        writer changed the agent, or the cache is off): the caller reads and writes again."""
        tracked = self.client.tracked
        if tracked is None:
            return None
        # the chat list kept whole (its legacy window) on the same connection: read with the
        # hashes, no script (`_mentions_in` skips what the script would have left out)
        chat_kept = tracked.lists.get(keys.MESSAGES, 0) >= CHAT_SCAN
        chat_script = (
            None
            if chat_kept
            else (
                _AGENT_AND_CHAT_LUA,
                (keys.ACTIVE_AGENTS, keys.MESSAGES),
                (agent_id, str(first), str(CHAT_SCAN - 1)),
            )
        )

        async def touch(_r: Redis) -> Any:
            return await tracked.set_if_then_read(
                keys.ACTIVE_AGENTS,
                agent_id,
                expected,
                touched,
                then=chat_script,
                keys=(keys.TASKS, keys.ACTIVE_AGENTS, *((keys.MESSAGES,) if chat_kept else ())),
            )

        what = f"HSET {keys.ACTIVE_AGENTS} if unchanged, agent and chat, HGETALL {keys.TASKS} and agents"
        written = await self.run(what, touch)
        if written is None or not written[0][0]:
            return None
        self.remember(keys.ACTIVE_AGENTS, agent_id, touched)
        if chat_kept:
            raw_tasks, raw_agents, kept = written[2]
            return kept, len(kept), raw_tasks, raw_agents
        raw, seen_cursor, total, *texts = written[1]
        # RESP3 answers a Lua false as False, not None
        raw, seen_cursor = (None if raw is False else raw), (None if seen_cursor is False else seen_cursor)
        # the script filtered for another value of the agent, or read its cursor otherwise
        if raw != touched or self._cursor_of(agent_id, raw) != seen_cursor:
            texts = await self.chat_texts(0, CHAT_SCAN - 1)
        raw_tasks, raw_agents = written[2]
        return texts, int(total), raw_tasks, raw_agents

    async def chat_texts(self, first: int, last: int) -> list[str]:
        """The raw chat list elements `first..last` (newest first); from memory while the tracking
        connection keeps them and Redis says they are unchanged (`gateway.legacy.tracking`)."""
        texts, _ = await self._chat_slice(first, last)
        return texts

    async def _chat_slice(self, first: int, last: int) -> tuple[list[str], list[str] | None]:
        """`chat_texts`, and the tracked list they were sliced from (shared: never change it),
        None when they were read from Redis."""
        what = f"LRANGE {keys.MESSAGES}"
        tracked = self.client.tracked
        if tracked is not None and 0 <= first <= last < tracked.lists.get(keys.MESSAGES, 0):

            async def op(r: Redis) -> tuple[list[str], list[str] | None]:
                got = await tracked.read((keys.MESSAGES,))
                if got is not None:
                    kept = cast("list[str]", got[0])
                    return kept[first : last + 1], kept
                return cast("list[str]", await r.lrange(keys.MESSAGES, first, last)), None

            return await self.run(what, op)
        return cast("list[str]", await self.client.call(what, "LRANGE", keys.MESSAGES, first, last)), None

    async def find_chat(self, msg_id: str) -> GroupMessage | None:
        """The message `msg_id` in the chat list (newest first; a new one is near the head).

        Only elements whose text contains the id are decoded: replication reads the message it
        just posted on every chat write in write-through, and decoding the whole list (up to
        1,200 elements) cost milliseconds per post.
        """
        for first, last in ((0, 99), (100, CHAT_SCAN - 1)):  # the head first: a new message is there
            for raw in await self.chat_texts(first, last):
                if msg_id in raw:
                    msg = self.parse(raw, keys.MESSAGES, None, m.chat_from_legacy)
                    if msg is not None and msg.id == msg_id:
                        return msg
        return None

    # -- claims: one field per `{by}:{what}` --------------------------------------------------------

    def claims_by_what(
        self, entries: Iterable[tuple[str, str]], now_ms: int
    ) -> dict[str, list[tuple[str, Claim]]]:
        """Readable claims grouped by `what` (the value's own `what`, not the field name)."""
        out: dict[str, list[tuple[str, Claim]]] = {}
        for fld, raw in entries:
            claim = self.parse(raw, keys.CLAIMS, fld, lambda v: m.claim_from_legacy(v, now_ms=now_ms))
            if claim is not None:
                out.setdefault(claim.what, []).append((fld, claim))
        return out

    @staticmethod
    def winner(claims: list[tuple[str, Claim]]) -> Claim:
        """The DO claim of one `what`: the newest non-stale one, else the newest (stale) one.

        The others are known conflicts (migration.md); they are left in Redis untouched.
        """
        fresh = [cl for _, cl in claims if not cl.stale]
        pool = fresh or [cl for _, cl in claims]
        return max(pool, key=lambda cl: ms(cl.since) or 0)

    @staticmethod
    async def claims_matching(r: Any, what: str) -> list[tuple[str, str]]:
        """The raw `*:{what}` fields (HSCAN through `r`, a client or a watching pipe)."""
        pattern = "*:" + re.sub(r"([*?\[\]\\])", r"\\\1", what)
        out: list[tuple[str, str]] = []
        cursor = 0
        while True:
            cursor, page = cast(
                "tuple[int, dict[str, str]]", await r.hscan(keys.CLAIMS, cursor, match=pattern, count=1000)
            )
            out.extend(page.items())
            if not cursor:
                return out

    async def claims_on(self, what: str, now_ms: int) -> list[tuple[str, Claim]]:
        """Every readable claim field of `what`."""
        entries = await self.run(f"HSCAN {keys.CLAIMS}", lambda r: self.claims_matching(r, what))
        return self.claims_by_what(entries, now_ms).get(what, [])

    async def claim(self, what: str, now_ms: int) -> Claim | None:
        """The DO claim of `what` (`winner`), stale or not."""
        group = await self.claims_on(what, now_ms)
        return None if not group else self.winner(group)

    # -- direct messages: one conversation per pair -------------------------------------------------

    async def inbox(self, agent_id: str) -> list[DirectMessage]:
        """Every message of the agent's conversations addressed to it, newest first."""
        return await self.inbox_from(agent_id, await self.hget(keys.DM_USER_CONVOS, agent_id))

    async def inbox_from(self, agent_id: str, ids_raw: str | None) -> list[DirectMessage]:
        """`inbox`, with the agent's list of conversations (`ids_raw`) read already."""
        names = self._conversation_ids(agent_id, ids_raw)
        arrays: list[str | None] = []
        if names:
            arrays = await self.client.call(f"HMGET {keys.DM_MESSAGES}", "HMGET", keys.DM_MESSAGES, *names)
        return self._inbox_of(agent_id, arrays)

    def _conversation_ids(self, agent_id: str, ids_raw: str | None) -> list[str]:
        """The conversation ids of an agent's list value (none when absent or unreadable: reported)."""
        if ids_raw is None:
            return []
        conv_ids = decode_array(ids_raw, key=keys.DM_USER_CONVOS, field=agent_id)
        if isinstance(conv_ids, Corrupt):
            self.corruption.report(Corrupt(keys.DM_USER_CONVOS, agent_id, "not a JSON array", ids_raw[:120]))
            return []
        return [str(x) for x in conv_ids]

    def _inbox_of(self, agent_id: str, arrays: list[str | None]) -> list[DirectMessage]:
        """The messages to the agent in the conversations' message arrays `arrays`, newest first."""
        out: list[DirectMessage] = []
        for raw in arrays:
            if raw is None:
                continue
            msgs = decode_array(raw, key=keys.DM_MESSAGES)
            if isinstance(msgs, Corrupt):
                self.corruption.report(msgs)
                continue
            out.extend(m.dm_from_legacy(x) for x in msgs if isinstance(x, dict) and x.get("to") == agent_id)
        out.sort(key=lambda d: d.timestamp, reverse=True)
        return out

    async def agent_state_values(self, agent_id: str) -> tuple[list[DirectMessage], Any, str | None]:
        """/agent/<id>/state's reads in one round trip: the agent's inbox (`inbox`), every memory
        (an HGETALL reply: `as_dict`) and its checkpoint's raw value.

        The script reads the conversation list itself; when the ids it read are not the ones this
        gateway reads from the list (a value it decodes differently, or more than it takes), the
        conversations are read again with this gateway's ids, so the answer is the same either way."""
        names = [keys.DM_USER_CONVOS, keys.SHARED_MEMORY, keys.CHECKPOINTS, keys.DM_MESSAGES]
        args = [agent_id, _STATE_IDS_MAX]
        what = f"EVALSHA agent state {keys.DM_USER_CONVOS}"
        reply = await self.client.script(what, _AGENT_STATE_LUA, names, args, idempotent=True)
        ids_raw, raw_memories, raw_cp, seen_ids, arrays = reply
        ids = self._conversation_ids(agent_id, ids_raw)
        if arrays is None or (seen_ids or []) != ids:
            arrays = []
            if ids:
                arrays = await self.client.call(f"HMGET {keys.DM_MESSAGES}", "HMGET", keys.DM_MESSAGES, *ids)
        return self._inbox_of(agent_id, arrays), raw_memories, raw_cp

    async def update_conversation(
        self,
        conv_id: str,
        change: Callable[[list[Any], Json | None], tuple[list[Any], Json]],
        users: list[str],
    ) -> None:
        """Rewrite one conversation's message array and record, and add it to each of `users`'
        conversation lists that lacks it: atomically, and decided again when a field changed.

        One round trip as a rule: decided on the fields' values this process last saw
        (`hint`), a field it never saw taken as missing (a new conversation, a user's first),
        and written by a compare-and-set of every field (`_CAS_FIELDS_LUA`) that writes only
        if none changed meanwhile and otherwise answers what they hold now, to decide again on
        (so a wrong guess costs the read it saved). A conversation the guesses cannot read is
        read from Redis before it is answered unreadable. The conversations and the users'
        lists live in three whole hashes, so a WATCH of them made every DM of the process wait
        for every other (five round trips each, one at a time: 1.3 s at the median under issue
        13's mix); the fields' own in-process locks leave DMs of other conversations and other
        users to run meanwhile, and the compare-and-set retries only for other writers."""
        hashes = [keys.DM_MESSAGES, keys.DM_CONVOS, keys.DM_USER_CONVOS]
        users = list(dict.fromkeys(users))
        fields = [(keys.DM_MESSAGES, conv_id), (keys.DM_CONVOS, conv_id)]
        fields += [(keys.DM_USER_CONVOS, user) for user in users]
        reads: list[Command] = [("HGET", keys.DM_MESSAGES, conv_id), ("HGET", keys.DM_CONVOS, conv_id)]
        if users:
            reads.append(("HMGET", keys.DM_USER_CONVOS, *users))

        async def read() -> list[str | None]:
            replies = await self.client.pipeline(f"DM {conv_id}: read", reads)
            return [replies[0], replies[1], *(replies[2] if users else [])]

        async with self._field_locks.hold(f"{key}\n{fld}" for key, fld in fields):
            seen = [self.hint(key, fld) for key, fld in fields]
            guessed = not all(known for known, _ in seen)  # a field never seen, taken as missing
            texts: list[str | None] = [text for _, text in seen]
            fresh = False  # are `texts` what Redis held a moment ago (not guesses)?
            for _ in range(CAS_ATTEMPTS + guessed):
                written = self._conversation_writes(conv_id, change, users, texts, confirmed=fresh)
                if written is None:  # guesses it cannot read: what does Redis hold?
                    texts, fresh = await read(), True
                    written = self._conversation_writes(conv_id, change, users, texts, confirmed=True)
                    assert written is not None  # noqa: S101 - confirmed: a 409 instead of None
                args: list[Any] = [len(fields)]  # KEYS are the hashes; a field names its by index
                for (key, fld), text in zip(fields, texts, strict=True):
                    args += [hashes.index(key) + 1, fld, "missing" if text is None else "match", text or ""]
                args.append(len(written))
                for (key, fld), text in written.items():
                    args += [hashes.index(key) + 1, fld, text]
                # safe to repeat: a message id already in the array is not added again (and a
                # read flag set again is the same value); a repeat after a lost reply compares
                # against what it wrote, fails, and the next attempt decides again on that
                what = f"DM {conv_id}: compare-and-set"
                reply = await self.client.script(what, _CAS_FIELDS_LUA, hashes, args, idempotent=True)
                if reply[0]:
                    for (key, fld), text in zip(fields, texts, strict=True):
                        self._saw(key, fld, written.get((key, fld), text))
                    self.remember(keys.DM_MESSAGES, conv_id, written[(keys.DM_MESSAGES, conv_id)])
                    return
                if fresh or not guessed:
                    self.watch_conflicts += 1
                texts, fresh = list(reply[1:]), True
                for (key, fld), text in zip(fields, texts, strict=True):
                    self._saw(key, fld, text)
        raise StoreUnavailable(f"legacy store unavailable: DM {conv_id} too contended")

    def _conversation_writes(
        self,
        conv_id: str,
        change: Callable[[list[Any], Json | None], tuple[list[Any], Json]],
        users: list[str],
        texts: list[str | None],
        *,
        confirmed: bool,
    ) -> dict[tuple[str, str], str] | None:
        """What `change` makes of the conversation in `texts` (its array, its record, then each of
        `users`' lists): the fields to write and their texts. When the conversation cannot be
        read: a 409 (reported) if `texts` are what Redis held, else None (guesses: read Redis).
        A user's list that cannot be read is left as it is."""
        raw_msgs, raw_conv = texts[0], texts[1]
        msgs = [] if raw_msgs is None else decode_array(raw_msgs, key=keys.DM_MESSAGES, field=conv_id)
        conv = None if raw_conv is None else decode_object(raw_conv, key=keys.DM_CONVOS, field=conv_id)
        if isinstance(msgs, Corrupt) or isinstance(conv, Corrupt):
            if not confirmed:
                return None
            for corrupt in (msgs, conv):
                if isinstance(corrupt, Corrupt):
                    self.corruption.report(corrupt)
            raise ApiError(409, {"error": "Conversation is unreadable in the legacy store"})
        new_msgs, new_conv = change(msgs, conv)
        out = {
            (keys.DM_MESSAGES, conv_id): dumps(new_msgs[-keys.DM_MAX :]),
            (keys.DM_CONVOS, conv_id): dumps(new_conv),
        }
        for user, raw_list in zip(users, texts[2:], strict=True):
            convs = [] if raw_list is None else decode_array(raw_list, key=keys.DM_USER_CONVOS)
            if isinstance(convs, Corrupt):
                continue  # never overwrite what we cannot read
            if conv_id not in convs:
                out[(keys.DM_USER_CONVOS, user)] = dumps([*convs, conv_id])
        return out

    @staticmethod
    def unread_counts(conv: Json, msgs: list[Any]) -> Json:
        """`unreadCount` derived from the per-message `read` flags (the truth)."""
        counts = {p: 0 for p in conv.get("participants", []) if isinstance(p, str)}
        for msg in msgs:
            if isinstance(msg, dict) and msg.get("read") is not True and isinstance(msg.get("to"), str):
                counts[msg["to"]] = counts.get(msg["to"], 0) + 1
        return counts

    def conversation_record(
        self, conv: Json | None, dm: DirectMessage, to: str, extra: Json, msgs: list[Any]
    ) -> Json:
        """The conversation's record (a new one if none), with unread counts derived from `msgs`."""
        participants = sorted({dm.from_agent, to}, key=lambda s: s.encode("utf-16-be", "surrogatepass"))
        record: Json = (
            dict(conv)
            if conv
            else {
                "id": m.conversation_id(dm.from_agent, to),
                "participants": participants,
                "participantTypes": {dm.from_agent: extra["fromType"], to: extra["toType"]},
                "unreadCount": {},
                "createdAt": dm.timestamp,
            }
        )
        record["unreadCount"] = self.unread_counts(record, msgs)
        return record

    @staticmethod
    def dm_value(
        conv: Json | None, dm: DirectMessage, to: str, *, read_at: str | None = None
    ) -> tuple[Json, Json]:
        """The legacy value of `dm` in its conversation, and the extra fields it was written with
        (the participants' types, known from the conversation record, default `agent`)."""
        types = (conv or {}).get("participantTypes") or {}
        extra = {"fromType": types.get(dm.from_agent, "agent"), "toType": types.get(to, "agent"), **dm.extra}
        return m.dm_to_legacy(replace(dm, extra=extra), to, read_at=read_at), extra


def set_last_message(record: Json, dm: DirectMessage) -> None:
    """A conversation record's `updatedAt` and `lastMessage` after `dm` (legacy dm.ts shape)."""
    record["updatedAt"] = dm.timestamp
    record["lastMessage"] = {"preview": dm.message[:100], "timestamp": dm.timestamp, "from": dm.from_agent}
