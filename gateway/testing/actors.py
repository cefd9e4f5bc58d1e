"""Test harness for the actor host, after workerd's actor-sqlite tests and the DO test helpers.

- `ManualCommitter`: records each commit and blocks it on a future the test resolves or fails,
  so a test can look at the world while a turn's commit is in flight (output gate, S5).
- `FaultyCommitter`: fails the Nth commit (and only that one).
- `CountingActor`: an actor kind whose constructor, alarm and socket callbacks are counted and
  whose handlers are plain methods tests call through `host.call`.
- `host_for`: a started host on a directory with the given kinds, for `async with`.
- `GatedExecutor`: a one-thread pool whose jobs wait for the test: a commit caught in flight.
- `FakeSocket`: a server-side WebSocket stand-in that records the frames and the close it got.
- `KvActor` / `KV_TABLES`: a sharded kind (rows in the shard files through `ctx.tables`).
- `query_actor_db` / `has_write_lock`: look at an actor's database from outside the host, as
  another process would (only committed data is visible; an open write transaction shows).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, ParamSpec, TypeVar

from gateway.actors.host import Actor, ActorContext, ActorHost, AlarmInfo, HostLimits
from gateway.actors.naming import ActorRef, actor_path
from gateway.actors.sockets import HostedSocket
from gateway.actors.storage import ActorStorage
from gateway.actors.tables import TableSpec
from gateway.clock import Clock

P = ParamSpec("P")
T = TypeVar("T")


class ManualCommitter:
    """A committer whose every commit waits for the test to call `resolve()` or `fail()`."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[None]] = []
        self.committed = 0
        self._arrived = asyncio.Event()

    async def commit(self, storage: ActorStorage) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        self._arrived.set()
        await fut
        storage.commit_now()
        self.committed += 1

    async def wait_for_commit(self, timeout_s: float = 5.0) -> None:
        """Wait until a commit is waiting for the test."""
        while not any(not f.done() for f in self.pending):
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout_s)

    def _next(self) -> asyncio.Future[None]:
        for fut in self.pending:
            if not fut.done():
                return fut
        raise AssertionError("no commit is waiting")

    def resolve(self) -> None:
        """Let the oldest waiting commit go through."""
        self._next().set_result(None)

    def fail(self, error: BaseException | None = None) -> None:
        """Make the oldest waiting commit fail."""
        self._next().set_exception(error or OSError("disk I/O error (injected)"))

    def assert_no_pending(self) -> None:
        """End-of-test check: no commit is left waiting."""
        waiting = [f for f in self.pending if not f.done()]
        if waiting:
            raise AssertionError(f"{len(waiting)} commits still waiting")


class FaultyCommitter:
    """Commits normally, except the `fail_on`-th commit (1-based), which raises."""

    def __init__(self, fail_on: int) -> None:
        self.fail_on = fail_on
        self.calls = 0

    async def commit(self, storage: ActorStorage) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise OSError("disk I/O error (injected)")
        storage.commit_now()


class Counters:
    """Shared counters of `CountingActor` instances (per test)."""

    def __init__(self) -> None:
        self.constructed = 0
        self.alarms: list[AlarmInfo] = []
        self.messages: list[Any] = []
        self.closes: list[int] = []
        self.events: list[str] = []


class CountingActor(Actor):
    """A small actor with a counter table, used by the host's tests."""

    counters = Counters()
    alarm_behaviour: Callable[[CountingActor, AlarmInfo], Any] | None = None

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        type(self).counters.constructed += 1
        self.in_memory = 0
        ctx.sql.exec("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")

    def get(self, key: str) -> int | None:
        row = self.ctx.sql.exec("SELECT v FROM kv WHERE k = ?", key).first()
        return None if row is None else int(row[0])

    def put(self, key: str, value: int) -> None:
        self.ctx.sql.exec(
            "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", key, value
        )

    async def alarm(self, info: AlarmInfo) -> None:
        type(self).counters.alarms.append(info)
        behaviour = type(self).alarm_behaviour
        if behaviour is not None:
            result = behaviour(self, info)
            if asyncio.iscoroutine(result):
                await result

    async def web_socket_message(self, ws: HostedSocket, message: str | bytes) -> None:
        type(self).counters.messages.append(message)
        self.ctx.send(ws, f"echo:{message!s}")

    async def web_socket_close(self, ws: HostedSocket, code: int, reason: str) -> None:
        type(self).counters.closes.append(code)


def counting_kind() -> type[CountingActor]:
    """A fresh `CountingActor` subclass with its own counters (no state shared across tests)."""

    class Fresh(CountingActor):
        counters = Counters()
        alarm_behaviour = None

    return Fresh


KV_TABLES = (
    TableSpec("kv", "k TEXT NOT NULL, v INTEGER NOT NULL", key=("k",)),
    TableSpec("log", "line TEXT NOT NULL, at INTEGER"),
)


class KvActor(Actor):
    """A sharded kind with a key-value table and an append-only log."""

    fired: ClassVar[list[str]] = []

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.name = ctx.ref.name

    def put(self, k: str, v: int) -> None:
        self.ctx.tables.insert("kv", {"k": k, "v": v}, conflict="update")

    def get(self, k: str) -> int | None:
        row = self.ctx.tables.first("kv", "v", "k = ?", k)
        return None if row is None else int(row[0])

    def all(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in self.ctx.tables.select("kv", "k, v", order="k")}

    async def alarm(self, info: AlarmInfo) -> None:
        KvActor.fired.append(self.name)
        self.ctx.tables.insert("log", {"line": "alarm", "at": self.ctx.clock.now_ms()})


@asynccontextmanager
async def host_for(
    data_dir: Path,
    factories: Mapping[str, Callable[[ActorContext], Actor]],
    *,
    clock: Clock | None = None,
    limits: HostLimits | None = None,
    **kw: Any,
) -> AsyncIterator[ActorHost]:
    """A started host that is closed (grace 1 s) when the block ends."""
    host = ActorHost(data_dir, factories, clock=clock, limits=limits, **kw)
    await host.start()
    try:
        yield host
    finally:
        await host.close(1.0)


class GatedExecutor(ThreadPoolExecutor):
    """A one-thread pool whose jobs, once started, wait for `proceed` (bounded, 5 s).

    Pass it to `ThreadCommitter(executor)` to hold a commit in flight: `entered` is set when
    the commit has started in the thread.
    """

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.entered = threading.Event()
        self.proceed = threading.Event()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        def gated() -> T:
            self.entered.set()
            self.proceed.wait(5)
            return fn(*args, **kwargs)

        return super().submit(gated)


class FakeSocket:
    """A server-side WebSocket that records what the host writes (fits `WebSocketLike`).

    Set `fail_sends` to make every send raise as if the peer had gone away.
    """

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.fail_sends = False

    async def send_str(self, data: str, compress: int | None = None) -> None:
        if self.fail_sends:
            raise ConnectionResetError("peer went away (injected)")
        if self.closed:
            raise ConnectionResetError("socket is closed")
        self.sent.append(data)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        if self.closed:
            return False
        self.closed = True
        self.close_code = code
        self.close_reason = message.decode("utf-8")
        return True


def _connect_existing(data_dir: Path, ref: ActorRef) -> sqlite3.Connection:
    path = actor_path(data_dir, ref)
    if not path.exists():
        raise FileNotFoundError(f"actor {ref} has no database at {path}")
    return sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=0, isolation_level=None)


def query_actor_db(data_dir: Path, ref: ActorRef, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run a read on the actor's database through a separate connection (sees committed data only)."""
    conn = _connect_existing(data_dir, ref)
    try:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def has_write_lock(data_dir: Path, ref: ActorRef) -> bool:
    """True if some connection holds an open write transaction on the actor's database."""
    conn = _connect_existing(data_dir, ref)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            return True
        raise
    else:
        conn.execute("ROLLBACK")
        return False
    finally:
        conn.close()
