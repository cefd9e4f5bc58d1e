"""Helpers of the phase tests: a gateway client, and the two stores read directly, behind its back.

`LegacyView` reads the legacy Redis keys with redis-py; `ActorView` opens the actor SQLite files
with sqlite3 (committed data only, as another process would see it). Both bring every entity,
whole, to its canonical form through the one mapping (`gateway.testing.snapshots`), so a test
can say "both stores hold the same entities" as `legacy.snapshot() == actors.snapshot()`, and
also look at each side's raw layout.

`write_everything` performs every kind of write the DO API has, once, and returns what the
gateway acknowledged.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from aiohttp import ClientSession, ClientTimeout
from yarl import URL

from gateway.actors.naming import ActorRef, actor_path
from gateway.legacy import keys
from gateway.testing.snapshots import Snapshot, actor_snapshot, legacy_snapshot, shard_rows

Json = dict[str, Any]


class Client:
    """A JSON client of one gateway on 127.0.0.1 that never rewrites the request path."""

    def __init__(self, base_url: str, session: ClientSession, admin_token: str | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.session = session
        self.admin_token = admin_token

    def url(self, path: str) -> URL:
        return URL(self.base + path, encoded=True)

    async def call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Status and parsed JSON body (None for an empty body)."""
        data = None if body is None else orjson.dumps(body)
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        async with self.session.request(method, self.url(path), data=data, headers=hdrs) as resp:
            raw = await resp.read()
            return resp.status, (orjson.loads(raw) if raw else None)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON body of a request that must answer 200."""
        status, data = await self.call(method, path, body)
        assert status == 200, f"{method} {path} -> {status} {data}"
        return data

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """An admin API call with the bearer token."""
        return await self.call(method, path, body, headers={"Authorization": f"Bearer {self.admin_token}"})

    async def status(self) -> Json:
        """`GET /admin/status`."""
        code, body = await self.admin("GET", "/admin/status")
        assert code == 200, body
        return dict(body)

    async def set_phase(self, phase: str, reason: str = "test", *, force: bool = False) -> tuple[int, Any]:
        """`POST /admin/phase`."""
        return await self.admin("POST", "/admin/phase", {"phase": phase, "reason": reason, "force": force})

    async def ws(self, path: str) -> Any:
        return await self.session.ws_connect(self.url(path))


def new_session() -> ClientSession:
    """A client session with a bounded total timeout per request."""
    return ClientSession(timeout=ClientTimeout(total=30))


async def poll(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 20.0, what: str = "condition"
) -> None:
    """Wait (bounded) until `check()` is true: for a real process or the repair worker."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def queue_drained(client: Client, timeout_s: float = 20.0) -> None:
    """Wait until the gateway's repair queue is empty."""

    async def empty() -> bool:
        return int((await client.status())["repairQueue"]["depth"]) == 0

    await poll(empty, timeout_s=timeout_s, what="the repair queue to drain")


# -- the legacy Redis, read directly ---------------------------------------------------------------


class LegacyView:
    """The legacy keys as Redis holds them (redis-py, synchronous: a quick loopback read)."""

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)

    def close(self) -> None:
        self.r.close()

    def keys(self) -> list[str]:
        return sorted(str(k) for k in self.r.scan_iter(match=keys.PREFIX + "*", count=1000))

    def hash(self, key: str) -> dict[str, Any]:
        """A hash's fields and their decoded JSON values."""
        found: dict[str, str] = self.r.hgetall(key)  # type: ignore[assignment]
        return {f: orjson.loads(v) for f, v in found.items()}

    def chat(self) -> list[Json]:
        """The chat list, newest first (the legacy order)."""
        found: list[str] = self.r.lrange(keys.MESSAGES, 0, -1)  # type: ignore[assignment]
        return [orjson.loads(v) for v in found]

    def dms(self) -> list[Json]:
        """Every message of every conversation."""
        return [m for conv in self.hash(keys.DM_MESSAGES).values() for m in conv]

    def snapshot(self) -> Snapshot:
        """Every entity, whole, through the mapping (`gateway.testing.snapshots`)."""
        return legacy_snapshot(self.r)


# -- the actor SQLite files, read directly ---------------------------------------------------------


@dataclass
class ActorView:
    """The actor databases under `data_dir`, opened from outside the gateway (committed data only)."""

    data_dir: Path

    def rows(self, ref: ActorRef, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """The rows of `sql` in the actor's database; none when the actor has no database."""
        path = actor_path(self.data_dir, ref)
        if not path.exists():
            return []
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5, isolation_level=None)
        try:
            try:
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
            except sqlite3.OperationalError as e:
                if "no such table" in str(e):
                    return []
                raise
        finally:
            conn.close()

    def snapshot(self) -> Snapshot:
        """Every entity, whole, through the row mappers, in the form of `LegacyView.snapshot`."""
        return actor_snapshot(self.data_dir)

    def lock_history(self, path: str) -> list[tuple[Any, ...]]:
        """The lock's history rows (in its shard), oldest first."""
        rows = shard_rows(
            self.data_dir, "lock", "lock_history", "locked_by, locked_at, released_at, release_reason"
        )
        return sorted((tuple(r[1:]) for r in rows if r[0] == path), key=lambda r: str(r[1]))


# -- one of every write ----------------------------------------------------------------------------

LOCK_KEPT = "src/a.ts"
LOCK_GONE = "src/b.ts"
AGENTS = ["alice", "bob"]
LOCKS = [LOCK_KEPT, LOCK_GONE]


def lock_url(path: str, action: str) -> str:
    return f"/lock/{path.replace('/', '%2F')}/{action}"


@dataclass
class Written:
    """What `write_everything` was told, by the gateway, it had done."""

    chat_id: str = ""
    task_id: str = ""
    handoff_done: str = ""
    handoff_open: str = ""
    dm_read: str = ""
    dm_unread: str = ""
    memory_id: str = ""
    lock: Json = field(default_factory=dict)
    checkpoint_at: str = ""


async def write_everything(c: Client) -> Written:
    """Every kind of DO write, once: register, chat, task create + update, zone claim/release,
    claim/release, handoff create/claim/complete, checkpoint, DM send + mark-read, memory, locks."""
    w = Written()
    await c.ok(
        "POST",
        "/coordinator/agents",
        {"agentId": "alice", "status": "active", "currentTask": "migrate", "capabilities": ["python"]},
    )
    await c.ok("POST", "/coordinator/agents", {"agentId": "bob", "status": "idle"})
    w.chat_id = (await c.ok("POST", "/coordinator/chat", {"author": "alice", "message": "hi @bob"}))[
        "message"
    ]["id"]
    task = (await c.ok("POST", "/coordinator/tasks", {"title": "Port the router", "createdBy": "alice"}))[
        "task"
    ]
    w.task_id = task["id"]
    await c.ok("PATCH", "/coordinator/tasks", {"id": w.task_id, "status": "in-progress", "assignee": "bob"})
    for zone in ("z-kept", "z-gone"):
        await c.ok(
            "POST",
            "/coordinator/zones",
            {"action": "claim", "zoneId": zone, "path": f"{zone}/", "owner": "alice"},
        )
    assert (
        await c.ok("POST", "/coordinator/zones", {"action": "release", "zoneId": "z-gone", "owner": "alice"})
    )["success"]
    await c.ok("POST", "/coordinator/claims", {"action": "claim", "what": "w-kept", "by": "alice"})
    await c.ok("POST", "/coordinator/claims", {"action": "claim", "what": "w-gone", "by": "bob"})
    assert (await c.ok("POST", "/coordinator/claims", {"action": "release", "what": "w-gone", "by": "bob"}))[
        "success"
    ]
    body = {"fromAgent": "alice", "toAgent": "bob", "title": "Finish it", "context": "half done"}
    w.handoff_done = (await c.ok("POST", "/coordinator/handoffs", body))["handoff"]["id"]
    w.handoff_open = (await c.ok("POST", "/coordinator/handoffs", {**body, "toAgent": None}))["handoff"]["id"]
    for action in ("claim", "complete"):
        await c.ok(
            "POST", "/coordinator/handoffs", {"action": action, "handoffId": w.handoff_done, "agentId": "bob"}
        )
    await c.ok(
        "POST",
        "/agent/alice/checkpoint",
        {"conversationSummary": "ported half", "pendingWork": ["tests"], "filesEdited": ["router.py"]},
    )
    w.dm_read = (await c.ok("POST", "/agent/bob/messages", {"from": "alice", "message": "read me"}))[
        "message"
    ]["id"]
    w.dm_unread = (await c.ok("POST", "/agent/bob/messages", {"from": "alice", "message": "later"}))[
        "message"
    ]["id"]
    await c.ok("PATCH", "/agent/bob/messages", {"messageIds": [w.dm_read]})
    mem = await c.ok(
        "POST", "/agent/alice/memory", {"category": "learning", "content": "WAL", "tags": ["sqlite"]}
    )
    w.memory_id = mem["memory"]["id"]
    w.lock = (await c.ok("POST", lock_url(LOCK_KEPT, "lock"), {"agentId": "alice", "reason": "edit"}))["lock"]
    await c.ok("POST", lock_url(LOCK_GONE, "lock"), {"agentId": "bob"})
    assert (await c.ok("POST", lock_url(LOCK_GONE, "unlock"), {"agentId": "bob"}))[
        "message"
    ] == "Lock released"
    return w
