"""`LegacyStore`: the `Store` seam carried out on the legacy Redis key layout.

Every DO operation is served from the legacy hashes and lists (legacy-redis.md §1-8) with the DO
semantics and the same domain results as the actor store, so the HTTP layer renders identical
JSON. The rules (what a lock acquire, a claim or a handoff transition does) are
`gateway.domain.rules`, the same functions the actors call; this module loads the records
(`gateway.legacy.records`), calls the rule and persists what it returns:

* reads accept every legacy writer shape, decode double-encoded values, and report and skip
  corrupt values; nothing is ever deleted because it could not be read;
* writes keep the legacy shapes: chat is LPUSH + LTRIM 0 999 (newest first), DM arrays are capped
  at 500 and the conversation's `unreadCount` is derived from the per-message `read` flags, claims
  live in `{by}:{what}` fields, lock expiry is `expiresAt` inside the value (no key TTL), memories
  keep their tag index sets;
* lock acquire/release and handoff claim/complete persist with a compare-and-set of the one hash
  field (a lost race reads again and decides again); claims and DM sends run under WATCH/MULTI,
  retried a bounded number of times.

Differences from the actor store (documented in docs/legacy-store.md): no lock history (Redis
has none), no WebSockets (the actor host holds them in every phase), the chat mention cursor is
kept as an extra `lastChatCheck` property of the agent value, and listings scan whole hashes (the
legacy layout has no secondary indexes). Replication into Redis (entity upserts and deletes) is
`gateway.legacy.replica`.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from itertools import accumulate
from typing import Any, Final, TypeVar

from gateway.clock import Clock, SystemClock
from gateway.domain import commands as c
from gateway.domain import rules
from gateway.domain.jscompat import iso_from_ms
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
    RenderedList,
    Task,
    WorkBundle,
    Zone,
)
from gateway.errors import ApiError, StoreUnavailable
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.client import LegacyClient, Redis
from gateway.legacy.codec import CorruptionLog, dumps
from gateway.legacy.hinted import Answer, Write, decide_on_hint
from gateway.legacy.listings import AgentListings, TaskListings
from gateway.legacy.records import (
    CAS_ATTEMPTS,
    CHAT_SCAN,
    MENTION_CURSOR,
    MENTION_CURSOR_ID,
    Json,
    LegacyRecords,
    ms,
    set_last_message,
    unreadable,
)
from gateway.legacy.tracking import Command
from gateway.settings import LimitSettings, Settings

__all__ = ["MENTION_CURSOR", "MENTION_CURSOR_ID", "LegacyStore", "marked_texts"]

R = TypeVar("R")


def _like(query: str) -> re.Pattern[str]:
    """SQLite `LIKE '%q%'`: `%` and `_` stay wildcards (as upstream), ASCII case-insensitive."""
    parts = [".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in query]
    return re.compile("".join(parts), re.IGNORECASE | re.ASCII | re.DOTALL)


_RECENT_FIRST: Final = 64
"""/work reads the chat list's first elements whole (the newest messages come from them, as
`records.chat_window` pages them), the rest only where a mention can be."""

_PAGES_KEPT: Final = 16
"""GET /chat pages kept (`LegacyStore._newest`), by limit, each while its window is handed out again."""


def _unreadable_lock(path: str) -> ApiError:
    return unreadable("Resource lock", keys.LOCKS, path, success=False, resourcePath=path)


_JOIN: Final = "\x00"


def marked_texts(texts: list[str], start: int, cursor: str | None) -> Iterable[int]:
    """The indexes, from `start` on and ascending, of the texts that hold an '@' or the text
    `cursor` (None: no cursor): what `LegacyStore._mentions_in` must parse once it knows the head.

    Searched in C over the texts joined by a NUL: a test of each text in Python cost about 80 us
    on every /work over the 1,200-element chat window, this about 15 us. A needle never holds the
    NUL, so every match lies inside one text (a text's own NUL included); the match's offset
    names its text. An empty cursor is in every text; one that holds a NUL is looked for in each
    text (no chat id has one).
    """
    if cursor is not None and (not cursor or _JOIN in cursor):
        return [k for k in range(start, len(texts)) if "@" in texts[k] or cursor in texts[k]]
    rest = texts[start:]
    joined = _JOIN.join(rest)
    needles = [nd for nd in ("@", cursor) if nd is not None and nd in joined]
    if not needles:
        return ()
    starts = [0, *accumulate(map((1).__add__, map(len, rest)))]  # where each text begins in `joined`
    hits: set[int] = set()
    for needle in needles:
        at = joined.find(needle)
        while at >= 0:
            k = bisect_right(starts, at) - 1
            hits.add(start + k)
            at = joined.find(needle, starts[k + 1])  # on from the next text
    return sorted(hits)


class LegacyStore:
    """Every DO operation on the legacy Redis layout (see the module docstring)."""

    def __init__(
        self, records: LegacyRecords, limits: LimitSettings | None = None, *, clock: Clock | None = None
    ) -> None:
        self.records = records
        self.limits = limits or LimitSettings()
        self.clock = clock or SystemClock()
        # what the last states of the `tasks` and `active-agents` hashes listed, carried over
        # to the next ones (`gateway.legacy.listings`)
        self._tasks = TaskListings(records)
        self._agents = AgentListings(records)
        # the newest-first chat pages by limit: (the window each was cut from, the page)
        self._newest_kept: dict[int, tuple[list[GroupMessage], RenderedList]] = {}

    @classmethod
    def from_url(cls, redis_url: str, settings: Settings, *, clock: Clock | None = None) -> LegacyStore:
        """A store on `redis_url` with the pool, timeouts and retries of `settings.legacy`."""
        client = LegacyClient.connect(
            redis_url,
            settings.legacy,
            track=(keys.TASKS, keys.ACTIVE_AGENTS),
            track_lists={keys.MESSAGES: CHAT_SCAN},
        )
        return cls(LegacyRecords(client), settings.limits, clock=clock)

    @property
    def corruption(self) -> CorruptionLog:
        """The unreadable values met so far."""
        return self.records.corruption

    async def close(self) -> None:
        """Close the connection pool."""
        await self.records.close()

    async def ping(self) -> bool:
        """True when Redis answers PING; raises StoreUnavailable otherwise (readiness)."""
        return await self.records.client.ping()

    # -- agents -----------------------------------------------------------------------------------

    async def register_agent(self, cmd: c.RegisterAgent) -> None:
        """POST /agents: the DO upsert (currentTask/workingOn kept when not given, arrays replaced),
        merged onto the legacy value so other writers' fields survive; presence `online`.

        While the agents hash is held in memory (`gateway.legacy.tracking`) the upsert is decided
        on the value held there and written only if Redis still holds it (one round trip); when
        another writer changed it, decided again on what Redis holds now. Otherwise the value
        is read, then written (two)."""
        presence = "offline" if cmd.status == "offline" else "online"
        known, raw = self.records.agent_hint(cmd.agent_id)
        for _ in range(CAS_ATTEMPTS if known else 0):
            existing = self.records.agent_of(cmd.agent_id, raw)
            if existing is None and raw is not None:
                break  # unreadable in memory: read Redis
            done = await self.records.put_agent_if(rules.register_agent(existing, cmd), presence, raw)
            if done is None:
                break  # the cache went off: read Redis
            if done[0]:
                return
            raw = done[1]
        existing, raw = await self.records.agent(cmd.agent_id)
        if existing is None and raw is not None:
            raise unreadable("Agent record", keys.ACTIVE_AGENTS, cmd.agent_id, agentId=cmd.agent_id)
        agent = rules.register_agent(existing, cmd)
        await self.records.put_agent(agent, presence)

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
        existing, raw = await self.records.agent(agent_id)
        if (existing is None and raw is not None) or (existing is None and only_existing):
            return  # unreadable (reported, left as it is) or not registered
        now_iso = iso_from_ms(now_ms)
        agent = replace(existing or Agent(agent_id), status="active", last_seen=now_iso)
        if advance_cursor:
            head = seen_head if seen_head is not None else await self._chat_head()
            agent.extra = {**agent.extra, MENTION_CURSOR: now_iso, MENTION_CURSOR_ID: head}
        await self.records.put_agent(agent, None)

    async def set_agent_status(self, agent_id: str, status: str, now_ms: int) -> None:
        """A socket's `agent-update` or close: set an existing agent's status and `lastSeen`
        (DO `socket_status`); presence follows (`offline` or `online`). Unknown agents are left."""
        existing, _ = await self.records.agent(agent_id)
        if existing is None:
            return
        agent = replace(existing, status=status, last_seen=iso_from_ms(now_ms))
        await self.records.put_agent(agent, "offline" if status == "offline" else "online")

    async def _active_agents(self, now_ms: int, limit: int) -> list[Agent]:
        return self._listed_agents(await self.records.hgetall_raw(keys.ACTIVE_AGENTS), now_ms, limit)

    def _listed_agents(self, raw: dict[str, str], now_ms: int, limit: int) -> list[Agent]:
        """The agents a listing shows, of the raw `active-agents` hash: active lately, newest first."""
        cutoff = now_ms - int(self.limits.agent_offline_after_s * 1000)
        return self._agents.listing(raw, cutoff, limit)

    async def list_agents(self, now_ms: int, limit: int) -> list[Agent]:
        """GET /agents: not offline and seen within the offline window; records without
        `lastSeen` (spawned, queued) are not listed, as in the legacy API, and are kept."""
        return await self._active_agents(now_ms, limit)

    # -- chat -------------------------------------------------------------------------------------

    async def post_chat(self, cmd: c.PostChat) -> GroupMessage:
        """POST /chat: LPUSH then LTRIM 0 999 in one transaction; sent once, never retried. On the
        tracking connection when it is on, so the kept chat list stays in memory."""
        msg = rules.new_message(cmd)
        text = dumps(m.chat_to_legacy(msg))

        writes: list[Command] = [
            ("LPUSH", keys.MESSAGES, text),
            ("LTRIM", keys.MESSAGES, "0", str(keys.CHAT_MAX - 1)),
        ]
        await self.records.write_tracked(f"LPUSH {keys.MESSAGES}", writes, idempotent=False)
        self.records.remember(keys.MESSAGES, msg.id, text)
        return msg

    async def _newest(self, limit: int, since_ms: int | None = None) -> list[GroupMessage]:
        """The newest `limit` messages (strictly after `since_ms`), oldest first (DO order).

        Without `since_ms`, the page of a window `chat_window` hands out again (the same list:
        the chat list is unchanged) is the same `RenderedList`, so its answer is rendered once."""
        if limit <= 0:
            return []
        window = await self.records.chat_window(CHAT_SCAN if since_ms is not None else limit)
        if since_ms is not None:
            window = [msg for msg in window if (ms(msg.timestamp) or 0) > since_ms]
        else:
            kept = self._newest_kept.get(limit)
            if kept is not None and kept[0] is window:
                return kept[1]
        # the messages are the shared parsed values: each rendered once (`LegacyRecords.fragment`)
        page = RenderedList(reversed(window[:limit]), self.records.fragment)
        if since_ms is None:
            if len(self._newest_kept) >= _PAGES_KEPT:
                self._newest_kept.clear()
            self._newest_kept[limit] = (window, page)
        return page

    async def _chat_head(self) -> str:
        """The id of the newest readable chat message ("" when there is none)."""
        window = await self.records.chat_window(1)
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
        return self._mentions_in(await self.records.chat_texts(0, CHAT_SCAN - 1), agent, agent_id)

    def _mentions_in(
        self, texts: list[str], agent: Agent | None, agent_id: str
    ) -> tuple[list[GroupMessage], str]:
        """`_pending_mentions` over the chat list elements `texts` (newest first), read already.

        Parses only what can matter (this runs on every /work and chat read): the head, the
        cursor message, and messages with an '@' in them (a mention needs one), found among the
        window's up to 1,200 elements by `marked_texts` (a search in C, not a test per element)."""
        extra = agent.extra if agent is not None else {}
        cursor_id, cursor = extra.get(MENTION_CURSOR_ID), extra.get(MENTION_CURSOR)
        cursor_text = cursor_id if isinstance(cursor_id, str) else None
        cursor_ms = ms(cursor) if isinstance(cursor, str) and cursor_text is None else None
        head, found = "", []
        pattern = rules.mention_pattern(agent_id)
        marked: Iterator[int] | None = None  # once the head is known: the texts worth parsing
        i, n = 0, len(texts)
        while i < n:
            if head:
                if marked is None:
                    marked = iter(marked_texts(texts, i, cursor_text))
                i = next(marked, n)
                if i == n:
                    break
            text = texts[i]
            i += 1
            is_cursor = cursor_text is not None and cursor_text in text
            msg = self.records.parse_shared(text, keys.MESSAGES, None, m.chat_from_legacy)
            if msg is None:
                continue
            head = head or msg.id
            if is_cursor and msg.id == cursor_id:
                break
            if cursor_ms is not None and (ms(msg.timestamp) or 0) <= cursor_ms:
                continue
            if msg.author != agent_id and pattern.search(msg.message):
                found.append(msg)
        return list(reversed(found[: self.limits.list_limit_max])), head

    async def get_chat(self, q: c.ChatQuery) -> ChatPage:
        """GET /chat: newest `limit` messages in chronological order, plus the agent's mentions."""
        messages = [] if q.since_invalid else await self._newest(q.limit, q.since_ms)
        page = ChatPage(messages=messages, agent_id=q.agent_id, inbox=q.inbox)
        if q.agent_id is not None:
            agent, _ = await self.records.agent(q.agent_id)
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
        if not await self.records.hsetnx(keys.TASKS, task.id, text):
            raise ApiError(409, {"error": "Task already exists", "id": cmd.id})
        return task

    async def update_task(self, cmd: c.UpdateTask) -> Task:
        """PATCH /tasks: change the given fields and `updatedAt` (status `done` also stamps the
        legacy `completedAt`, as the legacy PATCH does); a missing task is a 404, an unreadable one
        (corrupt, or a property of the wrong type) a 409 that leaves it as it is."""
        task, raw = await self.records.task(cmd.id)
        if task is None and raw is not None:
            raise unreadable("Task", keys.TASKS, cmd.id, id=cmd.id)
        if task is None:
            raise ApiError(404, {"error": "Task not found", "id": cmd.id})
        cmd.apply(task)
        if cmd.status is not c.UNSET and cmd.status in ("done", "completed"):
            task.extra = {**task.extra, "completedAt": task.updated_at}
        await self.records.hset(keys.TASKS, task.id, m.task_to_legacy(task))
        return task

    def _task_listing(
        self, raw: dict[str, str], status: str | None, assignee: str | None, limit: int
    ) -> list[Task]:
        """The tasks with this status and assignee (None: not filtered), newest first, at most
        `limit`; the same list for the same question while the hash is unchanged."""
        return self._tasks.listing(raw, status, assignee, limit)

    async def list_tasks(self, q: c.ListTasks) -> list[Task]:
        """GET /tasks: equality filters (unassigned `""`/null/absent never match), newest first."""
        return self._task_listing(await self.records.hgetall_raw(keys.TASKS), q.status, q.assignee, q.limit)

    async def work_bundle(self, q: c.WorkQuery) -> WorkBundle:
        """/work: mentions read before the heartbeat, then team, todo, mine and the last 20 messages.

        Two round trips: the agent and the chat window, then the heartbeat's write with the
        task and agent hashes read after it (one pipeline, in that order)."""
        agent_id = q.agent_id
        fast = await self._work_in_one_round_trip(q)
        if fast is not None:
            agent, texts, total, raw_tasks, raw_agents = fast
            texts, recent = await self._recent(texts, total)
        else:
            raw_agent, texts, total = await self.records.agent_and_chat(agent_id, _RECENT_FIRST)
            texts, recent = await self._recent(texts, total)
            agent = self.records.agent_of(agent_id, raw_agent)
            # the heartbeat (`touch_agent`), unless the agent's value is unreadable (left as it is)
            touched = None
            if agent is not None or raw_agent is None:
                touched = self._touched(agent, agent_id, q.now_ms)
            writes: list[Command] = []
            if touched is not None:
                writes.append(("HSET", keys.ACTIVE_AGENTS, agent_id, touched))
            *_, raw_tasks, raw_agents = await self.records.write_then_read(
                f"HSET {keys.ACTIVE_AGENTS}, HGETALL {keys.TASKS}, HGETALL {keys.ACTIVE_AGENTS}",
                writes,
                (keys.TASKS, keys.ACTIVE_AGENTS),
            )
            if touched is not None:
                self.records.remember(keys.ACTIVE_AGENTS, agent_id, touched)
        mentions, _ = self._mentions_in(texts, agent, agent_id)
        return WorkBundle(
            agent_id=agent_id,
            team=self._listed_agents(raw_agents, q.now_ms, q.limit),
            todo=self._task_listing(raw_tasks, "todo", None, q.limit),
            mine=self._task_listing(raw_tasks, None, agent_id, q.limit),
            recent_chat=RenderedList(reversed(recent), self.records.fragment),
            pending_mentions=mentions,
        )

    async def _recent(self, texts: list[str], total: int) -> tuple[list[str], list[GroupMessage]]:
        """/work's newest messages of the chat elements read, reading the whole window when
        unreadable messages at the head leave too few; (the elements read, the messages)."""
        recent = self.records.messages_of(texts[:_RECENT_FIRST], rules.RECENT_CHAT)
        if len(recent) < rules.RECENT_CHAT and total > _RECENT_FIRST:
            texts = await self.records.chat_texts(0, CHAT_SCAN - 1)
            recent = self.records.messages_of(texts, rules.RECENT_CHAT)
        return texts, recent

    def _touched(self, agent: Agent | None, agent_id: str, now_ms: int) -> str:
        """The agent's value after `/work`'s heartbeat: active, seen now."""
        seen = replace(agent or Agent(agent_id), status="active", last_seen=iso_from_ms(now_ms))
        return dumps(m.agent_to_legacy(seen))

    async def _work_in_one_round_trip(
        self, q: c.WorkQuery
    ) -> tuple[Agent | None, list[str], int, dict[str, str], dict[str, str]] | None:
        """/work's reads and heartbeat in one round trip while the agents hash is in memory:
        decided on the agent's value held there, the heartbeat written only if Redis still holds
        it (`LegacyRecords.touch_and_read`). None: take the two round trips (the cache is off,
        the value held is unreadable, or another writer changed it)."""
        known, raw = self.records.agent_hint(q.agent_id)
        if not known:
            return None
        agent = self.records.agent_of(q.agent_id, raw)
        if agent is None and raw is not None:
            return None
        touched = self._touched(agent, q.agent_id, q.now_ms)
        got = await self.records.touch_and_read(q.agent_id, _RECENT_FIRST, raw, touched)
        return None if got is None else (agent, *got)

    # -- zones ------------------------------------------------------------------------------------

    async def _zones(self) -> list[Zone]:
        zones = [z for _, z in await self.records.hgetall(keys.ZONES, m.zone_from_legacy)]
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
        zone = rules.new_zone(cmd)
        await self.records.hset(keys.ZONES, zone.zone_id, m.zone_to_legacy(zone))
        return zone

    async def release_zone(self, cmd: c.ReleaseZone) -> bool:
        """POST /zones release: delete only when the owner matches (compare-and-delete)."""
        zone, raw = await self.records.zone(cmd.zone_id)
        if zone is None or zone.owner != cmd.owner:
            return False
        return await self.records.cas(keys.ZONES, cmd.zone_id, raw, None)

    # -- claims -----------------------------------------------------------------------------------

    async def get_claim(self, what: str, now_ms: int) -> Claim | None:
        """GET /claims?what=: the DO claim of `what`, stale or not."""
        return await self.records.claim(what, now_ms)

    async def list_claims(self, q: c.ClaimQuery) -> list[Claim]:
        """GET /claims: one claim per `what`, newest first; stale ones only with includeStale."""
        raw = await self.records.hgetall_raw(keys.CLAIMS)
        groups = self.records.claims_by_what(raw.items(), q.now_ms).values()
        claims = [cl for cl in map(self.records.winner, groups) if q.include_stale or not cl.stale]
        claims.sort(key=lambda cl: cl.since, reverse=True)
        return claims[: q.limit]

    async def claim(self, cmd: c.ClaimWork) -> ClaimOutcome:
        """POST /claims claim: `rules.claim_work` over every legacy field of `what`.

        Taking over removes the other agents' (stale) fields for `what`, as the DO's takeover
        replaces its one row per `what` (and the legacy API's next GET would have HDELed them as
        stale): their holders' release then answers `success: false`, as from the actors.

        Atomic: the conflict check and the write run under WATCH of the claims hash, retried on
        contention, so two concurrent claims cannot both win (the legacy API's own writes abort
        the transaction too).
        """
        fld = keys.claim_field(cmd.by, cmd.what)

        async def body(pipe: Any) -> ClaimOutcome:
            entries = await self.records.claims_matching(pipe, cmd.what)
            group = self.records.claims_by_what(entries, cmd.now_ms).get(cmd.what, [])
            outcome = rules.claim_work([cl for _, cl in group], cmd)
            if outcome.conflict:
                return outcome
            existing = dict(group).get(fld)
            claim = outcome.claim
            value = m.claim_to_legacy(replace(claim, extra=existing.extra) if existing else claim)
            superseded = [f for f, cl in group if cl.by != cmd.by]  # all stale (no holders)
            pipe.multi()
            if superseded:
                _ = pipe.hdel(keys.CLAIMS, *superseded)
            _ = pipe.hset(keys.CLAIMS, fld, dumps(value))
            return outcome

        return await self.records.optimistic(f"CLAIM {cmd.what!r}", (keys.CLAIMS,), body)

    async def release_claim(self, cmd: c.ReleaseClaim) -> bool:
        """POST /claims release: HDEL of `{by}:{what}`."""
        # not retried: a repeat would report False for a claim it did release
        return await self.records.hdel(keys.CLAIMS, keys.claim_field(cmd.by, cmd.what), idempotent=False)

    # -- handoffs ---------------------------------------------------------------------------------

    async def get_handoff(self, handoff_id: str) -> Handoff | None:
        """GET /handoffs?id=."""
        h, _ = await self.records.handoff(handoff_id)
        return h

    async def list_handoffs(self, q: c.HandoffQuery) -> list[Handoff]:
        """GET /handoffs: `toAgent` also matches open ones (legacy `any`); newest first."""

        def keep(h: Handoff) -> bool:
            return (
                (q.to_agent is None or h.to_agent in (None, q.to_agent))
                and (q.from_agent is None or h.from_agent == q.from_agent)
                and (q.status is None or h.status == q.status)
            )

        found = await self.records.hgetall(keys.HANDOFFS, lambda _f, v: m.handoff_from_legacy(v))
        handoffs = [h for _, h in found if keep(h)]
        handoffs.sort(key=lambda h: h.created_at, reverse=True)
        return handoffs[: q.limit]

    async def create_handoff(self, cmd: c.CreateHandoff) -> Handoff:
        """POST /handoffs create: status `pending` (legacy `submitted`)."""
        h = rules.new_handoff(cmd)
        await self.records.hset(keys.HANDOFFS, h.id, m.handoff_to_legacy(h))
        return h

    async def _change_handoff(
        self, handoff_id: str, rule: Callable[[Handoff | None], HandoffOutcome]
    ) -> HandoffOutcome:
        """Read, decide (`rule`) and write one handoff atomically (compare-and-set, retried on a race)."""
        for _ in range(CAS_ATTEMPTS):
            h, raw = await self.records.handoff(handoff_id)
            if h is None and raw is not None:
                raise unreadable("Handoff", keys.HANDOFFS, handoff_id, handoffId=handoff_id)
            outcome = rule(h)
            if outcome.handoff is None:
                return outcome
            if await self.records.cas(
                keys.HANDOFFS, handoff_id, raw, dumps(m.handoff_to_legacy(outcome.handoff))
            ):
                return outcome
        raise StoreUnavailable(f"legacy store unavailable: handoff {handoff_id!r} too contended")

    async def claim_handoff(self, cmd: c.ClaimHandoff) -> HandoffOutcome:
        """POST /handoffs claim: only a `pending` (legacy `submitted`) handoff open to the agent."""
        return await self._change_handoff(cmd.handoff_id, lambda h: rules.claim_handoff(h, cmd))

    async def complete_handoff(self, cmd: c.CompleteHandoff) -> HandoffOutcome:
        """POST /handoffs complete: only by its claimant; legacy status becomes `integrated`."""
        return await self._change_handoff(cmd.handoff_id, lambda h: rules.complete_handoff(h, cmd))

    # -- checkpoints ------------------------------------------------------------------------------

    async def get_checkpoint(self, agent_id: str) -> Checkpoint | None:
        """GET /agent/<id>/checkpoint."""
        cp, _ = await self.records.checkpoint(agent_id)
        return cp

    async def save_checkpoint(self, cmd: c.SaveCheckpoint) -> None:
        """POST /checkpoint: summary and context kept when not given, arrays replaced, legacy-only
        properties (`currentTask`) carried over. An unreadable checkpoint is a 409, never overwritten.

        Decided on the value this process last saw (`LegacyRecords.hint`) and written with a
        compare-and-set: one round trip; when another writer changed it, decided again on what
        the compare-and-set found (the legacy API's HGET and HSET took no such care)."""
        agent_id = cmd.agent_id

        def decide(existing: Checkpoint | None) -> Write[None]:
            return Write(None, dumps(m.checkpoint_to_legacy(rules.save_checkpoint(existing, cmd))))

        await decide_on_hint(
            self.records,
            keys.CHECKPOINTS,
            agent_id,
            read=lambda: self.records.checkpoint(agent_id),
            parse=lambda raw: self.records.checkpoint_of(agent_id, raw),
            decide=decide,
            unreadable=lambda: unreadable("Checkpoint", keys.CHECKPOINTS, agent_id, agentId=agent_id),
            what=f"checkpoint {agent_id!r}",
            # safe to repeat: a repeat after a lost reply finds this write and decides again on it
            idempotent=True,
        )

    # -- direct messages --------------------------------------------------------------------------

    async def send_dm(self, cmd: c.SendDm) -> DirectMessage:
        """POST /agent/<to>/messages: append to the conversation (cap 500), update its record
        and both participants' lists. Idempotent: a message id already there is not added twice."""
        dm = rules.new_dm(cmd)
        to = cmd.agent_id

        def change(msgs: list[Any], conv: Json | None) -> tuple[list[Any], Json]:
            value, extra = self.records.dm_value(conv, dm, to)
            if not any(isinstance(x, dict) and x.get("id") == dm.id for x in msgs):
                msgs = [*msgs, value][-keys.DM_MAX :]
            record = self.records.conversation_record(conv, dm, to, extra, msgs)
            set_last_message(record, dm)
            return msgs, record

        await self.records.update_conversation(
            m.conversation_id(dm.from_agent, to), change, [dm.from_agent, to]
        )
        return dm

    async def list_dms(self, q: c.ListDms) -> list[DirectMessage]:
        """GET /agent/<id>/messages: the agent's inbox (messages to it), newest first."""
        inbox = await self.records.inbox(q.agent_id)
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
        for d in await self.records.inbox(cmd.agent_id):
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
                record["unreadCount"] = self.records.unread_counts(record, out)
                return out, record

            await self.records.update_conversation(conv_id, change, [])

    # -- memory -----------------------------------------------------------------------------------

    async def add_memory(self, cmd: c.AddMemory) -> Memory:
        """POST /agent/<id>/memory: a team-wide memory with `createdBy` = the agent, plus its
        lowercased tag index sets (idempotent, so retried)."""
        mem = rules.new_memory(cmd)
        text = dumps(m.memory_to_legacy(mem, cmd.agent_id))

        async def op(r: Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                _ = pipe.hset(keys.SHARED_MEMORY, mem.id, text)
                for tag in mem.tags:
                    if isinstance(tag, str):
                        _ = pipe.sadd(keys.memory_tag(tag), mem.id)
                await pipe.execute()

        await self.records.run(f"HSET {keys.SHARED_MEMORY}", op)
        return mem

    async def _memories_of(self, agent_id: str) -> list[Memory]:
        return self._memories_in(await self.records.hgetall_raw(keys.SHARED_MEMORY), agent_id)

    def _memories_in(self, raw: dict[str, str], agent_id: str) -> list[Memory]:
        """The agent's memories of the raw team-wide memory hash, newest first."""
        found = self.records.fields_of(keys.SHARED_MEMORY, raw, lambda _f, v: m.memory_from_legacy(v))
        mems = [mem for _, mem in found if m.memory_owner(mem) == agent_id]
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
        """/agent/<id>/state: checkpoint, unread DMs (newest first), the 10 latest memories; read
        in one round trip (`LegacyRecords.agent_state_values`)."""
        inbox, raw_memories, raw_cp = await self.records.agent_state_values(agent_id)
        unread = [d for d in inbox if not d.read][: self.limits.list_limit_max]
        memories = self._memories_in(self.records.as_dict(raw_memories), agent_id)[: rules.RECENT_MEMORIES]
        return AgentStateView(agent_id, self.records.checkpoint_of(agent_id, raw_cp), unread, memories)

    # -- locks ------------------------------------------------------------------------------------

    async def check_lock(self, resource_path: str, now_ms: int) -> LockCheck:
        """/check: an expired lock is removed here (as the legacy GET and the DO do), with a note;
        an unreadable value is reported and answered with the 409 /lock and /unlock give (it is
        neither free nor anybody's), and left in place.

        Decided first on the value this process last saw (`LegacyRecords.hint`: after
        `peek_lock`, what it just read), so removing an expired lock is one compare-and-set; a
        lost race decides again on what the compare-and-set found, and an answer that removes
        nothing is only given from a read of Redis."""

        def decide(lock: Lock | None) -> Answer[LockCheck] | Write[LockCheck]:
            check = rules.check_lock(lock, resource_path, now_ms)
            return Answer(check) if check.expired_now is None else Write(check, None)

        return await self._decide_on_lock(resource_path, decide)

    async def _decide_on_lock(self, path: str, decide: Callable[[Lock | None], Answer[R] | Write[R]]) -> R:
        """`decide_on_hint` on the lock field of `path` (check and acquire)."""
        return await decide_on_hint(
            self.records,
            keys.LOCKS,
            path,
            read=lambda: self.records.lock(path),
            parse=lambda raw: self.records.lock_of(path, raw),
            decide=decide,
            unreadable=lambda: _unreadable_lock(path),
            what=f"lock {path!r}",
        )

    async def peek_lock(self, resource_path: str, now_ms: int) -> LockCheck:
        """What `check_lock` answers, without its write: `expired_now` set means the check would
        remove an expired lock, and the caller runs `check_lock`, which removes it only if Redis
        still holds it. That is decided on the value this process last saw when that one has
        expired (no read: the compare-and-set confirms it), else on a read of Redis."""
        known, raw = self.records.hint(keys.LOCKS, resource_path)
        lock = self.records.lock_of(resource_path, raw) if known else None
        if lock is not None:
            guess = rules.check_lock(lock, resource_path, now_ms)
            if guess.expired_now is not None:
                return guess
        check, _ = await self._checked(resource_path, now_ms)
        return check

    async def _checked(self, resource_path: str, now_ms: int) -> tuple[LockCheck, str | None]:
        lock, raw = await self.records.lock(resource_path)
        if lock is None and raw is not None:
            raise _unreadable_lock(resource_path)
        return rules.check_lock(lock, resource_path, now_ms), raw

    async def acquire_lock(self, cmd: c.AcquireLock) -> LockAcquireOutcome:
        """/lock: `rules.acquire_lock`, persisted with a compare-and-set, so it is atomic against
        concurrent writers (this gateway's and the legacy API's HSETNX); a lost race decides
        again on what the compare-and-set found. Expiry is `expiresAt` inside the value, with no
        Redis TTL.

        The first decision is on the value this process last saw (`LegacyRecords.hint`), so an
        acquire is one round trip; a refusal (or an unreadable value) is only answered after a
        read of Redis confirms it."""
        path = cmd.resource_path

        def decide(cur: Lock | None) -> Answer[LockAcquireOutcome] | Write[LockAcquireOutcome]:
            outcome = rules.acquire_lock(cur, cmd)
            if not outcome.acquired:
                return Answer(outcome)
            return Write(outcome, dumps(m.lock_to_legacy(outcome.lock)))

        return await self._decide_on_lock(path, decide)

    async def release_lock(self, cmd: c.ReleaseLock) -> LockReleaseOutcome:
        """/unlock: `rules.release_lock`, persisted with a compare-and-delete, so a lock
        re-acquired meanwhile is never removed."""
        for _ in range(CAS_ATTEMPTS):
            cur, raw = await self.records.lock(cmd.resource_path)
            if raw is not None and cur is None:
                raise _unreadable_lock(cmd.resource_path)
            outcome = rules.release_lock(cur, cmd)
            if outcome.release_reason is None:  # none, or not the owner: nothing to remove
                return outcome
            if await self.records.cas(keys.LOCKS, cmd.resource_path, raw, None):
                return outcome
        raise StoreUnavailable(f"legacy store unavailable: lock {cmd.resource_path!r} too contended")

    async def lock_history(self, resource_path: str, limit: int) -> LockHistory:
        """/history: the current lock (even if expired); the legacy store keeps no history. An
        unreadable value is the same 409 as on the other lock routes."""
        lock, raw = await self.records.lock(resource_path)
        if lock is None and raw is not None:
            raise _unreadable_lock(resource_path)
        return LockHistory(resource_path, lock, [])
