"""The agent actor's progress tables: soul, traces, steps, escalations, heartbeats, shadow monitor,
goals and credentials, as typed functions per table over the agent's scoped tables.

Upstream's table and column names (do-api.md 7.5); the only additions are `work_traces.credited_at`
(a trace is credited to the soul once) and credentials holding ciphertext in `value`. The rows
live in the agent's shard through `ctx.tables` (gateway/actors/tables.py: every statement is
scoped to the agent); all access to these tables is here. These domains are actor-only: nothing
here is mirrored to the legacy store.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import orjson

from gateway.actors import ShardTables, TableSpec
from gateway.do._sql import dumps, loads_list
from gateway.domain.goals import Goal
from gateway.domain.heartbeat import HEARTBEAT_KEEP, Heartbeat, ShadowMonitor
from gateway.domain.jscompat import parse_js_date
from gateway.domain.soul import Soul
from gateway.domain.traces import Escalation, Step, Trace

__all__ = ["TABLES", "TABLE_SPECS", "Sql", "StoredCredential"]

Sql = ShardTables
"""What these functions need of an actor's storage (`ctx.tables` of the agent)."""


TABLE_SPECS = (
    TableSpec(
        "work_traces",
        "session_id TEXT NOT NULL, task TEXT NOT NULL, started_at TEXT NOT NULL, completed_at TEXT, "
        "summary TEXT, credited_at TEXT",
        key=("session_id",),
    ),
    TableSpec(
        "work_steps",
        "id TEXT NOT NULL, session_id TEXT NOT NULL, timestamp TEXT NOT NULL, tool TEXT NOT NULL, "
        "intent TEXT, outcome TEXT DEFAULT 'partial', duration_ms INTEGER DEFAULT 0, contribution_type TEXT, "
        "knowledge_gained TEXT DEFAULT '[]', eliminated_paths INTEGER DEFAULT 0, "
        "depends_on TEXT DEFAULT '[]'",
        key=("id",),
        indexes=(("session_id",),),
    ),
    TableSpec(
        "escalations",
        "id TEXT NOT NULL, session_id TEXT NOT NULL, triggered_at TEXT NOT NULL, triggers TEXT NOT NULL, "
        "highest_level INTEGER NOT NULL, resolved_at TEXT, resolved_by TEXT, resolver_agent TEXT, "
        "helpful_hint TEXT",
        key=("id",),
        indexes=(("session_id",),),
    ),
    TableSpec(
        "soul_progression",
        "soul_id TEXT NOT NULL, name TEXT NOT NULL, personality TEXT, created_at TEXT NOT NULL, "
        "total_xp INTEGER DEFAULT 0, level TEXT DEFAULT 'novice', current_streak INTEGER DEFAULT 0, "
        "longest_streak INTEGER DEFAULT 0, tasks_completed INTEGER DEFAULT 0, "
        "tasks_successful INTEGER DEFAULT 0, "
        "total_tokens_used INTEGER DEFAULT 0, avg_efficiency REAL DEFAULT 0, peers_helped INTEGER DEFAULT 0, "
        "last_trace_id TEXT, escalation_count INTEGER DEFAULT 0, self_resolved_count INTEGER DEFAULT 0, "
        "peer_assist_count INTEGER DEFAULT 0, human_escalation_count INTEGER DEFAULT 0, "
        "specializations TEXT, achievements TEXT DEFAULT '[]', abilities TEXT, "
        "trust_score REAL DEFAULT 0.5, transparency_score REAL DEFAULT 0.5, "
        "track_record_score REAL DEFAULT 0.5",
        key=("soul_id",),
    ),
    TableSpec(
        "shadow_monitor",
        "id INTEGER NOT NULL DEFAULT 1 CHECK (id = 1), shadow_id TEXT, shadow_status TEXT DEFAULT 'none', "
        "primary_agent TEXT, is_shadow INTEGER DEFAULT 0, last_heartbeat TEXT, "
        "heartbeat_interval_ms INTEGER DEFAULT 60000, stall_threshold_ms INTEGER DEFAULT 300000, "
        "registered_at TEXT, takeover_at TEXT",
        key=("id",),
    ),
    TableSpec(
        "heartbeat_log",
        "id TEXT NOT NULL, timestamp TEXT NOT NULL, tokens_used INTEGER DEFAULT 0, current_task TEXT, "
        "status TEXT DEFAULT 'healthy'",
        key=("id",),
        indexes=(("timestamp",),),
    ),
    TableSpec(
        "credentials",
        "key TEXT NOT NULL, value TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, "
        "masked_preview TEXT",
        key=("key",),
    ),
    TableSpec(
        "goals",
        "id TEXT NOT NULL, title TEXT NOT NULL, description TEXT, type TEXT DEFAULT 'task', "
        "priority INTEGER DEFAULT 5, status TEXT DEFAULT 'pending', xp_reward INTEGER DEFAULT 10, "
        "source TEXT DEFAULT 'self', assigned_by TEXT, context TEXT, created_at TEXT NOT NULL, "
        "started_at TEXT, completed_at TEXT, outcome TEXT",
        key=("id",),
        indexes=(("status",),),
    ),
)
"""The progress tables of the agent kind in the shards (part of `agent_state.TABLES`)."""


def _obj(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# -- soul ---------------------------------------------------------------------------------------------

SOUL_COLS = (
    "soul_id, name, personality, created_at, total_xp, level, current_streak, longest_streak, "
    "tasks_completed, tasks_successful, total_tokens_used, avg_efficiency, peers_helped, last_trace_id, "
    "escalation_count, self_resolved_count, peer_assist_count, human_escalation_count, specializations, "
    "achievements, abilities, trust_score, transparency_score, track_record_score"
)


def soul_get(sql: Sql) -> Soul | None:
    """The agent's soul (one per actor), or None."""
    r = sql.first("soul_progression", SOUL_COLS, order="rowid")
    if r is None:
        return None
    specs = _obj(r[18])
    abilities = _obj(r[20])
    soul = Soul(r[0], r[1], r[2] or "", r[3])
    soul.total_xp, soul.level, soul.current_streak, soul.longest_streak = (
        r[4] or 0,
        r[5] or "novice",
        r[6] or 0,
        r[7] or 0,
    )
    soul.tasks_completed, soul.tasks_successful, soul.total_tokens_used = r[8] or 0, r[9] or 0, r[10] or 0
    soul.avg_efficiency, soul.peers_helped, soul.last_trace_id = r[11] or 0, r[12] or 0, r[13]
    soul.escalation_count, soul.self_resolved_count = r[14] or 0, r[15] or 0
    soul.peer_assist_count, soul.human_escalation_count = r[16] or 0, r[17] or 0
    if specs is not None:
        soul.specializations = specs
    soul.achievements = loads_list(r[19])
    if abilities is not None:
        soul.abilities = abilities
    soul.trust_score, soul.transparency_score, soul.track_record_score = r[21], r[22], r[23]
    return soul


def _cols(cols: str, values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip((c.strip() for c in cols.split(",")), values, strict=True))


def soul_put(sql: Sql, s: Soul) -> None:
    """Store the agent's soul (replacing any other row: one soul per actor)."""
    sql.delete("soul_progression", "soul_id <> ?", s.soul_id)
    values = (
        s.soul_id,
        s.name,
        s.personality,
        s.created_at,
        s.total_xp,
        s.level,
        s.current_streak,
        s.longest_streak,
        s.tasks_completed,
        s.tasks_successful,
        s.total_tokens_used,
        s.avg_efficiency,
        s.peers_helped,
        s.last_trace_id,
        s.escalation_count,
        s.self_resolved_count,
        s.peer_assist_count,
        s.human_escalation_count,
        dumps(s.specializations),
        dumps(s.achievements),
        dumps(s.abilities),
        s.trust_score,
        s.transparency_score,
        s.track_record_score,
    )
    sql.insert("soul_progression", _cols(SOUL_COLS, values), conflict="replace")


# -- traces, steps, escalations --------------------------------------------------------------------

TRACE_COLS = "session_id, task, started_at, completed_at, summary, credited_at"
STEP_COLS = (
    "id, session_id, timestamp, tool, intent, outcome, duration_ms, contribution_type, knowledge_gained, "
    "eliminated_paths, depends_on"
)
ESC_COLS = (
    "id, session_id, triggered_at, triggers, highest_level, resolved_at, resolved_by, resolver_agent, "
    "helpful_hint"
)


def _trace(r: sqlite3.Row) -> Trace:
    return Trace(r[0], r[1], r[2], r[3], _obj(r[4]), r[5] is not None)


def _step(r: sqlite3.Row) -> Step:
    return Step(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4] or "",
        r[5] or "partial",
        r[6] or 0,
        r[7],
        loads_list(r[8]),
        r[9] or 0,
        loads_list(r[10]),
    )


def _esc(r: sqlite3.Row) -> Escalation:
    return Escalation(r[0], r[1], r[2], loads_list(r[3]), r[4], r[5], r[6], r[7], r[8])


def trace_get(sql: Sql, session_id: str, *, steps: bool = True) -> Trace | None:
    """A trace with its steps (oldest first), or None."""
    r = sql.first("work_traces", TRACE_COLS, "session_id = ?", session_id)
    if r is None:
        return None
    t = _trace(r)
    if steps:
        rows = sql.select("work_steps", STEP_COLS, "session_id = ?", session_id, order="timestamp, rowid")
        t.steps = [_step(x) for x in rows]
    return t


def trace_list(sql: Sql, limit: int) -> list[Trace]:
    """The newest traces (by start), without steps."""
    rows = sql.select("work_traces", TRACE_COLS, order="started_at DESC, rowid DESC", limit=limit)
    return [_trace(r) for r in rows]


def trace_put(sql: Sql, t: Trace, credited_at: str | None = None) -> None:
    """Insert or update a trace row (not its steps)."""
    row = {
        "session_id": t.session_id,
        "task": t.task,
        "started_at": t.started_at,
        "completed_at": t.completed_at,
        "summary": None if t.summary is None else dumps(t.summary),
    }
    if credited_at is not None:  # else a stored credit stays (the upsert leaves the column alone)
        row["credited_at"] = credited_at
    sql.insert("work_traces", row, conflict="update")


def step_add(sql: Sql, s: Step) -> None:
    """Insert a step."""
    values = (
        s.id,
        s.session_id,
        s.timestamp,
        s.tool,
        s.intent,
        s.outcome,
        s.duration_ms,
        s.contribution_type,
        dumps(s.knowledge_gained),
        s.eliminated_paths,
        dumps(s.depends_on),
    )
    sql.insert("work_steps", _cols(STEP_COLS, values))


def escalations_of(sql: Sql, session_id: str) -> list[Escalation]:
    """A trace's escalations, oldest first."""
    rows = sql.select("escalations", ESC_COLS, "session_id = ?", session_id, order="triggered_at, rowid")
    return [_esc(r) for r in rows]


def escalation_get(sql: Sql, esc_id: str) -> Escalation | None:
    """One escalation, or None."""
    r = sql.first("escalations", ESC_COLS, "id = ?", esc_id)
    return None if r is None else _esc(r)


def escalation_put(sql: Sql, e: Escalation) -> None:
    """Insert or replace an escalation."""
    values = (
        e.id,
        e.session_id,
        e.triggered_at,
        dumps(e.triggers),
        e.highest_level,
        e.resolved_at,
        e.resolved_by,
        e.resolver_agent,
        e.helpful_hint,
    )
    sql.insert("escalations", _cols(ESC_COLS, values), conflict="replace")


def unresolved_escalations(sql: Sql) -> int:
    """How many escalations of any trace are unresolved."""
    return sql.count("escalations", "resolved_at IS NULL")


def recent_open_steps(sql: Sql, since_iso: str, limit: int) -> list[tuple[str, str]]:
    """(outcome, timestamp) of the newest steps of open traces after `since_iso`, newest first."""
    # the scoped API has no joins: the agent's open traces first, then its steps after `since_iso`
    open_ids = {str(r[0]) for r in sql.select("work_traces", "session_id", "completed_at IS NULL")}
    if not open_ids:
        return []
    out: list[tuple[str, str]] = []
    for r in sql.select(
        "work_steps",
        "outcome, timestamp, session_id",
        "timestamp > ?",
        since_iso,
        order="timestamp DESC, rowid DESC",
    ):
        if r[2] in open_ids:
            out.append((r[0] or "partial", r[1]))
            if len(out) >= limit:
                break
    return out


def trace_started_after(sql: Sql, since_iso: str) -> bool:
    """Was any trace started after `since_iso`?"""
    return sql.first("work_traces", "1", "started_at > ?", since_iso) is not None


# -- heartbeats and the shadow monitor ---------------------------------------------------------------


def heartbeat_add(sql: Sql, h: Heartbeat) -> None:
    """Log a heartbeat and keep only the newest HEARTBEAT_KEEP."""
    sql.insert(
        "heartbeat_log",
        {
            "id": h.id,
            "timestamp": h.timestamp,
            "tokens_used": h.tokens_used,
            "current_task": h.current_task,
            "status": h.status,
        },
    )
    # keep the newest HEARTBEAT_KEEP: delete from the first row past them, in the same order
    cut = sql.select(
        "heartbeat_log",
        "timestamp, rowid",
        order="timestamp DESC, rowid DESC",
        limit=1,
        offset=HEARTBEAT_KEEP,
    )
    if cut:
        ts, rowid = cut[0][0], cut[0][1]
        sql.delete("heartbeat_log", "timestamp < ? OR (timestamp = ? AND rowid <= ?)", ts, ts, rowid)


def heartbeats_recent(sql: Sql, limit: int) -> list[Heartbeat]:
    """The newest heartbeats, newest first."""
    rows = sql.select(
        "heartbeat_log",
        "id, timestamp, tokens_used, current_task, status",
        order="timestamp DESC, rowid DESC",
        limit=limit,
    )
    return [Heartbeat(r[0], r[1], r[2] or 0, r[3], r[4] or "healthy") for r in rows]


def heartbeat_count(sql: Sql) -> int:
    """How many heartbeats the log holds."""
    return sql.count("heartbeat_log")


SHADOW_COLS = (
    "shadow_id, shadow_status, primary_agent, is_shadow, last_heartbeat, heartbeat_interval_ms, "
    "stall_threshold_ms, registered_at, takeover_at"
)


def shadow_get(sql: Sql) -> ShadowMonitor | None:
    """The shadow monitor row, or None."""
    r = sql.first("shadow_monitor", SHADOW_COLS)
    if r is None:
        return None
    return ShadowMonitor(
        shadow_id=r[0],
        shadow_status=r[1] or "none",
        primary_agent=r[2],
        is_shadow=bool(r[3]),
        last_heartbeat=r[4],
        last_heartbeat_ms=None if r[4] is None else parse_js_date(r[4]),
        heartbeat_interval_ms=r[5] or 60_000,
        stall_threshold_ms=r[6] or 300_000,
        registered_at=r[7],
        takeover_at=r[8],
    )


def shadow_put(sql: Sql, m: ShadowMonitor) -> None:
    """Store the shadow monitor row."""
    values = (
        m.shadow_id,
        m.shadow_status,
        m.primary_agent,
        1 if m.is_shadow else 0,
        m.last_heartbeat,
        m.heartbeat_interval_ms,
        m.stall_threshold_ms,
        m.registered_at,
        m.takeover_at,
    )
    sql.insert("shadow_monitor", {"id": 1, **_cols(SHADOW_COLS, values)}, conflict="replace")


# -- goals ------------------------------------------------------------------------------------------

GOAL_COLS = (
    "id, title, description, type, priority, status, xp_reward, source, assigned_by, context, created_at, "
    "started_at, completed_at, outcome"
)


def _goal(r: sqlite3.Row) -> Goal:
    return Goal(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13])


def goal_get(sql: Sql, goal_id: str) -> Goal | None:
    """One goal, or None."""
    r = sql.first("goals", GOAL_COLS, "id = ?", goal_id)
    return None if r is None else _goal(r)


def goal_put(sql: Sql, g: Goal) -> None:
    """Insert or replace a goal."""
    values = (
        g.id,
        g.title,
        g.description,
        g.type,
        g.priority,
        g.status,
        g.xp_reward,
        g.source,
        g.assigned_by,
        g.context,
        g.created_at,
        g.started_at,
        g.completed_at,
        g.outcome,
    )
    sql.insert("goals", _cols(GOAL_COLS, values), conflict="replace")


def goal_delete(sql: Sql, goal_id: str) -> bool:
    """Delete a goal; was there one?"""
    return sql.delete("goals", "id = ?", goal_id) > 0


def goals_list(sql: Sql, status: str | None, limit: int) -> list[Goal]:
    """Goals by priority (highest first), then age (oldest first)."""
    where, params = ("status = ?", [status]) if status else ("", [])
    rows = sql.select(
        "goals", GOAL_COLS, where, *params, order="priority DESC, created_at, rowid", limit=limit
    )
    return [_goal(r) for r in rows]


def goal_first(sql: Sql, status: str) -> Goal | None:
    """The first goal of `status` in list order."""
    got = goals_list(sql, status, 1)
    return got[0] if got else None


def goal_stats(sql: Sql) -> dict[str, int]:
    """Counts per status and the XP earned (completed) and pending."""
    stats = dict.fromkeys(
        ("total", "pending", "inProgress", "completed", "failed", "totalXpEarned", "totalXpPending"), 0
    )
    for r in sql.select("goals", "status, count(*), sum(xp_reward)", order="status", group="status"):
        status, n, xp = r[0], int(r[1]), int(r[2] or 0)
        stats["total"] += n
        key = {
            "pending": "pending",
            "in_progress": "inProgress",
            "completed": "completed",
            "failed": "failed",
        }
        if status in key:
            stats[key[status]] += n
        if status == "completed":
            stats["totalXpEarned"] += xp
        elif status == "pending":
            stats["totalXpPending"] += xp
    return stats


# -- credentials (values are ciphertext; see gateway/do/credential_cipher.py) --------------------------


class StoredCredential:
    """A `credentials` row: the value as stored (ciphertext), never plaintext."""

    __slots__ = ("ciphertext", "created_at", "key", "masked_preview", "updated_at")

    def __init__(
        self, key: str, ciphertext: str, created_at: str, updated_at: str, masked_preview: str
    ) -> None:
        self.key = key
        self.ciphertext = ciphertext
        self.created_at = created_at
        self.updated_at = updated_at
        self.masked_preview = masked_preview

    def __repr__(self) -> str:  # never the value, even encrypted
        return f"StoredCredential(key={self.key!r})"


def _cred(r: sqlite3.Row) -> StoredCredential:
    return StoredCredential(r[0], r[1], r[2], r[3], r[4] or "****")


def credential_get(sql: Sql, key: str) -> StoredCredential | None:
    """One credential row, or None."""
    r = sql.first("credentials", "key, value, created_at, updated_at, masked_preview", "key = ?", key)
    return None if r is None else _cred(r)


def credentials_all(sql: Sql, limit: int) -> list[StoredCredential]:
    """Every credential row by key (at most `limit`)."""
    rows = sql.select(
        "credentials", "key, value, created_at, updated_at, masked_preview", order="key", limit=limit
    )
    return [_cred(r) for r in rows]


def credential_put(sql: Sql, c: StoredCredential) -> None:
    """Insert or update a credential (its creation time kept)."""
    changed = {"value": c.ciphertext, "updated_at": c.updated_at, "masked_preview": c.masked_preview}
    if not sql.update("credentials", changed, "key = ?", c.key):  # a new key: its creation time too
        sql.insert("credentials", {"key": c.key, "created_at": c.created_at, **changed})


def credential_delete(sql: Sql, key: str) -> bool:
    """Delete a credential; was there one?"""
    return sql.delete("credentials", "key = ?", key) > 0


# -- whole records, for the bulk tools (migrate, check) -----------------------------------------------

RECORD_KEYS: Final[dict[str, tuple[tuple[str, str | None], ...]]] = {
    "soul": (("soul_progression", None),),
    "trace": (("work_traces", "session_id"), ("work_steps", "session_id"), ("escalations", "session_id")),
    "heartbeat": (("heartbeat_log", "id"),),
    "shadow": (("shadow_monitor", None),),
    "goal": (("goals", "id"),),
    "credential": (("credentials", "key"),),
}
"""domain -> (table, the column holding the record's id) per table; None: one record per actor
(id ""), the table's every row."""

TABLES: Final[dict[str, tuple[str, ...]]] = {d: tuple(t for t, _ in spec) for d, spec in RECORD_KEYS.items()}
"""The actor-only domains (`gateway.domain.entities.ACTOR_ONLY`) and the agent actor tables
holding them."""


_SPECS: Final = {spec.name: spec for spec in TABLE_SPECS}


def _columns(sql: Sql, table: str) -> list[str]:
    return list(_SPECS[table].column_names)


def record_read(sql: Sql, domain: str, ident: str) -> dict[str, list[dict[str, Any]]] | None:
    """The rows of record `ident` of an actor-only domain, table by table; None if it has none."""
    out: dict[str, list[dict[str, Any]]] = {}
    for table, col in RECORD_KEYS[domain]:
        cols = _columns(sql, table)
        if col is None:
            if ident != "":
                return None
            rows = sql.select(table, ", ".join(cols), order="rowid")
        else:
            rows = sql.select(table, ", ".join(cols), f"{col} = ?", ident, order="rowid")
        out[table] = [dict(zip(cols, r, strict=True)) for r in rows]
    first = RECORD_KEYS[domain][0][0]
    return out if out[first] else None


def record_ids(sql: Sql, domain: str, after: str | None, limit: int) -> list[str]:
    """The ids of the records of an actor-only domain this actor holds, in order, after `after`."""
    table, col = RECORD_KEYS[domain][0]
    if col is None:
        has = sql.first(table, "1") is not None
        return [""] if has and after is None else []
    where, args = ("", []) if after is None else (f"{col} > ?", [after])
    return [str(r[0]) for r in sql.select(table, col, where, *args, order=col, limit=limit)]


def record_write(sql: Sql, domain: str, ident: str, rows: dict[str, list[dict[str, Any]]] | None) -> None:
    """Make record `ident` hold exactly `rows` (None: remove it). Only the domain's own tables
    and their existing columns are written; anything else is a ValueError."""
    tables = RECORD_KEYS[domain]
    given = set(rows or {})
    unknown = given - {t for t, _ in tables}
    if unknown:
        raise ValueError(f"{domain}: unknown table {sorted(unknown)[0]!r}")
    for table, col in tables:
        if col is None:
            sql.delete(table)
        else:
            sql.delete(table, f"{col} = ?", ident)
        cols = set(_columns(sql, table))
        for row in (rows or {}).get(table, []):
            names = list(row)
            if not names or not set(names) <= cols:
                raise ValueError(f"{domain}: a row of {table} has unknown columns")
            if col is not None and row.get(col) != ident:
                raise ValueError(f"{domain}: a row of {table} belongs to another record")
            sql.insert(table, {k: dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()})
