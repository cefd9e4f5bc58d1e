"""The shard files read by another process than their host's: `ShardReader`, read-only.

A check of a data directory splits its walk over two processes (`consistency.split`): the
checking process runs the directory's host (which holds the exclusive `flock` on `host.lock`:
no gateway can start meanwhile) and the second process reads the shard tables of the sharded
kinds' bulk scans (`gateway.bulk.actor_side.ActorSide`, `read_rows` and the actor names) with
its own read-only connections (`mode=ro`), without a host.

That is safe only while a host that writes nothing holds the directory: `open` and every
`read_rows` refuse unless the directory's lock is held (it probes with a shared lock, which a
held exclusive lock refuses; one it got is let go at once; a probe is three system calls, once
a batch), and every query is a plain SELECT on a read-only connection, so it sees the rows as of
the host's last commit (whole turns, as a read-only turn sees them), never a transaction in
progress. It starts no host, creates and converts nothing, fires no alarm. When the checking
process is killed, its lock goes with it and the second process stops at its next read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.actors.layout import host_lock_path, shard_path
from gateway.actors.sql_functions import register_sample_fn
from gateway.actors.tables import TableSpec, check_fragment, physical_name
from gateway.errors import DataDirError, StorageApiError

__all__ = ["ShardReader", "bulk_select"]


def bulk_select(  # noqa: PLR0917 - `ActorHost.read_rows`' arguments
    sharded: Mapping[str, Mapping[str, TableSpec]],
    kind: str,
    table: str,
    cols: str,
    where: str,
    params: Sequence[Any],
    *,
    order: str = "",
    limit: int | None = None,
    extra_of: tuple[str, str] | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """The SELECT of a bulk read of `table` of sharded kind `kind` across its actors, and its
    parameters (`gateway.actors.host.ActorHost.read_rows` documents the arguments)."""
    if table not in sharded.get(kind, {}):
        raise StorageApiError(f"actors of kind {kind!r} have no table {table!r}")
    name = physical_name(kind, table)
    args = tuple(params)
    sql = f"SELECT {check_fragment(cols, 'columns')}"
    if extra_of is not None:
        if "_extra" not in sharded[kind]:
            raise StorageApiError(f"actors of kind {kind!r} have no table '_extra'")
        ident = extra_of[1]
        if not ident.isidentifier():
            raise StorageApiError(f"bad column name {ident!r}")
        extra = physical_name(kind, "_extra")
        sql += f", (SELECT x.value FROM {extra} AS x WHERE x.actor = {name}.actor"  # noqa: S608 - a checked name
        sql += f" AND x.domain = ? AND x.id = {name}.{ident})"
        args = (extra_of[0], *args)
    sql += f" FROM {name}"
    if where.strip():
        sql += f" WHERE {check_fragment(where, 'where')}"
    if order:
        sql += f" ORDER BY {check_fragment(order, 'order')}"
    if limit is not None:
        sql += " LIMIT ?"
        args = (*args, limit)
    return sql, args


def directory_held(data_dir: Path) -> bool:
    """Whether a process holds the host's lock on `data_dir` (probed with a shared lock, which
    is let go at once when it is granted)."""
    path = host_lock_path(data_dir)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class ShardReader:
    """The shard files of `data_dir`, read-only: the part of `ActorHost` a bulk scan of the
    sharded kinds uses (`sharded`, `shard_count`, `read_rows`, `list_actors`)."""

    def __init__(
        self,
        data_dir: Path,
        sharded: Mapping[str, Sequence[TableSpec]],
        shards: int,
        *,
        holder_alive: Callable[[], bool] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.sharded = {kind: {t.name: t for t in specs} for kind, specs in sharded.items()}
        self.shard_count = shards
        self.holder_alive = holder_alive
        """Whether the process whose host holds the directory for this reader still runs, asked
        before each read besides the lock: should that process die and a gateway take the lock
        before the next read, the lock alone would still look held. The split check's second
        process asks whether the checking process is still its parent."""
        self._conns: list[sqlite3.Connection] = []

    def open(self) -> None:
        """Open every shard read-only; `DataDirError` when no host holds the directory (nothing
        would keep a gateway from starting and writing meanwhile) or a shard file is missing."""
        if not directory_held(self.data_dir):
            raise DataDirError(f"no host holds {self.data_dir}: its shard files are read only beside one")
        paths = [shard_path(self.data_dir, i) for i in range(self.shard_count)]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise DataDirError(f"the shard file {missing[0]} is missing")
        try:
            for path in paths:
                conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
                register_sample_fn(conn)  # a sampled read chooses its rows inside SQLite
                self._conns.append(conn)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._conns = []

    def list_actors(self, kind: str) -> list[str]:
        """Every registered actor of `kind`, sorted (as `ShardSet.names`)."""
        out: list[str] = []
        for conn in self._conns:
            out += [str(r[0]) for r in conn.execute("SELECT name FROM _actors WHERE kind = ?", (kind,))]
        out.sort()
        return out

    async def read_rows(
        self,
        kind: str,
        shard: int,
        table: str,
        cols: str,
        where: str = "",
        *params: Any,
        order: str = "",
        limit: int | None = None,
        extra_of: tuple[str, str] | None = None,
    ) -> list[tuple[Any, ...]]:
        """`ActorHost.read_rows` on the read-only connections; `DataDirError` once no host holds
        the directory any more (the checking process that held it was killed: nothing keeps a
        gateway from starting and writing, so this process stops instead of reading on)."""
        if not directory_held(self.data_dir):
            raise DataDirError(f"the host that held {self.data_dir} let it go: not read on")
        if self.holder_alive is not None and not self.holder_alive():
            raise DataDirError(f"the process whose host held {self.data_dir} is gone: not read on")
        sql, args = bulk_select(
            self.sharded, kind, table, cols, where, params, order=order, limit=limit, extra_of=extra_of
        )
        rows: list[tuple[Any, ...]] = self._conns[shard].execute(sql, args).fetchall()
        return rows


class ReaderReplica:
    """What `ActorSide` asks of its replica for a bulk scan of the sharded kinds: the host (a
    `ShardReader`) and the actors' names."""

    def __init__(self, reader: ShardReader) -> None:
        self.host = reader

    def names(self, kind: str) -> list[str]:
        return self.host.list_actors(kind)
