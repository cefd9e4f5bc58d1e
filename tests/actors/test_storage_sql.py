"""S6 nested transactions through SAVEPOINT, and the S7 `ctx.sql.exec` contract."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.actors import ActorHost, ActorRef, SqlCursor
from gateway.actors.storage import MAX_BOUND_PARAMETERS, MAX_STATEMENT_BYTES
from gateway.errors import LimitExceeded, TransactionControlNotAllowed
from gateway.testing.actors import CountingActor, query_actor_db

REF = ActorRef("c", "a")


async def in_turn(host: ActorHost, fn: Callable[[CountingActor], Any]) -> Any:
    async def turn(actor: CountingActor) -> Any:
        return fn(actor)

    return await host.call(REF, turn)


def keys(data_dir: Path) -> list[str]:
    return [str(row[0]) for row in query_actor_db(data_dir, REF, "SELECT k FROM kv ORDER BY k")]


# -- S6 -----------------------------------------------------------------------------------------------


async def test_inner_rollback_keeps_outer_writes(host: ActorHost, data_dir: Path) -> None:
    """An exception inside transaction_sync rolls back only that scope; the turn's other writes commit."""

    def turn(actor: CountingActor) -> None:
        actor.put("outer", 1)

        def inner() -> None:
            actor.put("inner", 1)
            raise ValueError("inner fails")

        with pytest.raises(ValueError, match="inner fails"):
            actor.ctx.sql.transaction_sync(inner)
        actor.put("after", 1)

    await in_turn(host, turn)
    assert keys(data_dir) == ["after", "outer"]


async def test_nested_scopes_roll_back_independently(host: ActorHost, data_dir: Path) -> None:
    """Nested async transactions: the failing middle scope loses its own and its child's writes only."""
    sql_of: dict[str, Any] = {}

    async def turn(actor: CountingActor) -> None:
        sql = actor.ctx.sql
        sql_of["sql"] = sql
        actor.put("a", 1)

        async def middle() -> None:
            actor.put("b", 1)

            async def innermost() -> None:
                actor.put("c", 1)

            await sql.transaction(innermost)
            raise KeyError("middle fails")

        with pytest.raises(KeyError):
            await sql.transaction(middle)

        async def sibling() -> None:
            actor.put("d", 1)

        await sql.transaction(sibling)

    await host.call(REF, turn)
    assert keys(data_dir) == ["a", "d"]


async def test_a_turn_that_raises_discards_committed_savepoints_too(host: ActorHost, data_dir: Path) -> None:
    """A released savepoint is still part of the turn: if the turn raises, its writes go too."""

    async def turn(actor: CountingActor) -> None:
        actor.ctx.sql.transaction_sync(lambda: actor.put("inner", 1))
        raise RuntimeError("turn fails")

    with pytest.raises(RuntimeError):
        await host.call(REF, turn)
    assert keys(data_dir) == []


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "begin immediate",
        "  COMMIT",
        "END TRANSACTION",
        "ROLLBACK",
        "SAVEPOINT x",
        "RELEASE x",
        "SELECT 1; COMMIT",
        "/* hidden */ COMMIT",
        "-- hidden\nCOMMIT",
        "/* a */ -- b\n  /* c */ BEGIN",
    ],
)
async def test_transaction_control_is_rejected(host: ActorHost, data_dir: Path, sql: str) -> None:
    """Transaction control in sql.exec raises TransactionControlNotAllowed and leaves the turn open."""

    def turn(actor: CountingActor) -> None:
        actor.put("before", 1)
        with pytest.raises(TransactionControlNotAllowed):
            actor.ctx.sql.exec(sql)
        assert actor.ctx.sql.in_transaction
        raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        await in_turn(host, turn)
    assert keys(data_dir) == [], "transaction control slipped through and committed part of a turn"


# -- S7 -------------------------------------------------------------------------------------------------


async def test_several_statements_bind_on_the_last(host: ActorHost) -> None:
    """Several statements in one exec run in order; bindings and returned rows belong to the last."""

    def turn(actor: CountingActor) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        sql = actor.ctx.sql
        sql.exec("CREATE TABLE u (x TEXT); INSERT INTO u VALUES ('a;b'); INSERT INTO u VALUES (?)", "c")
        last = sql.exec("INSERT INTO u VALUES ('d'); SELECT x FROM u WHERE x = ?", "a;b")
        every = sql.exec("SELECT x FROM u ORDER BY x")
        return [tuple(r) for r in last], [tuple(r) for r in every]

    last, every = await in_turn(host, turn)
    assert last == [("a;b",)]
    assert every == [("a;b",), ("c",), ("d",)]


async def test_one_requires_exactly_one_row(host: ActorHost) -> None:
    """one() returns the single row and raises for zero or two rows; first() gives None when empty."""

    def turn(actor: CountingActor) -> None:
        sql = actor.ctx.sql
        actor.put("a", 1)
        actor.put("b", 2)
        assert sql.exec("SELECT v FROM kv WHERE k = ?", "a").one()[0] == 1
        with pytest.raises(ValueError, match="exactly one row"):
            sql.exec("SELECT v FROM kv WHERE k = ?", "zzz").one()
        with pytest.raises(ValueError, match="exactly one row"):
            sql.exec("SELECT v FROM kv").one()
        assert sql.exec("SELECT v FROM kv WHERE k = ?", "zzz").first() is None

    await in_turn(host, turn)


async def test_bound_parameter_limit(host: ActorHost) -> None:
    """100 bound parameters are accepted; 101 raise LimitExceeded."""
    assert MAX_BOUND_PARAMETERS == 100

    def turn(actor: CountingActor) -> None:
        sql = actor.ctx.sql
        ok = sql.exec("SELECT " + ", ".join(["?"] * 100), *range(100)).one()
        assert list(ok) == list(range(100))
        with pytest.raises(LimitExceeded):
            sql.exec("SELECT " + ", ".join(["?"] * 101), *range(101))

    await in_turn(host, turn)


async def test_statement_length_limit(host: ActorHost) -> None:
    """A statement of 100,000 characters runs; one character more raises LimitExceeded."""

    def sized(n: int) -> str:
        head = "SELECT '"
        return head + "x" * (n - len(head) - 1) + "'"

    def turn(actor: CountingActor) -> None:
        assert len(sized(MAX_STATEMENT_BYTES)) == MAX_STATEMENT_BYTES
        actor.ctx.sql.exec(sized(MAX_STATEMENT_BYTES))
        with pytest.raises(LimitExceeded):
            actor.ctx.sql.exec(sized(MAX_STATEMENT_BYTES + 1))

    await in_turn(host, turn)


async def test_rows_written_and_rows_read(host: ActorHost) -> None:
    """rows_written counts inserted, updated and deleted rows of one exec; rows_read counts returned rows."""

    def turn(actor: CountingActor) -> dict[str, int]:
        sql = actor.ctx.sql
        ins: SqlCursor = sql.exec("INSERT INTO kv (k, v) VALUES ('a', 1), ('b', 2), ('c', 3)")
        upd = sql.exec("UPDATE kv SET v = v + 1 WHERE k <> ?", "a")
        sel = sql.exec("SELECT * FROM kv")
        dele = sql.exec("DELETE FROM kv WHERE k = ?", "a")
        return {
            "insert": ins.rows_written,
            "update": upd.rows_written,
            "select_written": sel.rows_written,
            "select_read": sel.rows_read,
            "delete": dele.rows_written,
        }

    assert await in_turn(host, turn) == {
        "insert": 3,
        "update": 2,
        "select_written": 0,
        "select_read": 3,
        "delete": 1,
    }


async def test_reads_in_a_turn_see_its_own_writes(host: ActorHost) -> None:
    """A read after a write in the same turn sees the write (one connection, one transaction)."""

    def turn(actor: CountingActor) -> int | None:
        actor.put("k", 7)
        return actor.get("k")

    assert await in_turn(host, turn) == 7


async def test_database_size_grows(host: ActorHost) -> None:
    """database_size reports the bytes in use and grows as data is written."""

    def turn(actor: CountingActor) -> tuple[int, int]:
        before = actor.ctx.sql.database_size
        actor.ctx.sql.exec("CREATE TABLE big (b BLOB)")
        for _ in range(20):
            actor.ctx.sql.exec("INSERT INTO big VALUES (zeroblob(4096))")
        return before, actor.ctx.sql.database_size

    before, after = await in_turn(host, turn)
    assert before > 0
    assert after >= before + 20 * 4096


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_new_actor_database_runs_in_wal_with_the_configured_synchronous(
    data_dir: Path, kind: type[CountingActor], synchronous: str
) -> None:
    """A fresh file is switched to WAL cheaply, but its turns run with the configured synchronous."""
    host = ActorHost(data_dir, {"c": kind}, synchronous=synchronous)
    await host.start()
    try:
        ref = ActorRef("c", "fresh")

        async def pragmas(actor: CountingActor) -> tuple[str, int]:
            conn = actor.ctx.sql.conn
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]), int(
                conn.execute("PRAGMA synchronous").fetchone()[0]
            )

        mode, level = await host.call(ref, pragmas)
        assert mode == "wal"
        assert level == {"NORMAL": 1, "FULL": 2}[synchronous]
        await host.evict(ref)
        assert await host.call(ref, pragmas) == (mode, level)  # and again when reopened
    finally:
        await host.close(1.0)
