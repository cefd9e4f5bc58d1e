"""`LegacyStore`: the `Store` protocol carried out on the legacy Redis key layout.

Every DO operation is served from the legacy hashes and lists (legacy-redis.md §1-8) with the DO
semantics and the same domain results as `ActorStore`, so the HTTP layer renders identical JSON:

* reads accept every legacy writer shape (through `gateway.mapping`), decode double-encoded
  values, and report and skip corrupt values (`CorruptionLog`); nothing is ever deleted because
  it could not be read;
* writes keep the legacy shapes: chat is LPUSH + LTRIM 0 999 (newest first), DM arrays are capped
  at 500 and the conversation's `unreadCount` is derived from the per-message `read` flags, claims
  live in `{by}:{what}` fields, lock expiry is `expiresAt` inside the value (no key TTL), memories
  keep their tag index sets;
* operations that must be atomic are: lock acquire/release and handoff claim/complete use a
  compare-and-set Lua script on the one hash field (it only writes when the field still holds the
  value that was read, so it also loses cleanly to the legacy API's own HGET/HSETNX sequence);
  claims and DM sends use WATCH/MULTI with a bounded number of optimistic retries.

Differences from the actor store (documented in docs/legacy-store.md): no lock history (Redis
has none), no WebSocket sockets (the gateway holds them), the chat mention cursor is kept as an
extra `lastChatCheck` property of the agent value, and listings scan whole hashes (the legacy
layout has no secondary indexes).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, Final, TypeVar, cast

import redis.exceptions

from gateway import mapping as m
from gateway.clock import Clock, SystemClock
from gateway.domain import commands as c
from gateway.domain.jscompat import iso_from_ms, parse_js_date
from gateway.domain.model import (
    Agent,
    AgentStateView,
    ChatPage,
    Checkpoint,
    Claim,
    ClaimOutcome,
    DirectMessage,
    GroupMessage,
    Handoff,
    HandoffOutcome,
    Lock,
    LockAcquireOutcome,
    LockCheck,
    LockHistory,
    LockReleaseOutcome,
    Memory,
    Task,
    WorkBundle,
    Zone,
)
from gateway.domain.rules import RECENT_CHAT, mention_pattern
from gateway.errors import ApiError, StoreUnavailable
from gateway.legacy import keys
from gateway.legacy.client import LegacyClient, Redis
from gateway.legacy.codec import Corrupt, CorruptionLog, decode_array, decode_object, dumps
from gateway.settings import LimitSettings, Settings

__all__ = ["LegacyStore"]

T = TypeVar("T")
E = TypeVar("E", Agent, Task, Zone, Claim, Handoff, Checkpoint, Lock, Memory)
Json = dict[str, Any]

RECENT_MEMORIES: Final = 10
_CAS_ATTEMPTS: Final = 16  # optimistic retries under contention before giving up with a 503
_CHAT_SCAN: Final = keys.CHAT_MAX + 200  # the whole legacy window (user posts trim it to 1000)
_MENTION_CURSOR: Final = "lastChatCheck"
_MENTION_CURSOR_ID: Final = "lastChatCheckId"  # the newest message id seen then ("" = chat was empty)

# Set the hash field to ARGV[3] (or delete it when ARGV[4] == "del") only if it still holds
# ARGV[1] (or is missing when ARGV[2] == "missing"). 1 = written, 0 = someone else changed it.
_CAS_LUA: Final = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == 'missing' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
if ARGV[5] == 'del' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
end
return 1
"""


def _like(query: str) -> re.Pattern[str]:
    """SQLite `LIKE '%q%'`: `%` and `_` stay wildcards (as upstream), ASCII case-insensitive."""
    parts = [".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in query]
    return re.compile("".join(parts), re.IGNORECASE | re.ASCII | re.DOTALL)


def _set_last_message(record: Json, dm: DirectMessage) -> None:
    """A conversation record's `updatedAt` and `lastMessage` after `dm` (legacy dm.ts shape)."""
    record["updatedAt"] = dm.timestamp
    record["lastMessage"] = {"preview": dm.message[:100], "timestamp": dm.timestamp, "from": dm.from_agent}


def _ms(iso: str | None) -> int | None:
    return None if not iso else parse_js_date(iso)


class LegacyStore:
    """Every DO operation on the legacy Redis layout (see the module docstring)."""

    def __init__(
        self,
        client: LegacyClient,
        limits: LimitSettings | None = None,
        *,
        clock: Clock | None = None,
        corruption: CorruptionLog | None = None,
    ) -> None:
        self.client = client
        self.limits = limits or LimitSettings()
        self.clock = clock or SystemClock()
        self.corruption = corruption or CorruptionLog()
        self._cas_script = client.redis.register_script(_CAS_LUA)

    @classmethod
    def from_url(cls, redis_url: str, settings: Settings, *, clock: Clock | None = None) -> LegacyStore:
        """A store on `redis_url` with the pool, timeouts and retries of `settings.legacy`."""
        return cls(LegacyClient(redis_url, settings.legacy), settings.limits, clock=clock)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.close()

    # -- plumbing ---------------------------------------------------------------------------------

    async def _run(self, what: str, op: Callable[[Redis], Awaitable[T]], *, idempotent: bool = True) -> T:
        return await self.client.run(what, op, idempotent=idempotent)

    def _object(self, raw: str, key: str, field: str | None) -> Json | None:
        value = decode_object(raw, key=key, field=field)
        if isinstance(value, Corrupt):
            self.corruption.report(value)
            return None
        return value

    def _parse(self, raw: str, key: str, field: str | None, parse: Callable[[Json], T]) -> T | None:
        """Decode and map one value; a corrupt or unmappable value is reported and skipped."""
        value = self._object(raw, key, field)
        if value is None:
            return None
        try:
            return parse(value)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self.corruption.report(Corrupt(key, field, f"unmappable value: {exc!r}", raw[:120]))
            return None

    async def _hgetall(self, key: str, parse: Callable[[str, Json], T]) -> list[tuple[str, T]]:
        raw = await self._hgetall_raw(key)
        out: list[tuple[str, T]] = []
        for fld, text in raw.items():
            entity = self._parse(text, key, fld, lambda v, f=fld: parse(f, v))  # type: ignore[misc]
            if entity is not None:
                out.append((fld, entity))
        return out

    async def _hgetall_raw(self, key: str) -> dict[str, str]:
        async def op(r: Redis) -> dict[str, str]:
            return cast("dict[str, str]", await r.hgetall(key))

        return await self._run(f"HGETALL {key}", op)

    async def _hget(self, key: str, fld: str) -> str | None:
        async def op(r: Redis) -> str | None:
            return cast("str | None", await r.hget(key, fld))

        return await self._run(f"HGET {key}", op)

    async def _cas(self, key: str, fld: str, expected: str | None, new: str | None) -> bool:
        """Compare-and-set one hash field atomically (see `_CAS_LUA`); False when it changed."""
        args = [
            fld,
            expected or "",
            "missing" if expected is None else "match",
            new or "",
            "del" if new is None else "set",
        ]
        result = await self._run(
            f"CAS {key}", lambda r: self._cas_script(keys=[key], args=args, client=r), idempotent=False
        )
        return bool(result)

    async def _hset(self, key: str, fld: str, value: Json) -> None:
        text = dumps(value)
        await self._run(f"HSET {key}", lambda r: r.hset(key, fld, text))

    # -- agents -----------------------------------------------------------------------------------

    async def _agent(self, agent_id: str) -> tuple[Agent | None, str | None]:
        raw = await self._hget(keys.ACTIVE_AGENTS, agent_id)
        if raw is None:
            return None, None
        return self._parse(raw, keys.ACTIVE_AGENTS, agent_id, lambda v: m.agent_from_legacy(agent_id, v)), raw

    async def _put_agent(self, agent: Agent, presence: str | None) -> None:
        text = dumps(m.agent_to_legacy(agent))

        async def op(r: Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                _ = pipe.hset(keys.ACTIVE_AGENTS, agent.agent_id, text)
                if presence is not None:
                    _ = pipe.hset(keys.AGENT_PRESENCE, agent.agent_id, presence)
                await pipe.execute()

        await self._run(f"HSET {keys.ACTIVE_AGENTS}", op)

    async def register_agent(self, cmd: c.RegisterAgent) -> None:
        """POST /agents: the DO upsert (currentTask/workingOn kept when not given, arrays replaced),
        merged onto the legacy value so other writers' fields survive; presence `online`."""
        existing, raw = await self._agent(cmd.agent_id)
        if existing is None and raw is not None:
            raise ApiError(
                409, {"error": "Agent record is unreadable in the legacy store", "agentId": cmd.agent_id}
            )
        base = existing or Agent(cmd.agent_id)
        agent = replace(
            base,
            status=cmd.status,
            current_task=cmd.current_task or base.current_task,
            working_on=cmd.working_on or base.working_on,
            last_seen=iso_from_ms(cmd.now_ms),
            capabilities=cmd.capabilities,
            offers=cmd.offers,
            needs=cmd.needs,
        )
        await self._put_agent(agent, "offline" if cmd.status == "offline" else "online")

    async def touch_agent(
        self,
        agent_id: str,
        now_ms: int,
        *,
        advance_cursor: bool,
        only_existing: bool = False,
        seen_head: str | None = None,
    ) -> None:
        """Mark the agent active and seen now (DO `_touch`: socket connect, ping, /work),
        optionally moving its mention cursor to `seen_head` (the newest message id the caller
        read; the list's head now when not given). With `only_existing` (GET /chat, as the actor
        store: reading chat does not register an agent) an unknown agent is left."""
        existing, raw = await self._agent(agent_id)
        if (existing is None and raw is not None) or (existing is None and only_existing):
            return  # unreadable (reported, left as it is) or not registered
        now_iso = iso_from_ms(now_ms)
        agent = replace(existing or Agent(agent_id), status="active", last_seen=now_iso)
        if advance_cursor:
            head = seen_head if seen_head is not None else await self._chat_head()
            agent.extra = {**agent.extra, _MENTION_CURSOR: now_iso, _MENTION_CURSOR_ID: head}
        await self._put_agent(agent, None)

    async def set_agent_status(self, agent_id: str, status: str, now_ms: int) -> None:
        """A socket's `agent-update` or close: set an existing agent's status and `lastSeen`
        (DO `socket_status`); presence follows (`offline` or `online`). Unknown agents are left."""
        existing, _ = await self._agent(agent_id)
        if existing is None:
            return
        agent = replace(existing, status=status, last_seen=iso_from_ms(now_ms))
        await self._put_agent(agent, "offline" if status == "offline" else "online")

    async def _active_agents(self, now_ms: int, limit: int) -> list[Agent]:
        cutoff = now_ms - int(self.limits.agent_offline_after_s * 1000)
        listed: list[tuple[int, Agent]] = []
        for _, agent in await self._hgetall(keys.ACTIVE_AGENTS, m.agent_from_legacy):
            seen = _ms(agent.last_seen) if isinstance(agent.last_seen, str) else None
            if agent.status != "offline" and seen is not None and seen >= cutoff:
                listed.append((seen, agent))
        listed.sort(key=lambda pair: pair[0], reverse=True)
        return [a for _, a in listed[:limit]]

    async def list_agents(self, now_ms: int, limit: int) -> list[Agent]:
        """GET /agents: not offline and seen within the offline window; records without
        `lastSeen` (spawned, queued) are not listed, as in the legacy API, and are kept."""
        return await self._active_agents(now_ms, limit)

    # -- chat -------------------------------------------------------------------------------------

    async def post_chat(self, cmd: c.PostChat) -> GroupMessage:
        """POST /chat: LPUSH then LTRIM 0 999 in one transaction; sent once, never retried."""
        msg = GroupMessage(cmd.id, cmd.author, cmd.author_type, cmd.message, iso_from_ms(cmd.now_ms), [])
        text = dumps(m.chat_to_legacy(msg))

        async def op(r: Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                _ = pipe.lpush(keys.MESSAGES, text)
                _ = pipe.ltrim(keys.MESSAGES, 0, keys.CHAT_MAX - 1)
                await pipe.execute()

        await self._run(f"LPUSH {keys.MESSAGES}", op, idempotent=False)
        return msg

    async def _chat_window(self, count: int) -> list[GroupMessage]:
        """The newest `count` readable messages, newest first (the legacy list order)."""

        async def op(r: Redis) -> list[str]:
            return cast("list[str]", await r.lrange(keys.MESSAGES, 0, count - 1))

        raw = await self._run(f"LRANGE {keys.MESSAGES}", op)
        out = []
        for text in raw:
            msg = self._parse(text, keys.MESSAGES, None, m.chat_from_legacy)
            if msg is not None:
                out.append(msg)
        return out

    async def _newest(self, limit: int, since_ms: int | None = None) -> list[GroupMessage]:
        """The newest `limit` messages (strictly after `since_ms`), oldest first (DO order)."""
        if limit <= 0:
            return []
        window = await self._chat_window(_CHAT_SCAN if since_ms is not None else limit + 64)
        if since_ms is not None:
            window = [msg for msg in window if (_ms(msg.timestamp) or 0) > since_ms]
        return list(reversed(window[:limit]))

    async def _chat_head(self) -> str:
        """The id of the newest readable chat message ("" when there is none)."""
        window = await self._chat_window(1)
        return window[0].id if window else ""

    async def _pending_mentions(self, agent: Agent | None, agent_id: str) -> tuple[list[GroupMessage], str]:
        """The messages after the agent's mention cursor that mention it, oldest first, and the
        id of the newest message read (the cursor's next position).

        The cursor is the newest message id seen at the last check (`lastChatCheckId`), so, as
        with the actors' row counter, a message posted in the same millisecond just after a
        check is still reported. A cursor message no longer in the list was trimmed away: every
        message left is newer. Without an id (a cursor written before, or by other tools), the
        time `lastChatCheck` decides.
        """
        extra = agent.extra if agent is not None else {}
        cursor_id, cursor = extra.get(_MENTION_CURSOR_ID), extra.get(_MENTION_CURSOR)
        cursor_ms = _ms(cursor) if isinstance(cursor, str) and not isinstance(cursor_id, str) else None

        async def op(r: Redis) -> list[str]:
            return cast("list[str]", await r.lrange(keys.MESSAGES, 0, _CHAT_SCAN - 1))

        # Parse only what can matter (this runs on every /work and chat read): the head, the
        # cursor message, and messages with an '@' in them (a mention needs one).
        head, found = "", []
        pattern = mention_pattern(agent_id)
        for text in await self._run(f"LRANGE {keys.MESSAGES}", op):
            is_cursor = isinstance(cursor_id, str) and cursor_id in text
            if head and not is_cursor and "@" not in text:
                continue
            msg = self._parse(text, keys.MESSAGES, None, m.chat_from_legacy)
            if msg is None:
                continue
            head = head or msg.id
            if is_cursor and msg.id == cursor_id:
                break
            if cursor_ms is not None and (_ms(msg.timestamp) or 0) <= cursor_ms:
                continue
            if msg.author != agent_id and pattern.search(msg.message):
                found.append(msg)
        return list(reversed(found[: self.limits.list_limit_max])), head

    async def get_chat(self, q: c.ChatQuery) -> ChatPage:
        """GET /chat: newest `limit` messages in chronological order, plus the agent's mentions."""
        messages = [] if q.since_invalid else await self._newest(q.limit, q.since_ms)
        page = ChatPage(messages=messages, agent_id=q.agent_id, inbox=q.inbox)
        if q.agent_id is not None:
            agent, _ = await self._agent(q.agent_id)
            page.pending_mentions, head = await self._pending_mentions(agent, q.agent_id)
            await self.touch_agent(
                q.agent_id, q.now_ms, advance_cursor=True, only_existing=True, seen_head=head
            )
        return page

    # -- tasks ------------------------------------------------------------------------------------

    async def create_task(self, cmd: c.CreateTask) -> Task:
        """POST /tasks: HSETNX, so an existing id is a 409 as in the actor store."""
        task = cmd.task()
        text = dumps(m.task_to_legacy(task))
        created = await self._run(
            f"HSETNX {keys.TASKS}",
            lambda r: r.hsetnx(keys.TASKS, task.id, text),
            idempotent=False,
        )
        if not created:
            raise ApiError(409, {"error": "Task already exists", "id": cmd.id})
        return task

    async def update_task(self, cmd: c.UpdateTask) -> Task:
        """PATCH /tasks: change the given fields and `updatedAt` (status `done` also stamps the
        legacy `completedAt`, as the legacy PATCH does); a missing or unreadable task is a 404."""
        raw = await self._hget(keys.TASKS, cmd.id)
        task = None if raw is None else self._parse(raw, keys.TASKS, cmd.id, m.task_from_legacy)
        if task is None:
            raise ApiError(404, {"error": "Task not found", "id": cmd.id})
        cmd.apply(task)
        if not isinstance(cmd.status, c._Unset) and cmd.status in ("done", "completed"):
            task.extra = {**task.extra, "completedAt": task.updated_at}
        await self._hset(keys.TASKS, task.id, m.task_to_legacy(task))
        return task

    async def _tasks(self, keep: Callable[[Task], bool], limit: int) -> list[Task]:
        tasks = [
            t for _, t in await self._hgetall(keys.TASKS, lambda _f, v: m.task_from_legacy(v)) if keep(t)
        ]
        tasks.sort(key=lambda t: t.created_at, reverse=True)
        return tasks[:limit]

    async def list_tasks(self, q: c.ListTasks) -> list[Task]:
        """GET /tasks: equality filters (unassigned `""`/null/absent never match), newest first."""
        return await self._tasks(
            lambda t: (
                (q.status is None or t.status == q.status)
                and (q.assignee is None or t.assignee == q.assignee)
            ),
            q.limit,
        )

    async def work_bundle(self, q: c.WorkQuery) -> WorkBundle:
        """/work: mentions read before the heartbeat, then team, todo, mine and the last 20 messages."""
        agent, _ = await self._agent(q.agent_id)
        mentions, _ = await self._pending_mentions(agent, q.agent_id)
        await self.touch_agent(q.agent_id, q.now_ms, advance_cursor=False)
        tasks = await self._tasks(lambda _t: True, sys.maxsize)
        return WorkBundle(
            agent_id=q.agent_id,
            team=await self._active_agents(q.now_ms, q.limit),
            todo=[t for t in tasks if t.status == "todo"][: q.limit],
            mine=[t for t in tasks if t.assignee == q.agent_id][: q.limit],
            recent_chat=await self._newest(RECENT_CHAT),
            pending_mentions=mentions,
        )

    # -- zones ------------------------------------------------------------------------------------

    async def _zones(self) -> list[Zone]:
        zones = [z for _, z in await self._hgetall(keys.ZONES, m.zone_from_legacy)]
        zones.sort(key=lambda z: z.claimed_at, reverse=True)
        return zones

    async def find_zone(self, path: str) -> Zone | None:
        """GET /zones?path=: the newest zone whose path is a raw string prefix of `path`."""
        return next((z for z in await self._zones() if path.startswith(z.path)), None)

    async def list_zones(self, q: c.ZoneQuery) -> list[Zone]:
        """GET /zones[?owner=]: newest first."""
        return [z for z in await self._zones() if q.owner is None or z.owner == q.owner][: q.limit]

    async def claim_zone(self, cmd: c.ZoneClaim) -> Zone:
        """POST /zones claim: overwrite by zoneId (no ownership check, as both APIs)."""
        zone = Zone(cmd.zone_id, cmd.path, cmd.owner, cmd.description, iso_from_ms(cmd.now_ms))
        await self._hset(keys.ZONES, zone.zone_id, m.zone_to_legacy(zone))
        return zone

    async def release_zone(self, cmd: c.ReleaseZone) -> bool:
        """POST /zones release: delete only when the owner matches (compare-and-delete)."""
        raw = await self._hget(keys.ZONES, cmd.zone_id)
        if raw is None:
            return False
        zone = self._parse(raw, keys.ZONES, cmd.zone_id, lambda v: m.zone_from_legacy(cmd.zone_id, v))
        if zone is None or zone.owner != cmd.owner:
            return False
        return await self._cas(keys.ZONES, cmd.zone_id, raw, None)

    # -- claims -----------------------------------------------------------------------------------

    def _claims_for(
        self, entries: Iterable[tuple[str, str]], now_ms: int
    ) -> dict[str, list[tuple[str, Claim]]]:
        """Readable claims grouped by `what` (the value's own `what`, not the field name)."""
        out: dict[str, list[tuple[str, Claim]]] = {}
        for fld, raw in entries:
            claim = self._parse(raw, keys.CLAIMS, fld, lambda v: m.claim_from_legacy(v, now_ms=now_ms))
            if claim is not None:
                out.setdefault(claim.what, []).append((fld, claim))
        return out

    @staticmethod
    def _winner(claims: list[tuple[str, Claim]]) -> Claim:
        """The DO claim of one `what`: the newest non-stale one, else the newest (stale) one.

        The others are known conflicts (migration.md); they are left in Redis untouched.
        """
        fresh = [cl for _, cl in claims if not cl.stale]
        pool = fresh or [cl for _, cl in claims]
        return max(pool, key=lambda cl: _ms(cl.since) or 0)

    async def _claims_matching(self, r: Redis, what: str) -> list[tuple[str, str]]:
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

    async def get_claim(self, what: str, now_ms: int) -> Claim | None:
        """GET /claims?what=: the DO claim of `what`, stale or not."""
        entries = await self._run(f"HSCAN {keys.CLAIMS}", lambda r: self._claims_matching(r, what))
        group = self._claims_for(entries, now_ms).get(what)
        return None if not group else self._winner(group)

    async def list_claims(self, q: c.ClaimQuery) -> list[Claim]:
        """GET /claims: one claim per `what`, newest first; stale ones only with includeStale."""
        raw = await self._hgetall_raw(keys.CLAIMS)
        claims = [self._winner(g) for g in self._claims_for(raw.items(), q.now_ms).values()]
        claims = [cl for cl in claims if q.include_stale or not cl.stale]
        claims.sort(key=lambda cl: cl.since, reverse=True)
        return claims[: q.limit]

    async def claim(self, cmd: c.ClaimWork) -> ClaimOutcome:
        """POST /claims claim: 409 outcome while another agent holds a fresh claim on `what`.

        Taking over removes the other agents' (stale) fields for `what`, as the DO's takeover
        replaces its one row per `what` (and the legacy API's next GET would have HDELed them as
        stale): their holders' release then answers `success: false`, as from the actors.

        Atomic: the conflict check and the write run under WATCH of the claims hash, retried on
        contention, so two concurrent claims cannot both win (the legacy API's own writes abort
        the transaction too).
        """
        claim = Claim(cmd.what, cmd.by, cmd.description, iso_from_ms(cmd.now_ms), stale=False)
        fld = keys.claim_field(cmd.by, cmd.what)

        async def op(r: Redis) -> ClaimOutcome:
            for _ in range(_CAS_ATTEMPTS):
                async with r.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(keys.CLAIMS)
                        entries = await self._claims_matching(cast(Redis, pipe), cmd.what)
                        group = self._claims_for(entries, cmd.now_ms).get(cmd.what, [])
                        holders = [cl for _, cl in group if cl.by != cmd.by and not cl.stale]
                        if holders:
                            return ClaimOutcome(max(holders, key=lambda cl: cl.since), conflict=True)
                        existing = dict(group).get(fld)
                        value = m.claim_to_legacy(replace(claim, extra=existing.extra) if existing else claim)
                        superseded = [f for f, cl in group if cl.by != cmd.by]  # all stale (no holders)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        if superseded:
                            _ = pipe.hdel(keys.CLAIMS, *superseded)
                        _ = pipe.hset(keys.CLAIMS, fld, dumps(value))
                        await pipe.execute()
                        return ClaimOutcome(claim)
                    except redis.exceptions.WatchError:
                        continue
            raise StoreUnavailable(f"legacy store unavailable: claims too contended to claim {cmd.what!r}")

        return await self._run(f"CLAIM {keys.CLAIMS}", op)

    async def release_claim(self, cmd: c.ReleaseClaim) -> bool:
        """POST /claims release: HDEL of `{by}:{what}`."""
        fld = keys.claim_field(cmd.by, cmd.what)
        removed = await self._run(
            f"HDEL {keys.CLAIMS}",
            lambda r: r.hdel(keys.CLAIMS, fld),
            idempotent=False,  # a repeat would report False for a claim it did release
        )
        return bool(removed)

    # -- handoffs ---------------------------------------------------------------------------------

    async def get_handoff(self, handoff_id: str) -> Handoff | None:
        """GET /handoffs?id=."""
        raw = await self._hget(keys.HANDOFFS, handoff_id)
        return None if raw is None else self._parse(raw, keys.HANDOFFS, handoff_id, m.handoff_from_legacy)

    async def list_handoffs(self, q: c.HandoffQuery) -> list[Handoff]:
        """GET /handoffs: `toAgent` also matches open ones (legacy `any`); newest first."""

        def keep(h: Handoff) -> bool:
            return (
                (q.to_agent is None or h.to_agent in (None, q.to_agent))
                and (q.from_agent is None or h.from_agent == q.from_agent)
                and (q.status is None or h.status == q.status)
            )

        found = [
            h
            for _, h in await self._hgetall(keys.HANDOFFS, lambda _f, v: m.handoff_from_legacy(v))
            if keep(h)
        ]
        found.sort(key=lambda h: h.created_at, reverse=True)
        return found[: q.limit]

    async def create_handoff(self, cmd: c.CreateHandoff) -> Handoff:
        """POST /handoffs create: status `pending` (legacy `submitted`)."""
        h = Handoff(
            cmd.id,
            cmd.from_agent,
            cmd.to_agent,
            cmd.title,
            cmd.context,
            cmd.code,
            cmd.file_path,
            cmd.next_steps,
            cmd.priority,
            "pending",
            None,
            iso_from_ms(cmd.now_ms),
            None,
            None,
        )
        await self._hset(keys.HANDOFFS, h.id, m.handoff_to_legacy(h))
        return h

    async def _change_handoff(
        self, handoff_id: str, change: Callable[[Handoff], str | None]
    ) -> HandoffOutcome:
        """Read, check and change one handoff atomically (compare-and-set, retried on a race)."""
        for _ in range(_CAS_ATTEMPTS):
            raw = await self._hget(keys.HANDOFFS, handoff_id)
            h = None if raw is None else self._parse(raw, keys.HANDOFFS, handoff_id, m.handoff_from_legacy)
            if h is None:
                return HandoffOutcome(None, "Handoff not found")
            error = change(h)
            if error is not None:
                return HandoffOutcome(None, error)
            if await self._cas(keys.HANDOFFS, handoff_id, raw, dumps(m.handoff_to_legacy(h))):
                return HandoffOutcome(h)
        raise StoreUnavailable(f"legacy store unavailable: handoff {handoff_id!r} too contended")

    async def claim_handoff(self, cmd: c.ClaimHandoff) -> HandoffOutcome:
        """POST /handoffs claim: only a `pending` (legacy `submitted`) handoff open to the agent."""

        def change(h: Handoff) -> str | None:
            if h.status != "pending":
                return f"Handoff already {h.status}"
            if h.to_agent and h.to_agent != cmd.agent_id:
                return f"Handoff is targeted to {h.to_agent}"
            h.status, h.claimed_by, h.claimed_at = "claimed", cmd.agent_id, iso_from_ms(cmd.now_ms)
            return None

        return await self._change_handoff(cmd.handoff_id, change)

    async def complete_handoff(self, cmd: c.CompleteHandoff) -> HandoffOutcome:
        """POST /handoffs complete: only by its claimant; legacy status becomes `integrated`."""

        def change(h: Handoff) -> str | None:
            if h.status != "claimed":
                return f"Handoff must be claimed first (current: {h.status})"
            if h.claimed_by != cmd.agent_id:
                return f"Handoff is claimed by {h.claimed_by}"
            h.status, h.completed_at = "completed", iso_from_ms(cmd.now_ms)
            return None

        return await self._change_handoff(cmd.handoff_id, change)

    # -- checkpoints ------------------------------------------------------------------------------

    async def get_checkpoint(self, agent_id: str) -> Checkpoint | None:
        """GET /agent/<id>/checkpoint."""
        raw = await self._hget(keys.CHECKPOINTS, agent_id)
        if raw is None:
            return None
        return self._parse(raw, keys.CHECKPOINTS, agent_id, lambda v: m.checkpoint_from_legacy(agent_id, v))

    async def save_checkpoint(self, cmd: c.SaveCheckpoint) -> None:
        """POST /checkpoint: summary and context kept when not given, arrays replaced, legacy-only
        properties (`currentTask`) carried over."""
        old = await self.get_checkpoint(cmd.agent_id)
        cp = Checkpoint(
            cmd.agent_id,
            cmd.conversation_summary or (old.conversation_summary if old else None),
            cmd.accomplishments,
            cmd.pending_work,
            cmd.recent_context or (old.recent_context if old else None),
            cmd.files_edited,
            iso_from_ms(cmd.now_ms),
            extra=dict(old.extra) if old else {},
        )
        await self._hset(keys.CHECKPOINTS, cmd.agent_id, m.checkpoint_to_legacy(cp))

    # -- direct messages --------------------------------------------------------------------------

    async def _inbox(self, agent_id: str) -> list[DirectMessage]:
        """Every message of the agent's conversations addressed to it, newest first."""

        async def op(r: Redis) -> tuple[str | None, list[str | None]]:
            ids_raw = cast("str | None", await r.hget(keys.DM_USER_CONVOS, agent_id))
            if ids_raw is None:
                return None, []
            conv_ids = decode_array(ids_raw, key=keys.DM_USER_CONVOS, field=agent_id)
            if isinstance(conv_ids, Corrupt) or not conv_ids:
                return ids_raw, []
            arrays = await r.hmget(keys.DM_MESSAGES, [str(x) for x in conv_ids])
            return ids_raw, cast("list[str | None]", arrays)

        ids_raw, arrays = await self._run(f"HMGET {keys.DM_MESSAGES}", op)
        if ids_raw is not None and isinstance(decode_array(ids_raw, key=keys.DM_USER_CONVOS), Corrupt):
            self.corruption.report(Corrupt(keys.DM_USER_CONVOS, agent_id, "not a JSON array", ids_raw[:120]))
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

    async def _update_conversation(
        self,
        conv_id: str,
        change: Callable[[list[Any], Json | None], tuple[list[Any], Json]],
        users: list[str],
    ) -> None:
        """Rewrite one conversation's message array and record under WATCH (optimistic, retried)."""

        async def op(r: Redis) -> None:
            for _ in range(_CAS_ATTEMPTS):
                async with r.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(keys.DM_MESSAGES, keys.DM_CONVOS, keys.DM_USER_CONVOS)
                        raw_msgs = cast("str | None", await pipe.hget(keys.DM_MESSAGES, conv_id))
                        raw_conv = cast("str | None", await pipe.hget(keys.DM_CONVOS, conv_id))
                        msgs = (
                            []
                            if raw_msgs is None
                            else decode_array(raw_msgs, key=keys.DM_MESSAGES, field=conv_id)
                        )
                        conv = None if raw_conv is None else self._object(raw_conv, keys.DM_CONVOS, conv_id)
                        if isinstance(msgs, Corrupt) or (raw_conv is not None and conv is None):
                            if isinstance(msgs, Corrupt):
                                self.corruption.report(msgs)
                            raise ApiError(409, {"error": "Conversation is unreadable in the legacy store"})
                        new_msgs, new_conv = change(msgs, conv)
                        user_lists = [
                            cast("str | None", await pipe.hget(keys.DM_USER_CONVOS, u)) for u in users
                        ]
                        pipe.multi()  # type: ignore[no-untyped-call]
                        _ = pipe.hset(keys.DM_MESSAGES, conv_id, dumps(new_msgs[-keys.DM_MAX :]))
                        _ = pipe.hset(keys.DM_CONVOS, conv_id, dumps(new_conv))
                        for user, raw_list in zip(users, user_lists, strict=True):
                            convs = (
                                [] if raw_list is None else decode_array(raw_list, key=keys.DM_USER_CONVOS)
                            )
                            if isinstance(convs, Corrupt):
                                continue  # never overwrite what we cannot read
                            if conv_id not in convs:
                                _ = pipe.hset(keys.DM_USER_CONVOS, user, dumps([*convs, conv_id]))
                        await pipe.execute()
                    except redis.exceptions.WatchError:
                        continue
                    return
            raise StoreUnavailable(f"legacy store unavailable: conversation {conv_id!r} too contended")

        await self._run(f"DM {conv_id}", op)

    @staticmethod
    def _unread_counts(conv: Json, msgs: list[Any]) -> Json:
        """`unreadCount` derived from the per-message `read` flags (the truth)."""
        counts = {p: 0 for p in conv.get("participants", []) if isinstance(p, str)}
        for msg in msgs:
            if isinstance(msg, dict) and msg.get("read") is not True and isinstance(msg.get("to"), str):
                counts[msg["to"]] = counts.get(msg["to"], 0) + 1
        return counts

    def _conversation_record(
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
        record["unreadCount"] = self._unread_counts(record, msgs)
        return record

    async def send_dm(self, cmd: c.SendDm) -> DirectMessage:
        """POST /agent/<to>/messages: append to the conversation (cap 500), update its record
        and both participants' lists. Idempotent: a message id already there is not added twice."""
        dm = DirectMessage(cmd.id, cmd.from_agent, cmd.type, cmd.message, iso_from_ms(cmd.now_ms), False)
        to = cmd.agent_id
        conv_id = m.conversation_id(cmd.from_agent, to)

        def change(msgs: list[Any], conv: Json | None) -> tuple[list[Any], Json]:
            types = (conv or {}).get("participantTypes") or {}
            extra = {"fromType": types.get(dm.from_agent, "agent"), "toType": types.get(to, "agent")}
            value = m.dm_to_legacy(replace(dm, extra=extra), to)
            if not any(isinstance(x, dict) and x.get("id") == dm.id for x in msgs):
                msgs = [*msgs, value][-keys.DM_MAX :]
            record = self._conversation_record(conv, dm, to, extra, msgs)
            _set_last_message(record, dm)
            return msgs, record

        await self._update_conversation(conv_id, change, [dm.from_agent, to])
        return dm

    async def list_dms(self, q: c.ListDms) -> list[DirectMessage]:
        """GET /agent/<id>/messages: the agent's inbox (messages to it), newest first."""
        inbox = await self._inbox(q.agent_id)
        if q.unread_only:
            inbox = [d for d in inbox if not d.read]
        return inbox[: q.limit]

    async def mark_dms_read(self, cmd: c.MarkDmsRead) -> None:
        """PATCH /agent/<id>/messages: mark the listed messages to this agent read, with `readAt` =
        the command's time (as the actor store records it; a message already read keeps its
        `readAt`), and rewrite their conversations' unread counts; unknown ids are ignored."""
        wanted = set(cmd.message_ids)
        if not wanted:
            return
        now_iso = iso_from_ms(cmd.now_ms)
        by_conv: dict[str, None] = {}
        for d in await self._inbox(cmd.agent_id):
            if d.id in wanted and not d.read:
                by_conv[str(d.extra.get("conversationId"))] = None
        for conv_id in by_conv:

            def change(msgs: list[Any], conv: Json | None, conv_id: str = conv_id) -> tuple[list[Any], Json]:
                out = []
                for x in msgs:
                    if (
                        isinstance(x, dict)
                        and x.get("id") in wanted
                        and x.get("to") == cmd.agent_id
                        and not x.get("read")
                    ):
                        x = {**x, "read": True, "readAt": now_iso}  # noqa: PLW2901 - a changed copy
                    out.append(x)
                record: Json = dict(conv) if conv else {"id": conv_id, "participants": []}
                record["unreadCount"] = self._unread_counts(record, out)
                return out, record

            await self._update_conversation(conv_id, change, [])

    # -- memory -----------------------------------------------------------------------------------

    async def add_memory(self, cmd: c.AddMemory) -> Memory:
        """POST /agent/<id>/memory: a team-wide memory with `createdBy` = the agent, plus its
        lowercased tag index sets (idempotent, so retried)."""
        mem = Memory(cmd.id, cmd.category, cmd.content, cmd.tags, iso_from_ms(cmd.now_ms))
        text = dumps(m.memory_to_legacy(mem, cmd.agent_id))

        async def op(r: Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                _ = pipe.hset(keys.SHARED_MEMORY, mem.id, text)
                for tag in mem.tags:
                    if isinstance(tag, str):
                        _ = pipe.sadd(keys.memory_tag(tag), mem.id)
                await pipe.execute()

        await self._run(f"HSET {keys.SHARED_MEMORY}", op)
        return mem

    async def _memories_of(self, agent_id: str) -> list[Memory]:
        mems = [
            mem
            for _, mem in await self._hgetall(keys.SHARED_MEMORY, lambda _f, v: m.memory_from_legacy(v))
            if m.memory_owner(mem) == agent_id
        ]
        mems.sort(key=lambda mem: mem.created_at, reverse=True)
        return mems

    async def search_memory(self, q: c.MemoryQuery) -> list[Memory]:
        """GET /agent/<id>/memory: the agent's memories (`createdBy`), category equality, `query`
        as SQLite LIKE on content or the tags JSON text, newest first, at most `limit`."""
        pattern = None if q.query is None else _like(q.query)
        out = []
        for mem in await self._memories_of(q.agent_id):
            if q.category is not None and mem.category != q.category:
                continue
            if pattern is not None and not (pattern.search(mem.content) or pattern.search(dumps(mem.tags))):
                continue
            out.append(mem)
        return out[: q.limit]

    async def agent_state(self, agent_id: str) -> AgentStateView:
        """/agent/<id>/state: checkpoint, unread DMs (newest first), the 10 latest memories."""
        inbox = await self._inbox(agent_id)
        unread = [d for d in inbox if not d.read][: self.limits.list_limit_max]
        memories = (await self._memories_of(agent_id))[:RECENT_MEMORIES]
        return AgentStateView(agent_id, await self.get_checkpoint(agent_id), unread, memories)

    # -- locks ------------------------------------------------------------------------------------

    async def _lock(self, path: str) -> tuple[Lock | None, str | None]:
        raw = await self._hget(keys.LOCKS, path)
        if raw is None:
            return None, None
        return self._parse(raw, keys.LOCKS, path, lambda v: m.lock_from_legacy(path, v)), raw

    @staticmethod
    def _unreadable_lock(path: str) -> ApiError:
        return ApiError(
            409,
            {
                "success": False,
                "error": "Resource lock is unreadable in the legacy store",
                "resourcePath": path,
            },
        )

    async def check_lock(self, resource_path: str, now_ms: int) -> LockCheck:
        """/check: an expired lock is removed here (as the legacy GET and the DO do), with a note;
        an unreadable value is reported and treated as no lock (and left in place)."""
        lock, raw = await self._lock(resource_path)
        if lock is not None and raw is not None and now_ms > lock.expires_ms:
            await self._cas(keys.LOCKS, resource_path, raw, None)
            return LockCheck(resource_path, None, now_ms, expired_now=lock)
        return LockCheck(resource_path, lock, now_ms)

    async def acquire_lock(self, cmd: c.AcquireLock) -> LockAcquireOutcome:
        """/lock: atomic against concurrent writers (this gateway's and the legacy API's HSETNX):
        read, decide as the DO does, then compare-and-set; a lost race re-reads and decides again.

        A holder's re-lock extends (never shortens) and keeps `lockedAt`; an expired lock is taken
        over; expiry is `expiresAt` inside the value, with no Redis TTL.
        """
        now = cmd.now_ms
        for _ in range(_CAS_ATTEMPTS):
            cur, raw = await self._lock(cmd.resource_path)
            if cur is None and raw is not None:
                raise self._unreadable_lock(cmd.resource_path)
            expired: Lock | None = None
            if cur is not None:
                if now < cur.expires_ms and cur.locked_by != cmd.agent_id:
                    return LockAcquireOutcome(False, cur, cmd.ttl_ms, now)
                if now >= cur.expires_ms:
                    expired, cur = cur, None
            ttl_expiry = int(now + cmd.ttl_ms)
            if cur is not None:
                expires_ms = max(cur.expires_ms, ttl_expiry)
                lock = replace(
                    cur,
                    resource_type=cmd.resource_type or cur.resource_type,
                    reason=cmd.reason if cmd.reason is not None else cur.reason,
                    expires_at=iso_from_ms(expires_ms),
                    expires_ms=expires_ms,
                )
            else:
                lock = Lock(
                    cmd.resource_path,
                    cmd.resource_type or "file-lock",
                    cmd.agent_id,
                    cmd.reason,
                    iso_from_ms(now),
                    iso_from_ms(ttl_expiry),
                    ttl_expiry,
                )
            if await self._cas(keys.LOCKS, cmd.resource_path, raw, dumps(m.lock_to_legacy(lock))):
                return LockAcquireOutcome(True, lock, cmd.ttl_ms, now, expired_previous=expired)
        raise StoreUnavailable(f"legacy store unavailable: lock {cmd.resource_path!r} too contended")

    async def release_lock(self, cmd: c.ReleaseLock) -> LockReleaseOutcome:
        """/unlock: the owner (or `force`) releases; someone else's expired lock is removed as
        expired; compare-and-delete, so a lock re-acquired meanwhile is never removed."""
        for _ in range(_CAS_ATTEMPTS):
            cur, raw = await self._lock(cmd.resource_path)
            if raw is None:
                return LockReleaseOutcome("none")
            if cur is None:
                raise self._unreadable_lock(cmd.resource_path)
            is_owner = cur.locked_by == cmd.agent_id
            if not is_owner and cmd.now_ms >= cur.expires_ms:
                outcome = LockReleaseOutcome("expired", cur, "expired")
            elif not is_owner and not cmd.force:
                return LockReleaseOutcome("not_owner", cur)
            else:
                outcome = LockReleaseOutcome("released", cur, "manual" if is_owner else "stolen")
            if await self._cas(keys.LOCKS, cmd.resource_path, raw, None):
                return outcome
        raise StoreUnavailable(f"legacy store unavailable: lock {cmd.resource_path!r} too contended")

    async def lock_history(self, resource_path: str, limit: int) -> LockHistory:
        """/history: the current lock (even if expired); the legacy store keeps no history."""
        lock, _ = await self._lock(resource_path)
        return LockHistory(resource_path, lock, [])

    # -- replication: idempotent upserts and deletes of entity state ---------------------------------
    #
    # migration.md: the authoritative store executes the command; the other store receives the
    # resulting entity state as an idempotent upsert or delete and never re-executes the command.
    # These are that interface for Redis (also the import tool's writer). Each upsert merges onto
    # the legacy value already there, so properties only legacy writers know are kept.

    async def _upsert(
        self,
        key: str,
        fld: str,
        entity: E,
        read: Callable[[Json], E],
        write: Callable[[E], Json],
    ) -> None:
        raw = await self._hget(key, fld)
        old = None if raw is None else self._parse(raw, key, fld, read)
        if raw is not None and old is None:
            raise ApiError(
                409, {"error": "Legacy value is unreadable; not overwritten", "key": key, "field": fld}
            )
        extra = getattr(entity, "extra", {})
        merged = replace(entity, extra={**old.extra, **extra}) if old is not None else entity
        await self._hset(key, fld, write(merged))

    async def upsert_agent(self, agent: Agent) -> None:
        """Replicate an agent (merged onto the legacy record); presence follows the status."""
        await self._upsert(
            keys.ACTIVE_AGENTS,
            agent.agent_id,
            agent,
            lambda v: m.agent_from_legacy(agent.agent_id, v),
            m.agent_to_legacy,
        )
        presence = "offline" if agent.status == "offline" else "online"
        await self._run("HSET presence", lambda r: r.hset(keys.AGENT_PRESENCE, agent.agent_id, presence))

    async def upsert_task(self, task: Task) -> None:
        """Replicate a task."""
        await self._upsert(keys.TASKS, task.id, task, m.task_from_legacy, m.task_to_legacy)

    async def upsert_zone(self, zone: Zone) -> None:
        """Replicate a zone."""
        await self._upsert(
            keys.ZONES, zone.zone_id, zone, lambda v: m.zone_from_legacy(zone.zone_id, v), m.zone_to_legacy
        )

    async def upsert_claim(self, claim: Claim) -> None:
        """Replicate a claim into its `{by}:{what}` field; other agents' stale fields for the
        same `what` are removed, as `claim` does (the DO claim replaced them), fresh ones kept."""
        fld = keys.claim_field(claim.by, claim.what)
        await self._upsert(
            keys.CLAIMS, fld, replace(claim, stale=False), m.claim_from_legacy, m.claim_to_legacy
        )
        await self._drop_superseded_claims(claim.what, claim.by)

    async def _drop_superseded_claims(self, what: str, by: str) -> None:
        """HDEL the readable, stale fields of agents other than `by` for `what` (under WATCH, so
        a field the legacy API refreshes meanwhile is kept)."""
        now_ms = self.clock.now_ms()

        async def op(r: Redis) -> None:
            for _ in range(_CAS_ATTEMPTS):
                async with r.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(keys.CLAIMS)
                        entries = await self._claims_matching(cast(Redis, pipe), what)
                        group = self._claims_for(entries, now_ms).get(what, [])
                        stale = [f for f, cl in group if cl.by != by and cl.stale]
                        if not stale:
                            return
                        pipe.multi()  # type: ignore[no-untyped-call]
                        _ = pipe.hdel(keys.CLAIMS, *stale)
                        await pipe.execute()
                    except redis.exceptions.WatchError:
                        continue
                    return
            raise StoreUnavailable(f"legacy store unavailable: claims too contended to replicate {what!r}")

        await self._run(f"HDEL {keys.CLAIMS}", op)

    async def delete_claim(self, by: str, what: str) -> None:
        """Replicate a claim release."""
        fld = keys.claim_field(by, what)
        await self._run(f"HDEL {keys.CLAIMS}", lambda r: r.hdel(keys.CLAIMS, fld))

    async def upsert_handoff(self, handoff: Handoff) -> None:
        """Replicate a handoff."""
        await self._upsert(keys.HANDOFFS, handoff.id, handoff, m.handoff_from_legacy, m.handoff_to_legacy)

    async def upsert_checkpoint(self, cp: Checkpoint) -> None:
        """Replicate a checkpoint."""
        await self._upsert(
            keys.CHECKPOINTS,
            cp.agent_id,
            cp,
            lambda v: m.checkpoint_from_legacy(cp.agent_id, v),
            m.checkpoint_to_legacy,
        )

    async def upsert_lock(self, lock: Lock) -> None:
        """Replicate the current lock of a resource."""
        await self._upsert(
            keys.LOCKS,
            lock.resource_path,
            lock,
            lambda v: m.lock_from_legacy(lock.resource_path, v),
            m.lock_to_legacy,
        )

    async def delete_lock(self, resource_path: str) -> None:
        """Replicate a lock release or expiry."""
        await self._run(f"HDEL {keys.LOCKS}", lambda r: r.hdel(keys.LOCKS, resource_path))

    async def upsert_memory(self, mem: Memory, agent_id: str) -> None:
        """Replicate an agent's memory (team-wide value with `createdBy`, plus its tag sets)."""
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
            await self._run("SADD tag index", index)

    async def upsert_dm(self, dm: DirectMessage, to: str) -> None:
        """Replicate a DM (new, or its read flag) into its conversation; counts are re-derived."""
        conv_id = m.conversation_id(dm.from_agent, to)
        now_iso = iso_from_ms(self.clock.now_ms())

        def change(msgs: list[Any], conv: Json | None) -> tuple[list[Any], Json]:
            types = (conv or {}).get("participantTypes") or {}
            extra = {
                "fromType": types.get(dm.from_agent, "agent"),
                "toType": types.get(to, "agent"),
                **dm.extra,
            }
            value = m.dm_to_legacy(replace(dm, extra=extra), to, read_at=now_iso)
            index = next(
                (i for i, x in enumerate(msgs) if isinstance(x, dict) and x.get("id") == dm.id), None
            )
            if index is None:
                msgs = [*msgs, value][-keys.DM_MAX :]
            else:
                msgs = [*msgs[:index], {**msgs[index], **value}, *msgs[index + 1 :]]
            record = self._conversation_record(conv, dm, to, extra, msgs)
            if index is None and dm.timestamp >= str(record.get("updatedAt", "")):
                _set_last_message(record, dm)
            return msgs, record

        await self._update_conversation(conv_id, change, [dm.from_agent, to])

    async def append_chat(self, msg: GroupMessage) -> None:
        """Replicate a chat message: LPUSH + LTRIM 0 999 unless its id is already near the head."""
        text = dumps(m.chat_to_legacy(msg))
        marker = f'"id":{dumps(msg.id)}'

        async def op(r: Redis) -> None:
            for _ in range(_CAS_ATTEMPTS):
                async with r.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(keys.MESSAGES)
                        head = cast("list[str]", await pipe.lrange(keys.MESSAGES, 0, 99))
                        if any(marker in x for x in head):
                            return
                        pipe.multi()  # type: ignore[no-untyped-call]
                        _ = pipe.lpush(keys.MESSAGES, text)
                        _ = pipe.ltrim(keys.MESSAGES, 0, keys.CHAT_MAX - 1)
                        await pipe.execute()
                    except redis.exceptions.WatchError:
                        continue
                    return
            raise StoreUnavailable("legacy store unavailable: chat list too contended")

        await self._run(f"LPUSH {keys.MESSAGES}", op)  # idempotent by id, so safe to retry

    # -- WebSockets: held by the gateway, not by a store ------------------------------------------

    def _no_sockets(self) -> NotImplementedError:
        return NotImplementedError(
            "the legacy store holds no WebSockets; the phase router must use the actor store's sockets"
        )

    async def open_coordinator_socket(self, ws: Any, agent_id: str, now_ms: int) -> Any:
        raise self._no_sockets()

    async def coordinator_ping(self, handle: Any, now_ms: int) -> None:
        raise self._no_sockets()

    async def coordinator_set_status(self, handle: Any, status: str, now_ms: int) -> None:
        raise self._no_sockets()

    async def close_coordinator_socket(self, handle: Any, code: int, reason: str) -> None:
        raise self._no_sockets()

    async def open_agent_socket(self, ws: Any, agent_id: str, now_ms: int) -> Any:
        raise self._no_sockets()

    async def agent_socket_checkpoint(self, handle: Any, cmd: c.SaveCheckpoint) -> None:
        raise self._no_sockets()

    async def close_agent_socket(self, handle: Any, code: int, reason: str) -> None:
        raise self._no_sockets()
