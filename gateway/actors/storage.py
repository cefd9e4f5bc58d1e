"""An actor's SQLite database: `ctx.sql.exec`, implicit turn transactions, savepoints, alarm row.

Why statements run inline on the event loop: measured on this 2-core machine
(`docs/actor-host.md`), an aiosqlite call costs ~230 us of thread hops while the same statement
called inline costs 5-25 us. A turn therefore runs its statements inline, on one `sqlite3`
connection owned by the actor (the host's single-owner lock on the data directory means no
other process contends for it), and only the commit may leave the loop: with
`synchronous=FULL` the commit fsyncs, so the committer runs it in a worker thread: at most one
thread hop per turn. aiosqlite is kept for what its thread really helps with: long scans of
whole databases by the export/import tool and the checker.

Mirrors DO `ctx.storage.sql`: `?` bindings, several statements in one call with the bindings on
the last, `one()` raising unless exactly one row, `rows_read` / `rows_written`, a bound on
parameters and statement length, and transaction-control SQL rejected (use `transaction`).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway.actors import wal_index as wal
from gateway.errors import LimitExceeded, TransactionControlNotAllowed

T = TypeVar("T")

MAX_BOUND_PARAMETERS = 100  # DO's limit per statement
MAX_STATEMENT_BYTES = 100_000  # DO's limit on SQL text

# Leading whitespace and comments are skipped: SQLite runs `/* x */ COMMIT` as a COMMIT, which
# would commit half a turn behind the host's back.
_LEADING = r"(?:\s|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*"
_TX_CONTROL = re.compile(
    rf"^{_LEADING}(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE | re.DOTALL
)
# Statements that never write. Anything else (WITH, PRAGMA, DDL, DML) counts as a write, so a
# misjudged statement only costs the commit's thread hop, never durability.
_READ_ONLY = re.compile(rf"^{_LEADING}(SELECT|VALUES|EXPLAIN)\b", re.IGNORECASE | re.DOTALL)

_ANALYSED_MAX = 1024  # SQL texts whose analysis is kept
_ANALYSED_CHARS = 4096  # longer texts are analysed on every call (bounds the memory kept)


def _analyse(sql: str) -> tuple[tuple[str, ...], bool]:
    """The statements of `sql` and whether all of them only read; transaction control raises."""
    statements = tuple(split_statements(sql)) if ";" in sql.rstrip().rstrip(";") else (sql,)
    for stmt in statements:
        if _TX_CONTROL.match(stmt):
            raise TransactionControlNotAllowed(
                "transaction control is not allowed in sql.exec; use ctx.transaction()"
            )
    return statements, all(_READ_ONLY.match(stmt) for stmt in statements)


_analyses: dict[str, tuple[tuple[str, ...], bool]] = {}


def _analysed(sql: str) -> tuple[tuple[str, ...], bool]:
    """`_analyse`, kept per SQL text: actors run the same few texts over and over (values are
    bound), and the split and the two regexes cost more than running a small SELECT (issue 13).
    A plain dict, emptied when full: `exec` looks a text up itself, without a call."""
    if len(sql) > _ANALYSED_CHARS:
        return _analyse(sql)
    if len(_analyses) >= _ANALYSED_MAX:
        _analyses.clear()
    found = _analyses[sql] = _analyse(sql)
    return found


META_SCHEMA = "CREATE TABLE IF NOT EXISTS _actor_meta (key TEXT PRIMARY KEY, value)"


class SqlCursor:
    """The rows of one `exec`, read eagerly (a cursor never outlives its turn)."""

    __slots__ = ("_rows", "rows_written")

    def __init__(self, rows: list[sqlite3.Row], rows_written: int) -> None:
        self._rows = rows
        self.rows_written = rows_written

    @property
    def rows_read(self) -> int:
        return len(self._rows)

    def all(self) -> list[sqlite3.Row]:
        return self._rows

    def first(self) -> sqlite3.Row | None:
        return self._rows[0] if self._rows else None

    def one(self) -> sqlite3.Row:
        if len(self._rows) != 1:
            raise ValueError(f"expected exactly one row, got {len(self._rows)}")
        return self._rows[0]

    def __iter__(self) -> Iterator[sqlite3.Row]:
        return iter(self._rows)


def split_statements(sql: str) -> list[str]:
    """Split SQL text into complete statements (string literals may hold ';')."""
    out: list[str] = []
    buf = ""
    for part in sql.split(";"):
        buf = f"{buf};{part}" if buf else part
        if sqlite3.complete_statement(buf + ";"):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def open_connection(path: Path, synchronous: str, *, fresh: bool = False) -> sqlite3.Connection:
    """Open an actor database in WAL mode with manual transaction control.

    Switching a brand-new, empty file to WAL costs several fsyncs in rollback-journal mode
    (measured: 2.4 ms of a 3 ms lock acquire on a new resource). Under `synchronous=NORMAL` that
    switch runs with `synchronous=OFF`: a crash of the machine during it leaves an empty file at
    worst, which the next activation switches again, so NORMAL's promise (every commit survives
    a crash of the process) is unchanged. Under FULL every step keeps its fsyncs.

    The connection never checkpoints (`wal_autocheckpoint=0`): SQLite's automatic checkpoint
    would run inside a turn's COMMIT on the event loop. The host checkpoints from a second
    connection in a worker thread instead (`ActorStorage.checkpoint`, `wal.py`).
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    if fresh and synchronous.upper() != "FULL":
        conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


class ActorStorage:
    """SQL access for one actor; every statement joins the turn's implicit transaction."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None) -> None:
        self.conn = conn
        # One cursor for the turns' own statements: `conn.execute` makes and drops a cursor per
        # statement (about 1,400 instructions of a 18,000-instruction primary-key read, issue 13).
        # Each use reads its rows at once, and turns never overlap (the actor's gate), so no
        # statement is left half read when the next one starts.
        self._cur = conn.cursor()
        self.path = path  # the database file, for checkpoints from a second connection
        if path is not None:
            wal.hold_index(path)
        self.wrote_since_check = False  # a turn committed writes since the checkpointer looked
        self.closed = False
        self._savepoint_depth = 0
        self.rows_written_total = 0
        self._wrote = False  # the open transaction may have written (so its commit must be durable)
        self._data_version: int | None = None  # PRAGMA data_version, read once per transaction
        # (data_version now, data_version before): a commit of another connection known to have
        # changed no row (`absorb_empty_commit`), so copies in memory stay current across it
        self._version_alias = (-1, -1)
        self._began = False  # this object began the open transaction (and has not ended it)
        self._rollbacks = 0  # rollbacks, of savepoints too, and transactions ended behind our back

    # -- the turn's implicit transaction ------------------------------------------------------

    async def enter(self) -> None:
        """A turn begins (the actor's own file needs no lock beyond the actor's gate)."""

    def try_enter(self) -> bool:
        """`enter` without an await (always: the gate is the only lock)."""
        return True

    def leave(self) -> None:
        """A turn ended."""

    def end_read_turn(self, inline: bool) -> bool:
        """End a turn that left no transaction open, if the host's committer would end it inline
        (`inline`): nothing to commit; False, changing nothing, for any other."""
        if not inline or self.conn.in_transaction:
            return False
        self.commit_now()
        return True

    def _ensure_transaction(self) -> None:
        if not self.conn.in_transaction:
            self._note_lost_transaction()
            self._data_version = None  # a new snapshot
            self._cur.execute("BEGIN")
            self._began = True

    def _note_lost_transaction(self) -> None:
        """Count a transaction this object began and SQLite rolled back itself (an error)."""
        if self._began:
            self._rollbacks += 1
            self._began = False

    def ensure_transaction(self) -> None:
        """Open the turn's implicit transaction now if no statement has yet (what the first
        statement does anyway): what follows, reads and `change_token` alike, is one snapshot."""
        self._ensure_transaction()

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    @property
    def in_savepoint(self) -> bool:
        """Whether a `transaction()` scope is open (a commit now would break its atomicity)."""
        return self._savepoint_depth > 0

    @property
    def wrote(self) -> bool:
        """Whether the open transaction may have written: ending a read-only one needs no fsync."""
        return self._wrote and self.conn.in_transaction

    def change_token(self) -> tuple[int, int, int]:
        """What changes whenever a row of this database may have changed: this connection's
        `total_changes` (every row any statement or trigger of it wrote), its rollbacks (of a
        transaction or a savepoint: rows written before may be back as they were) and
        `PRAGMA data_version` (moves when another connection commits), the latter read once per
        transaction (its snapshot cannot change until the transaction ends).

        While two tokens are equal, nothing was written or undone in between: a copy in memory
        known current at the first one is current at the second (`gateway/do/memory.py`).

        Outside a transaction it opens none: `PRAGMA data_version` runs on its own, so a turn
        that only reads copies in memory runs one statement instead of BEGIN, the pragma and
        COMMIT (issue 13). Its token then describes the committed database at that moment; a
        later statement of the turn begins a transaction, whose snapshot may be newer (only if
        another connection committed meanwhile), and whose token differs then. Code that must
        read the token and then write in one snapshot calls `ensure_transaction()` first.
        """
        conn = self.conn
        if not conn.in_transaction:
            self._note_lost_transaction()
            return conn.total_changes, self._rollbacks, self.data_version()
        version = self._data_version
        if version is None:
            version = self._data_version = self.data_version()
        return conn.total_changes, self._rollbacks, version

    def _raw_version(self) -> int:
        version: int = self._cur.execute("PRAGMA data_version").fetchone()[0]
        return version

    def data_version(self) -> int:
        """`PRAGMA data_version` as `change_token` sees it (an absorbed commit's left out)."""
        version = self._raw_version()
        alias = self._version_alias
        return alias[1] if version == alias[0] else version

    def absorb_empty_commit(self, before: int) -> None:
        """Another connection committed a write that changed no row since `data_version()` gave
        `before` (the checkpoint helper starting the WAL over, the actor's turns held back, in a
        data directory no other process writes: the host owns it): `change_token` goes on
        giving `before`, so copies in memory stay current. Another commit after it moves the
        version again, and the token with it."""
        if self.data_version() != before:  # it moved: the raw value now stands for `before`
            self._version_alias = (self._raw_version(), before)

    def commit_now(self) -> None:
        """Commit the open transaction, if any (called by a committer, never by actor code)."""
        self._data_version = None
        self._began = False
        if self.conn.in_transaction:
            self._cur.execute("COMMIT")
            if self._wrote:
                self.wrote_since_check = True
        self._wrote = False

    def rollback(self) -> None:
        """Discard the open transaction, if any."""
        self._savepoint_depth = 0
        self._wrote = False
        self._data_version = None
        self._began = False
        self._rollbacks += 1
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # -- ctx.sql.exec ---------------------------------------------------------------------------

    def exec(self, sql: str, *params: Any) -> SqlCursor:
        """Run SQL with `?` bindings; several statements may be given, bindings go to the last."""
        if len(sql) > MAX_STATEMENT_BYTES:
            raise LimitExceeded(f"SQL statement longer than {MAX_STATEMENT_BYTES} characters")
        if len(params) > MAX_BOUND_PARAMETERS:
            raise LimitExceeded(f"more than {MAX_BOUND_PARAMETERS} bound parameters")
        statements, read_only = _analyses.get(sql) or _analysed(sql)
        conn = self.conn
        if not conn.in_transaction:
            self._ensure_transaction()
        if not read_only:
            self._wrote = True
        cur = self._cur
        before = conn.total_changes
        if len(statements) > 1:
            for stmt in statements[:-1]:
                cur.execute(stmt)
        rows = cur.execute(statements[-1], params).fetchall()
        written = conn.total_changes - before
        self.rows_written_total += written
        return SqlCursor(rows, written)

    def exec_many(self, sql: str, seq_of_params: Sequence[Sequence[Any]]) -> int:
        """Run one statement for each parameter tuple; returns the rows written."""
        if _TX_CONTROL.match(sql):
            raise TransactionControlNotAllowed("transaction control is not allowed in sql.exec")
        self._ensure_transaction()
        self._wrote = True
        before = self.conn.total_changes
        self.conn.executemany(sql, seq_of_params)
        written = self.conn.total_changes - before
        self.rows_written_total += written
        return written

    @property
    def database_size(self) -> int:
        """Bytes used by the database (page count times page size)."""
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)

    # -- explicit transactions (nested through SAVEPOINT) ---------------------------------------

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        self._ensure_transaction()
        name = f"_sp{self._savepoint_depth}"
        self._savepoint_depth += 1
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._rollbacks += 1
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        else:
            self.conn.execute(f"RELEASE {name}")
        finally:
            self._savepoint_depth -= 1

    def transaction_sync(self, fn: Callable[[], T]) -> T:
        """Run `fn` in a nested transaction: an exception rolls back only its writes."""
        with self._savepoint():
            return fn()

    async def transaction(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Async form of `transaction_sync`; the actor's gate stays held throughout."""
        with self._savepoint():
            return await fn()

    # -- the alarm row (written in the turn's transaction) --------------------------------------

    def read_alarm(self) -> int | None:
        row = self.conn.execute("SELECT value FROM _actor_meta WHERE key = 'alarm'").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def write_alarm(self, ms: int | None) -> None:
        self._ensure_transaction()
        self._wrote = True
        if ms is None:
            self.conn.execute("DELETE FROM _actor_meta WHERE key = 'alarm'")
        else:
            self.conn.execute(
                "INSERT INTO _actor_meta (key, value) VALUES ('alarm', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (ms,),
            )

    # -- checkpoints (`wal.py`) --------------------------------------------------------------

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL's frames back into the database (PASSIVE: it never blocks the turns'
        connection), from a connection of its own opened and closed here, in the worker thread
        that calls it: no connection outlives the checkpoint, so an eviction or a shutdown has
        none to close, and the open files stay three per file actor (two more during a
        checkpoint). Returns SQLite's (busy, frames in the WAL, frames checkpointed)."""
        if self.path is None:
            raise ValueError("this storage has no file to checkpoint")
        wal.hold_index(self.path)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                busy, log_frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                conn.close()
        finally:
            wal.release_index(self.path)
        return int(busy), int(log_frames), int(done)

    def checkpoint_inline(self) -> None:
        """Copy the WAL's frames back on the turns' own connection, between turns (PASSIVE)."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def close(self) -> None:
        self.closed = True
        try:
            self.rollback()
            self.conn.close()
        finally:
            if self.path is not None:
                wal.release_index(self.path)


class Committer(Protocol):
    """Makes a turn's transaction durable. Tests swap in manual or failing committers."""

    async def commit(self, storage: ActorStorage) -> None: ...


class InlineCommitter:
    """Commits on the event loop thread: right for `synchronous=NORMAL` (no fsync per commit)."""

    async def commit(self, storage: ActorStorage) -> None:
        storage.commit_now()


class ThreadCommitter:
    """Commits in a worker thread: right for `synchronous=FULL`, whose commit fsyncs.

    A turn that only read ends its transaction inline: there is nothing to make durable.

    The commit is never abandoned half-way: if the awaiting task is cancelled, the wait goes on
    until the thread finishes (the actor's gate stays held), then the cancellation propagates.
    """

    def __init__(self, executor: Executor | None = None) -> None:
        self._executor = executor

    async def commit(self, storage: ActorStorage) -> None:
        if not storage.wrote:  # a read-only transaction ends without I/O: no hop needed
            storage.commit_now()
            return
        fut = asyncio.get_running_loop().run_in_executor(self._executor, storage.commit_now)
        await wait_through_cancellation(fut)


async def wait_through_cancellation(fut: asyncio.Future[T]) -> T:
    """Await `fut` to completion even if cancelled meanwhile; re-raise the cancellation after."""
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(fut)
        except asyncio.CancelledError:
            if fut.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result
