"""`ctx.tables`: the storage API of sharded actors, scoped to the calling actor.

Agents and locks (the many small actors) keep their rows in shared shard files
(`gateway/actors/shards.py`). Every table of a sharded kind is declared with a `TableSpec`; in
the shard it becomes `<kind>__<table>` with a leading `actor` column that is part of the
primary key. Actor code never names that column: every statement built here adds
`actor = <the calling actor>` to its WHERE clause (reads, updates, deletes) or to its values
(inserts), so an actor cannot see or change another actor's rows.

The caller gives SQL fragments only where it must (the column list, a WHERE condition, an
ORDER BY); values are always bound (`?`). A fragment may hold column names, operators, `?`,
numbers, function calls and balanced parentheses, and nothing that could reach past the
actor's rows: no quotes, no `;`, no comments, no SELECT/FROM/UNION/WITH/VALUES/JOIN and no
statement keywords. It is placed in parentheses after the actor condition, so it can only
narrow what the actor sees.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from gateway.actors.naming import ActorRef
from gateway.errors import LimitExceeded, StorageApiError

if TYPE_CHECKING:
    from gateway.actors.shards import Shard

T = TypeVar("T")

MAX_BOUND_PARAMETERS = 100
KEPT_CHARS_MAX = 8192
"""Characters of text (and bytes of blobs) an activation keeps of its kept reads (`select(...,
keep=True)`): a larger result is read again each time. With `actors.max_open` 4,096 activations
this bounds what they keep to about 32 MB."""
KEPT_ENTRY_CHARS = 64
"""What each kept read counts against `KEPT_CHARS_MAX` besides its text (so does an empty one)."""

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOT_PARENS = re.compile(r"[^()]+")
_FRAGMENT_CHARS = re.compile(r"^[A-Za-z0-9_\s,.*()=<>!?%+\-/|]*$")
_FORBIDDEN_WORDS = re.compile(
    r"\b(SELECT|FROM|UNION|INTERSECT|EXCEPT|WITH|VALUES|JOIN|ATTACH|DETACH|PRAGMA|INSERT|UPDATE|"
    r"DELETE|REPLACE|INTO|CREATE|DROP|ALTER|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|VACUUM)\b",
    re.IGNORECASE,
)

Conflict = Literal["abort", "ignore", "replace", "update"]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table of a sharded kind.

    `columns` is the column list as in CREATE TABLE (without the actor column); `key` names the
    columns that, after the actor, form the primary key (empty: one row per actor); `indexes`
    are column lists, each indexed after the actor column. Columns added to `columns` later are
    added to existing shards at start-up (ALTER TABLE ADD COLUMN: give them a default or allow
    NULL).
    """

    name: str
    columns: str
    key: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not _IDENT.match(self.name):
            raise ValueError(f"bad table name {self.name!r}")
        names = tuple(_column_name(c) for c in _split_columns(self.columns))
        object.__setattr__(self, "column_names", names)
        for col in self.key:
            if col not in names:
                raise ValueError(f"key column {col!r} is not a column of {self.name}")


def physical_name(kind: str, table: str) -> str:
    """The table's name in the shard file."""
    return f"{kind}__{table}"


def _split_columns(columns: str) -> list[str]:
    out, depth, buf = [], 0, ""
    for ch in columns:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(buf.strip())
            buf = ""
        else:
            buf += ch
    if buf.strip():
        out.append(buf.strip())
    return out


def _column_name(decl: str) -> str:
    name = decl.split(maxsplit=1)[0]
    if not _IDENT.match(name) or name == "actor":
        raise ValueError(f"bad column {name!r}")
    return name


def create_statements(kind: str, spec: TableSpec) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements of `spec` in a shard."""
    table = physical_name(kind, spec.name)
    key = ", ".join(("actor", *spec.key))
    stmts = [f"CREATE TABLE IF NOT EXISTS {table} (actor TEXT NOT NULL, {spec.columns}, PRIMARY KEY ({key}))"]
    for cols in spec.indexes:
        idx = f"{table}__{'_'.join(cols)}"
        stmts.append(f"CREATE INDEX IF NOT EXISTS {idx} ON {table} (actor, {', '.join(cols)})")
    return stmts


def added_columns(conn: sqlite3.Connection, kind: str, spec: TableSpec) -> list[str]:
    """ALTER TABLE statements for the columns of `spec` that the shard's table lacks."""
    table = physical_name(kind, spec.name)
    have = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
    return [
        f"ALTER TABLE {table} ADD COLUMN {decl}"
        for decl in _split_columns(spec.columns)
        if _column_name(decl) not in have
    ]


def check_fragment(text: str, what: str) -> str:
    """`text` if it is a safe fragment (see the module docstring), else StorageApiError."""
    if not _FRAGMENT_CHARS.match(text) or "--" in text or "/*" in text:
        raise StorageApiError(f"{what} may hold column names, operators and ? only: {text!r}")
    word = _FORBIDDEN_WORDS.search(text)
    if word:
        raise StorageApiError(f"{what} may not contain {word.group(1).upper()}: {text!r}")
    if not _balanced(text):
        raise StorageApiError(f"{what} has unbalanced parentheses: {text!r}")
    return text


def _balanced(text: str) -> bool:
    """Whether the parentheses of `text` are balanced: removing each innermost pair `()` (of
    the parentheses alone) leaves nothing. No loop per character: a bulk read's WHERE of many
    key pairs is thousands of characters long."""
    parens = _NOT_PARENS.sub("", text)
    while "()" in parens:
        parens = parens.replace("()", "")
    return not parens


def _check_ident(name: str) -> str:
    if not _IDENT.match(name) or name.lower() == "actor":
        raise StorageApiError(f"bad column name {name!r}")
    return name


class ShardTables:
    """One sharded actor's storage: the scoped table API (`ctx.tables`) and its turn scope.

    The host opens the turn (`enter`: the shard's turn lock), the first write opens the actor's
    scope in the shard transaction (a SAVEPOINT, or BEGIN if none is open; a read opens nothing,
    see `_read_conn`), and the end of the turn either folds the scope into the shard's pending
    group commit (`finish`) or rolls it back (`rollback`).
    """

    def __init__(self, shard: Shard, ref: ActorRef, specs: Mapping[str, TableSpec]) -> None:
        self.shard = shard
        self.ref = ref
        self.kind = ref.kind
        self._specs = specs
        self._cache = shard.sql_cache.setdefault(ref.kind, {})  # built SQL, per kind (names differ)
        self._name = ref.name
        self._scope: str | None = None  # None: no write yet; "": this turn began the txn
        # the turn read rows while the shard held another turn's writes not yet committed
        self._read_pending = False
        self._scope_wanted = False  # `ensure_transaction`: the turn's first statement opens the scope
        self._entered = False
        self._wrote = False
        self._registered = False
        # a turn of this activation registered the actor and committed: `_actors` holds its row
        # (rows of `_actors` are never deleted), so later turns need not insert it again
        self._registration_durable = False
        self._depth = 0
        self.rows_written_total = 0
        # kept reads: table -> (the query and its arguments -> rows, characters kept for the table)
        self._kept: dict[str, tuple[dict[tuple[Any, ...], list[sqlite3.Row]], int]] = {}
        self._kept_chars = 0
        # rows this turn wrote and gave whole (`keep_written`): table -> (query key, rows), kept
        # once the turn's scope is folded into the shard's transaction (`finish`)
        self._written: dict[str, tuple[tuple[Any, ...], list[sqlite3.Row]]] = {}

    # -- the turn scope (called by the host) ----------------------------------------------------

    async def enter(self) -> None:
        """Take the shard's turn lock (turns of actors on one shard run one at a time)."""
        if not self._entered:
            shard = self.shard
            shard.queued += 1
            try:
                await shard.lock.acquire()
            finally:
                shard.queued -= 1
            self._entered = True
            self._wrote = False
            self._registered = False
            self._read_pending = False
            self._scope_wanted = False

    def try_enter(self) -> bool:
        """`enter` without an await when the shard's turn lock is free and nobody waits for it."""
        if not self._entered:
            if not self.shard.lock.try_acquire():
                return False
            self._entered = True
            self._wrote = False
            self._registered = False
            self._read_pending = False
            self._scope_wanted = False
        return True

    def end_read_turn(self, _inline: bool = True) -> bool:
        """End a turn that opened no scope and read nothing pending (`finish` would have nothing
        to commit or wait for) without a coroutine; False, changing nothing, for any other."""
        if self._scope is not None or self._read_pending:
            return False
        self._depth = 0
        self._wrote = False
        self._scope_wanted = False
        if self._written:
            self._written.clear()  # given by a turn that wrote nothing: not kept
        self.leave()
        return True

    def leave(self) -> None:
        """Give the shard's turn lock back (idempotent)."""
        if self._entered:
            self._entered = False
            self.shard.lock.release()

    @property
    def in_transaction(self) -> bool:
        return self._scope is not None

    @property
    def in_savepoint(self) -> bool:
        return self._depth > 0

    @property
    def wrote(self) -> bool:
        return self._wrote and self._scope is not None

    def _open_scope(self) -> sqlite3.Connection:
        if not self._entered:
            raise StorageApiError(f"storage of {self.ref} used outside a turn")
        conn = self.shard.conn
        if self._scope is None:
            if conn.in_transaction:
                name = self.shard.next_savepoint()
                self.shard.cur.execute(f"SAVEPOINT {name}")
                self._scope = name
            else:
                self.shard.cur.execute("BEGIN")
                self._scope = ""
        return conn

    def ensure_transaction(self) -> None:
        """For a turn that reads and then writes: its first statement, a read too, opens the
        turn's scope, so its reads run in the write's transaction instead of each in a read
        transaction of its own (which takes and drops SQLite's read locks once more: a lock
        acquire, a checkpoint save; issue 13). The scope ends as a writing turn's does; one that
        then writes nothing commits nothing. A turn whose reads are all kept (`keep=True`) and
        that then writes nothing (a lock refused to another agent) runs no statement at all:
        what it read is this actor's committed rows, so it has nothing to end or wait for."""
        self._scope_wanted = True

    def _read_conn(self) -> sqlite3.Connection:
        """The connection for a statement that only reads.

        A read opens no scope (no BEGIN, SAVEPOINT or COMMIT of its own): the shard's connection
        is the only one that writes the shard and the turn lock keeps every other turn out, so
        outside a transaction each read sees the committed rows as the turn's last statement
        left them, and what it saw needs no wait. Inside the shard's open transaction (a group
        not yet committed, or this turn's own writes) a read may see writes not yet durable, so
        the turn waits for that group's commit (`finish`) as a turn that wrote does.
        """
        if not self._entered:
            raise StorageApiError(f"storage of {self.ref} used outside a turn")
        conn = self.shard.conn
        if self._scope is None:
            if self._scope_wanted:
                return self._open_scope()
            if conn.in_transaction:
                self._read_pending = True
        return conn

    def _mark_write(self, conn: sqlite3.Connection) -> None:
        if not self._registered and not self._registration_durable:
            conn.execute(
                "INSERT OR IGNORE INTO _actors (kind, name, created_ms) VALUES (?, ?, ?)",
                (self.kind, self._name, self.shard.now_ms()),
            )
            self._registered = True
        self._wrote = True

    async def finish(self) -> None:
        """End the turn's scope; return once what it wrote (or read) is durable."""
        scope, self._scope = self._scope, None
        self._depth = 0
        self._scope_wanted = False
        wrote, self._wrote = self._wrote, False
        read_pending, self._read_pending = self._read_pending, False
        written = self._written
        try:
            self.shard.end_scope(scope, wrote=wrote)
            if written:
                self._written = {}
                if scope is not None:
                    self._keep_written(written)
        finally:
            written.clear()
            self.leave()
        # a turn that read only committed rows, or touched no storage, has nothing to wait for
        if scope is not None or read_pending:
            await self.shard.durable()
        if wrote and self._registered:  # committed: a failed commit raised above (and resets us)
            self._registration_durable = True

    def commit_now(self) -> None:
        """The file-actor committer interface: sharded turns commit through `finish`."""
        raise StorageApiError("sharded actors commit through the shard's group commit")

    def rollback(self) -> None:
        """Discard the turn's writes (its savepoint, or its own transaction)."""
        scope, self._scope = self._scope, None
        self._depth = 0
        self._scope_wanted = False
        self._wrote = False
        self._registered = False
        self._read_pending = False
        self.forget_kept()
        if scope is not None:
            self.shard.rollback_scope(scope)

    def close(self) -> None:
        self.rollback()
        self.leave()

    # -- the alarm row --------------------------------------------------------------------------

    def read_alarm(self) -> int | None:
        conn = self._read_conn()
        row = conn.execute(
            "SELECT ts FROM _alarms WHERE kind = ? AND name = ?", (self.kind, self._name)
        ).fetchone()
        return None if row is None else int(row[0])

    def write_alarm(self, ms: int | None) -> None:
        conn = self._open_scope()
        self._mark_write(conn)
        if ms is None:
            conn.execute("DELETE FROM _alarms WHERE kind = ? AND name = ?", (self.kind, self._name))
        else:
            conn.execute(
                "INSERT INTO _alarms (kind, name, ts) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, name) DO UPDATE SET ts = excluded.ts",
                (self.kind, self._name, ms),
            )

    # -- kept reads -------------------------------------------------------------------------------

    def forget_kept(self, table: str | None = None) -> None:
        """Drop the kept reads of `table` (every table: None). Every write of a table through
        this object drops its own; a rollback, and a bulk write of the actor's rows
        (`ActorHost.write_rows`), drop them all."""
        if table is None:
            self._kept.clear()
            self._kept_chars = 0
            self._written.clear()
            return
        if self._written:
            self._written.pop(table, None)
        kept = self._kept.pop(table, None)
        if kept is not None:
            self._kept_chars -= kept[1]

    def _keep(self, table: str, key: tuple[Any, ...], rows: list[sqlite3.Row]) -> None:
        chars = KEPT_ENTRY_CHARS + sum(len(v) for r in rows for v in r if isinstance(v, str | bytes))
        if self._kept_chars + chars > KEPT_CHARS_MAX:
            return
        by_key, table_chars = self._kept.get(table, ({}, 0))
        by_key[key] = rows
        self._kept[table] = (by_key, table_chars + chars)
        self._kept_chars += chars

    # -- the table API (ctx.tables) -------------------------------------------------------------

    def _table(self, table: str) -> tuple[str, TableSpec]:
        spec = self._specs.get(table)
        if spec is None:
            raise StorageApiError(f"actors of kind {self.kind!r} have no table {table!r}")
        return physical_name(self.kind, table), spec

    def _run(self, sql: str, params: Sequence[Any], *, write: bool) -> sqlite3.Cursor:
        """Run one built statement; `params` include the actor's name where the SQL binds it."""
        if len(params) > MAX_BOUND_PARAMETERS + 2:
            raise LimitExceeded(f"more than {MAX_BOUND_PARAMETERS} bound parameters")
        conn = self._open_scope() if write else self._read_conn()
        cur = self.shard.cur.execute(sql, params)  # the shard's one cursor: read by the caller at once
        if write and cur.rowcount > 0:  # a statement that changed nothing registers nothing
            self._mark_write(conn)  # on a cursor of its own: `cur.rowcount` stays this statement's
        return cur

    def _where(self, where: str) -> str:
        return f"actor = ? AND ({check_fragment(where, 'where')})" if where.strip() else "actor = ?"

    def select(
        self,
        table: str,
        cols: str,
        where: str = "",
        *params: Any,
        order: str = "",
        limit: int | None = None,
        offset: int | None = None,
        group: str = "",
        keep: bool = False,
    ) -> list[sqlite3.Row]:
        """`SELECT cols FROM table WHERE <this actor> AND (where) [GROUP BY group]
        [ORDER BY order] [LIMIT ? [OFFSET ?]]`.

        With `keep`, the rows are kept by this activation until a write of `table` (or a
        rollback, or a bulk write of the actor) and the same query with the same arguments is
        answered from them, without SQLite: the actor's rows change only through its own turns
        and the bulk writer (a hot read of the realistic mix: a lock check, a checkpoint; issue 13).
        """
        key = ("select", table, cols, where, group, order, limit is not None, offset is not None)
        sql = self._cache.get(key)
        if sql is None:
            sql = self._select_sql(key)
        args: tuple[Any, ...] = (self._name, *params)
        if limit is not None or offset is not None:
            args += (-1 if limit is None else limit,)
        if offset is not None:
            args += (offset,)
        if not keep:
            return list(self._run(sql, args, write=False).fetchall())
        key = (sql, *args)
        kept = self._kept.get(table)
        if kept is not None:
            rows = kept[0].get(key)
            if rows is not None:
                return list(rows)
        rows = list(self._run(sql, args, write=False).fetchall())
        if not self.shard.conn.in_transaction:  # committed rows only: nothing read may roll back
            self._keep(table, key, rows)
        return list(rows)

    def _select_sql(self, key: tuple[Any, ...]) -> str:
        """The SELECT of `select`'s cache key, built and cached."""
        _, table, cols, where, group, order, limited, offset = key
        name, _ = self._table(table)
        sql = f"SELECT {check_fragment(cols, 'columns')} FROM {name} WHERE {self._where(where)}"  # noqa: S608 - checked fragments
        if group:
            sql += f" GROUP BY {check_fragment(group, 'group')}"
        if order:
            sql += f" ORDER BY {check_fragment(order, 'order')}"
        if limited or offset:
            sql += " LIMIT ?"
        if offset:
            sql += " OFFSET ?"
        self._cache[key] = sql
        return sql

    def keep_written(self, table: str, cols: str, row: Sequence[Any] | None) -> None:
        """After this turn commits, `first(table, cols, keep=True)` answers `row` without a
        statement: `row` holds the values of `cols`, in order and as SQLite returns them (the
        types the column stores), or is None for no row.

        For a turn that has just written the actor's row of `table` and knows it whole (a lock
        taken or released, a checkpoint saved): the next read of it would otherwise run a
        statement, as the write forgot what was kept (issue 13). Call it after the turn's last
        write of `table`: a later write of `table` in the turn forgets it again. It is kept only
        once the turn's writes are folded into the shard's transaction (`finish`): a turn that
        rolls back (or a nested transaction around it) keeps nothing, and a failed commit
        resets the actor, whose kept reads go with the activation.
        """
        key = ("select", table, cols, "", "", "", True, False)
        sql = self._cache.get(key)
        if sql is None:
            sql = self._select_sql(key)
        rows = [] if row is None else [sqlite3.Row(self._row_cursor(sql, table, cols), tuple(row))]
        self._written[table] = ((sql, self._name, 1), rows)

    def _row_cursor(self, sql: str, table: str, cols: str) -> sqlite3.Cursor:
        """A cursor whose description names `cols` of `table` (what a `sqlite3.Row` built for
        that query takes its column names from), kept per query by the shard."""
        cur = self.shard.row_cursors.get(sql)
        if cur is None:
            cur = self.shard.conn.cursor()
            name, _ = self._table(table)
            cur.execute(f"SELECT {check_fragment(cols, 'columns')} FROM {name} WHERE 0")  # noqa: S608 - checked fragments
            cur.fetchall()
            self.shard.row_cursors[sql] = cur
        return cur

    def _keep_written(self, written: dict[str, tuple[tuple[Any, ...], list[sqlite3.Row]]]) -> None:
        for table, (key, rows) in written.items():
            kept = self._kept.pop(table, None)  # what the turn's write of the table left (none)
            if kept is not None:
                self._kept_chars -= kept[1]
            self._keep(table, key, rows)

    def first(
        self, table: str, cols: str, where: str = "", *params: Any, order: str = "", keep: bool = False
    ) -> sqlite3.Row | None:
        """The first row of `select(..., limit=1)`, or None."""
        rows = self.select(table, cols, where, *params, order=order, limit=1, keep=keep)
        return rows[0] if rows else None

    def count(self, table: str, where: str = "", *params: Any) -> int:
        row = self.first(table, "count(*)", where, *params)
        return 0 if row is None else int(row[0])

    def insert(self, table: str, values: Mapping[str, Any], *, conflict: Conflict = "abort") -> int:
        """Insert one row of this actor; `conflict` says what a row with the same key does:
        `abort` raises, `ignore` keeps the old row, `replace` replaces it, `update` updates the
        given non-key columns (an upsert). Returns the rows written."""
        sql = self._insert_sql(table, tuple(values), conflict)
        if self._kept or self._written:
            self.forget_kept(table)
        cur = self._run(sql, (self._name, *values.values()), write=True)
        self.rows_written_total += cur.rowcount
        return int(cur.rowcount)

    def _insert_sql(self, table: str, cols: tuple[str, ...], conflict: Conflict) -> str:
        key = ("insert", table, cols, conflict)
        sql = self._cache.get(key)
        if sql is None:
            name, spec = self._table(table)
            for c in cols:
                _check_ident(c)
            verb = {"ignore": "INSERT OR IGNORE", "replace": "INSERT OR REPLACE"}.get(conflict, "INSERT")
            marks = ", ".join("?" for _ in range(len(cols) + 1))
            sql = f"{verb} INTO {name} (actor, {', '.join(cols)}) VALUES ({marks})"
            if conflict == "update":
                sets = [f"{c} = excluded.{c}" for c in cols if c not in spec.key]
                target = ", ".join(("actor", *spec.key))
                sql += f" ON CONFLICT({target}) DO " + (
                    f"UPDATE SET {', '.join(sets)}" if sets else "NOTHING"
                )
            self._cache[key] = sql
        return sql

    def insert_many(
        self, table: str, cols: Sequence[str], rows: Sequence[Sequence[Any]], *, conflict: Conflict = "abort"
    ) -> int:
        """`insert` of many rows of this actor at once (one prepared statement, executemany):
        `rows` hold the values of `cols`, in that order. Returns the rows written."""
        if not rows:
            return 0
        if len(cols) > MAX_BOUND_PARAMETERS:
            raise LimitExceeded(f"more than {MAX_BOUND_PARAMETERS} bound parameters")
        sql = self._insert_sql(table, tuple(cols), conflict)
        conn = self._open_scope()
        self.forget_kept(table)
        before = conn.total_changes
        name = self._name
        conn.executemany(sql, [(name, *r) for r in rows])
        written = conn.total_changes - before
        if written > 0:
            self._mark_write(conn)
        self.rows_written_total += written
        return written

    def delete_many(self, table: str, where: str, params: Sequence[Sequence[Any]]) -> int:
        """`delete` once per parameter tuple (one prepared statement); returns the rows deleted."""
        if not params:
            return 0
        key = ("delete", table, where)
        sql = self._cache.get(key)
        if sql is None:
            name, _ = self._table(table)
            sql = f"DELETE FROM {name} WHERE {self._where(where)}"  # noqa: S608 - checked fragments
            self._cache[key] = sql
        conn = self._open_scope()
        self.forget_kept(table)
        before = conn.total_changes
        conn.executemany(sql, [(self._name, *p) for p in params])
        written = conn.total_changes - before
        if written > 0:
            self._mark_write(conn)
        self.rows_written_total += written
        return written

    def update(self, table: str, values: Mapping[str, Any], where: str = "", *params: Any) -> int:
        """`UPDATE table SET ... WHERE <this actor> AND (where)`; returns the rows changed."""
        cols = tuple(values)
        key = ("update", table, cols, where)
        sql = self._cache.get(key)
        if sql is None:
            name, _ = self._table(table)
            sets = ", ".join(f"{_check_ident(c)} = ?" for c in cols)
            sql = f"UPDATE {name} SET {sets} WHERE {self._where(where)}"  # noqa: S608 - checked fragments
            self._cache[key] = sql
        if self._kept or self._written:
            self.forget_kept(table)
        cur = self._run(sql, (*values.values(), self._name, *params), write=True)
        self.rows_written_total += cur.rowcount
        return int(cur.rowcount)

    def delete(self, table: str, where: str = "", *params: Any) -> int:
        """`DELETE FROM table WHERE <this actor> AND (where)`; returns the rows deleted."""
        key = ("delete", table, where)
        sql = self._cache.get(key)
        if sql is None:
            name, _ = self._table(table)
            sql = f"DELETE FROM {name} WHERE {self._where(where)}"  # noqa: S608 - checked fragments
            self._cache[key] = sql
        if self._kept or self._written:
            self.forget_kept(table)
        cur = self._run(sql, (self._name, *params), write=True)
        self.rows_written_total += cur.rowcount
        return int(cur.rowcount)

    # -- nested transactions (SAVEPOINT inside the turn's scope) --------------------------------

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        conn = self._open_scope()
        name = f"{self.shard.next_savepoint()}n"
        self._depth += 1
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.forget_kept()
            if self._scope is not None:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        else:
            conn.execute(f"RELEASE {name}")
        finally:
            self._depth = max(0, self._depth - 1)

    def transaction_sync(self, fn: Callable[[], T]) -> T:
        """Run `fn` in a nested transaction: an exception rolls back only its writes."""
        with self._savepoint():
            return fn()

    async def transaction(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Async form of `transaction_sync`."""
        with self._savepoint():
            return await fn()
