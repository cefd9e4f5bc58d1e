"""The legacy scan of a check in a second process, so reading Redis uses another core.

A full check spends about as long reading Redis (the HSCAN and HMGET round trips, the replies,
the DM arrays, the keys) as it does on the actor side and the comparison together. `ProcessScan`
runs the legacy store's deferring scan (`LegacySource.defer`) in a child process and streams its
batches back through a pipe: values stay raw text (mapped only when the comparison needs it, in
the parent), keys travel as tuples. A reader thread in the parent takes the batches off the pipe
into a bounded queue, so the child reads ahead by at most `AHEAD` batches (memory stays bounded)
while the parent compares.

The child opens its own connection to Redis with the same settings. What the scan learns on the
way (the claim conflicts, the unreachable conversations) is sent at the end and added to the
parent's `LegacySource`, which the expectations probe and the re-check rounds keep using. A
failure in the child (Redis gone) ends the scan with `LegacyScanFailed` naming it, so the check
is incomplete (exit status 3), as with an in-process scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import pickle
import queue
import threading
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any, Final, cast

import structlog

from gateway.bulk.items import Item, Selection
from gateway.bulk.legacy_side import Deferred, KnownConflict, LegacySource
from gateway.domain.entities import Entity, EntityKey
from gateway.settings import Settings

__all__ = ["LegacyScanFailed", "ProcessScan"]

log = structlog.get_logger(__name__)

AHEAD: Final = 4
"""Batches the child may be ahead of the comparison."""

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
    async with open_legacy_side(settings, url) as legacy:
        legacy.defer = True
        async for items in legacy.scan(selection, start_after=start_after, batch=batch):
            conn.send_bytes(pickle.dumps(("batch", _to_wire(items)), protocol=pickle.HIGHEST_PROTOCOL))
        conflicts = [(c.what, c.winner, c.others) for c in legacy.conflicts]
        conn.send_bytes(pickle.dumps(("end", conflicts, legacy.unreachable_conversations)))


class ProcessScan:
    """`scan` of `legacy` run in a child process (see the module doc)."""

    def __init__(self, legacy: LegacySource, settings: Settings, url: str) -> None:
        self.legacy = legacy
        self.settings = settings
        self.url = url

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads running
        parent, child = ctx.Pipe(duplex=False)
        args = (selection.domains, selection.agents, selection.sample, selection.seed, start_after, batch)
        proc = ctx.Process(target=_child, args=(child, self.settings, self.url, args), daemon=True)
        proc.start()
        child.close()
        got: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=AHEAD)
        stop = threading.Event()

        def read() -> None:  # the reader thread: pipe -> queue, until the end or an error
            try:
                while not stop.is_set():
                    msg = pickle.loads(parent.recv_bytes())  # noqa: S301 - our own child's data
                    if msg[0] == "batch":
                        msg = ("batch", _from_wire(msg[1]))
                    got.put(msg)
                    if msg[0] != "batch":
                        return
            except (EOFError, OSError):
                got.put(("error", "the legacy scan's process ended without finishing"))

        reader = threading.Thread(target=read, name="legacy-scan-reader", daemon=True)
        reader.start()
        loop = asyncio.get_running_loop()
        try:
            while True:
                msg = await loop.run_in_executor(None, got.get)
                if msg[0] == "batch":
                    if msg[1]:
                        yield msg[1]
                    continue
                if msg[0] == "error":
                    raise LegacyScanFailed(msg[1])
                conflicts, unreachable = msg[1], msg[2]
                self.legacy.conflicts.extend(KnownConflict(w, k, o) for w, k, o in conflicts)
                self.legacy.unreachable_conversations.extend(unreachable)
                return
        finally:
            stop.set()
            if proc.is_alive():
                proc.terminate()
            with contextlib.suppress(queue.Empty):
                while True:
                    got.get_nowait()  # unblock the reader if it waits on a full queue
            await loop.run_in_executor(None, proc.join, 5)
            parent.close()
            log.info("consistency.legacy_process_done", exitcode=proc.exitcode)
