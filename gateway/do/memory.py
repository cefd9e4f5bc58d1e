"""What the coordinator keeps in memory between turns, as a Durable Object keeps state in its
instance: its agents, its tasks and the newest messages of its chat. Agent listings, `/work`,
task listings and chat reads (about half of a realistic mix, issue 13) no longer read and
decode hundreds of rows on every request (docs/benchmarks.md).

Why a copy is never stale:

- It lives in the actor instance, so an eviction, a reset or a restart starts from the database.
- Every write to its table, whoever makes it (the coordinator's own methods, the replica and the
  bulk layer writing entities, any raw SQL in a turn), sets a new random stamp for the table in
  `_change_stamps` through triggers, in the writer's own transaction. Each read first compares
  that stamp with the one the copy was made at, and loads the copy again when they differ.
- The coordinator's frequent writes (a heartbeat, a registration, a chat post, a new task) go
  through `write`: the copy is brought up to date first, then the one row written is read back
  with the stamp the write left, so the copy follows without a reload. A turn that then rolls
  back restores the old stamp, which differs from the copy's (stamps are random, so an old one
  does not come back): the next read loads again.

Each copy answers the query it replaces, in the same order: rows are kept under their sort key
(a text column, then `rowid`) in ascending order. Python compares `str` by code point, which is
the order SQLite's BINARY collation gives UTF-8 text. A table holding a value that order cannot
mirror (a key or filter column that is not text, as only raw SQL could store), or more rows than
`MAX_ROWS`, is not copied: the query then runs as before.

The objects handed out are the copy's own: callers only read them (render, sort, filter). So
are the lists: a query asked again while the table is unchanged gets the same `RenderedList`
back, whose JSON is rendered once (the coordinator's listings were rendered again on every
request: 17 % of the server's CPU under the realistic mix).
"""

# SQL text here is built only from constant table and column names; values are bound.
# ruff: noqa: S608

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any, Final

import orjson

from gateway.actors import ActorStorage, SqlCursor
from gateway.domain.model import Agent, GroupMessage, RenderedList, Task

__all__ = ["MAX_ROWS", "AgentRoster", "ChatWindow", "TaskIndex", "link_copies", "stamp_schema"]

MAX_ROWS: Final = 20_000
"""A table with more rows is not copied (the memory a copy may take is bounded)."""
MAX_MEMO: Final = 256
"""Answers kept per copy for queries asked again (one per agent for `/work`'s `mine`)."""


def stamp_schema(table: str) -> tuple[str, ...]:
    """The stamp table, `table`'s stamp, and the triggers that change it on every write."""
    return (
        "CREATE TABLE IF NOT EXISTS _change_stamps (name TEXT PRIMARY KEY, stamp INTEGER NOT NULL)",
        f"INSERT OR IGNORE INTO _change_stamps (name, stamp) VALUES ('{table}', random())",
        *(
            f"CREATE TRIGGER IF NOT EXISTS _{table}_{event.lower()} AFTER {event} ON {table} BEGIN "
            f"UPDATE _change_stamps SET stamp = random() WHERE name = '{table}'; END"
            for event in ("INSERT", "UPDATE", "DELETE")
        ),
    )


Key = tuple[str, int, str]  # (sort column, rowid, primary key)


def link_copies(*copies: _Copy) -> None:
    """Make the copies of one database (each of its own table) peers: a `write` through one,
    which writes no other copied table, keeps the others known current without a query."""
    for copy in copies:
        copy._peers = tuple(other for other in copies if other is not copy)


class _Copy:
    """The stamp logic shared by the copies; a subclass keeps the rows."""

    table: str = ""

    def __init__(self, key_column: str, columns: str) -> None:
        self._select_stamp = f"SELECT stamp FROM _change_stamps WHERE name = '{self.table}'"
        cols = ", ".join(f"x.{c.strip()}" for c in columns.split(","))
        self._select_one = (
            f"SELECT x.rowid, {cols}, s.stamp FROM {self.table} x, _change_stamps s "
            f"WHERE x.{key_column} = ? AND s.name = '{self.table}'"
        )
        self._stamp: int | None = None  # None: nothing copied
        # the storage's change token when the copy was last known current (None: unknown); while
        # the token is unchanged no row was written, so the stamp needs no query (issue 13)
        self._token: tuple[int, int, int] | None = None
        self._peers: tuple[_Copy, ...] = ()  # copies of the other tables of the same database
        self._loading = False  # a load appends its rows and sorts once
        self._memo: dict[Any, Any] = {}  # query -> its answer, while the copy is unchanged
        self._json: dict[str, tuple[Any, bytes]] = {}  # id -> (record, its JSON)
        self._refused: int | None = None  # the stamp at which the table could not be copied
        self.loads = 0  # loads of the whole copy (tests count them)

    def fresh(self, sql: ActorStorage) -> bool:
        """Bring the copy up to date with the table; False if it cannot be copied."""
        token = sql.change_token()
        if token == self._token:  # nothing written since the copy was known current
            return True
        row = sql.exec(self._select_stamp).first()
        stamp = None if row is None else row[0]
        if stamp is not None and stamp == self._stamp:
            self._token = token
            return True
        self._token = None
        self._memo.clear()
        self._json.clear()
        self._stamp = None
        self._clear()
        if stamp is None or stamp == self._refused:
            return False
        self.loads += 1
        self._loading = True
        try:
            loaded = self._load(sql)
        finally:
            self._loading = False
        if not loaded:
            self._clear()
            self._refused = stamp
            return False
        self._stamp = stamp
        self._token = token  # the load only read
        return True

    def write(self, sql: ActorStorage, ident: str, statement: str, *params: Any) -> SqlCursor:
        """Run `statement`, which writes the row `ident` and nothing else of the table nor of
        the tables of its peers, and keep the copy current: brought up to date first, then that
        row read back with its stamp. Peers current before the write stay current after it."""
        sql.ensure_transaction()  # the check, the write and the read-back see one snapshot
        fresh = self.fresh(sql)
        before = self._token
        cursor = sql.exec(statement, *params)
        self._memo.clear()
        self._token = None
        if fresh:
            r = sql.exec(self._select_one, ident).first()
            self._drop(ident)
            if r is None or not self._put(r[:-1]):  # gone, or not to be copied: load again
                self._stamp = None
                self._clear()
            else:
                self._stamp = r[-1]
                self._token = sql.change_token()  # the write, and nothing since
                if before is not None:
                    for peer in self._peers:
                        if peer._token == before:
                            peer._token = self._token
        return cursor

    def _fragment(self, record: Any) -> bytes:
        """`record`'s read-back form as JSON, rendered once per record object: a row written
        again is a new object, rendered anew (the copy's records are never changed in place)."""
        ident = record.agent_id if isinstance(record, Agent) else record.id
        hit = self._json.get(ident)
        if hit is not None and hit[0] is record:
            return hit[1]
        rendered = orjson.dumps(record.to_json())
        if len(self._json) >= MAX_ROWS:
            self._json.clear()
        self._json[ident] = (record, rendered)
        return rendered

    def _remember(self, query: Any, answer: Any) -> None:
        if len(self._memo) >= MAX_MEMO:
            self._memo.clear()
        self._memo[query] = answer

    # -- kept by the subclass ---------------------------------------------------------------------

    def _clear(self) -> None:
        raise NotImplementedError

    def _load(self, sql: ActorStorage) -> bool:
        raise NotImplementedError

    def _drop(self, ident: str) -> None:
        raise NotImplementedError

    def _put(self, row: Any) -> bool:
        """Add the row `rowid, columns...`; False if it cannot be copied."""
        raise NotImplementedError


class _Listing:
    """Rows in ascending key order, each with its record and (once rendered) its JSON, in three
    parallel lists: the newest `n` are slices, taken and reversed in C, and a listing renders only
    the records it has not rendered before (a heartbeat moves one agent: one record to render, not
    a loop over every agent of the team).

    The keys of the rows not rendered yet are kept in `pending`, in ascending order, so a listing
    of the rows from index `lo` on finds the ones it must render by bisection instead of looking
    at every row for a missing JSON: after a heartbeat or a new task that is one row of hundreds
    or thousands (issue 13: a Python loop over the 200 agents on every agent listing and `/work`
    after a heartbeat, over every open task after a task create). Rows older than every listing
    (past the newest 1,000 open tasks) stay pending without being looked at.
    """

    __slots__ = ("keys", "pending", "records", "rendered")

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.records: list[Any] = []
        self.rendered: list[bytes | None] = []
        self.pending: list[Key] = []  # the keys whose `rendered` entry is None, ascending

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: Key, record: Any, loading: bool) -> None:
        if loading:  # sorted once the load is done
            self.keys.append(key)
            self.records.append(record)
            self.rendered.append(None)
            return
        i = bisect.bisect_right(self.keys, key)
        self.keys.insert(i, key)
        self.records.insert(i, record)
        self.rendered.insert(i, None)
        bisect.insort(self.pending, key)

    def remove(self, key: Key) -> None:
        keys = self.keys
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            del keys[i]
            del self.records[i]
            if self.rendered[i] is None:
                _remove(self.pending, key)
            del self.rendered[i]

    def sort(self) -> None:
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        self.keys = [self.keys[i] for i in order]
        self.records = [self.records[i] for i in order]
        self.rendered = [None] * len(order)
        self.pending = list(self.keys)

    def _render_pending(self, lo: int, n: int, render: Callable[[Any], bytes]) -> None:
        """Render the rows of `lo:n` (`n` is the end) that have no JSON yet."""
        pending, keys, records, rendered = self.pending, self.keys, self.records, self.rendered
        first = bisect.bisect_left(pending, keys[lo])  # the pending keys of rows `lo` on
        if first == len(pending):
            return
        if (len(pending) - first) * 8 < n - lo:  # a few rows written since the last listing
            for key in pending[first:]:
                i = bisect.bisect_left(keys, key)
                rendered[i] = render(records[i])
        else:  # after a load: most rows
            for i in range(lo, n):
                if rendered[i] is None:
                    rendered[i] = render(records[i])
        del pending[first:]

    def newest(self, lo: int, limit: int, render: Callable[[Any], bytes]) -> RenderedList:
        """The rows from index `lo` on, newest first, at most `limit` of them, as a listing that
        carries their JSON (rendered here for the rows that had none yet)."""
        n = len(self.keys)
        lo = max(lo, n - limit) if limit > 0 else n
        if self.pending and lo < n:
            self._render_pending(lo, n, render)
        out = self.rendered[lo:n]
        out.reverse()
        records = self.records[lo:n]
        records.reverse()
        return RenderedList(records, rendered=out)

    def oldest_first(self, limit: int, render: Callable[[Any], bytes]) -> RenderedList:
        """The newest `limit` rows, oldest first, as a listing that carries their JSON (rendered
        here for the rows that had none yet)."""
        n = len(self.keys)
        lo = max(0, n - limit) if limit > 0 else n
        if self.pending and lo < n:
            self._render_pending(lo, n, render)
        return RenderedList(self.records[lo:n], rendered=self.rendered[lo:n])

    def newest_where(
        self, lo: int, limit: int, keep: Callable[[Any], bool], render: Callable[[Any], bytes]
    ) -> RenderedList:
        """`newest`, of the rows whose record `keep` accepts."""
        records: list[Any] = []
        items: list[bytes] = []
        rendered = self.rendered
        for i in range(len(self.keys) - 1, lo - 1, -1):
            if len(records) >= limit:
                break
            record = self.records[i]
            if keep(record):
                item = rendered[i]
                if item is None:
                    item = rendered[i] = render(record)
                    _remove(self.pending, self.keys[i])
                records.append(record)
                items.append(item)
        return RenderedList(records, rendered=items)


def _remove(keys: list[Key], key: Key) -> None:
    i = bisect.bisect_left(keys, key)
    if i < len(keys) and keys[i] == key:
        del keys[i]


class AgentRoster(_Copy):
    """The rows of `agents` as `Agent`s, listable as `GET /agents` lists them."""

    table = "agents"

    def __init__(self, columns: str, from_row: Callable[[Any], Agent]) -> None:
        super().__init__("agent_id", columns)
        self._select_all = f"SELECT rowid, {columns} FROM agents LIMIT {MAX_ROWS + 1}"
        self._from_row = from_row
        self._agents: dict[str, tuple[Key | None, Agent]] = {}
        self._order = _Listing()  # listable rows (text last_seen and status), ascending
        self._offline = 0  # listable rows whose status is 'offline' (the listing skips them)

    def get(self, sql: ActorStorage, agent_id: str) -> tuple[bool, Agent | None]:
        """(copied, the agent or None); not copied: the caller reads the row itself."""
        if not self.fresh(sql):
            return False, None
        entry = self._agents.get(agent_id)
        return True, None if entry is None else entry[1]

    def active(self, sql: ActorStorage, cutoff: str, limit: int) -> list[Agent] | None:
        """`status != 'offline' AND last_seen >= cutoff ORDER BY last_seen DESC, rowid DESC
        LIMIT limit`; None if the table cannot be copied (the caller runs the query)."""
        if not self.fresh(sql):
            return None
        # asked again: the same answer while nothing changed, unless time moved back or one of
        # its agents is now older than the cutoff (the others stay out as the cutoff moves on)
        memo = self._memo.get(limit)
        if memo is not None:
            asked_at, answer = memo
            if cutoff >= asked_at and (not answer or answer[-1].last_seen >= cutoff):
                return answer  # type: ignore[no-any-return]
        order = self._order
        lo = bisect.bisect_left(order.keys, (cutoff,))  # the first key with last_seen >= cutoff
        if self._offline:
            out = order.newest_where(lo, limit, _not_offline, self._fragment)
        else:
            out = order.newest(lo, limit, self._fragment)
        self._remember(limit, (cutoff, out))
        return out

    def _clear(self) -> None:
        self._agents = {}
        self._order = _Listing()
        self._offline = 0

    def _load(self, sql: ActorStorage) -> bool:
        rows = sql.exec(self._select_all).all()
        if len(rows) > MAX_ROWS or not all(self._put(r) for r in rows):
            return False
        self._order.sort()
        return True

    def _drop(self, ident: str) -> None:
        old = self._agents.pop(ident, None)
        if old is not None and old[0] is not None:
            self._order.remove(old[0])
            if old[1].status == "offline":
                self._offline -= 1

    def _put(self, row: Any) -> bool:
        rowid, agent_id, status, last_seen = row[0], row[1], row[2], row[5]
        if not isinstance(agent_id, str) or not isinstance(status, str | None):
            return False
        if not isinstance(last_seen, str | None):
            return False
        # a NULL last_seen or status is never listed (the query's comparisons are NULL)
        key = None if last_seen is None or status is None else (last_seen, rowid, agent_id)
        agent = self._from_row(row[1:])
        self._agents[agent_id] = (key, agent)
        if key is not None:
            self._order.add(key, agent, self._loading)
            if status == "offline":
                self._offline += 1
        return True


def _not_offline(agent: Agent) -> bool:
    return agent.status != "offline"


class TaskIndex(_Copy):
    """The rows of `tasks` as `Task`s, by `created_at, rowid`, with their status and assignee."""

    table = "tasks"

    def __init__(self, columns: str, from_row: Callable[[Any], Task]) -> None:
        super().__init__("id", columns)
        self._select_all = f"SELECT rowid, {columns} FROM tasks LIMIT {MAX_ROWS + 1}"
        self._from_row = from_row
        self._tasks: dict[str, tuple[Key, Task]] = {}
        self._order = _Listing()
        self._by_status: dict[str, _Listing] = {}
        self._by_assignee: dict[str, _Listing] = {}

    def has(self, sql: ActorStorage, ident: str) -> bool | None:
        """Whether a row with id `ident` exists; None if the table cannot be copied (the caller
        runs the query). The copy holds every row of the table, so it answers both ways."""
        if not self.fresh(sql):
            return None
        return ident in self._tasks

    def select(
        self, sql: ActorStorage, status: str | None, assignee: str | None, limit: int
    ) -> list[Task] | None:
        """`[WHERE status = ? AND assignee = ?] ORDER BY created_at DESC, rowid DESC LIMIT ?`
        (None for a filter not given); None if the table cannot be copied."""
        if not self.fresh(sql):
            return None
        query = (status, assignee, limit)
        memo = self._memo.get(query)
        if memo is not None:
            return memo  # type: ignore[no-any-return]
        if assignee is not None:
            rows = self._by_assignee.get(assignee, _EMPTY)
        elif status is not None:
            rows = self._by_status.get(status, _EMPTY)
        else:
            rows = self._order
        if assignee is not None and status is not None:
            out = rows.newest_where(0, limit, lambda task: task.status == status, self._fragment)
        else:
            out = rows.newest(0, limit, self._fragment)
        self._remember(query, out)
        return out

    def _clear(self) -> None:
        self._tasks = {}
        self._order = _Listing()
        self._by_status = {}
        self._by_assignee = {}

    def _load(self, sql: ActorStorage) -> bool:
        rows = sql.exec(self._select_all).all()
        if len(rows) > MAX_ROWS or not all(self._put(r) for r in rows):
            return False
        self._order.sort()
        for listing in (*self._by_status.values(), *self._by_assignee.values()):
            listing.sort()
        return True

    def _drop(self, ident: str) -> None:
        old = self._tasks.pop(ident, None)
        if old is None:
            return
        key, task = old
        self._order.remove(key)
        if task.status is not None:
            self._by_status[task.status].remove(key)
        if task.assignee is not None:
            self._by_assignee[task.assignee].remove(key)

    def _put(self, row: Any) -> bool:
        rowid, ident, status, assignee, created_at = row[0], row[1], row[4], row[5], row[10]
        if not isinstance(ident, str) or not isinstance(created_at, str):
            return False
        if not isinstance(status, str | None) or not isinstance(assignee, str | None):
            return False
        key = (created_at, rowid, ident)
        task = self._from_row(row[1:])
        self._tasks[ident] = (key, task)
        self._order.add(key, task, self._loading)
        if status is not None:
            listing = self._by_status.get(status)
            if listing is None:
                listing = self._by_status[status] = _Listing()
            listing.add(key, task, self._loading)
        if assignee is not None:
            listing = self._by_assignee.get(assignee)
            if listing is None:
                listing = self._by_assignee[assignee] = _Listing()
            listing.add(key, task, self._loading)
        return True


_EMPTY: Final = _Listing()
"""No rows (never written to)."""


class ChatWindow(_Copy):
    """The newest `size` rows of `messages` (by `timestamp, rowid`) as `GroupMessage`s.

    Any query for the newest `n <= size` messages (after a time or not) is answered from them:
    a message left out has `size` newer ones, each as late as it is, so it is never among the
    newest `n` that match.
    """

    table = "messages"

    def __init__(self, columns: str, from_row: Callable[[Any], GroupMessage], size: int) -> None:
        super().__init__("id", columns)
        self.size = size
        self._select_newest = (
            f"SELECT rowid, {columns} FROM messages ORDER BY timestamp DESC, rowid DESC LIMIT {size}"
        )
        self._from_row = from_row
        self._messages: dict[str, tuple[Key, GroupMessage]] = {}
        # the window in ascending key order, with each message's JSON once rendered: the page of
        # the newest `n` is two slices, and after a post only the new message is rendered (a
        # chat read after a post looked up the JSON of each of its 50 messages, issue 13)
        self._order = _Listing()

    def newest(self, sql: ActorStorage, limit: int, since: str | None) -> list[GroupMessage] | None:
        """The newest `limit` messages (strictly after `since`), oldest first; None if they
        cannot be answered from the window (the caller runs the query)."""
        if limit > self.size or not self.fresh(sql):
            return None
        query = (limit, since)
        memo = self._memo.get(query)
        if memo is not None:
            return memo  # type: ignore[no-any-return]
        order = self._order
        if since is None:  # the newest `limit`, oldest first: slices of the ordered window
            out = order.oldest_first(limit, self._fragment)
        else:
            out = RenderedList(render=self._fragment)
            keys, records = order.keys, order.records
            for i in range(len(keys) - 1, -1, -1):
                if len(out) >= limit or keys[i][0] <= since:
                    break
                out.append(records[i])
            out.reverse()
        self._remember(query, out)
        return out

    def _clear(self) -> None:
        self._messages = {}
        self._order = _Listing()

    def _load(self, sql: ActorStorage) -> bool:
        return all(self._put(r) for r in sql.exec(self._select_newest).all())

    def _drop(self, ident: str) -> None:
        old = self._messages.pop(ident, None)
        if old is not None:
            self._order.remove(old[0])

    def _put(self, row: Any) -> bool:
        rowid, ident, timestamp = row[0], row[1], row[5]
        if not isinstance(ident, str) or not isinstance(timestamp, str):
            return False
        key = (timestamp, rowid, ident)
        order = self._order
        if len(order) >= self.size:
            if key < order.keys[0]:
                return True  # older than every message kept: not among the newest
            oldest = order.keys[0]
            order.remove(oldest)
            del self._messages[oldest[2]]
        message = self._from_row(row[1:])
        self._messages[ident] = (key, message)
        order.add(key, message, False)  # in order as it comes (a load trims as it goes)
        return True
