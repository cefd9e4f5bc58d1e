"""The legacy scan of a check in a second process, so reading Redis uses another core.

A full check spends about as long reading Redis (the HSCAN and HMGET round trips, the replies,
the DM arrays, the keys) as it does on the actor side and the comparison together. `ProcessScan`
runs the legacy store's deferring scan (`LegacySource.defer`) in a child process and streams its
batches back through a pipe: values stay raw text (mapped only when the comparison needs it, in
the parent), keys travel as tuples. A reader thread in the parent takes the batches off the pipe
into a bounded queue, so the child reads ahead by at most `AHEAD` batches (memory stays bounded)
while the parent compares.

The child keeps the parent fed (`pipelined`): it sends from a thread of its own, so a send that
waits on a full pipe does not stop its reading, and it scans each domain in a task of its own,
the next domain's (its key listing, its first batches) while the current one's are sent. The
parent then no longer waits at the start of each domain while the child lists its keys.

The child opens its own connection to Redis with the same settings. What the scan learns on the
way (the claim conflicts, the unreachable conversations) is sent at the end and added to the
parent's `LegacySource`, which the expectations probe and the re-check rounds keep using. A
failure in the child (Redis gone) ends the scan with `LegacyScanFailed` naming it, so the check
is incomplete (exit status 3), as with an in-process scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import pickle
import queue
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import IO, Any, Final, cast

import structlog

from consistency.legacy_child import Child, wait
from gateway.bulk.items import Item, Selection
from gateway.bulk.legacy_side import Deferred, LegacySource
from gateway.domain.entities import Entity, EntityKey, actor_only
from gateway.settings import Settings

__all__ = ["Child", "LegacyScanFailed", "ProcessScan", "pipelined"]

log = structlog.get_logger(__name__)

AHEAD: Final = 4
"""Batches the parent's reader thread may hold that the comparison has not taken."""

SEND_AHEAD: Final = 2
"""Batches the child's sender may hold (besides the pipe's buffer)."""

LOOKAHEAD: Final = 2
"""Domains the child reads ahead of the one it sends (`pipelined`): each holds its sorted key
list meanwhile, so one more costs memory (about 30 MB for a domain of the 1,000,000 data set)."""

DOMAIN_AHEAD: Final = 1
"""Batches each domain's reading task may be ahead of the sender."""

_Wire = tuple[Any, ...]


class LegacyScanFailed(RuntimeError):
    """The legacy scan's process failed (its error named) or went away."""


def _to_wire(items: list[Item]) -> list[_Wire]:
    """A batch as plain tuples: (domain, scope, id, raw, hash_key, field, now) for a deferred
    value, (domain, scope, id, value) for anything else (pickled as it is)."""
    out: list[_Wire] = []
    for key, value in items:
        d: object = value  # a deferring scan's values are typed as entities
        if isinstance(d, Deferred):
            out.append((key.domain, key.scope, key.id, d.raw, d.hash_key, d.field, d.now))
        else:
            out.append((key.domain, key.scope, key.id, value))
    return out


def _from_wire(batch: list[_Wire]) -> list[Item]:
    out: list[Item] = []
    for t in batch:
        key = EntityKey(t[0], t[1], t[2])
        if len(t) == 7:  # noqa: PLR2004 - a deferred value's tuple
            out.append((key, cast("Entity", Deferred(key, t[3], t[4], t[5], t[6]))))
        else:
            out.append((key, t[3]))
    return out


def _child(conn: Connection, settings: Settings, url: str, args: tuple[Any, ...]) -> None:
    """The child process: scan, send each batch, then what the scan learned (or the error)."""
    from gateway.bulk.gc_pause import fewer_collections  # noqa: PLC0415
    from gateway.logs import configure_logging  # noqa: PLC0415 - the child's own import

    configure_logging(settings.log)  # to stderr, as the parent's: stdout holds the report
    try:
        with fewer_collections():
            asyncio.run(_child_scan(conn, settings, url, args))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which ends the check
        with contextlib.suppress(OSError):
            conn.send_bytes(pickle.dumps(("error", f"{type(e).__name__}: {e}")))
    finally:
        conn.close()


async def _child_scan(conn: Connection, settings: Settings, url: str, args: tuple[Any, ...]) -> None:
    from gateway.bulk.sides import open_legacy_side  # noqa: PLC0415 - the child's own import

    domains, agents, sample, seed, start_after, batch = args
    selection = Selection(domains, agents, sample, seed)
    async with open_legacy_side(settings, url) as legacy, _Sender(conn) as send:
        legacy.defer = True
        batches = pipelined(legacy, selection, start_after=start_after, batch=batch)
        async with contextlib.aclosing(batches):
            async for items in batches:
                await send(("batch", _to_wire(items)))
        conflicts = [(c.what, c.winner, c.others) for c in legacy.conflicts]
        await send(("end", conflicts, legacy.unreachable_conversations))


_END: Final = object()
"""A domain's producer is done."""


async def pipelined(
    legacy: LegacySource, selection: Selection, *, start_after: str | None = None, batch: int = 500
) -> AsyncGenerator[list[Item], None]:
    """The batches of `legacy.scan(selection)`, in the same order, with the next domains read early.

    Each domain is scanned by a task of its own into a bounded queue, and the tasks of the next
    `LOOKAHEAD` domains run while the current domain's batches are taken: a domain's key listing
    (a keys-only HSCAN of a million fields, the claims' and memories' value passes, the DM
    conversation lists) is then done by the time its first batch is wanted, instead of holding
    up the consumer at the start of each domain. Batches end at domain boundaries (the merge
    does not depend on them). What a scan learns on the way (the claim conflicts, the
    unreachable conversations) is complete when this ends, as with `scan`.
    """
    parts = [replace(selection, domains=(d,)) for d in selection.domains if not actor_only(d)]
    queues = [asyncio.Queue[object](maxsize=DOMAIN_AHEAD) for _ in parts]

    stopping = asyncio.Event()  # the consumer is gone: no producer may wait to put

    async def produce(part: Selection, out: asyncio.Queue[object]) -> None:
        try:
            async for items in legacy.scan(part, start_after=start_after, batch=batch):
                if stopping.is_set():  # a cancellation the Redis client swallowed
                    return
                await out.put(items)
        except Exception as e:  # noqa: BLE001 - raised in order, by the consumer
            if not stopping.is_set():
                await out.put(e)
            return
        if not stopping.is_set():
            await out.put(_END)

    tasks: list[asyncio.Task[None]] = []
    try:
        for i, q in enumerate(queues):
            while len(tasks) < min(len(parts), i + 1 + LOOKAHEAD):
                tasks.append(asyncio.create_task(produce(parts[len(tasks)], queues[len(tasks)])))
            while (got := await q.get()) is not _END:
                if isinstance(got, Exception):
                    raise got
                yield cast("list[Item]", got)
    finally:
        stopping.set()
        for t in tasks:
            t.cancel()
        for q in queues:  # a producer that ignored its cancellation may be waiting on a full queue
            while not q.empty():
                q.get_nowait()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Sender:
    """Pickles and sends messages to the parent from a thread of its own, at most `SEND_AHEAD`
    waiting, so the child's event loop goes on reading Redis while a send waits on the pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.waiting: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=SEND_AHEAD)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="legacy-scan-sender", daemon=True)

    def _run(self) -> None:
        while (msg := self.waiting.get()) is not None:
            if self.error is not None:
                continue  # the pipe is gone: taken off so no put waits forever
            try:
                self.conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
            except BaseException as e:  # noqa: BLE001 - raised by the next send in the loop
                self.error = e

    async def __call__(self, msg: tuple[Any, ...]) -> None:
        if self.error is not None:
            raise self.error
        try:
            self.waiting.put_nowait(msg)
        except queue.Full:
            await asyncio.get_running_loop().run_in_executor(None, self.waiting.put, msg)

    async def __aenter__(self) -> _Sender:
        self.thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.waiting.put, None)
        await asyncio.get_running_loop().run_in_executor(None, self.thread.join)
        if self.error is not None and exc[0] is None:
            raise self.error


def child_main(orders: IO[bytes], imports: tuple[str, ...] = ()) -> None:
    """The child process's entry (`_BOOT`): the modules of the scan imported while the parent
    opens its stores, then the orders (pipe fd, settings, URL, scan arguments) awaited on
    `orders`; the scan sends on the pipe. No orders (the parent did not scan): it ends.

    Once the scan has sent its end (or its error) and closed its Redis connections and its pipe,
    the process ends at once (`os._exit`, stdio flushed) instead of finalizing the interpreter:
    the parent waits for it to end before it goes on (`ProcessScan.scan`), and the finalization
    (freeing every module and object, a last collection) took about 0.1 s at 1,000,000 entities,
    on the check's longest path, for nothing the parent would see."""
    import gateway.bulk.gc_pause  # noqa: PLC0415 - imported before the orders come
    import gateway.bulk.sides  # noqa: PLC0415 - the legacy side only (its actor side is lazy)
    import gateway.logs  # noqa: PLC0415, F401

    for name in imports:
        importlib.import_module(name)
    try:
        fd, payload = pickle.load(orders)  # noqa: S301 - our own parent's data
    except EOFError:
        return
    kind, settings, url, args = pickle.loads(payload)  # noqa: S301
    if kind == "part":
        from consistency.split import child_part  # noqa: PLC0415 - a split check's part

        child_part(Connection(fd, readable=False), settings, url, args)
    else:
        _child(Connection(fd, readable=False), settings, url, args)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)


class ProcessScan:
    """`scan` of `legacy` run in a child process (see the module doc)."""

    def __init__(
        self, legacy: LegacySource, settings: Settings, url: str, started: Child | None = None
    ) -> None:
        self.legacy = legacy
        self.settings = settings
        self.url = url
        self.started = started
        """A child started early (`Child.start`), for the first scan; later ones start their own."""

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        args = (selection.domains, selection.agents, selection.sample, selection.seed, start_after, batch)
        child, self.started = self.started or Child.start(), None
        child.send(self.settings, self.url, args)
        proc, parent = child.proc, child.conn
        got: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=AHEAD)
        stop = threading.Event()
        reader = threading.Thread(
            target=_read, args=(parent, got, stop), name="legacy-scan-reader", daemon=True
        )
        reader.start()
        loop = asyncio.get_running_loop()
        waited = 0.0  # the comparison waiting for a batch of Redis
        finished = False
        try:
            while True:
                try:
                    msg = got.get_nowait()
                except queue.Empty:
                    before = time.perf_counter()
                    msg = await loop.run_in_executor(None, got.get)
                    waited += time.perf_counter() - before
                if msg[0] == "batch":
                    if msg[1]:
                        yield msg[1]
                    continue
                if msg[0] == "error":
                    raise LegacyScanFailed(msg[1])
                self.legacy.learned(msg[1], msg[2])
                finished = True
                return
        finally:
            stop.set()
            if finished:  # the child only closes its connection now: let it end on its own
                await loop.run_in_executor(None, wait, proc, 5)
            if proc.poll() is None:
                proc.terminate()
            with contextlib.suppress(queue.Empty):
                while True:
                    got.get_nowait()  # unblock the reader if it waits on a full queue
            await loop.run_in_executor(None, wait, proc, 5)
            if proc.poll() is None:
                proc.kill()
                await loop.run_in_executor(None, wait, proc, 5)
            parent.close()
            log.info("consistency.legacy_process_done", exitcode=proc.returncode, waited_s=round(waited, 2))


def _read(conn: Connection, got: queue.Queue[tuple[Any, ...]], stop: threading.Event) -> None:
    """The parent's reader thread: pipe -> queue, until the end or an error."""
    try:
        while not stop.is_set():
            msg = pickle.loads(conn.recv_bytes())  # noqa: S301 - our own child's data
            if msg[0] == "batch":
                msg = ("batch", _from_wire(msg[1]))
            got.put(msg)
            if msg[0] != "batch":
                return
    except (EOFError, OSError):
        got.put(("error", "the legacy scan's process ended without finishing"))
