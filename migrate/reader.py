"""The source of a migration read in a second process (`--jobs 2`), so the copy uses two cores.

One Python process is the bound of a copy: reading and mapping the source costs about as much
CPU as deciding and writing the target. `ReaderProcess` runs the source side, the store's scan
with its mapping (legacy Redis: HSCAN/HMGET, JSON decoding, `gateway.legacy.mapping`; actors:
the shard tables and the row mappers; or an export file's lines), in a spawned child process,
and streams its batches to the writing process through a pipe. The writing process (the parent)
keeps everything else: quarantine, the target's writes, checkpoints, progress, `--rate`,
`--dry-run`, the summary.

On the pipe a batch travels as plain tuples, not objects: per item its key's parts, the index of
its model class and the tuple of its fields, `cls(*fields)` on arrival (pickling the entity
objects themselves cost three times as much). A reader thread in the parent takes the batches
off the pipe into a bounded queue, so the child reads ahead by at most `AHEAD` batches and
memory stays bounded.

Messages, in order: `ready` (the source's counts for the progress bar and the export header,
where its actors were reached), `batch` (items and the resume position after them) many times,
then `end` (what the scan learned on the way: the claim conflicts and unreachable conversations
of a legacy scan, the child's CPU seconds and peak memory). A failure in the child is sent as
`error` with its kind: `unreachable` (a store cannot be reached: exit status 3, as in one
process), `bad-file`, or `failed` (anything else). A child that dies without a word (killed)
ends the run with `ReaderFailed` too. The child dies with the parent (`PR_SET_PDEATHSIG`), so a
killed run leaves no reader holding the data directory, and `--resume` can start at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import multiprocessing
import operator
import os
import pickle
import resource
import signal
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, get_args

import structlog

from gateway.bulk.items import Item, Selection, cursor_of
from gateway.domain.entities import Entity, EntityKey, Unreadable
from gateway.settings import Settings

__all__ = ["AHEAD", "ReaderFailed", "ReaderProcess", "ReaderUnreachable", "SourceSpec"]

log = structlog.get_logger(__name__)

AHEAD: Final = 4
"""Batches the reader may be ahead of the writer (beside the engine's own read-ahead of 2)."""

_PR_SET_PDEATHSIG: Final = 1

_CLASSES: Final[tuple[type[Any], ...]] = tuple(get_args(Entity))
"""The model classes an item's value may be, by their index on the wire."""

_INDEX: Final[dict[type[Any], int]] = {c: i for i, c in enumerate(_CLASSES)}
_FIELDS: Final[tuple[Callable[[Any], tuple[Any, ...]], ...]] = tuple(
    operator.attrgetter(*(f.name for f in dataclasses.fields(c))) for c in _CLASSES
)
assert all(  # noqa: S101 - cls(*fields) rebuilds every model: no field is left out of __init__
    f.init for c in _CLASSES for f in dataclasses.fields(c)
)
assert all(len(dataclasses.fields(c)) > 1 for c in _CLASSES)  # noqa: S101 - attrgetter gives tuples

_UNREADABLE: Final = -1

_Wire = tuple[str, str, str, int, tuple[Any, ...]]


class ReaderFailed(RuntimeError):
    """The reader process failed (its error named) or went away before the end."""


class ReaderUnreachable(ReaderFailed):
    """The reader process could not reach its store (exit status 3, as in one process)."""


class ReaderBadFile(ReaderFailed):
    """The reader process found the input file unreadable (exit status 2)."""


def to_wire(items: list[Item]) -> list[_Wire]:
    """A batch as plain tuples: (domain, scope, id, class index, fields) per item; an
    unreadable value as class index -1 and (raw, reason)."""
    out: list[_Wire] = []
    index, fields = _INDEX, _FIELDS
    for key, value in items:
        at = index.get(type(value))
        if at is None:
            if not isinstance(value, Unreadable):
                raise TypeError(f"not an entity: {type(value).__name__}")
            out.append((key.domain, key.scope, key.id, _UNREADABLE, (value.raw, value.reason)))
        else:
            out.append((key.domain, key.scope, key.id, at, fields[at](value)))
    return out


def from_wire(batch: list[_Wire]) -> list[Item]:
    """The items `to_wire` made."""
    out: list[Item] = []
    classes = _CLASSES
    for domain, scope, ident, at, fields in batch:
        key = EntityKey(domain, scope, ident)
        if at == _UNREADABLE:
            out.append((key, Unreadable(key, fields[0], fields[1])))
        else:
            out.append((key, classes[at](*fields)))
    return out


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What the reader reads: a store (`legacy` at `redis_url`; `actors` through the gateway at
    `url` with `token`, else the data directory) or an export file (`infile`), with the
    selection, where to start (`after`: a store's cursor; `skip`: a file's entity lines) and the
    batch size."""

    store: str
    selection: Selection
    batch: int
    after: str | None = None
    skip: int = 0
    redis_url: str | None = None
    url: str | None = None
    token: str | None = None
    data_dir: Path | None = None
    infile: Path | None = None
    count: bool = True
    legacy_texts: bool = False
    """Make the legacy text of each one-field entity (`legacy_sink.legacy_text`): the target is
    Redis, and the writer then maps only what Redis already holds."""


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _send(conn: Connection, msg: tuple[Any, ...]) -> None:
    conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def _child(conn: Connection, settings: Settings, spec: SourceSpec) -> None:
    """The reader process: the source's batches, then the end (or the error), on `conn`."""
    _die_with_parent()
    if os.getppid() == 1:  # the parent died before the request above took effect
        return
    from gateway.bulk.gc_pause import fewer_collections  # noqa: PLC0415
    from gateway.logs import configure_logging  # noqa: PLC0415 - the child's own import

    configure_logging(settings.log)  # to stderr, as the parent's: stdout holds the summary
    try:
        with fewer_collections():
            asyncio.run(_read(conn, settings, spec))
    except BrokenPipeError:
        return  # the parent stopped reading (it ended the run): nothing to tell
    except Exception as e:  # noqa: BLE001 - reported to the parent, which ends the run
        with contextlib.suppress(OSError):
            _send(conn, ("error", *_classify(e)))
    finally:
        conn.close()


def _classify(e: BaseException) -> tuple[str, str]:
    from gateway.bulk.remote import AdminRejected  # noqa: PLC0415
    from gateway.errors import GatewayError  # noqa: PLC0415
    from migrate.fileformat import BadFile  # noqa: PLC0415

    if isinstance(e, BadFile):
        return "bad-file", str(e)
    if isinstance(e, GatewayError | AdminRejected | OSError):  # ActorOwnedElsewhere included
        return "unreachable", getattr(e, "message", None) or str(e)
    return "failed", f"{type(e).__name__}: {e}"


async def _read(conn: Connection, settings: Settings, spec: SourceSpec) -> None:
    from gateway.bulk.legacy_side import LegacySource  # noqa: PLC0415 - the child's own imports
    from gateway.bulk.remote import RemoteActorSide  # noqa: PLC0415
    from gateway.bulk.sides import ActorEndpoint, open_actor_side, open_legacy_side  # noqa: PLC0415
    from migrate.fileformat import read_items  # noqa: PLC0415

    if spec.store == "file":
        assert spec.infile is not None  # noqa: S101 - a file source names its file
        _send(conn, ("ready", None, None))
        for items, consumed in read_items(spec.infile, spec.selection, skip=spec.skip, batch=spec.batch):
            texts = _texts(items) if spec.legacy_texts else None
            _send(conn, ("batch", to_wire(items), consumed, texts))
        _send(conn, ("end", [], [], *_usage()))
        return
    async with contextlib.AsyncExitStack() as stack:
        source: Any
        mode = None
        if spec.store == "legacy":
            assert spec.redis_url is not None  # noqa: S101 - a legacy source names its Redis
            source = await stack.enter_async_context(open_legacy_side(settings, spec.redis_url))
            await source.records.run("PING", lambda r: r.ping())
        else:
            where = ActorEndpoint(spec.url, spec.token, spec.data_dir)
            source = await stack.enter_async_context(open_actor_side(settings, where))
            mode = "admin-api" if isinstance(source, RemoteActorSide) else "data-dir"
        counts = await source.count(spec.selection) if spec.count else None
        _send(conn, ("ready", counts, mode))
        async for items in source.scan(spec.selection, start_after=spec.after, batch=spec.batch):
            texts = _texts(items) if spec.legacy_texts else None
            _send(conn, ("batch", to_wire(items), cursor_of(items[-1][0]), texts))
        conflicts: list[tuple[str, str, list[str]]] = []
        unreachable: list[str] = []
        if isinstance(source, LegacySource):
            conflicts = [(c.what, c.winner, c.others) for c in source.conflicts]
            unreachable = source.unreachable_conversations
    _send(conn, ("end", conflicts, unreachable, *_usage()))  # after the store closed (host.lock)


def _texts(items: list[Item]) -> list[str | None]:
    from gateway.bulk.legacy_sink import legacy_text  # noqa: PLC0415 - the child's own import

    out: list[str | None] = []
    for key, value in items:
        out.append(None if isinstance(value, Unreadable) else legacy_text(key, value))
    return out


def _usage() -> tuple[float, float | None]:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return round(u.ru_utime + u.ru_stime, 2), _peak_mb()


class ReaderProcess:
    """A migration's source read by a child process (module docstring). Use as an async
    context manager; `start()` waits for the child's `ready` (raising its error, if any)."""

    def __init__(self, settings: Settings, spec: SourceSpec) -> None:
        self.settings = settings
        self.spec = spec
        self.counts: dict[str, int] | None = None
        self.mode: str | None = None
        """Where the child reached the actors: `admin-api` or `data-dir` (None: not the actors)."""
        self.conflicts: list[Any] = []
        self.unreachable_conversations: list[str] = []
        self.cpu_s: float | None = None
        self.prepared: dict[EntityKey, str] = {}
        """The legacy texts the child made (`SourceSpec.legacy_texts`), by key, as a batch is
        handed on: the sink's `prepared` (it takes them out as it writes)."""
        self.peak_mb: float | None = None
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads running
        self._conn, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_child, args=(child, settings, spec), daemon=True, name="migrate-reader"
        )
        self._child_end = child
        self._got: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._room = threading.Semaphore(AHEAD)  # messages handed over and not yet taken
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._pump, name="migrate-reader-pipe", daemon=True)

    async def __aenter__(self) -> ReaderProcess:
        self._loop = asyncio.get_running_loop()
        self._proc.start()
        self._child_end.close()
        self._thread.start()
        try:
            msg = await self._next()
        except BaseException:
            await self.close()
            raise
        if msg[0] != "ready":
            await self.close()
            raise ReaderFailed(f"the reader process sent {msg[0]!r} before it was ready")
        self.counts, self.mode = msg[1], msg[2]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _pump(self) -> None:
        """The reader thread: pipe -> queue (batches rebuilt as items), until the end or an error;
        at most `AHEAD` messages handed over and not yet taken."""
        try:
            while not self._stop.is_set():
                msg = pickle.loads(self._conn.recv_bytes())  # noqa: S301 - our own child's data
                if msg[0] == "batch":
                    items = from_wire(msg[1])
                    texts = msg[3]
                    made = (
                        {}
                        if texts is None
                        else {k: t for (k, _v), t in zip(items, texts, strict=True) if t is not None}
                    )
                    msg = ("batch", items, msg[2], made)
                if not self._put(msg) or msg[0] not in ("batch", "ready"):
                    return
        except (EOFError, OSError):
            self._put(("gone",))

    def _put(self, msg: tuple[Any, ...]) -> bool:
        """Hand `msg` to the event loop once there is room; False when stopped meanwhile."""
        while not self._room.acquire(timeout=0.5):
            if self._stop.is_set():
                return False
        loop = self._loop
        if loop is None or self._stop.is_set():
            return False
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(self._got.put_nowait, msg)
        return True

    async def _next(self) -> tuple[Any, ...]:
        msg = await self._got.get()
        self._room.release()
        if msg[0] == "error":
            kind, text = msg[1], msg[2]
            if kind == "unreachable":
                raise ReaderUnreachable(text)
            if kind == "bad-file":
                raise ReaderBadFile(text)
            raise ReaderFailed(f"the reader process failed: {text}")
        if msg[0] == "gone":
            await asyncio.get_running_loop().run_in_executor(None, self._proc.join, 5)
            raise ReaderFailed(
                f"the reader process ended without finishing (exit code {self._proc.exitcode})"
            )
        return msg

    async def batches(self) -> AsyncIterator[tuple[list[Item], str | int | None]]:
        """The source's batches with the resume position after each, as the engine takes them."""
        while True:
            msg = await self._next()
            if msg[0] == "batch":
                self.prepared.update(msg[3])
                yield msg[1], msg[2]
                continue
            _end, conflicts, unreachable, self.cpu_s, self.peak_mb = msg
            from gateway.bulk.legacy_side import KnownConflict  # noqa: PLC0415

            self.conflicts = [KnownConflict(w, k, o) for w, k, o in conflicts]
            self.unreachable_conversations = list(unreachable)
            await asyncio.get_running_loop().run_in_executor(None, self._proc.join, 10)
            log.info("migrate.reader_done", cpu_s=self.cpu_s, peak_rss_mb=self.peak_mb)
            return

    async def close(self) -> None:
        """Stop the child (if it still runs) and the reader thread."""
        self._stop.set()
        loop = asyncio.get_running_loop()
        if self._proc.pid is not None:  # started
            if self._proc.is_alive():
                self._proc.terminate()
            await loop.run_in_executor(None, self._proc.join, 5)
            if self._proc.is_alive():
                self._proc.kill()
                await loop.run_in_executor(None, self._proc.join, 5)
        if self._thread.is_alive():
            await loop.run_in_executor(None, self._thread.join, 5)  # EOF once the child is gone
        self._conn.close()
