"""The coordinator's agents kept in memory between turns, as a Durable Object keeps state in its
instance: agent listings and `/work` (about a sixth of a realistic mix, 200 agents each) no
longer read and decode every row of `agents` on every request (docs/benchmarks.md, issue 13).

Why the copy is never stale:

- It lives in the actor instance, so an eviction, a reset or a restart starts from the database.
- Every write to `agents`, whoever makes it (the coordinator's own methods, the replica and the
  bulk layer writing entities, any raw SQL in a turn), sets a new random stamp in
  `_change_stamps` through triggers, in the writer's own transaction. Each read first compares
  that stamp with the one the copy was made at, and reloads the whole table when they differ.
- The coordinator's frequent writes (the heartbeat of `/work`, a registration, a chat read with
  `agentId`) re-read the one row they wrote and the stamp after it, so the copy follows them
  without a reload. A turn that then rolls back restores the old stamp, which differs from the
  copy's (stamps are random, so an old one does not come back): the next read reloads.

The listing is the query it replaces (`status != 'offline' AND last_seen >= cutoff ORDER BY
last_seen DESC, rowid DESC LIMIT n`), kept as a list of `(last_seen, rowid, agent_id)` in
ascending order: Python compares `str` by code point, which is the order SQLite's BINARY
collation gives UTF-8 text. A table holding a value this order cannot mirror (a `last_seen`,
`status` or `agent_id` that is not text, as only raw SQL could store) is not copied: the
listing then runs the query, as before.

The `Agent` objects handed out are the copy's own: callers only read them (render, sort, filter).
"""

# SQL text here is built only from constant column lists and event names; values are bound.
# ruff: noqa: S608

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any, Final

from gateway.actors import ActorStorage, SqlCursor
from gateway.domain.model import Agent

__all__ = ["ROSTER_SCHEMA", "AgentRoster"]

ROSTER_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS _change_stamps (name TEXT PRIMARY KEY, stamp INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO _change_stamps (name, stamp) VALUES ('agents', random())",
    *(
        f"CREATE TRIGGER IF NOT EXISTS _agents_{event.lower()} AFTER {event} ON agents BEGIN "
        "UPDATE _change_stamps SET stamp = random() WHERE name = 'agents'; END"
        for event in ("INSERT", "UPDATE", "DELETE")
    ),
)
"""The stamp table and the triggers that change the stamp on every write to `agents`."""

_SELECT_STAMP: Final = "SELECT stamp FROM _change_stamps WHERE name = 'agents'"

Key = tuple[str, int, str]  # (last_seen, rowid, agent_id)


class AgentRoster:
    """The rows of `agents` as `Agent`s, in listing order, valid at `stamp`."""

    def __init__(self, columns: str, from_row: Callable[[Any], Agent]) -> None:
        self._select_all = f"SELECT rowid, {columns} FROM agents"
        self._select_one = (
            f"SELECT a.rowid, {', '.join('a.' + c.strip() for c in columns.split(','))}, t.stamp "
            "FROM agents a, _change_stamps t WHERE a.agent_id = ? AND t.name = 'agents'"
        )
        self._from_row = from_row
        self._stamp: int | None = None  # None: nothing copied (or the table cannot be mirrored)
        self._agents: dict[str, tuple[Key | None, Agent]] = {}
        self._order: list[Key] = []  # listable rows (text last_seen), ascending
        self.loads = 0  # full reloads (tests count them)

    # -- reads ------------------------------------------------------------------------------------

    def _fresh(self, sql: ActorStorage) -> bool:
        """Bring the copy up to date with the database; False if the table cannot be mirrored."""
        row = sql.exec(_SELECT_STAMP).first()
        stamp = None if row is None else row[0]
        if stamp is not None and stamp == self._stamp:
            return True
        return self._load(sql, stamp)

    def _load(self, sql: ActorStorage, stamp: int | None) -> bool:
        self._stamp = None
        self._agents = {}
        self._order = []
        if stamp is None:
            return False
        self.loads += 1
        agents: dict[str, tuple[Key | None, Agent]] = {}
        order: list[Key] = []
        for r in sql.exec(self._select_all).all():
            entry = self._entry(r)
            if entry is None:
                return False
            agents[r[1]] = entry
            if entry[0] is not None:
                order.append(entry[0])
        order.sort()
        self._agents, self._order, self._stamp = agents, order, stamp
        return True

    def _entry(self, r: Any) -> tuple[Key | None, Agent] | None:
        """(listing key, agent) of a row `rowid, AGENT_COLS...`; None if it cannot be mirrored."""
        rowid, agent_id, status, last_seen = r[0], r[1], r[2], r[5]
        if not isinstance(agent_id, str) or not isinstance(status, str | None):
            return None
        if not isinstance(last_seen, str | None):
            return None
        # a NULL last_seen or status is never listed (the query's comparisons are NULL)
        key = None if last_seen is None or status is None else (last_seen, rowid, agent_id)
        return key, self._from_row(r[1:9])

    def get(self, sql: ActorStorage, agent_id: str) -> tuple[bool, Agent | None]:
        """(copied, the agent or None); not copied: the caller reads the row itself."""
        if not self._fresh(sql):
            return False, None
        entry = self._agents.get(agent_id)
        return True, None if entry is None else entry[1]

    def active(self, sql: ActorStorage, cutoff: str, limit: int) -> list[Agent] | None:
        """Agents not offline, seen at `cutoff` or later, newest first, at most `limit`; None if
        the table cannot be mirrored (the caller runs the query)."""
        if not self._fresh(sql):
            return None
        out: list[Agent] = []
        agents = self._agents
        for last_seen, _, agent_id in reversed(self._order):
            if last_seen < cutoff or len(out) >= limit:
                break
            agent = agents[agent_id][1]
            if agent.status != "offline":
                out.append(agent)
        return out

    # -- the coordinator's own writes ------------------------------------------------------------

    def write(self, sql: ActorStorage, agent_id: str, statement: str, *params: Any) -> SqlCursor:
        """Run `statement`, which writes the row of `agent_id` and nothing else of `agents`, and
        keep the copy current: brought up to date first, then that row re-read with the stamp
        the write left."""
        fresh = self._fresh(sql)
        cursor = sql.exec(statement, *params)
        if fresh:
            self._reread(sql, agent_id)
        return cursor

    def _reread(self, sql: ActorStorage, agent_id: str) -> None:
        r = sql.exec(self._select_one, agent_id).first()
        old = self._agents.pop(agent_id, None)
        if old is not None and old[0] is not None:
            i = bisect.bisect_left(self._order, old[0])
            if i < len(self._order) and self._order[i] == old[0]:
                del self._order[i]
        entry = None if r is None else self._entry(r)
        if r is None or entry is None:  # gone, or not mirrorable: the next read reloads
            self._load(sql, None)
            return
        self._agents[agent_id] = entry
        if entry[0] is not None:
            bisect.insort(self._order, entry[0])
        self._stamp = r[9]
