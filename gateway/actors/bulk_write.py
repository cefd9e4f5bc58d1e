"""Bulk writes into a shard: many actors' rows of a sharded kind in one transaction.

The counterpart of `ActorHost.read_rows` for the import tool (`agent-coord migrate`): writing a
batch of 1,000 DMs or memories through one turn per agent costs hundreds of activations and
commits; `ActorHost.write_rows` writes a shard's part of the batch under the shard's turn lock,
in one scope of the shard's transaction, without activating any actor.

What it keeps of a turn, per actor:

- **Atomicity.** Each actor's rows are written in a scope of their own (`ShardWriter.actor`: a
  SAVEPOINT): an exception inside it rolls back that actor's rows only, all of them; rows of
  the other actors of the batch are untouched. The whole batch then joins the shard's group
  commit like a turn, so a crash before that commit loses the whole batch, after it nothing.
- **Isolation.** Inside `actor(name)` the storage is that actor's scoped `ShardTables`, the
  `ctx.tables` its own turns use: it cannot see or change another actor's rows.
- **Turns.** The work runs while the shard's turn lock is held: no turn of any actor of the
  shard runs meanwhile, so what the work reads and decides from cannot change before it writes
  (a live gateway's turns of these actors wait, as they would for another turn). The work is a
  plain function: it cannot await, so it cannot hold the lock across I/O.
- **Registration.** An actor that writes a row is registered (`_actors`), as on its first
  turn that writes, so `list_actors` and `agent-coord actors` list it.

Not kept: alarms (the work has no `ctx`; an actor whose write must set or clear its alarm, a
lock, is written in a turn instead). What activations keep of their rows (`select(...,
keep=True)`) is dropped for every actor the work opened a scope for (`ActorHost.write_rows`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from gateway.actors.crash import crash_point
from gateway.actors.naming import ActorRef
from gateway.actors.shards import Shard
from gateway.actors.tables import ShardTables, TableSpec, check_fragment, physical_name
from gateway.errors import StorageApiError

__all__ = ["ShardWriter"]


class ShardWriter:
    """What the work of `ActorHost.write_rows` sees: reads across the shard's actors of one
    kind, and one scope per actor for its writes (module docstring)."""

    def __init__(self, shard: Shard, kind: str, specs: Mapping[str, TableSpec]) -> None:
        self.shard = shard
        self.kind = kind
        self._specs = specs
        self.actors_written = 0
        self.rows_written = 0
        self.names: set[str] = set()  # the actors given a scope (their activations' kept reads go)
        self._active: ShardTables | None = None

    def select(
        self, table: str, cols: str, where: str = "", *params: Any, order: str = ""
    ) -> list[tuple[Any, ...]]:
        """Rows of `table` across the kind's actors in this shard (fragments as for
        `ActorHost.read_rows`; they may name the `actor` column), as plain tuples."""
        if table not in self._specs:
            raise StorageApiError(f"actors of kind {self.kind!r} have no table {table!r}")
        sql = f"SELECT {check_fragment(cols, 'columns')} FROM {physical_name(self.kind, table)}"  # noqa: S608 - checked fragments
        if where.strip():
            sql += f" WHERE {check_fragment(where, 'where')}"
        if order:
            sql += f" ORDER BY {check_fragment(order, 'order')}"
        cur = self.shard.conn.cursor()
        cur.row_factory = None
        try:
            return list(cur.execute(sql, params).fetchall())
        finally:
            cur.close()

    @contextmanager
    def actor(self, name: str) -> Iterator[ShardTables]:
        """The scoped storage of actor `name` (its `ctx.tables`) for the block: its writes are
        kept if the block ends normally and all rolled back if it raises (the error goes on)."""
        if self._active is not None:
            raise StorageApiError("ShardWriter.actor scopes do not nest")
        tables = ShardTables(self.shard, ActorRef(self.kind, name), self._specs)
        tables._entered = True  # the writer holds the shard's turn lock for it
        self.names.add(name)
        self._active = tables
        try:
            yield tables
            crash_point("bulk_write.actor_done")
        except BaseException:
            tables.rollback()
            raise
        else:
            scope, tables._scope = tables._scope, None
            if scope:
                self.shard.conn.execute(f"RELEASE {scope}")
            if tables._wrote:
                self.actors_written += 1
                self.rows_written += tables.rows_written_total
        finally:
            tables._entered = False
            self._active = None

    # -- the batch scope (called by the host) --------------------------------------------------

    def begin(self) -> str:
        """Open the batch's scope in the shard transaction: BEGIN, or a SAVEPOINT inside a
        group that waits for its commit; actors' scopes are SAVEPOINTs inside it."""
        conn = self.shard.conn
        if conn.in_transaction:
            name = self.shard.next_savepoint()
            conn.execute(f"SAVEPOINT {name}")
            return name
        conn.execute("BEGIN")
        return ""

    def end(self, scope: str) -> None:
        """Fold the batch into the shard's group commit (or commit it now)."""
        self.shard.end_scope(scope, wrote=self.actors_written > 0)

    def abort(self, scope: str) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.shard.rollback_scope(scope)
