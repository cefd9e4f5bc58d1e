"""A realistic legacy data set: Redis filled as the legacy agent-coord API would have left it.

`generate(redis, scale=N, seed=S)` writes every key family of legacy-redis.md sections 1-8 with
every value shape their writers produce, plus the quirks of section 10, so that the gateway, the
import tool and the checker are tested on what a real database holds:

* agents in all seven writer shapes of §1.1 (POST 7-field, status merge, agent-status update,
  rich PATCH default, sync, spawned without `lastSeen`, restored), presence words for some;
* chat past its 1,000 trim (system messages LPUSHed after the last user post, without LTRIM),
  image-only messages without a `message` key;
* DM conversations (one at the 500 cap, one just under it) with read/unread markers, `readAt`,
  inline attachments, and per-user conversation lists;
* tasks of every status and priority (incl. `review`, `critical`, a free string), assignee `""`,
  `null`, absent or set, orchestration subtasks without `assignee`;
* shared memories with their tag index sets (tags differing only in case share a set);
* checkpoints, some with a JSON-encoded `recentContext` string;
* live and expired locks; claims with stale entries and several claims for one `what`; zones;
  handoffs of every status (`toAgent` `any`, no `context` ...);
* the quirks: corrupt JSON values in several hashes, double-encoded values, the stale
  `agent-coord:agents` and `agent-coord:group-chat` keys, the phantom `resource-locks`, and a few
  legacy-only families (heartbeats, sessions, agent-memory, poll-tracking ...).

`scale` is the number of primary entities (agents, tasks, memories, claims ...), from a few dozen
for unit tests to 1,000,000 for benchmarks; the chat list is always a little over 1,000 (the
legacy cap) and the quirks are always present. Generation is seeded and reproducible: the same
seed and scale give the same keys and values, with timestamps relative to `base_ms` (default a
fixed instant, so runs are comparable). Writes stream through non-transactional pipelines in
batches, so memory stays bounded at any scale.
"""

from __future__ import annotations

import base64
import collections
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from gateway.domain.jscompat import iso_from_ms, to_base36
from gateway.legacy import keys
from gateway.legacy.client import Redis
from gateway.legacy.codec import dumps

__all__ = ["AGENT_SHAPES", "BASE_MS", "Plan", "SeedSummary", "generate", "plan"]

BASE_MS: Final = 1_764_792_000_000  # 2025-12-03T20:00:00.000Z, just after fd85d41
"""The default "now" of a generated data set; every timestamp lies before it (or, for live
locks, just after it)."""

AGENT_SHAPES: Final = ("post", "status", "agent-status", "patch-default", "sync", "spawn", "restored")

_MIN: Final = 60_000
_HOUR: Final = 60 * _MIN
_DAY: Final = 24 * _HOUR
_SPAN: Final = 30 * _DAY  # generated history covers the 30 days before base
_B36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"

_WORD_TEXT: Final = (
    "fix chat unread count redis lock handoff checkpoint memory zone claim refactor dashboard "
    "deploy review tests api dm presence heartbeat bundle migrate actor sqlite gateway worker "
    "schema index cache latency retry timeout webhook roadmap sync agent sprint"
)
_PATH_TEXT: Final = (
    "api/chat.ts api/dm.ts api/locks.ts api/claims.ts api/tasks.ts api/agents.ts src/tools/core.ts "
    "src/context-manager.ts web/dashboard.tsx cloudflare-do/src/index.ts api/memory.ts "
    "api/hot-start.ts"
)
_WORDS: Final = tuple(_WORD_TEXT.split())
_PATHS: Final = tuple(_PATH_TEXT.split())
_CATEGORIES: Final = ("discovery", "decision", "blocker", "learning", "pattern", "warning")
_TASK_STATUSES: Final = ("todo", "in-progress", "review", "done", "blocked", "completed", "paused")
_TASK_PRIORITIES: Final = ("low", "medium", "high", "critical", "urgent")
_HANDOFF_STATUSES: Final = ("submitted", "claimed", "in_review", "integrated", "rejected", "parked")
_HANDOFF_TYPES: Final = ("code", "patch", "test", "review", "other")
_HANDOFF_PRIORITIES: Final = ("low", "medium", "high", "urgent")
_AGENT_STATUSES: Final = ("active", "idle", "busy", "waiting", "inactive")
_HUMANS: Final = ("tyler", "phil", "ryan", "maria")
_CORRUPT_TEXTS: Final = (
    '{"id":"truncated","title":',
    "not json at all",
    "undefined",
    "[object Object]",
    '{"unterminated":"string}',
)
_TINY_PNG: Final = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()


@dataclass(frozen=True, slots=True)
class Plan:
    """How many entities of each family a scale produces."""

    agents: int
    tasks: int
    memories: int
    claims: int
    locks: int
    zones: int
    handoffs: int
    conversations: int
    chat: int

    @property
    def total(self) -> int:
        """The number of write units, for progress reporting."""
        return (
            self.agents
            + self.tasks
            + self.memories
            + self.claims
            + self.locks
            + self.zones
            + self.handoffs
            + self.conversations
            + self.chat
        )


def plan(scale: int) -> Plan:
    """Split `scale` primary entities over the families (each family has a floor for coverage)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    return Plan(
        agents=max(len(AGENT_SHAPES) * 2, scale * 4 // 100),
        tasks=max(len(_TASK_STATUSES) * 3, scale * 30 // 100),
        memories=max(12, scale * 25 // 100),
        claims=max(10, scale * 10 // 100),
        locks=max(8, scale * 8 // 100),
        zones=max(4, scale * 2 // 100),
        handoffs=max(len(_HANDOFF_STATUSES) * 2, scale * 10 // 100),
        conversations=max(4, scale * 2 // 100),
        # the legacy list is ~1000 after every user post; a few system posts go past the trim.
        chat=keys.CHAT_MAX + min(50, 3 + scale // 1000),
    )


@dataclass(slots=True)
class SeedSummary:
    """What a run wrote: values per family, plus the quirks, for the CLI and for tests."""

    seed: int
    scale: int
    base_ms: int
    families: collections.Counter[str] = field(default_factory=collections.Counter)
    agent_shapes: collections.Counter[str] = field(default_factory=collections.Counter)
    corrupt: list[tuple[str, str | None]] = field(default_factory=list)
    double_encoded: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {
            "seed": self.seed,
            "scale": self.scale,
            "base": iso_from_ms(self.base_ms),
            "families": dict(sorted(self.families.items())),
            "agentShapes": dict(sorted(self.agent_shapes.items())),
            "corrupt": len(self.corrupt),
            "doubleEncoded": len(self.double_encoded),
        }


ProgressFn = Callable[[int, int], None]


class _Writer:
    """Buffers writes and sends them in pipelines of about `batch` values (bounded memory)."""

    def __init__(self, redis: Redis, batch: int, summary: SeedSummary) -> None:
        self._redis = redis
        self._batch = batch
        self._summary = summary
        self._hashes: dict[str, dict[str, str]] = collections.defaultdict(dict)
        self._lists: dict[str, list[str]] = collections.defaultdict(list)
        self._sets: dict[str, set[str]] = collections.defaultdict(set)
        self._strings: list[tuple[str, str, int | None]] = []
        self._pending = 0

    async def hset(self, key: str, field_: str, value: str) -> None:
        self._hashes[key][field_] = value
        self._summary.families[key] += 1
        await self._count()

    async def rpush(self, key: str, value: str) -> None:
        """Append at the tail: pushing newest first gives the legacy newest-first list."""
        self._lists[key].append(value)
        self._summary.families[key] += 1
        await self._count()

    async def sadd(self, key: str, member: str) -> None:
        """Add to a set; the summary counts members under the family name (`...:tag:*`)."""
        if member not in self._sets[key]:
            self._sets[key].add(member)
            self._summary.families[keys.MEMORY_TAG_PREFIX + "*"] += 1
            await self._count()

    async def set(self, key: str, value: str, ex: int | None = None) -> None:
        self._strings.append((key, value, ex))
        self._summary.families[key] += 1
        await self._count()

    async def _count(self) -> None:
        self._pending += 1
        if self._pending >= self._batch:
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        pipe = self._redis.pipeline(transaction=False)
        # Pipeline methods only queue (their "awaitables" are the pipeline itself): `_ =`.
        for key, mapping in self._hashes.items():
            _ = pipe.hset(key, mapping=cast("Mapping[Any, Any]", mapping))
        for key, values in self._lists.items():
            _ = pipe.rpush(key, *values)
        for key, members in self._sets.items():
            _ = pipe.sadd(key, *sorted(members))
        for key, value, ex in self._strings:
            _ = pipe.set(key, value, ex=ex)
        await pipe.execute()
        self._hashes.clear()
        self._lists.clear()
        self._sets.clear()
        self._strings.clear()
        self._pending = 0


class _Gen:
    """The seeded source of every id, word and timestamp of one run."""

    def __init__(self, seed: int, base_ms: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        self.base = base_ms
        self._used_ms: set[int] = set()

    def r(self, n: int) -> str:
        """n random base-36 characters (the `Math.random().toString(36)` slices)."""
        return "".join(self.rng.choices(_B36, k=n))

    def iso(self, ms: int) -> str:
        return iso_from_ms(ms)

    def past(self, span: int = _SPAN) -> int:
        """A time in the `span` ms before base."""
        return self.base - self.rng.randrange(1, span)

    def unique_ms(self, ms: int) -> int:
        """`ms`, moved forward until no other id of this run used it (`task-{b36}` collides)."""
        while ms in self._used_ms:
            ms += 1
        self._used_ms.add(ms)
        return ms

    def text(self, lo: int = 3, hi: int = 10) -> str:
        return " ".join(self.rng.choices(_WORDS, k=self.rng.randint(lo, hi)))

    def pick(self, seq: tuple[str, ...] | list[str]) -> str:
        return seq[self.rng.randrange(len(seq))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


def _agent_ids(g: _Gen, n: int) -> list[str]:
    base = ["claude-code", "phil", "tyler", "cursor-1", "gemini", "codex"]
    return [base[i] if i < len(base) else f"agent-{i}-{g.r(3)}" for i in range(n)]


async def generate(
    redis: Redis,
    *,
    scale: int,
    seed: int = 0,
    base_ms: int = BASE_MS,
    flush: bool = False,
    batch: int = 1000,
    progress: ProgressFn | None = None,
) -> SeedSummary:
    """Fill `redis` with a legacy data set of `scale` entities; return what was written.

    `flush=True` empties the database first (FLUSHDB); otherwise keys are added and overwritten.
    `progress(done, total)` is called after each family part, for a progress indicator.
    """
    if flush:
        await redis.flushdb()
    summary = SeedSummary(seed=seed, scale=scale, base_ms=base_ms)
    counts = plan(scale)
    g = _Gen(seed, base_ms)
    w = _Writer(redis, batch, summary)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, counts.total)

    agents = _agent_ids(g, counts.agents)
    await _agents(g, w, summary, agents)
    tick(counts.agents)
    await _chat(g, w, agents, counts.chat)
    tick(counts.chat)
    await _tasks(g, w, agents, counts.tasks)
    tick(counts.tasks)
    await _dms(g, w, agents, counts.conversations)
    tick(counts.conversations)
    await _memories(g, w, agents, counts.memories)
    tick(counts.memories)
    await _checkpoints(g, w, agents)
    await _locks(g, w, agents, counts.locks)
    tick(counts.locks)
    await _claims(g, w, agents, counts.claims)
    tick(counts.claims)
    await _zones(g, w, agents, counts.zones)
    tick(counts.zones)
    await _handoffs(g, w, agents, counts.handoffs)
    tick(counts.handoffs)
    await _quirks(g, w, summary, agents)
    await w.flush()
    summary.families = collections.Counter({k: v for k, v in summary.families.items() if v})
    return summary


# --- agents (§1.1, §1.2) ---------------------------------------------------------------------------


def _agent_value(g: _Gen, shape: str, agent_id: str) -> dict[str, Any]:  # noqa: PLR0911 - one per shape
    seen = g.iso(g.past(2 * _HOUR) if g.chance(0.6) else g.past())
    task = g.text(2, 5) if g.chance(0.6) else ""
    post: dict[str, Any] = {
        "id": agent_id,
        "name": agent_id,
        "status": g.pick(_AGENT_STATUSES),
        "currentTask": task,
        "workingOn": g.pick(_PATHS) if g.chance(0.4) else "",
        "role": "agent",
        "lastSeen": seen,
    }
    if shape == "post":
        return post
    if shape == "status":
        merged = dict(post)
        merged |= {"status": g.pick(_AGENT_STATUSES), "roles": ["developer"] if g.chance(0.5) else []}
        if g.chance(0.5):
            merged["spawnedBy"] = "claude-code"
        merged["lastSeen"] = seen
        merged["createdAt"] = g.iso(g.past())
        return merged
    if shape == "agent-status":
        return post | {"status": g.pick(_AGENT_STATUSES), "currentTask": g.text(2, 4), "lastSeen": seen}
    if shape == "patch-default":
        created = g.iso(g.past())
        return {
            "id": agent_id,
            "name": agent_id,
            "version": 1 + g.rng.randrange(3),
            "role": "general",
            "specialty": ["redis"] if g.chance(0.5) else [],
            "status": "inactive",
            "currentTask": None,
            "createdAt": created,
            "lastSeen": seen,
            "metrics": {
                "tasksCompleted": 3,
                "tasksSucceeded": 2,
                "tasksFailed": 1,
                "successRate": 0.6667,
                "avgResponseTime": 1250.5,
                "totalResponseTime": 3751.5,
                "lastOptimized": None,
            },
            "memory": {"patterns": ["read before write"], "failures": [], "preferences": {"tone": "terse"}},
            "clusterProficiency": {"technical": 0.55, "product": 0.5},
            "previousNames": [],
        }
    if shape == "sync":
        return {"id": agent_id, "name": agent_id, "lastSeen": seen, "status": "active"}
    if shape == "spawn":
        value: dict[str, Any] = {
            "id": agent_id,
            "name": agent_id,
            "role": "developer",
            "task": g.text(3, 6),
        }
        if g.chance(0.7):
            value["parentAgent"] = "claude-code"
        value |= {"tools": ["read", "write"], "status": "queued", "createdAt": g.iso(g.past())}
        return value
    # restored: the original agent, then status, lastSeen, restoredAt.
    return post | {"status": "restored", "lastSeen": seen, "restoredAt": seen}


async def _agents(g: _Gen, w: _Writer, summary: SeedSummary, agents: list[str]) -> None:
    for i, agent_id in enumerate(agents):
        shape = AGENT_SHAPES[i % len(AGENT_SHAPES)]
        if shape == "spawn":
            agent_id = f"agent-{to_base36(g.past())}-{g.r(4)}"  # noqa: PLW2901 - spawn ids are their own
            agents[i] = agent_id
        value = _agent_value(g, shape, agent_id)
        await w.hset(keys.ACTIVE_AGENTS, agent_id, dumps(value))
        summary.agent_shapes[shape] += 1
        if shape == "post":  # only POST /api/agents writes presence
            await w.hset(keys.AGENT_PRESENCE, agent_id, "online" if g.chance(0.6) else "offline")


# --- chat (§2.1) -----------------------------------------------------------------------------------


def _chat_message(g: _Gen, ms: int, agents: list[str], *, system: bool) -> dict[str, Any]:
    msg_id = f"{to_base36(ms)}-{g.r(6)}"
    if system:
        who = g.pick(agents)
        text = g.pick(
            [
                f"[agent-joined] 👋 **{who}** joined the network",
                f"[agent-offline] 👋 **{who}** went offline (last seen: {g.iso(ms - 8 * _MIN)})",
                f'📋 **Task created:** "{g.text(2, 4)}" by @{who}',
                f"🔒 **{who}** claimed `{g.pick(_PATHS)}` - Editing",
                '✅ **Task completed:** "ship it" ',
            ]
        )
        author = "🤖 system" if text.startswith("[agent-") else "system"
        return {
            "id": msg_id,
            "author": author,
            "authorType": "system",
            "message": text,
            "timestamp": g.iso(ms),
            "reactions": [],
        }
    author = g.pick(agents) if g.chance(0.8) else g.pick(_HUMANS)
    msg: dict[str, Any] = {
        "id": msg_id,
        "author": author,
        "authorType": "human" if author in _HUMANS else "agent",
    }
    image_only = g.chance(0.01)
    if not image_only:
        msg["message"] = g.text(3, 20)
    msg |= {"timestamp": g.iso(ms), "reactions": []}
    if image_only or g.chance(0.005):
        msg |= {"imageData": _TINY_PNG, "imageName": "screenshot.png" if g.chance(0.5) else "image"}
    return msg


async def _chat(g: _Gen, w: _Writer, agents: list[str], total: int) -> None:
    overshoot = total - keys.CHAT_MAX
    # Chronological times, 1..3 minutes apart, ending just before base; pushed newest first.
    times: list[int] = []
    t = g.base - 1000
    for _ in range(total):
        times.append(t)
        t -= _MIN + g.rng.randrange(2 * _MIN)
    for i, ms in enumerate(times):  # newest first
        system = i < overshoot or g.chance(0.1)
        await w.rpush(keys.MESSAGES, dumps(_chat_message(g, ms, agents, system=system)))


# --- tasks (§3.1) ----------------------------------------------------------------------------------


async def _tasks(g: _Gen, w: _Writer, agents: list[str], n: int) -> None:
    orch_every = 10
    for i in range(n):
        created = g.unique_ms(g.past())
        status = _TASK_STATUSES[i % len(_TASK_STATUSES)]
        priority = _TASK_PRIORITIES[i % len(_TASK_PRIORITIES)]
        if i % orch_every == orch_every - 1:
            orch = f"orch-{to_base36(created)}-{g.r(4)}"
            task_id = f"{orch}-sub-{i % 3}"
            task: dict[str, Any] = {
                "id": task_id,
                "title": g.text(2, 6),
                "description": g.text(5, 12),
                "status": "todo",
                "priority": "high",
                "createdBy": "orchestrator",
                "createdAt": g.iso(created),
                "updatedAt": g.iso(created),
                "tags": ["orchestration", orch],
                "parentOrchestration": orch,
            }  # no assignee at all
        else:
            task_id = f"task-{to_base36(created)}"
            task = {"id": task_id, "title": g.text(2, 6)}
            if g.chance(0.6):
                task["description"] = g.text(5, 15)
            assignee_kind = (i // len(_TASK_STATUSES)) % 4  # each status meets each assignee form
            task |= {
                "status": "todo",
                "priority": priority,
                "assignee": ["", None, g.pick(agents), ""][assignee_kind],
                "createdBy": g.pick(agents) if g.chance(0.5) else g.pick(_HUMANS),
                "createdAt": g.iso(created),
                "updatedAt": g.iso(created),
                "tags": g.rng.sample(_WORDS, g.rng.randrange(3)),
            }
            updated = created + g.rng.randrange(1, _DAY)
            if status != "todo":
                if not task["assignee"] and status != "blocked":
                    task["assignee"] = g.pick(agents)
                task["status"] = status
                task["pickedUpAt"] = g.iso(created + 1000)
                task["updatedAt"] = g.iso(updated)
            if status in ("done", "completed"):
                task["completedAt"] = g.iso(updated)
            if status == "blocked":
                task["blockedReason"] = "Blocked by agent" if g.chance(0.5) else g.text(3, 8)
            if status == "todo" and task["assignee"] and g.chance(0.3):  # released: assignee ""
                task["assignee"] = ""
        await w.hset(keys.TASKS, task_id, dumps(task))


# --- direct messages (§4) --------------------------------------------------------------------------


def _attachment(g: _Gen) -> dict[str, Any]:
    data = base64.b64encode(g.rng.randbytes(48)).decode()
    att: dict[str, Any] = {
        "id": f"att-{g.r(8)}",
        "type": "image" if g.chance(0.5) else "file",
        "name": g.pick(["shot.png", "log.txt", "diff.patch"]),
        "mimeType": "image/png",
        "size": 48,
        "data": data,
    }
    if att["type"] == "image":
        att["thumbnail"] = data[:16]
    return att


async def _dms(g: _Gen, w: _Writer, agents: list[str], n: int) -> None:
    people = agents + list(_HUMANS)
    user_convos: dict[str, list[str]] = collections.defaultdict(list)
    seen_pairs: set[tuple[str, str]] = set()
    i = 0
    while len(seen_pairs) < n:
        a, b = g.pick(people), g.pick(people)
        pair = (min(a, b), max(a, b))
        if a == b or pair in seen_pairs:
            i += 1
            if i > 100 * n:
                break
            continue
        seen_pairs.add(pair)
    for ci, (low, high) in enumerate(sorted(seen_pairs)):
        conv_id = f"dm-{low}-{high}"
        # one conversation exactly at the cap, one just under it, the rest short.
        size = {0: keys.DM_MAX, 1: keys.DM_MAX - 3}.get(ci, 1 + g.rng.randrange(40))
        first_from = g.pick([low, high])
        types = {p: ("human" if p in _HUMANS else "agent") for p in (first_from, low, high)}
        start = g.past()
        msgs: list[dict[str, Any]] = []
        unread = {low: 0, high: 0}
        t = start
        for mi in range(size):
            frm = first_from if mi % 2 == 0 else (high if first_from == low else low)
            to = high if frm == low else low
            t += g.rng.randrange(1000, 10 * _MIN)
            msg: dict[str, Any] = {
                "id": f"dm-{to_base36(t)}-{g.r(6)}",
                "conversationId": conv_id,
                "from": frm,
                "fromType": types[frm],
                "to": to,
                "toType": types[to],
                "message": g.text(2, 15),
            }
            if g.chance(0.03):
                msg["attachments"] = [_attachment(g)]
                if g.chance(0.5):
                    msg["message"] = ""
            msg["timestamp"] = g.iso(t)
            is_read = mi < size - 4 or g.chance(0.3)
            msg["read"] = is_read
            if is_read:
                msg["readAt"] = g.iso(t + 5000)
            else:
                unread[to] += 1
            msgs.append(msg)
        last = msgs[-1]
        preview = (
            last["message"][:100]
            if last["message"]
            else last.get("attachments", [{}])[0].get("name", "Attachment")
        )
        convo = {
            "id": conv_id,
            "participants": [low, high],
            "participantTypes": {first_from: types[first_from]} | {p: types[p] for p in (low, high)},
            "unreadCount": unread,
            "createdAt": g.iso(start),
            "updatedAt": last["timestamp"],
            "lastMessage": {"preview": preview, "timestamp": last["timestamp"], "from": last["from"]},
        }
        await w.hset(keys.DM_CONVOS, conv_id, dumps(convo))
        await w.hset(keys.DM_MESSAGES, conv_id, dumps(msgs))
        for p in (low, high):
            user_convos[p].append(conv_id)
    for user, convs in sorted(user_convos.items()):
        await w.hset(keys.DM_USER_CONVOS, user, dumps(convs))


# --- memory (§5.1, §5.2) ---------------------------------------------------------------------------


async def _memories(g: _Gen, w: _Writer, agents: list[str], n: int) -> None:
    for _ in range(n):
        created = g.past()
        mem_id = f"mem-{to_base36(created)}-{g.r(6)}"
        tags = g.rng.sample(_WORDS, g.rng.randrange(4))
        if tags and g.chance(0.2):
            tags[0] = tags[0].upper()  # case is kept; the index lowercases
        mem: dict[str, Any] = {
            "id": mem_id,
            "category": g.pick(_CATEGORIES),
            "content": g.text(5, 25),
            "tags": tags,
            "createdBy": g.pick(agents) if g.chance(0.9) else "unknown",
            "createdAt": g.iso(created),
            "references": 0,
        }
        if g.chance(0.3):  # read by id: references bumped, lastRecalled set
            mem["references"] = 1 + g.rng.randrange(9)
            mem["lastRecalled"] = g.iso(created + g.rng.randrange(1, _DAY))
        await w.hset(keys.SHARED_MEMORY, mem_id, dumps(mem))
        for tag in tags:
            await w.sadd(keys.memory_tag(tag), mem_id)


# --- checkpoints (§6.1) ----------------------------------------------------------------------------


async def _checkpoints(g: _Gen, w: _Writer, agents: list[str]) -> None:
    for i, agent_id in enumerate(agents[: max(3, len(agents) // 2)]):
        cp: dict[str, Any] = {"agentId": agent_id}
        if i % 4 != 3:  # noqa: PLR2004 - every fourth checkpoint has no summary
            cp["conversationSummary"] = g.text(5, 20)
        if i % 3 == 0:
            cp["currentTask"] = f"task-{to_base36(g.past())}"
        if i % 2 == 0:
            cp["pendingWork"] = [g.text(2, 5) for _ in range(g.rng.randrange(4))]
        if i % 3 == 1:  # context-manager.ts: a JSON document encoded into the string field
            cp["recentContext"] = dumps(
                {
                    "version": 2,
                    "currentFocus": g.text(2, 5),
                    "recentDecisions": [g.text(3, 6)],
                    "currentBlockers": [],
                    "knownAgents": agents[:3],
                    "activeClaims": [g.pick(_PATHS)],
                    "contextItems": [],
                }
            )
        elif i % 3 == 2:  # noqa: PLR2004 - every third checkpoint has a plain-text context
            cp["recentContext"] = g.text(4, 10)
        cp["checkpointAt"] = g.iso(g.past())
        await w.hset(keys.CHECKPOINTS, agent_id, dumps(cp))


# --- locks, claims, zones, handoffs (§7.1, §8) -----------------------------------------------------


async def _locks(g: _Gen, w: _Writer, agents: list[str], n: int) -> None:
    for i in range(n):
        path = f"{g.pick(_PATHS)}#{i}" if i >= len(_PATHS) else _PATHS[i]
        if i % 2 == 0:  # live at base: acquired under 10 min ago (or refreshed)
            locked = g.base - g.rng.randrange(1, 9 * _MIN)
            expires = locked + 10 * _MIN if i % 4 == 0 else g.base + g.rng.randrange(1, 10 * _MIN)
        else:  # expired, not yet cleaned up
            locked = g.past()
            expires = locked + 10 * _MIN
            expires = min(expires, g.base - 1)
        lock: dict[str, Any] = {"resourcePath": path, "lockedBy": g.pick(agents)}
        if g.chance(0.6):
            lock["reason"] = g.text(2, 5)
        lock |= {"lockedAt": g.iso(locked), "expiresAt": g.iso(expires)}
        await w.hset(keys.LOCKS, path, dumps(lock))


async def _claims(g: _Gen, w: _Writer, agents: list[str], n: int) -> None:
    for i in range(n):
        what = f"{g.pick(_PATHS)}:{i // 3}" if i >= len(_PATHS) else _PATHS[i]
        by = g.pick(agents)
        stale = i % 3 == 1
        since = g.base - (g.rng.randrange(31 * _MIN, 4 * _HOUR) if stale else g.rng.randrange(1, 29 * _MIN))
        claim = {
            "what": what,
            "by": by,
            "description": "Editing file" if g.chance(0.4) else g.text(2, 6),
            "since": g.iso(since),
            "stale": False,
        }
        await w.hset(keys.CLAIMS, keys.claim_field(by, what), dumps(claim))
        if i % 5 == 0:  # a second agent on the same `what`, after the first went stale
            other = g.pick([a for a in agents if a != by])
            older = g.base - g.rng.randrange(40 * _MIN, 3 * _HOUR)
            conflict = {
                "what": what,
                "by": other,
                "description": "Editing file",
                "since": g.iso(older),
                "stale": False,
            }
            await w.hset(keys.CLAIMS, keys.claim_field(other, what), dumps(conflict))


async def _zones(g: _Gen, w: _Writer, agents: list[str], n: int) -> None:
    roots = ("web/", "api/", "src/tools/", "cloudflare-do/", "docs/", "scripts/")
    for i in range(n):
        zone_id = roots[i].strip("/").replace("/", "-") if i < len(roots) else f"zone-{i}"
        zone: dict[str, Any] = {
            "zoneId": zone_id,
            "owner": g.pick(agents),
            "path": roots[i % len(roots)] + ("" if i < len(roots) else f"part{i}/"),
        }
        if g.chance(0.6):
            zone["description"] = g.text(2, 5)
        zone["createdAt"] = g.iso(g.past())
        await w.hset(keys.ZONES, zone_id, dumps(zone))


async def _handoffs(g: _Gen, w: _Writer, agents: list[str], n: int) -> None:
    for i in range(n):
        created = g.past()
        status = _HANDOFF_STATUSES[i % len(_HANDOFF_STATUSES)]
        ho: dict[str, Any] = {"id": f"ho-{to_base36(created)}-{g.r(6)}"}
        if g.chance(0.4):
            ho["taskId"] = f"task-{to_base36(g.past())}"
        ho |= {
            "fromAgent": g.pick(agents),
            "toAgent": ["claude-code", "any", g.pick(agents)][i % 3],
            "type": g.pick(_HANDOFF_TYPES),
            "status": "submitted",
            "title": g.text(2, 6),
        }
        if g.chance(0.5):
            ho["description"] = g.text(4, 12)
        if g.chance(0.3):
            ho["code"] = "export const x = 1;\n"
        if g.chance(0.4):
            ho["filePath"] = g.pick(_PATHS)
        if g.chance(0.2):
            ho["tests"] = "npm test"
        if i % 4 != 0:  # a quarter have no context at all
            ho["context"] = g.text(5, 15)
        ho |= {
            "priority": _HANDOFF_PRIORITIES[i % len(_HANDOFF_PRIORITIES)],
            "createdAt": g.iso(created),
            "updatedAt": g.iso(created),
        }
        later = g.iso(created + g.rng.randrange(1, _DAY))
        if status != "submitted":
            ho["status"] = status
            ho["updatedAt"] = later
        if status in ("claimed", "in_review", "integrated"):
            ho["claimedBy"] = g.pick(agents)
            ho["claimedAt"] = later
        if status in ("integrated", "rejected"):
            ho["completedAt"] = later
        if status == "rejected" or g.chance(0.1):
            ho["feedback"] = g.text(3, 8)
        await w.hset(keys.HANDOFFS, ho["id"], dumps(ho))


# --- quirks and legacy-only families (§1.3, §1.4, §2.3, §5.3, §6.2, §6.3, §7.2, §10, §11) --------


def _quirk_targets(g: _Gen) -> Iterator[tuple[str, str]]:
    """(key, field) pairs that receive a corrupt value."""
    yield keys.ACTIVE_AGENTS, "corrupt-agent"
    yield keys.TASKS, f"task-{to_base36(g.past())}x"
    yield keys.SHARED_MEMORY, f"mem-{to_base36(g.past())}-corrupt"
    yield keys.CLAIMS, "ghost:api/corrupt.ts"
    yield keys.LOCKS, "api/corrupt-lock.ts"
    yield keys.HANDOFFS, f"ho-{to_base36(g.past())}-corrupt"
    yield keys.CHECKPOINTS, "corrupt-checkpoint-agent"
    yield keys.ZONES, "corrupt-zone"
    yield keys.DM_MESSAGES, "dm-corrupt-a-corrupt-b"


async def _quirks(g: _Gen, w: _Writer, summary: SeedSummary, agents: list[str]) -> None:
    for n, (key, field_) in enumerate(_quirk_targets(g)):
        await w.hset(key, field_, _CORRUPT_TEXTS[n % len(_CORRUPT_TEXTS)])
        summary.corrupt.append((key, field_))
    await w.rpush(keys.MESSAGES, "{corrupt chat message")  # the oldest end of the list
    summary.corrupt.append((keys.MESSAGES, None))
    await w.hset(keys.AGENT_PRESENCE, "corrupt-presence", "maybe")
    summary.corrupt.append((keys.AGENT_PRESENCE, "corrupt-presence"))

    # Double-encoded whole values (a JSON string holding JSON): legacy readers accept them.
    seen = g.iso(g.base - 3 * _MIN)
    agent = {
        "id": "double-agent",
        "name": "double-agent",
        "status": "active",
        "currentTask": "",
        "workingOn": "",
        "role": "agent",
        "lastSeen": seen,
    }
    await w.hset(keys.ACTIVE_AGENTS, "double-agent", dumps(dumps(agent)))
    summary.double_encoded.append((keys.ACTIVE_AGENTS, "double-agent"))
    summary.agent_shapes["post"] += 1
    created = g.unique_ms(g.past())
    task_id = f"task-{to_base36(created)}"
    task = {
        "id": task_id,
        "title": "double encoded task",
        "status": "todo",
        "priority": "medium",
        "assignee": "",
        "createdBy": "tyler",
        "createdAt": g.iso(created),
        "updatedAt": g.iso(created),
        "tags": [],
    }
    await w.hset(keys.TASKS, task_id, dumps(dumps(task)))
    summary.double_encoded.append((keys.TASKS, task_id))
    mem_id = f"mem-{to_base36(created)}-dbl000"
    mem = {
        "id": mem_id,
        "category": "warning",
        "content": "Upstash hgetall auto-parses JSON",
        "tags": ["redis"],
        "createdBy": "phil",
        "createdAt": g.iso(created),
        "references": 0,
    }
    await w.hset(keys.SHARED_MEMORY, mem_id, dumps(dumps(mem)))
    await w.sadd(keys.memory_tag("redis"), mem_id)
    summary.double_encoded.append((keys.SHARED_MEMORY, mem_id))

    # The stale registry and chat list, the phantom lock table (never the truth).
    for agent_id in agents[:3]:
        stale_agent = {"id": agent_id, "name": agent_id, "status": "active", "lastSeen": g.iso(g.past())}
        await w.hset(keys.STALE_AGENTS, agent_id, dumps(stale_agent))
    for _ in range(5):
        ms = g.past()
        old = {
            "id": f"{to_base36(ms)}-{g.r(6)}",
            "author": g.pick(agents),
            "authorType": "agent",
            "message": "old chat key",
            "timestamp": g.iso(ms),
            "reactions": [],
        }
        await w.rpush(keys.STALE_GROUP_CHAT, dumps(old))
    phantom = {"lockedBy": agents[0], "lockedAt": g.iso(g.past())}
    await w.hset(keys.STALE_RESOURCE_LOCKS, "src/phantom.ts", dumps(phantom))

    # A few other legacy-only families, so tools see them and report them as not migrated.
    hb_agent = agents[0]
    heartbeat = {"agentId": hb_agent, "status": "busy", "timestamp": seen, "sessionHealth": "healthy"}
    await w.hset(keys.PREFIX + "heartbeats", hb_agent, dumps(heartbeat))
    history = {
        "agentId": hb_agent,
        "events": [{"type": "online", "timestamp": seen, "details": "Agent came online"}],
    }
    await w.hset(keys.PREFIX + "heartbeat-history", hb_agent, dumps(history))
    session = {
        "agentId": hb_agent,
        "role": "developer",
        "startedAt": seen,
        "lastActivity": seen,
        "rulesVersion": "1.0.0",
        "rulesAcknowledged": False,
        "violationCount": 0,
    }
    await w.hset(keys.PREFIX + "sessions", hb_agent, dumps(session))
    learning = {
        "agentId": hb_agent,
        "patterns": [{"pattern": "test first", "context": "redis", "successCount": 2, "lastUsed": seen}],
        "antiPatterns": [],
        "clusterProficiency": {"technical": {"level": 0.55, "tasksCompleted": 1, "lastUpdated": seen}},
        "mentors": [],
        "version": 1,
    }
    await w.hset(keys.PREFIX + "agent-memory", hb_agent, dumps(learning))
    await w.set(keys.PREFIX + f"poll-tracking:{hb_agent}", str(g.base), ex=3600)
