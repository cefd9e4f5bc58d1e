"""Whole legacy hashes kept in the gateway, correct against every writer of Redis (issue 13).

`/work`, `GET /agents` and `GET /tasks` read the whole `active-agents` and `tasks` hashes: 200
agents and every task, 22 % of the requests of issue 13's mix and about half of write-through's
CPU when each read transferred and parsed them. `TrackedHashes` keeps them in memory with
Redis's server-assisted client-side caching, on ONE connection of its own (RESP3, so the
invalidations arrive on it as push messages, in order with its replies):

* **Tracking, default mode, NOLOOP.** `CLIENT TRACKING ON NOLOOP`: Redis remembers the keys this
  connection read and, the moment another client modifies one, queues `invalidate <key>` on this
  connection (a FLUSHDB: `invalidate null`). Not BCAST: a broadcast is sent at the end of Redis's
  event loop iteration and, with NOLOOP, names only the LAST writer of the key in that iteration,
  so another client's write followed by ours in the same iteration would never be announced.
  Default mode sends each invalidation while the write runs, for every writer but this
  connection.
* **One ordered stream.** Replies and invalidations arrive on this connection in the order
  Redis ran the commands and the writes that caused them, and they are handled in that order
  (`_on_reply`): a hash read here (`HGETALL`, which also makes Redis track the key) is stored
  as it arrives, and an invalidation that arrives after it drops it. A fill is also dropped when
  an invalidation of its key arrived while it was in flight (an invalidation that arrives before
  the reply is of a write the reply already holds, so this is only caution).
* **The gateway's own writes stay in the cache.** Writes of the two hashes are sent here too,
  as `MULTI, <writes>, HLEN <key>, EXEC`: NOLOOP spares this connection the invalidation of its
  own write, Redis stops tracking a key once it is modified (by anyone), and the `HLEN` in the
  same transaction makes it track the key again before any other client can write it. The
  written values are applied to the cache when the EXEC reply arrives, in stream order: so the
  gateway's next read sees its write (it is in the cache before the request that wrote it
  answers), and any other writer's change, before or after ours, still invalidates. The agents
  hash changes on 14 of every 100 requests of the mix, almost all of them the gateway's own
  heartbeats; a cache dropped on every write would miss most of the time.
* **A heartbeat in one round trip.** `set_if` writes an agent's value only if Redis still holds
  the one the cache holds (a Lua compare-and-set inside the same `MULTI ... HLEN ... EXEC`), so
  the gateway can decide a heartbeat on the cached value without waiting for a barrier: when
  another client's write is not announced yet, the compare fails and the caller decides again
  on the value the script answers. `/work` sends its chat script (`agent-coord:messages`, which
  Redis then also tracks for this connection: its invalidations are ignored) and its reads
  after it on this connection too, so the whole request is one round trip in one order.
* **Reads wait for a barrier.** A read served from the cache first sends a PING on this
  connection and answers with the cache as it is when the PONG arrives: every write another
  client had been answered for before the read began was run by Redis before the PING, so its
  invalidation arrived before the PONG. Reads that start while a PING is still unsent share it
  (commands are sent once per event loop iteration, `_flush`). A read costs a PING instead of
  a whole hash; a miss is one HGETALL, as before.
* **A lost connection switches the cache off.** When the connection fails (Redis restarted, the
  connection killed, a reply later than `legacy.timeout_s`), the cache is emptied and every read
  and write goes through the pool as before until a new connection has tracking on again (tried
  again after `RECONNECT_S`, in the background). Operations in flight fail with redis-py's
  connection or timeout errors, which `LegacyClient.run` retries or translates as it does the
  pool's.

The cached dicts are shared and never changed in place (a write makes a new dict), so callers
may keep them and compare them by identity (`LegacyStore`'s task listings do). A write of the
gateway's own that only adds fields is remembered with the dicts before and after it (the last
`APPENDS_KEPT` per hash): `appended` tells a caller holding an older dict which fields a newer
one added at its end, without comparing the two (the task listings after a task is created,
issue 13: a comparison of every field cost about 2 % of write-through's CPU with 1,500 tasks).

**Lists (the chat list).** A list is kept the same way, as its first `n` elements (`lists`, key
-> n; the whole list when shorter), read with `LRANGE key 0 n-1`. Of the gateway's own writes
sent here, `LPUSH` and `LTRIM key 0 <stop>` are applied to the kept elements (both are exact on a
prefix: a push puts its elements before them, such a trim keeps a prefix of them), and an `LLEN`
in the same transaction makes Redis track the key again; any other command of a kept list, and
every other client's write (an invalidation), drops it. `/work`'s mentions and the chat reads
then need no script and no `LRANGE` (issue 13's write-through eighth pass).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import hiredis
import redis.exceptions
import structlog

from gateway.legacy.pipeline import PING, Command, Pending, Pipeline, RespProtocol, checked, endpoint, fail
from gateway.legacy.shared import LuaScript, redis_error
from gateway.settings import LegacySettings, mask_url

__all__ = ["CAS_GUARD_LUA", "Command", "TrackedHashes"]

log = structlog.get_logger(__name__)

RECONNECT_S: Final = 1.0
"""After a lost or refused tracking connection, the pool serves alone for this long at least."""

APPENDS_KEPT: Final = 8
"""The gateway's own writes that only added fields, remembered per hash (`appended`)."""

_Append = tuple[dict[str, str], dict[str, str], tuple[str, ...]]
"""A write that only added fields: the dict before, the dict after, the fields added at its end."""

Snapshot = dict[str, Any]
"""The cache at one point of the stream: each tracked hash (a dict) or list (its first elements,
a list), or None when it is not cached."""

_WRITES: Final = frozenset({"HSET", "HSETNX", "HDEL"})

CAS_GUARD_LUA: Final = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == 'missing' then
  if cur then return {0, cur} end
elseif cur ~= ARGV[2] then
  return {0, cur}
end
"""
"""The guard the compare-and-set scripts open with (here and `gateway.legacy.records`): KEYS[1]'s
field ARGV[1] must still hold ARGV[2] (or be missing when ARGV[3] is 'missing'); else the script
answers {0, the field's text now (nil: missing)} and writes nothing."""

# Set KEYS[1]'s field ARGV[1] to ARGV[4] only if it still holds ARGV[2] (or is missing when ARGV[3]
# is 'missing'), and then each (KEYS index, field, text) that follows; {1} = written, {0, the
# field's text now (nil: missing)} = changed meanwhile, nothing written. Sent by its SHA1: inside
# MULTI a script Redis does not know fails alone at EXEC (NOSCRIPT, nothing written), and the
# transaction is sent again with the script whole (`TrackedHashes.set_if`).
_SET_IF: Final = LuaScript(
    CAS_GUARD_LUA
    + """redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
local i = 5
while ARGV[i] do
  redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
return {1}
"""
)


@dataclass(slots=True)
class _Barrier:
    """A PING not yet sent, shared by the reads that began before it is sent."""

    waiters: list[asyncio.Future[Snapshot]] = field(default_factory=list)


class TrackedHashes(Pipeline):
    """The whole-hash cache of `hashes`, and the first elements of `lists` (key -> how many), on a
    tracking connection of its own (module docstring)."""

    label = "tracking connection"

    def __init__(
        self,
        url: str,
        settings: LegacySettings,
        hashes: Sequence[str],
        *,
        lists: Mapping[str, int] | None = None,
        reconnect_s: float = RECONNECT_S,
    ) -> None:
        super().__init__(settings)
        self.url = url
        self.hashes = frozenset(hashes)
        self.lists: dict[str, int] = dict(lists or {})
        self.reconnect_s = reconnect_s
        self._cache: dict[str, Any] = dict.fromkeys([*self.hashes, *self.lists])
        self._invalidated: dict[str, int] = dict.fromkeys(self._cache, 0)
        # per hash, its last writes of the gateway's own that only added fields: (the dict before,
        # the dict after, the fields added at its end), oldest first
        self._appends: dict[str, collections.deque[_Append]] = {
            key: collections.deque(maxlen=APPENDS_KEPT) for key in self.hashes
        }
        self._ready = False  # tracking is on: the cache serves
        self._barrier: _Barrier | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self.hits = 0
        self.misses = 0
        self.connections = 0

    # -- the connection ---------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """Is the cache on (a connection with tracking on)? Starts connecting when it is not."""
        if self._ready:
            return True
        if not self._closed and self._connecting is None and time.monotonic() >= self._retry_at:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        return False

    async def wait_up(self) -> bool:
        """Connect now if the cache is off and may connect again; True when it is on."""
        if not self.up and self._connecting is not None:
            await asyncio.shield(self._connecting)
        return self._ready

    def _endpoint(self) -> tuple[dict[str, Any], list[Command]] | None:
        """Where to connect, and the handshake; None for a URL this cache does not handle (TLS)."""
        point = endpoint(self.url)
        if point is None:
            return None
        hello: Command = ("HELLO", "3")
        auth = point.auth()
        if auth is not None:
            hello += ("AUTH", *auth)
        setup: list[Command] = [hello, ("CLIENT", "SETNAME", "agent-coord-tracking")]
        if point.db != "0":
            setup.append(("SELECT", point.db))
        setup.append(("CLIENT", "TRACKING", "ON", "NOLOOP"))
        return point.where, setup

    async def _connect(self) -> None:
        try:
            found = self._endpoint()
            if found is None:
                self._closed = True
                log.info("legacy.tracking.off", reason="not a redis:// or unix:// URL")
                return
            where, setup = found
            async with asyncio.timeout(self.settings.timeout_s):
                await self._dial(where)
                futures = [self._send(cmd, _keep) for cmd in setup]
                for fut in futures:
                    await fut
            self._ready = True
            self.connections += 1
            log.info(
                "legacy.tracking.on",
                url=mask_url(self.url),
                hashes=sorted(self.hashes),
                lists=sorted(self.lists),
            )
        except (OSError, TimeoutError, redis.exceptions.RedisError) as exc:
            self._retry_at = time.monotonic() + self.reconnect_s
            log.warning("legacy.tracking.unavailable", url=mask_url(self.url), error=str(exc))
            self._abort()
        except BaseException:
            self._abort()
            raise
        finally:
            self._connecting = None

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None:
            self.lost(conn, redis.exceptions.ConnectionError("tracking connection closed"))

    def lost(self, proto: RespProtocol, exc: Exception) -> None:
        """The connection failed or closed: the cache goes off, everything waiting fails with `exc`."""
        was_up = self._ready
        pending = self._drop(proto, exc)
        if pending is None:
            return
        self._ready = False
        for key in self._cache:
            self._forget(key)
        self._retry_at = time.monotonic() + self.reconnect_s
        barrier, self._barrier = self._barrier, None
        barriers = [item.barrier for item in pending if item.barrier is not None]
        for each in [*barriers, *([barrier] if barrier is not None else [])]:
            for waiter in each.waiters:
                fail(waiter, exc)
        if was_up and not self._closed:
            log.warning("legacy.tracking.lost", url=mask_url(self.url), error=str(exc))

    async def close(self) -> None:
        """Close the connection; the cache stays off."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        self._abort()

    # -- sending and receiving --------------------------------------------------------------------

    def _before_flush(self) -> None:
        """The PING goes last: it is sent after every read that shares it began."""
        barrier, self._barrier = self._barrier, None
        if barrier is not None:
            release = functools.partial(self._release, barrier)
            self._pending.append(Pending(release, None, time.monotonic(), barrier))
            self._out.append(PING)

    def on_push(self, proto: RespProtocol, push: list[Any]) -> None:
        """`invalidate [keys]` (None: every key, after a FLUSHDB): drop those hashes."""
        if proto is not self._conn or len(push) != 2 or push[0] != "invalidate":  # noqa: PLR2004
            return
        names = push[1]
        for key in list(self._cache) if names is None else names:
            self._forget(key)

    def _forget(self, key: str) -> None:
        if key in self._cache:
            self._cache[key] = None
            self._invalidated[key] += 1

    def _release(self, barrier: _Barrier, _reply: Any) -> None:
        """A PONG: the reads waiting for it take the cache as it is now."""
        snapshot = dict(self._cache)
        for waiter in barrier.waiters:
            if not waiter.done():
                waiter.set_result(snapshot)

    # -- the operations ---------------------------------------------------------------------------

    async def read(self, keys: Sequence[str], writes: Sequence[Command] = ()) -> list[Any] | None:
        """`writes` (as `write` runs them), then the whole hashes (dicts) and the lists' first
        elements (lists) `keys` as Redis holds them after the writes; None when the cache is off
        (the caller uses the pool instead). What is returned is shared: never change it."""
        if not self.up:
            return None
        done = self._queue_writes(writes) if writes else None
        fills = {k: self._send(self._fill(k), self._filler(k)) for k in keys if self._cache[k] is None}
        seen: dict[str, dict[str, str] | None] = {}
        if len(fills) < len(keys):  # some are cached: a PING makes sure they still hold
            if self._barrier is None:
                self._barrier = _Barrier()
                self._schedule_flush()
            waiter: asyncio.Future[dict[str, dict[str, str] | None]] = (
                asyncio.get_running_loop().create_future()
            )
            self._barrier.waiters.append(waiter)
            seen = await waiter
        if done is not None:
            await done
        out: list[Any] = []
        for key in keys:
            fill = fills.get(key)
            value = seen.get(key) if fill is None else None
            if value is not None:
                self.hits += 1
            else:
                self.misses += 1
                if fill is None:  # invalidated while the PING was on its way: read it now
                    fill = self._send(self._fill(key), self._filler(key))
                value = await fill
            out.append(value)
        return out

    def _fill(self, key: str) -> Command:
        """The read of a tracked key whole: HGETALL of a hash, LRANGE of a list's first elements."""
        kept = self.lists.get(key)
        return ("HGETALL", key) if kept is None else ("LRANGE", key, "0", str(kept - 1))

    def _filler(self, key: str) -> Callable[[Any], Any]:
        """The reply handler of the fill of `key`: kept unless an invalidation came meanwhile."""
        invalidated = self._invalidated[key]

        def on_reply(reply: Any) -> Any:
            if isinstance(reply, hiredis.ReplyError):
                raise redis.exceptions.ResponseError(str(reply))
            if self._invalidated[key] == invalidated and self._ready:
                self._cache[key] = reply
            return reply

        return on_reply

    async def write(self, writes: Sequence[Command]) -> list[Any] | None:
        """Run `writes` (HSET, HSETNX, HDEL of any hash; other commands of untracked keys) in one
        transaction and return their replies; None when the cache is off (the caller writes
        through the pool). What they wrote to the tracked hashes is in the cache when this returns;
        another command of a tracked hash drops its kept copy (Redis does not tell this connection
        of its own writes)."""
        if not self.up:
            return None
        return await self._queue_writes(writes)  # type: ignore[no-any-return]

    def appended(self, key: str, before: dict[str, str], after: dict[str, str]) -> list[str] | None:
        """The fields `after` has at its end beyond those of `before`, when the cache made
        `after` from `before` by the gateway's own writes that only added fields (both dicts
        this cache handed out, `after` newer): `after` is then `before`'s fields, the same
        texts in the same order, followed by these. None when that is not known (another
        change between them, an invalidation, a fill, or more than `APPENDS_KEPT` writes ago):
        the caller compares the dicts instead."""
        steps = self._appends.get(key)
        if not steps:
            return None
        # each step starts from the dict the cache held then, and every dict the cache makes is a
        # new one: the steps from `before` to `after`, if remembered, follow each other here
        added: list[str] = []
        current = before
        for older, newer, fields in steps:
            if older is current:
                added += fields
                current = newer
                if current is after:
                    return added
        return None

    def _added(self, key: str, before: dict[str, str], after: dict[str, str], fields: Sequence[str]) -> None:
        """`after` is `before` with `fields` added at its end (none of them in `before`)."""
        steps = self._appends.get(key)
        if steps is not None:
            steps.append((before, after, tuple(fields)))

    def peek(self, key: str, fld: str) -> tuple[bool, str | None]:
        """(True, the field's text as the cache holds it, None: missing) while `key` is cached,
        else (False, None). Only a guess, to write with `set_if`: another client's write may
        not have been announced yet (a read waits for a PING; this does not)."""
        cached = self._cache.get(key) if self._ready else None
        if cached is None:
            return False, None
        return True, cached.get(fld)

    async def set_if(
        self, key: str, fld: str, expected: str | None, text: str, also: Sequence[tuple[str, str, str]] = ()
    ) -> tuple[bool, str | None] | None:
        """Set `fld` of the tracked hash `key` to `text`, and each (hash, field, text) of `also`,
        only if `fld` still holds `expected` (None: missing), in one transaction: (True, text)
        when written, and in the cache when this returns; (False, the field's text now) when
        another writer changed it; None when the cache is off (nothing sent)."""
        if not self.up:
            return None
        try:
            return await self._queue_set_if(key, fld, expected, text, also)  # type: ignore[no-any-return]
        except redis.exceptions.NoScriptError:  # Redis forgot the script (restart, SCRIPT FLUSH)
            if not self.up:
                return None
            return await self._queue_set_if(key, fld, expected, text, also, whole=True)  # type: ignore[no-any-return]

    async def set_if_then_read(
        self,
        key: str,
        fld: str,
        expected: str | None,
        text: str,
        *,
        then: tuple[LuaScript, Sequence[str], Sequence[str]] | None,
        keys: Sequence[str],
    ) -> tuple[tuple[bool, str | None], Any, list[Any]] | None:
        """`set_if`, then the script `then` (script, keys, arguments; None: no script) and the
        tracked keys `keys` as Redis holds them after both (`read`), sent together and run in
        that order: (the set's result, the script's reply (None without one), what `read`
        returns); None when the cache is off (nothing sent). The script reads no tracked key
        Redis would not track anyway (its reply is not kept).

        Both scripts go by their SHA1; when Redis does not know one (NOSCRIPT: it did not run),
        what did not run is sent again whole, still after the set: the whole request again when
        the set did not run, else the read script alone."""
        if not self.up:
            return None
        return await self._set_if_then_read(key, fld, expected, text, then=then, keys=keys, whole=False)

    async def _set_if_then_read(
        self,
        key: str,
        fld: str,
        expected: str | None,
        text: str,
        *,
        then: tuple[LuaScript, Sequence[str], Sequence[str]] | None,
        keys: Sequence[str],
        whole: bool,
    ) -> tuple[tuple[bool, str | None], Any, list[Any]] | None:
        done = self._queue_set_if(key, fld, expected, text, (), whole=whole)
        after = None
        if then is not None:
            script, names, args = then
            after = self._send((*_script_call(script, whole), str(len(names)), *names, *args), checked)
        hashes = await self.read(keys)  # queued before this awaits: after the set, in the stream
        result = await _unless_noscript(done)
        reply = None if after is None else await _unless_noscript(after)
        if hashes is None:
            return None
        if result is _NOSCRIPT:  # the set did not run
            if whole or not self.up:
                raise redis.exceptions.NoScriptError("the set script is unknown to Redis")
            return await self._set_if_then_read(key, fld, expected, text, then=then, keys=keys, whole=True)
        if (
            reply is _NOSCRIPT and then is not None
        ):  # the read script did not run: it reads after the set all the same
            script, names, args = then
            reply = await self._send((*_script_call(script, True), str(len(names)), *names, *args), checked)
        return result, reply, hashes

    def _queue_set_if(
        self,
        key: str,
        fld: str,
        expected: str | None,
        text: str,
        also: Sequence[tuple[str, str, str]],
        *,
        whole: bool = False,
    ) -> asyncio.Future[Any]:
        names = [key, *dict.fromkeys(h for h, _, _ in also if h != key)]
        args = [fld, expected or "", "missing" if expected is None else "match", text]
        for hash_key, other, value in also:
            args += [str(names.index(hash_key) + 1), other, value]
        self._queue(("MULTI",), _keep, None)
        self._queue((*_script_call(_SET_IF, whole), str(len(names)), *names, *args), _keep, None)
        self._queue(("HLEN", key), _keep, None)  # Redis tracks the key for this connection again
        also_tracked = [(h, f, v) for h, f, v in also if h in self.hashes]
        return self._send(("EXEC",), lambda reply: self._set(key, fld, text, also_tracked, reply))

    def _set(
        self, key: str, fld: str, text: str, also: list[tuple[str, str, str]], reply: Any
    ) -> tuple[bool, str | None]:
        """The EXEC reply of `set_if`: what it wrote applied to the cache, in stream order."""
        result = reply[0] if isinstance(reply, list) and reply else reply
        if isinstance(result, hiredis.ReplyError) and str(result).startswith("NOSCRIPT"):
            raise redis_error(result)  # the script did not run: nothing was written
        if not isinstance(result, list):  # an aborted transaction, or the script failed
            self._forget(key)
            for hash_key, _, _ in also:
                self._forget(hash_key)
            raise redis.exceptions.ResponseError(f"transaction failed: {result}")
        if result[0] != 1:
            return False, result[1] if len(result) > 1 else None
        for hash_key, other, value in [(key, fld, text), *also]:
            current = self._cache.get(hash_key)
            if current is not None:
                self._cache[hash_key] = {**current, other: value}
        return True, text

    def _queue_writes(self, writes: Sequence[Command]) -> asyncio.Future[Any]:
        tracked = [cmd[1] for cmd in writes if cmd[0] in _WRITES and cmd[1] in self.hashes]
        tracked_lists = [cmd[1] for cmd in writes if cmd[1] in self.lists]
        self._queue(("MULTI",), _keep, None)
        for cmd in writes:
            self._queue(cmd, _keep, None)
        for key in dict.fromkeys(tracked):  # Redis tracks the key for this connection again
            self._queue(("HLEN", key), _keep, None)
        for key in dict.fromkeys(tracked_lists):
            self._queue(("LLEN", key), _keep, None)
        return self._send(("EXEC",), lambda reply: self._applied(writes, reply))

    def _applied(self, writes: Sequence[Command], reply: Any) -> list[Any]:
        """The EXEC reply of `writes`: their effects on the tracked hashes applied, in stream order."""
        if not isinstance(reply, list):  # an aborted transaction (a command Redis refused)
            for cmd in writes:
                self._forget(cmd[1])
            raise redis.exceptions.ResponseError(f"transaction failed: {reply}")
        replies = reply[: len(writes)]
        for cmd, result in zip(writes, replies, strict=True):
            key = cmd[1]
            current = self._cache.get(key)
            if key in self.lists:
                self._apply_to_list(cmd, result, current)
            elif key in self.hashes:
                self._apply_to_hash(cmd, result, current)
        for result in replies:
            if isinstance(result, hiredis.ReplyError):
                raise redis.exceptions.ResponseError(str(result))
        return replies

    def _apply_to_hash(self, cmd: Command, result: Any, current: dict[str, str] | None) -> None:
        """One of the gateway's own commands of a tracked hash, applied in stream order: HSET,
        HSETNX and HDEL are exact; anything else (a DEL, say) drops the kept copy."""
        name, key = cmd[0], cmd[1]
        if name not in _WRITES or isinstance(result, hiredis.ReplyError):
            self._forget(key)
        elif current is None:
            return
        elif name == "HSET":
            written = dict(zip(cmd[2::2], cmd[3::2], strict=True))
            after = self._cache[key] = {**current, **written}
            if not any(f in current for f in written):
                self._added(key, current, after, list(written))
        elif name == "HSETNX" and result == 1:
            after = self._cache[key] = {**current, cmd[2]: cmd[3]}
            if cmd[2] not in current:
                self._added(key, current, after, [cmd[2]])
        elif name == "HDEL":
            gone = set(cmd[2:])
            self._cache[key] = {f: v for f, v in current.items() if f not in gone}

    def _apply_to_list(self, cmd: Command, result: Any, current: list[str] | None) -> None:
        """One of the gateway's own commands of a kept list, applied in stream order: LPUSH and
        `LTRIM key 0 <stop>` are exact on the kept first elements; anything else drops them."""
        name, key = cmd[0], cmd[1]
        if current is None:
            return
        if isinstance(result, hiredis.ReplyError):
            self._forget(key)
        elif name == "LPUSH":
            self._cache[key] = [*reversed(cmd[2:]), *current][: self.lists[key]]
        elif name == "LTRIM" and cmd[2] == "0" and cmd[3].isdigit():
            self._cache[key] = current[: int(cmd[3]) + 1]
        else:
            self._forget(key)


def _script_call(script: LuaScript, whole: bool) -> tuple[str, str]:
    """The first words of a call of `script`: by its SHA1, or `whole`."""
    return ("EVAL", script.text) if whole else ("EVALSHA", script.sha)


_NOSCRIPT: Final = object()


async def _unless_noscript(fut: asyncio.Future[Any]) -> Any:
    """`fut`'s result; `_NOSCRIPT` when it failed with NOSCRIPT (a script Redis does not know:
    it did not run). Other failures raise."""
    try:
        return await fut
    except redis.exceptions.NoScriptError:
        return _NOSCRIPT


def _keep(reply: Any) -> Any:
    """The reply handler of a command whose reply is only checked for an error."""
    if isinstance(reply, hiredis.ReplyError):
        raise redis.exceptions.ResponseError(str(reply))
    return reply
