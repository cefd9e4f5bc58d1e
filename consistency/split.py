"""A check of a data directory split by domain over two processes.

The full check's comparison (reading the actors, rendering their legacy forms, comparing) is
more than one core's work: one process walking every domain used 22-26 CPU s of a 25-28 s
check at 1,000,000 entities. With `--jobs 2` and the actors read from the data directory (no
gateway), the walk is split by domain instead of by store:

* the checking process runs the data directory's host, as before (it holds the directory's
  exclusive lock for the whole check: no gateway can start meanwhile), and walks the first part
  (`SECOND_DOMAINS` excepted), reading Redis itself;
* a second process (`child_part`, a fresh interpreter started early: `consistency.legacy_child`)
  walks the agents' DMs and memories (`SECOND_DOMAINS`): it reads Redis with a connection of its own
  and the shard files with read-only connections (`gateway.actors.shard_reader.ShardReader`,
  which refuses unless a host holds the directory), classifies and counts as the checking
  process does (`Checker.walk_part`), and sends what it found so far every `checkpoint_every`
  keys (its counts, expected samples, the differences to re-check, its position), then at its
  end.

The checking process adds that to its own findings, in the order one walk of every domain
would have found them, then re-checks every difference itself (reads by key, through its host)
and writes the one report: the same document, table, readable file and exit status as a check
in one process. The saved state keeps each part's position (`parts`), so `--resume` continues
both (`Checker._plan`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import threading
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, cast

import structlog

from consistency.check import CheckOptions, Part, Snapshot, new_run, snapshot
from consistency.legacy_child import PART_IMPORTS, Child, wait
from consistency.report import Report
from consistency.rules import Expectations
from gateway.settings import Settings

__all__ = ["PART_IMPORTS", "SECOND_DOMAINS", "SplitPartFailed", "SplitWalk", "child_part"]

log = structlog.get_logger(__name__)

SECOND_DOMAINS: Final = frozenset({"dm", "memory"})
"""The domains the second process walks: the agents' DMs and memories, read from the shard
files alone (no turn of any actor). The first part (agents, chat, tasks, zones, claims,
handoffs, checkpoints, locks, the actor-only domains) needs the host's turns for some. At
1,000,000 entities: 653,083 and 659,879 entities, walked in about the same time (with the
checkpoints in the second part too, 633,082 and 679,880: 27.9 s and 31.8 s in one run)."""

SPLIT_SAMPLED: Final = True
"""Whether a sampled check is split too (else its legacy scan runs in the second process,
`consistency.legacy_proc`). At `--sample 0.1` of 1,000,000 it was faster split in 11 of 15
interleaved pairs (per pair x0.63-x1.07, median x0.87), its process tree about 250 MB instead of
211 (docs/consistency.md, "sixth pass")."""


class SplitPartFailed(RuntimeError):
    """The second process failed (its error named) or went away."""


def splits(opts: CheckOptions) -> tuple[str, ...]:
    """The domains of `opts` the second process would walk (none: the check is not split)."""
    if opts.sample < 1.0 and not SPLIT_SAMPLED:
        return ()
    domains = opts.selection().domains
    theirs = tuple(d for d in domains if d in SECOND_DOMAINS)
    return theirs if len(theirs) < len(domains) else ()  # else nothing for the checking process


class SplitWalk:
    """The second part of a check of a data directory, walked in a second process (the
    `SecondPart` of `consistency.check.Checker`)."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        data_dir: Path,
        shards: int,
        *,
        started: Child | None = None,
        on_end: Callable[[list[tuple[str, str, list[str]]], list[str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.shards = shards
        self.started = started
        """A child started early, for the first walk; later ones start their own."""
        self.child: Child | None = None
        """The process of the walk under way."""
        self.on_end = on_end
        """Told what the second process's legacy scan learned (its claim conflicts, its
        unreachable conversations)."""

    def domains(self, opts: CheckOptions) -> tuple[str, ...]:
        return splits(opts)

    async def walk(
        self,
        part: Part,
        opts: CheckOptions,
        exp: Expectations,
        start: Snapshot,
        progress: Callable[[Snapshot], None],
    ) -> Snapshot:
        child, self.started = self.started or Child.start(PART_IMPORTS), None
        self.child = child
        orders = {
            "dataDir": str(self.data_dir),
            "shards": self.shards,
            "opts": opts,
            "part": (part.domains, part.cursor, part.walked),
            "exp": exp,
            "start": start,
        }
        child.send(self.settings, self.redis_url, orders, kind="part")
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[Snapshot] = loop.create_future()

        def took(msg: tuple[Any, ...]) -> None:  # on the event loop
            if ended.done():
                return
            if msg[0] == "progress":
                progress(msg[1])
            elif msg[0] == "end":
                if self.on_end is not None:
                    self.on_end(msg[2], msg[3])
                ended.set_result(msg[1])
            else:
                ended.set_exception(SplitPartFailed(msg[1]))

        def read() -> None:  # a thread: the pipe's messages handed to the event loop
            try:
                while True:
                    msg = pickle.loads(child.conn.recv_bytes())  # noqa: S301 - our own child's data
                    loop.call_soon_threadsafe(took, msg)
                    if msg[0] != "progress":
                        return
            except (EOFError, OSError):
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(
                        took, ("error", "the check's second process ended without finishing")
                    )

        reader = threading.Thread(target=read, name="check-part-reader", daemon=True)
        reader.start()
        finished = False
        try:
            found = await ended
            finished = True
            return found
        finally:
            proc = child.proc
            if finished:  # it ends on its own once its end is sent
                await loop.run_in_executor(None, wait, proc, 5)
            if proc.poll() is None:
                proc.terminate()
                await loop.run_in_executor(None, wait, proc, 5)
            if proc.poll() is None:
                proc.kill()
                await loop.run_in_executor(None, wait, proc, 5)
            await loop.run_in_executor(None, reader.join, 5)
            child.conn.close()
            log.info("consistency.second_part_done", exitcode=proc.returncode)


def _send(conn: Connection, msg: tuple[Any, ...]) -> None:
    conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def child_part(conn: Connection, settings: Settings, url: str, orders: dict[str, Any]) -> None:
    """The second process: walk its part, send what it found (or its error)."""
    from gateway.bulk.gc_pause import fewer_collections  # noqa: PLC0415
    from gateway.logs import configure_logging  # noqa: PLC0415

    configure_logging(settings.log)  # to stderr, as the parent's: stdout holds the report
    try:
        with fewer_collections():
            asyncio.run(_walk_part(conn, settings, url, orders))
    except Exception as e:
        log.warning("consistency.second_part_failed", error=str(e), exc_info=True)
        with contextlib.suppress(OSError):
            _send(conn, ("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


async def _walk_part(conn: Connection, settings: Settings, url: str, orders: dict[str, Any]) -> None:
    from consistency.check import Checker  # noqa: PLC0415
    from gateway.actors.crash import crash_point  # noqa: PLC0415
    from gateway.actors.shard_reader import ReaderReplica, ShardReader  # noqa: PLC0415
    from gateway.bulk.actor_side import ActorSide  # noqa: PLC0415
    from gateway.bulk.sides import open_legacy_side  # noqa: PLC0415
    from gateway.clock import SystemClock  # noqa: PLC0415
    from gateway.do.agent_state import TABLES as AGENT_TABLES  # noqa: PLC0415
    from gateway.do.resource_lock import TABLES as LOCK_TABLES  # noqa: PLC0415

    opts = cast("CheckOptions", orders["opts"])
    exp = cast("Expectations", orders["exp"])
    domains, cursor, walked = orders["part"]
    part = Part(tuple(domains), cursor, walked)
    parent = os.getppid()  # the checking process, whose host holds the directory
    reader = ShardReader(
        Path(orders["dataDir"]),
        {"agent": AGENT_TABLES, "lock": LOCK_TABLES},
        orders["shards"],
        holder_alive=lambda: os.getppid() == parent,
    )
    reader.open()  # refused unless the checking process's host holds the directory
    try:
        async with open_legacy_side(settings, url) as legacy:
            actors = ActorSide(cast("Any", ReaderReplica(reader)))

            async def no_probe(now_ms: int) -> Expectations:
                return replace(exp, now_ms=now_ms)

            checker = Checker(legacy, actors, SystemClock(), no_probe, data_dir=None)
            run = new_run(Report("", 0, {}), orders["start"], part)

            def saved(r: Any, _o: Any) -> None:
                _send(conn, ("progress", snapshot(r, part)))
                crash_point("split.part_progress")  # tests: this process dies after a saved position

            checker.checkpoint = saved
            await checker.walk_part(run, part, opts, exp, None, legacy)
            conflicts = [(c.what, c.winner, c.others) for c in legacy.conflicts]
            _send(conn, ("end", snapshot(run, part), conflicts, legacy.unreachable_conversations))
    finally:
        reader.close()
