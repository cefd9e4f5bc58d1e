"""The coordinator actor (upstream `AgentCoordinator`, the singleton `main`).

Tables and columns are upstream's (do-api.md 3.1), so a row of a real DO database maps one to
one. Our additions: the table `chat_cursors` (`last_chat_check`, `last_chat_seq`), the mention
cursor kept apart from the presence heartbeat `agents.last_seen` (it counts message rowids, so a
message committed late is never skipped); and every listing breaks timestamp ties by
`rowid`, so equal millisecond timestamps keep insertion order.

Each public method runs as one strict turn (the host holds the actor's gate and commits once),
so every read-check-write sequence here is atomic, as it was in the DO. Deliberate differences
from upstream are listed in docs/compatibility.md.
"""

# SQL text here is built only from this module's constant column lists and fixed clauses; every
# value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from gateway.actors import Actor, ActorContext, HostedSocket
from gateway.do._sql import dumps, loads_list
from gateway.do.memory import AgentRoster, ChatWindow, TaskIndex, link_copies, stamp_schema
from gateway.domain import commands as c
from gateway.domain import frames, rules
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.model import (
    Agent,
    ChatPage,
    Claim,
    ClaimOutcome,
    GroupMessage,
    Handoff,
    HandoffOutcome,
    Task,
    WorkBundle,
    Zone,
)
from gateway.errors import ApiError
from gateway.settings import LimitSettings

__all__ = [
    "AGENT_COLS",
    "CLAIM_COLS",
    "HANDOFF_COLS",
    "MSG_COLS",
    "TASK_COLS",
    "ZONE_COLS",
    "CoordinatorActor",
    "agent_from_row",
    "claim_from_row",
    "handoff_from_row",
    "message_from_row",
    "task_from_row",
    "zone_from_row",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
  agent_id TEXT PRIMARY KEY, status TEXT DEFAULT 'offline', current_task TEXT, working_on TEXT,
  last_seen TEXT, capabilities TEXT, offers TEXT, needs TEXT);
CREATE TABLE IF NOT EXISTS chat_cursors (
  agent_id TEXT PRIMARY KEY, last_chat_check TEXT, last_chat_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY, author TEXT NOT NULL, author_type TEXT DEFAULT 'agent', message TEXT NOT NULL,
  timestamp TEXT NOT NULL, reactions TEXT DEFAULT '[]');
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT PRIMARY KEY, title TEXT NOT NULL, description TEXT, status TEXT DEFAULT 'todo', assignee TEXT,
  created_by TEXT NOT NULL, priority TEXT DEFAULT 'medium', tags TEXT DEFAULT '[]', files TEXT DEFAULT '[]',
  created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS zones (
  zone_id TEXT PRIMARY KEY, path TEXT NOT NULL, owner TEXT NOT NULL, description TEXT,
  claimed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
  what TEXT PRIMARY KEY, by TEXT NOT NULL, description TEXT, since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS handoffs (
  id TEXT PRIMARY KEY, from_agent TEXT NOT NULL, to_agent TEXT, title TEXT NOT NULL, context TEXT NOT NULL,
  code TEXT, file_path TEXT, next_steps TEXT DEFAULT '[]', priority TEXT DEFAULT 'medium',
  status TEXT DEFAULT 'pending', claimed_by TEXT, created_at TEXT NOT NULL, claimed_at TEXT,
  completed_at TEXT);
CREATE INDEX IF NOT EXISTS idx_agents_status ON agents(status);
CREATE INDEX IF NOT EXISTS idx_messages_timestamp ON messages(timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_tasks_status ON tasks(status);
CREATE INDEX IF NOT EXISTS idx_tasks_assignee ON tasks(assignee);
CREATE INDEX IF NOT EXISTS idx_zones_owner ON zones(owner);
CREATE INDEX IF NOT EXISTS idx_zones_path ON zones(path);
CREATE INDEX IF NOT EXISTS idx_claims_by ON claims(by);
CREATE INDEX IF NOT EXISTS idx_handoffs_status ON handoffs(status);
CREATE INDEX IF NOT EXISTS idx_handoffs_to_agent ON handoffs(to_agent);
"""

AGENT_COLS = "agent_id, status, current_task, working_on, last_seen, capabilities, offers, needs"
MSG_COLS = "id, author, author_type, message, timestamp, reactions"
MSG_COLS_M = ", ".join(f"m.{col}" for col in MSG_COLS.split(", "))
TASK_COLS = (
    "id, title, description, status, assignee, created_by, priority, tags, files, created_at, updated_at"
)
ZONE_COLS = "zone_id, path, owner, description, claimed_at"
CLAIM_COLS = "what, by, description, since"
MENTIONS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS _mention_rows (seq INTEGER PRIMARY KEY)",
    *(
        f"CREATE TRIGGER IF NOT EXISTS _mention_rows_{event.lower()} AFTER {event} ON messages "
        "WHEN NEW.message LIKE '%@%' BEGIN INSERT INTO _mention_rows (seq) SELECT NEW.rowid "
        "WHERE NOT EXISTS (SELECT 1 FROM _mention_rows WHERE seq = NEW.rowid); END"
        for event in ("INSERT", "UPDATE")
    ),
    "CREATE TRIGGER IF NOT EXISTS _mention_rows_delete AFTER DELETE ON messages BEGIN "
    "DELETE FROM _mention_rows WHERE seq = OLD.rowid; END",
)
"""`_mention_rows`: the rowids of the messages with an `@` in them (a mention needs one), kept by
triggers on every write to `messages`, so `/work` and chat reads find an agent's pending mentions
without scanning the chat after its cursor (which stays at 0 for an agent that never read chat
with its id). A rowid left behind by a write that bypassed the delete trigger (REPLACE) is
harmless: the query joins the message and tests its text again. (The triggers test for an
existing rowid rather than `INSERT OR IGNORE`: an upsert's conflict clause would override it.)"""

HANDOFF_COLS = (
    "id, from_agent, to_agent, title, context, code, file_path, next_steps, priority, status, claimed_by, "
    "created_at, claimed_at, completed_at"
)


def agent_from_row(r: sqlite3.Row) -> Agent:
    """An `agents` row (AGENT_COLS) as an Agent; NULL array columns stay None."""
    return Agent(
        agent_id=r[0],
        status=r[1],
        current_task=r[2],
        working_on=r[3],
        last_seen=r[4],
        capabilities=loads_list(r[5]) if r[5] is not None else None,
        offers=loads_list(r[6]) if r[6] is not None else None,
        needs=loads_list(r[7]) if r[7] is not None else None,
    )


def message_from_row(r: sqlite3.Row) -> GroupMessage:
    """A `messages` row (MSG_COLS) as a GroupMessage."""
    return GroupMessage(r[0], r[1], r[2], r[3], r[4], loads_list(r[5]))


def task_from_row(r: sqlite3.Row) -> Task:
    """A `tasks` row (TASK_COLS) as a Task."""
    return Task(r[0], r[1], r[2], r[3], r[4], r[5], r[6], loads_list(r[7]), loads_list(r[8]), r[9], r[10])


def zone_from_row(r: sqlite3.Row) -> Zone:
    """A `zones` row (ZONE_COLS) as a Zone."""
    return Zone(r[0], r[1], r[2], r[3], r[4])


def handoff_from_row(r: sqlite3.Row) -> Handoff:
    """A `handoffs` row (HANDOFF_COLS) as a Handoff."""
    return Handoff(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], loads_list(r[7]), r[8], r[9], r[10], r[11], r[12], r[13]
    )


def claim_from_row(r: sqlite3.Row, now_ms: int) -> Claim:
    """A `claims` row (CLAIM_COLS) as a Claim, `stale` as of `now_ms`."""
    return Claim(r[0], r[1], r[2], r[3], stale=rules.claim_is_stale(r[3], now_ms))


class CoordinatorActor(Actor):
    """Agents, group chat, tasks, zones, claims, handoffs and the coordinator WebSocket."""

    def __init__(self, ctx: ActorContext, limits: LimitSettings | None = None) -> None:
        super().__init__(ctx)
        self.limits = limits or LimitSettings()
        sql = ctx.sql
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                sql.exec(stmt)
        fresh = sql.exec("SELECT 1 FROM sqlite_master WHERE name = '_mention_rows'").first()
        stamps = (*stamp_schema("agents"), *stamp_schema("tasks"), *stamp_schema("messages"))
        for stmt in (*MENTIONS_SCHEMA, *stamps):
            sql.exec(stmt)
        if fresh is None:  # a database from before the table (or a DO export): fill it once
            sql.exec("INSERT INTO _mention_rows (seq) SELECT rowid FROM messages WHERE message LIKE '%@%'")
        # kept in memory between turns (gateway/do/memory.py)
        self.roster = AgentRoster(AGENT_COLS, agent_from_row)
        self.task_index = TaskIndex(TASK_COLS, task_from_row)
        self.chat_window = ChatWindow(MSG_COLS, message_from_row, self.limits.list_limit_max)
        link_copies(self.roster, self.task_index, self.chat_window)

    # -- helpers ----------------------------------------------------------------------------------

    def _broadcast(self, render: Callable[[], str]) -> None:
        """Send a frame to every coordinator socket, the sender's included (as upstream); the
        frame is rendered only when a socket is open (a write with none renders nothing)."""
        sockets = self.ctx.get_websockets()
        if not sockets:
            return
        text = render()
        for hs in sockets:
            self.ctx.send(hs, text)

    def _touch(self, agent_id: str, now_iso: str) -> None:
        """Upsert the agent as `active` with `last_seen = now` (WS connect, ping, /work, chat).

        An agent the copy holds as `active` already gets `last_seen` alone: the same row, but
        an UPDATE that names `status` rewrites its entry in `idx_agents_status` even when the
        value stays, one more page in the turn's WAL commit (3 instead of 2, issue 13).
        """
        sql = self.ctx.sql
        sql.ensure_transaction()  # the copy's check and the write: one snapshot
        copied, agent = self.roster.get(sql, agent_id)
        if copied and agent is not None and agent.status == "active":
            self.roster.write(
                sql, agent_id, "UPDATE agents SET last_seen = ? WHERE agent_id = ?", now_iso, agent_id
            )
            return
        self.roster.write(
            sql,
            agent_id,
            "INSERT INTO agents (agent_id, status, last_seen) VALUES (?, 'active', ?) "
            "ON CONFLICT(agent_id) DO UPDATE SET status = 'active', last_seen = excluded.last_seen",
            agent_id,
            now_iso,
        )

    def _active_agents(self, now_ms: int, limit: int) -> list[Agent]:
        cutoff = iso_from_ms(now_ms - int(self.limits.agent_offline_after_s * 1000))
        agents = self.roster.active(self.ctx.sql, cutoff, limit)
        if agents is not None:
            return agents
        rows = self.ctx.sql.exec(
            f"SELECT {AGENT_COLS} FROM agents WHERE status != 'offline' AND last_seen >= ? "
            "ORDER BY last_seen DESC, rowid DESC LIMIT ?",
            cutoff,
            limit,
        ).all()
        return [agent_from_row(r) for r in rows]

    def _newest_messages(self, limit: int, since_iso: str | None = None) -> list[GroupMessage]:
        """The newest `limit` messages (strictly after `since_iso`), oldest first."""
        window = self.chat_window.newest(self.ctx.sql, limit, since_iso)
        if window is not None:
            return window
        if since_iso is None:
            rows = self.ctx.sql.exec(
                f"SELECT {MSG_COLS} FROM messages ORDER BY timestamp DESC, rowid DESC LIMIT ?", limit
            ).all()
        else:
            rows = self.ctx.sql.exec(
                f"SELECT {MSG_COLS} FROM messages WHERE timestamp > ? "
                "ORDER BY timestamp DESC, rowid DESC LIMIT ?",
                since_iso,
                limit,
            ).all()
        return [message_from_row(r) for r in reversed(rows)]

    def _pending_mentions(self, agent_id: str) -> list[GroupMessage]:
        """Messages after the agent's mention cursor that mention it (or @all/@everyone/@team)."""
        # the cursor (0 for an agent without one) read in the same statement: one query, not two
        rows = self.ctx.sql.exec(
            f"SELECT {MSG_COLS_M} FROM _mention_rows x CROSS JOIN messages m ON m.rowid = x.seq "
            "WHERE x.seq > COALESCE((SELECT last_chat_seq FROM chat_cursors WHERE agent_id = ?1), 0) "
            "AND m.author != ?1 AND m.message LIKE '%@%' ORDER BY x.seq DESC LIMIT ?2",
            agent_id,
            self.limits.list_limit_max,
        ).all()
        pattern = rules.mention_pattern(agent_id)
        return [message_from_row(r) for r in reversed(rows) if pattern.search(r[3])]

    def _advance_mention_cursor(self, agent_id: str, now_iso: str) -> None:
        self.ctx.sql.exec(
            "INSERT OR REPLACE INTO chat_cursors (agent_id, last_chat_check, last_chat_seq) "
            "VALUES (?, ?, (SELECT COALESCE(MAX(rowid), 0) FROM messages))",
            agent_id,
            now_iso,
        )

    def _tasks(self, status: str | None, assignee: str | None, limit: int) -> list[Task]:
        """Tasks with this status and assignee (either may be None: not filtered), newest first."""
        tasks = self.task_index.select(self.ctx.sql, status, assignee, limit)
        if tasks is not None:
            return tasks
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if assignee is not None:
            clauses.append("assignee = ?")
            params.append(assignee)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.ctx.sql.exec(
            f"SELECT {TASK_COLS} FROM tasks {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            *params,
            limit,
        ).all()
        return [task_from_row(r) for r in rows]

    # -- agents -----------------------------------------------------------------------------------

    async def register_agent(self, cmd: c.RegisterAgent) -> None:
        """POST /agents: upstream's upsert (COALESCE for currentTask/workingOn) and broadcast."""
        sql = self.ctx.sql
        sql.ensure_transaction()  # it writes: the copy's check joins the write's transaction
        copied, existing = self.roster.get(sql, cmd.agent_id)
        if not copied:
            row = sql.exec(f"SELECT {AGENT_COLS} FROM agents WHERE agent_id = ?", cmd.agent_id).first()
            existing = None if row is None else agent_from_row(row)
        agent = rules.register_agent(existing, cmd)
        arrays = (dumps(agent.capabilities), dumps(agent.offers), dumps(agent.needs))
        if existing is not None and existing.status == agent.status:
            # the row stays and so does its status: leaving `status` out of the UPDATE keeps its
            # `idx_agents_status` entry as it is (one WAL page fewer, as in `_touch`)
            self.roster.write(
                sql,
                cmd.agent_id,
                "UPDATE agents SET current_task = ?, working_on = ?, last_seen = ?, capabilities = ?, "
                "offers = ?, needs = ? WHERE agent_id = ?",
                agent.current_task,
                agent.working_on,
                agent.last_seen,
                *arrays,
                agent.agent_id,
            )
        else:
            self.roster.write(
                sql,
                cmd.agent_id,
                f"INSERT INTO agents ({AGENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(agent_id) DO UPDATE SET status = excluded.status, "
                "current_task = excluded.current_task, working_on = excluded.working_on, "
                "last_seen = excluded.last_seen, capabilities = excluded.capabilities, "
                "offers = excluded.offers, needs = excluded.needs",
                agent.agent_id,
                agent.status,
                agent.current_task,
                agent.working_on,
                agent.last_seen,
                *arrays,
            )
        self._broadcast(lambda: frames.agent_registered(cmd.raw, iso_from_ms(cmd.now_ms)))

    async def list_agents(self, now_ms: int, limit: int) -> list[Agent]:
        """GET /agents: agents not offline and seen within the offline window, newest first."""
        return self._active_agents(now_ms, limit)

    # -- chat -------------------------------------------------------------------------------------

    async def post_chat(self, cmd: c.PostChat) -> GroupMessage:
        """POST /chat (and WS `chat`): store and broadcast; the frame's timestamp is the message's."""
        msg = rules.new_message(cmd)
        self.chat_window.write(
            self.ctx.sql,
            msg.id,
            f"INSERT INTO messages ({MSG_COLS}) VALUES (?, ?, ?, ?, ?, '[]')",
            msg.id,
            msg.author,
            msg.author_type,
            msg.message,
            msg.timestamp,
        )
        self._broadcast(lambda: frames.chat_posted(msg))
        return msg

    async def get_chat(self, q: c.ChatQuery) -> ChatPage:
        """GET /chat: the newest `limit` messages in chronological order, plus the agent's mentions."""
        if q.agent_id is not None:
            self.ctx.sql.ensure_transaction()  # it writes: the copy's check joins the write's transaction
        if q.since_invalid:
            messages: list[GroupMessage] = []
        else:
            since = None if q.since_ms is None else iso_from_ms(q.since_ms)
            messages = self._newest_messages(q.limit, since)
        page = ChatPage(messages=messages, agent_id=q.agent_id, inbox=q.inbox)
        if q.agent_id is not None:
            now_iso = iso_from_ms(q.now_ms)
            page.pending_mentions = self._pending_mentions(q.agent_id)
            # presence for a registered agent only: reading chat does not register an agent
            self.roster.write(
                self.ctx.sql,
                q.agent_id,
                "UPDATE agents SET status = 'active', last_seen = ? WHERE agent_id = ?",
                now_iso,
                q.agent_id,
            )
            self._advance_mention_cursor(q.agent_id, now_iso)
        return page

    # -- tasks ------------------------------------------------------------------------------------

    async def create_task(self, cmd: c.CreateTask) -> Task:
        """POST /tasks: insert and broadcast `task-update` (create form); a duplicate id is a 409."""
        sql = self.ctx.sql
        sql.ensure_transaction()  # the check and the insert: one snapshot
        exists = self.task_index.has(sql, cmd.id)  # the copy's answer: no statement (issue 13)
        if exists is None:
            exists = sql.exec("SELECT 1 FROM tasks WHERE id = ?", cmd.id).first() is not None
        if exists:
            raise ApiError(409, {"error": "Task already exists", "id": cmd.id})
        task = cmd.task()
        now_iso = task.created_at
        self.task_index.write(
            self.ctx.sql,
            task.id,
            f"INSERT INTO tasks ({TASK_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            task.id,
            task.title,
            task.description,
            task.status,
            task.assignee,
            task.created_by,
            task.priority,
            dumps(task.tags),
            dumps(task.files),
            now_iso,
            now_iso,
        )
        self._broadcast(lambda: frames.task_created(task))
        return task

    async def update_task(self, cmd: c.UpdateTask) -> Task:
        """PATCH /tasks (ours): change the given fields, bump `updatedAt`, broadcast `task-update`."""
        row = self.ctx.sql.exec(f"SELECT {TASK_COLS} FROM tasks WHERE id = ?", cmd.id).first()
        if row is None:
            raise ApiError(404, {"error": "Task not found", "id": cmd.id})
        task = task_from_row(row)
        cmd.apply(task)
        self.task_index.write(
            self.ctx.sql,
            task.id,
            "UPDATE tasks SET title = ?, description = ?, status = ?, assignee = ?, priority = ?, tags = ?, "
            "files = ?, updated_at = ? WHERE id = ?",
            task.title,
            task.description,
            task.status,
            task.assignee,
            task.priority,
            dumps(task.tags),
            dumps(task.files),
            task.updated_at,
            task.id,
        )
        self._broadcast(lambda: frames.task_updated(task))
        return task

    async def list_tasks(self, q: c.ListTasks) -> list[Task]:
        """GET /tasks: equality filters, newest first, at most `limit`."""
        return self._tasks(q.status, q.assignee, q.limit)

    # -- work bundle ------------------------------------------------------------------------------

    async def work_bundle(self, q: c.WorkQuery) -> WorkBundle:
        """/work: mentions read from the cursor first (upstream read them after the heartbeat)."""
        mentions = self._pending_mentions(q.agent_id)
        self._touch(q.agent_id, iso_from_ms(q.now_ms))
        return WorkBundle(
            agent_id=q.agent_id,
            team=self._active_agents(q.now_ms, q.limit),
            todo=self._tasks("todo", None, q.limit),
            mine=self._tasks(None, q.agent_id, q.limit),
            recent_chat=self._newest_messages(rules.RECENT_CHAT),
            pending_mentions=mentions,
        )

    # -- zones ------------------------------------------------------------------------------------

    async def find_zone(self, path: str) -> Zone | None:
        """GET /zones?path=: the newest zone whose path is a string prefix of `path`."""
        row = self.ctx.sql.exec(
            f"SELECT {ZONE_COLS} FROM zones WHERE substr(?1, 1, length(path)) = path "
            "ORDER BY claimed_at DESC, rowid DESC LIMIT 1",
            path,
        ).first()
        return None if row is None else zone_from_row(row)

    async def list_zones(self, q: c.ZoneQuery) -> list[Zone]:
        """GET /zones[?owner=]: newest first."""
        if q.owner is not None:
            rows = self.ctx.sql.exec(
                f"SELECT {ZONE_COLS} FROM zones WHERE owner = ? ORDER BY claimed_at DESC, rowid DESC LIMIT ?",
                q.owner,
                q.limit,
            ).all()
        else:
            rows = self.ctx.sql.exec(
                f"SELECT {ZONE_COLS} FROM zones ORDER BY claimed_at DESC, rowid DESC LIMIT ?", q.limit
            ).all()
        return [zone_from_row(r) for r in rows]

    async def claim_zone(self, cmd: c.ZoneClaim) -> Zone:
        """POST /zones claim: upsert by zoneId (no ownership check, as upstream)."""
        zone = rules.new_zone(cmd)
        self.ctx.sql.exec(
            f"INSERT OR REPLACE INTO zones ({ZONE_COLS}) VALUES (?, ?, ?, ?, ?)",
            zone.zone_id,
            zone.path,
            zone.owner,
            zone.description,
            zone.claimed_at,
        )
        return zone

    async def release_zone(self, cmd: c.ReleaseZone) -> bool:
        """POST /zones release: delete when both zoneId and owner match."""
        cur = self.ctx.sql.exec("DELETE FROM zones WHERE zone_id = ? AND owner = ?", cmd.zone_id, cmd.owner)
        return cur.rows_written > 0

    # -- claims -----------------------------------------------------------------------------------

    async def get_claim(self, what: str, now_ms: int) -> Claim | None:
        """GET /claims?what=: the claim, stale or not."""
        row = self.ctx.sql.exec(f"SELECT {CLAIM_COLS} FROM claims WHERE what = ?", what).first()
        return None if row is None else claim_from_row(row, now_ms)

    async def list_claims(self, q: c.ClaimQuery) -> list[Claim]:
        """GET /claims: newest first; stale ones only with includeStale=true."""
        if q.include_stale:
            rows = self.ctx.sql.exec(
                f"SELECT {CLAIM_COLS} FROM claims ORDER BY since DESC, rowid DESC LIMIT ?", q.limit
            ).all()
        else:
            rows = self.ctx.sql.exec(
                f"SELECT {CLAIM_COLS} FROM claims WHERE since >= ? ORDER BY since DESC, rowid DESC LIMIT ?",
                iso_from_ms(q.now_ms - rules.CLAIM_STALE_MS),
                q.limit,
            ).all()
        return [claim_from_row(r, q.now_ms) for r in rows]

    async def claim(self, cmd: c.ClaimWork) -> ClaimOutcome:
        """POST /claims claim: 409 outcome when someone else holds a fresh claim."""
        row = self.ctx.sql.exec(f"SELECT {CLAIM_COLS} FROM claims WHERE what = ?", cmd.what).first()
        outcome = rules.claim_work([] if row is None else [claim_from_row(row, cmd.now_ms)], cmd)
        if outcome.conflict:
            return outcome
        claim = outcome.claim
        self.ctx.sql.exec(
            f"INSERT OR REPLACE INTO claims ({CLAIM_COLS}) VALUES (?, ?, ?, ?)",
            claim.what,
            claim.by,
            claim.description,
            claim.since,
        )
        return outcome

    async def release_claim(self, cmd: c.ReleaseClaim) -> bool:
        """POST /claims release: delete when both what and by match."""
        return (
            self.ctx.sql.exec("DELETE FROM claims WHERE what = ? AND by = ?", cmd.what, cmd.by).rows_written
            > 0
        )

    # -- handoffs ---------------------------------------------------------------------------------

    def _get_handoff(self, hid: str) -> Handoff | None:
        row = self.ctx.sql.exec(f"SELECT {HANDOFF_COLS} FROM handoffs WHERE id = ?", hid).first()
        return None if row is None else handoff_from_row(row)

    async def get_handoff(self, hid: str) -> Handoff | None:
        """GET /handoffs?id=."""
        return self._get_handoff(hid)

    async def list_handoffs(self, q: c.HandoffQuery) -> list[Handoff]:
        """GET /handoffs: `toAgent` also matches open handoffs; newest first."""
        clauses: list[str] = []
        params: list[Any] = []
        if q.to_agent is not None:
            clauses.append("(to_agent = ? OR to_agent IS NULL)")
            params.append(q.to_agent)
        if q.from_agent is not None:
            clauses.append("from_agent = ?")
            params.append(q.from_agent)
        if q.status is not None:
            clauses.append("status = ?")
            params.append(q.status)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.ctx.sql.exec(
            f"SELECT {HANDOFF_COLS} FROM handoffs {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            *params,
            q.limit,
        ).all()
        return [handoff_from_row(r) for r in rows]

    async def create_handoff(self, cmd: c.CreateHandoff) -> Handoff:
        """POST /handoffs create: insert and broadcast `task-update {action:'handoff-created'}`."""
        h = rules.new_handoff(cmd)
        self.ctx.sql.exec(
            "INSERT INTO handoffs (id, from_agent, to_agent, title, context, code, file_path, next_steps, "
            "priority, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            h.id,
            h.from_agent,
            h.to_agent,
            h.title,
            h.context,
            h.code,
            h.file_path,
            dumps(h.next_steps),
            h.priority,
            h.created_at,
        )
        self._broadcast(lambda: frames.handoff_created(h))
        return h

    async def claim_handoff(self, cmd: c.ClaimHandoff) -> HandoffOutcome:
        """POST /handoffs claim: upstream's checks and messages (all failures are 409)."""
        outcome = rules.claim_handoff(self._get_handoff(cmd.handoff_id), cmd)
        self._save_handoff_state(outcome)
        return outcome

    async def complete_handoff(self, cmd: c.CompleteHandoff) -> HandoffOutcome:
        """POST /handoffs complete: upstream's checks and messages (all failures are 400)."""
        outcome = rules.complete_handoff(self._get_handoff(cmd.handoff_id), cmd)
        self._save_handoff_state(outcome)
        return outcome

    def _save_handoff_state(self, outcome: HandoffOutcome) -> None:
        """Persist the state a claim or complete rule gave the handoff (nothing on a refusal)."""
        h = outcome.handoff
        if h is None:
            return
        self.ctx.sql.exec(
            "UPDATE handoffs SET status = ?, claimed_by = ?, claimed_at = ?, completed_at = ? WHERE id = ?",
            h.status,
            h.claimed_by,
            h.claimed_at,
            h.completed_at,
            h.id,
        )

    # -- WebSocket --------------------------------------------------------------------------------

    async def socket_open(self, ws: Any, agent_id: str, now_ms: int) -> HostedSocket:
        """Accept a coordinator socket tagged with its agent, mark it active, send the welcome."""
        hs = self.ctx.accept_websocket(ws, [agent_id])
        now_iso = iso_from_ms(now_ms)
        self._touch(agent_id, now_iso)
        agents = self._active_agents(now_ms, self.limits.list_limit_max)
        self.ctx.send(hs, frames.welcome(agent_id, agents, now_iso))
        return hs

    async def socket_ping(self, hs: HostedSocket, now_ms: int) -> None:
        """`ping`: answer `pong` (no payload) to the sender, refresh the agent's presence."""
        now_iso = iso_from_ms(now_ms)
        self.ctx.send(hs, frames.pong(now_iso))
        if hs.tags:
            self._touch(hs.tags[0], now_iso)

    async def socket_status(self, hs: HostedSocket, status: str, now_ms: int) -> None:
        """`agent-update` from a client: set the tagged agent's status (no broadcast, no ack)."""
        if hs.tags:
            self.ctx.sql.exec(
                "UPDATE agents SET status = ?, last_seen = ? WHERE agent_id = ?",
                status,
                iso_from_ms(now_ms),
                hs.tags[0],
            )

    async def web_socket_close(self, ws: HostedSocket, code: int, reason: str) -> None:
        """Mark the agent offline and tell everyone, unless another of its sockets is still open."""
        if not ws.tags:
            return
        agent_id = ws.tags[0]
        if any(other is not ws for other in self.ctx.get_websockets(agent_id)):
            return
        self.ctx.sql.exec("UPDATE agents SET status = 'offline' WHERE agent_id = ?", agent_id)
        now_iso = iso_from_ms(self.ctx.clock.now_ms())
        self._broadcast(lambda: frames.agent_offline(agent_id, now_iso))
