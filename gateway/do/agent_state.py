"""The agent actor (upstream `AgentState`, one per agent id): checkpoint, DMs, memory, socket.

Tables are upstream's core tables (do-api.md 4.1), kept in the shard files through `ctx.tables`
(every row carries the agent id; see gateway/actors/tables.py). Listings break timestamp ties
by `rowid` (insertion order).
Upstream kept one socket reference in memory (lost on hibernation, and only the latest socket);
here every socket of the agent is held by the host, so a DM reaches all of them, always.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.actors import Actor, ActorContext, HostedSocket, TableSpec
from gateway.do import progress_tables
from gateway.do._sql import EXTRA_TABLE, dumps, get_extra, loads_list, put_extra
from gateway.domain import commands as c
from gateway.domain import frames, rules
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.model import AgentStateView, Checkpoint, DirectMessage, Memory
from gateway.settings import LimitSettings

__all__ = [
    "CHECKPOINT_COLS",
    "DM_COLS",
    "MEM_COLS",
    "TABLES",
    "AgentStateActor",
    "checkpoint_from_row",
    "dm_from_row",
    "memory_from_row",
]

TABLES = (
    TableSpec("agent_meta", "key TEXT NOT NULL, value TEXT", key=("key",)),
    TableSpec(
        "checkpoint",
        "id INTEGER NOT NULL DEFAULT 1 CHECK (id = 1), conversation_summary TEXT, "
        "accomplishments TEXT DEFAULT '[]', pending_work TEXT DEFAULT '[]', recent_context TEXT, "
        "files_edited TEXT DEFAULT '[]', checkpoint_at TEXT",
        key=("id",),
    ),
    TableSpec(
        "messages",
        "id TEXT NOT NULL, from_agent TEXT NOT NULL, type TEXT DEFAULT 'note', message TEXT NOT NULL, "
        "timestamp TEXT NOT NULL, read INTEGER DEFAULT 0",
        key=("id",),
        indexes=(("read",),),
    ),
    TableSpec(
        "memory",
        "id TEXT NOT NULL, category TEXT NOT NULL, content TEXT NOT NULL, tags TEXT DEFAULT '[]', "
        "created_at TEXT NOT NULL",
        key=("id",),
        indexes=(("category",),),
    ),
    EXTRA_TABLE,
    *progress_tables.TABLE_SPECS,
)
"""The agent kind's tables in the shards (upstream's, plus the `_extra` side table and the
progress tables of gateway/do/progress_tables.py)."""

CHECKPOINT_COLS = (
    "conversation_summary, accomplishments, pending_work, recent_context, files_edited, checkpoint_at"
)
_CHECKPOINT_NAMES = tuple(CHECKPOINT_COLS.split(", "))
DM_COLS = "id, from_agent, type, message, timestamp, read"
MEM_COLS = "id, category, content, tags, created_at"


def checkpoint_from_row(agent_id: str, r: sqlite3.Row) -> Checkpoint:
    """The `checkpoint` row (CHECKPOINT_COLS) of `agent_id` as a Checkpoint."""
    return Checkpoint(agent_id, r[0], loads_list(r[1]), loads_list(r[2]), r[3], loads_list(r[4]), r[5])


def dm_from_row(r: sqlite3.Row) -> DirectMessage:
    """A `messages` row (DM_COLS) as a DirectMessage."""
    return DirectMessage(r[0], r[1], r[2], r[3], r[4], bool(r[5]))


def memory_from_row(r: sqlite3.Row) -> Memory:
    """A `memory` row (MEM_COLS) as a Memory."""
    return Memory(r[0], r[1], r[2], loads_list(r[3]), r[4])


def checkpoint_values(cp: Checkpoint) -> dict[str, Any]:
    """The `checkpoint` row of `cp` (one per agent)."""
    return {
        "id": 1,
        "conversation_summary": cp.conversation_summary,
        "accomplishments": dumps(cp.accomplishments),
        "pending_work": dumps(cp.pending_work),
        "recent_context": cp.recent_context,
        "files_edited": dumps(cp.files_edited),
        "checkpoint_at": cp.checkpoint_at,
    }


def dm_values(m: DirectMessage) -> dict[str, Any]:
    """The `messages` row of `m`."""
    return {
        "id": m.id,
        "from_agent": m.from_agent,
        "type": m.type,
        "message": m.message,
        "timestamp": m.timestamp,
        "read": int(m.read),
    }


def memory_values(m: Memory) -> dict[str, Any]:
    """The `memory` row of `m`."""
    return {
        "id": m.id,
        "category": m.category,
        "content": m.content,
        "tags": dumps(m.tags),
        "created_at": m.created_at,
    }


class AgentStateActor(Actor):
    """One agent's private state."""

    def __init__(self, ctx: ActorContext, limits: LimitSettings | None = None) -> None:
        super().__init__(ctx)
        self.limits = limits or LimitSettings()
        self.agent_id = ctx.ref.name

    # -- checkpoint -------------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint | None:
        """The agent's checkpoint row, or None."""
        r = self.ctx.tables.first("checkpoint", CHECKPOINT_COLS, keep=True)
        return None if r is None else checkpoint_from_row(self.agent_id, r)

    async def get_checkpoint(self) -> Checkpoint | None:
        """GET /checkpoint."""
        return self.checkpoint()

    def _save_checkpoint(self, cmd: c.SaveCheckpoint) -> None:
        self.ctx.tables.ensure_transaction()  # the read below joins the write's transaction
        cp = rules.save_checkpoint(self.checkpoint(), cmd)
        values = checkpoint_values(cp)
        self.ctx.tables.insert("checkpoint", values, conflict="update")
        # every column written (an upsert of the whole row): the next read needs no statement
        self.ctx.tables.keep_written("checkpoint", CHECKPOINT_COLS, [values[c] for c in _CHECKPOINT_NAMES])

    async def save_checkpoint(self, cmd: c.SaveCheckpoint) -> None:
        """POST /checkpoint: summary/context kept when empty (COALESCE), arrays replaced."""
        self._save_checkpoint(cmd)

    # -- direct messages --------------------------------------------------------------------------

    def _unread(self, limit: int) -> list[DirectMessage]:
        rows = self.ctx.tables.select(
            "messages", DM_COLS, "read = 0", order="timestamp DESC, rowid DESC", limit=limit, keep=True
        )
        return [dm_from_row(r) for r in rows]

    async def send_dm(self, cmd: c.SendDm) -> DirectMessage:
        """POST /messages: store unread and push `chat` to every socket of this agent."""
        dm = rules.new_dm(cmd)
        self.ctx.tables.insert("messages", dm_values(dm))
        sockets = self.ctx.get_websockets()
        if sockets:  # the frame is rendered once, and only for an open socket
            text = frames.dm_sent(dm)
            for hs in sockets:
                self.ctx.send(hs, text)
        return dm

    async def list_dms(self, q: c.ListDms) -> list[DirectMessage]:
        """GET /messages: unread only (`unread=true`) or the latest, newest first; never marks read."""
        if q.unread_only:
            return self._unread(q.limit)
        rows = self.ctx.tables.select("messages", DM_COLS, order="timestamp DESC, rowid DESC", limit=q.limit)
        return [dm_from_row(r) for r in rows]

    async def mark_read(self, cmd: c.MarkDmsRead) -> None:
        """PATCH /messages: mark the listed ids read; unknown ids are ignored.

        A message that becomes read gets `readAt` = the command's time among its extra fields
        (the `_extra` side table), the same `readAt` the legacy store writes, so replication to
        Redis carries it; marking an already read message keeps its first `readAt`.
        """
        read_at = iso_from_ms(cmd.now_ms)
        for mid in dict.fromkeys(cmd.message_ids):
            if self.ctx.tables.update("messages", {"read": 1}, "id = ? AND read = 0", mid):
                put_extra(self, "dm", mid, {**get_extra(self, "dm", mid), "readAt": read_at})

    # -- memory -----------------------------------------------------------------------------------

    async def add_memory(self, cmd: c.AddMemory) -> Memory:
        """POST /memory."""
        mem = rules.new_memory(cmd)
        self.ctx.tables.insert("memory", memory_values(mem))
        return mem

    async def search_memory(self, q: c.MemoryQuery) -> list[Memory]:
        """GET /memory: category equality and `query` LIKE on content or the tags JSON (upstream)."""
        clauses: list[str] = []
        params: list[Any] = []
        if q.category is not None:
            clauses.append("category = ?")
            params.append(q.category)
        if q.query is not None:
            # upstream leaves % and _ unescaped: they stay wildcards (do-api.md 4.4)
            clauses.append("(content LIKE ? OR tags LIKE ?)")
            params += [f"%{q.query}%", f"%{q.query}%"]
        rows = self.ctx.tables.select(
            "memory",
            MEM_COLS,
            " AND ".join(clauses),
            *params,
            order="created_at DESC, rowid DESC",
            limit=q.limit,
        )
        return [memory_from_row(r) for r in rows]

    # -- state ------------------------------------------------------------------------------------

    def _state(self) -> AgentStateView:
        rows = self.ctx.tables.select(
            "memory", MEM_COLS, order="created_at DESC, rowid DESC", limit=rules.RECENT_MEMORIES, keep=True
        )
        return AgentStateView(
            self.agent_id,
            self.checkpoint(),
            self._unread(self.limits.list_limit_max),
            [memory_from_row(r) for r in rows],
        )

    async def state(self) -> AgentStateView:
        """/state: checkpoint, unread DMs (newest first) and the 10 latest memories."""
        return self._state()

    # -- WebSocket --------------------------------------------------------------------------------

    async def socket_open(self, ws: Any, now_ms: int) -> HostedSocket:
        """Accept an agent socket and send `state-sync`."""
        hs = self.ctx.accept_websocket(ws, [self.agent_id])
        self.ctx.send(hs, frames.state_sync(self._state(), iso_from_ms(now_ms)))
        return hs

    async def socket_checkpoint(self, hs: HostedSocket, cmd: c.SaveCheckpoint) -> None:
        """`checkpoint-save`: save as the REST POST does and answer `checkpoint-saved` (no payload)."""
        self._save_checkpoint(cmd)
        self.ctx.send(hs, frames.checkpoint_saved(iso_from_ms(cmd.now_ms)))
