"""`agent-coord migrate` carried out on the real stores (see migrate/cli.py for the options)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

import orjson
import structlog

from gateway.bulk.actor_side import ActorSide
from gateway.bulk.items import Item, Selection, WriteResult, cursor_of
from gateway.bulk.legacy_side import LegacySource
from gateway.bulk.legacy_sink import LegacySink
from gateway.bulk.remote import AdminRejected, RemoteActorSide
from gateway.bulk.sides import ActorEndpoint, open_actor_side, open_legacy_side
from gateway.clock import SystemClock
from gateway.domain.entities import DOMAINS, Entity, EntityKey, actor_only
from gateway.domain.jscompat import iso_from_ms
from gateway.errors import ActorOwnedElsewhere, GatewayError
from gateway.http.token_file import cli_token
from gateway.phases.control import record_reverse_sync
from gateway.settings import Settings
from migrate.checkpoint import Checkpoint, CheckpointMismatch
from migrate.cli import EXIT_OK, EXIT_QUARANTINED, EXIT_UNREACHABLE, EXIT_USAGE
from migrate.engine import RateLimit, Summary, run_batches
from migrate.fileformat import BadFile, ExportWriter, check_file, read_items
from migrate.reader import (
    ReaderBadFile,
    ReaderFailed,
    ReaderProcess,
    ReaderUnreachable,
    SourceSpec,
)

log = structlog.get_logger(__name__)

PLAIN_EVERY_S = 5.0


class _Stores:
    """The stores a run opened (legacy and/or actors), and the reader process reading its
    source (`--jobs 2`), which then opens the source store itself."""

    def __init__(self) -> None:
        self.legacy: LegacySource | None = None
        self.actors: ActorSide | RemoteActorSide | None = None
        self.reader: ReaderProcess | None = None

    def source(self, name: str) -> Any:
        return self.legacy if name == "legacy" else self.actors

    def sink(self, name: str, clock: SystemClock) -> Any:
        if name == "legacy":
            assert self.legacy is not None  # noqa: S101 - opened for a legacy target
            return LegacySink(self.legacy, clock)
        return self.actors


def admin_token(args: argparse.Namespace, settings: Settings) -> str | None:
    return cli_token(args.token, settings.migration.admin_token, settings.storage.data_dir)


def _actor_endpoint(args: argparse.Namespace, settings: Settings) -> ActorEndpoint:
    token = admin_token(args, settings)
    url = args.url or f"http://{settings.server.host}:{settings.server.port}"
    return ActorEndpoint(url if token else None, token, Path(settings.storage.data_dir))


def _uses_reader(args: argparse.Namespace) -> bool:
    return int(getattr(args, "jobs", 1)) > 1


def _reader_spec(
    args: argparse.Namespace, settings: Settings, selection: Selection, position: str | int | None
) -> SourceSpec:
    """What the reader process reads: the run's source, from the checkpoint's position (into
    Redis, with the legacy texts made there too: `LegacySink.prepared`)."""
    if args.migrate_command == "import":
        spec = SourceSpec(
            "file", selection, args.batch, skip=int(position or 0), infile=args.infile, count=False
        )
    else:
        spec = _source_spec(args, settings, selection, None if position is None else str(position))
    return dataclasses.replace(spec, legacy_texts=getattr(args, "target", None) == "legacy")


def _source_spec(
    args: argparse.Namespace, settings: Settings, selection: Selection, after: str | None
) -> SourceSpec:
    if args.source == "legacy":
        return SourceSpec("legacy", selection, args.batch, after, redis_url=str(settings.legacy.redis_url))
    where = _actor_endpoint(args, settings)
    return SourceSpec(
        "actors", selection, args.batch, after, url=where.url, token=where.token, data_dir=where.data_dir
    )


@contextlib.asynccontextmanager
async def open_stores(
    args: argparse.Namespace, settings: Settings, clock: SystemClock, reader: SourceSpec | None = None
) -> AsyncIterator[_Stores]:
    """The stores of the run; with `reader`, the source is read by a reader process, started
    first (its store is not opened here: a data directory has one owner)."""
    names = {getattr(args, "source", None), getattr(args, "target", None)}
    stores = _Stores()
    async with contextlib.AsyncExitStack() as stack:
        if reader is not None:
            stores.reader = await stack.enter_async_context(ReaderProcess(settings, reader))
            names = {getattr(args, "target", None)}
        if "legacy" in names:
            stores.legacy = await stack.enter_async_context(
                open_legacy_side(settings, str(settings.legacy.redis_url), clock=clock)
            )
            await stores.legacy.records.run("PING", lambda r: r.ping())
        if "actors" in names:
            where = _actor_endpoint(args, settings)
            stores.actors = await stack.enter_async_context(open_actor_side(settings, where, clock=clock))
        yield stores


def _identity(args: argparse.Namespace, selection: Selection) -> dict[str, Any]:
    """What the run does: a checkpoint resumes only the same run."""
    path = getattr(args, "out", None) or getattr(args, "infile", None)
    return {
        "command": args.migrate_command,
        "from": getattr(args, "source", None),
        "to": getattr(args, "target", None),
        "file": None if path is None else str(Path(path).resolve()),
        "domains": list(selection.domains),
        "agents": None if selection.agents is None else sorted(selection.agents),
        "dryRun": bool(args.dry_run),
    }


@contextlib.contextmanager
def progress(enabled: bool, total: int | None, err: TextIO) -> Iterator[Callable[[int], None]]:
    """A tqdm bar (rate and ETA) on a terminal; elsewhere a plain line every few seconds."""
    if enabled:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=total, unit=" entities", unit_scale=True, desc="migrate", file=err, smoothing=0.1)

        def tick(n: int) -> None:
            bar.update(n)

        try:
            yield tick
        finally:
            bar.close()
        return
    start = last = time.monotonic()
    done = [0]

    def plain(n: int) -> None:
        nonlocal last
        done[0] += n
        now = time.monotonic()
        if now - last >= PLAIN_EVERY_S:
            last = now
            rate = done[0] / max(now - start, 1e-9)
            of = f"/{total:,}" if total else ""
            err.write(f"migrate: {done[0]:,}{of} entities, {rate:,.0f}/s\n")
            err.flush()

    yield plain


async def _store_batches(
    source: Any, selection: Selection, after: str | None, batch: int
) -> AsyncIterator[tuple[list[Item], str | int | None]]:
    async for items in source.scan(selection, start_after=after, batch=batch):
        yield items, cursor_of(items[-1][0])


async def _file_batches(
    path: Path, selection: Selection, skip: int, batch: int
) -> AsyncIterator[tuple[list[Item], str | int | None]]:
    for items, consumed in read_items(path, selection, skip=skip, batch=batch):
        yield items, consumed


async def run_migrate(  # noqa: PLR0911, PLR0912, PLR0915 - one command, its steps in order
    args: argparse.Namespace, settings: Settings, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """The migration the arguments ask for; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    cmd = args.migrate_command
    try:
        selection = Selection.of(args.domain, args.agent)
    except ValueError as e:
        err.write(f"agent-coord migrate: error: {e}\n")
        return EXIT_USAGE
    state_dir = args.state_dir or Path(settings.storage.data_dir) / "migrate"
    identity = _identity(args, selection)
    clock = SystemClock()
    try:
        cp = Checkpoint.load(state_dir, identity) if args.resume else None
    except CheckpointMismatch as e:
        err.write(f"agent-coord migrate: error: {e}\n")
        return EXIT_USAGE
    if args.resume and cp is None:
        err.write("agent-coord migrate: no checkpoint of this run to resume; starting from the beginning\n")
    file_total: int | None = None
    if cmd == "import":
        try:
            checked = check_file(args.infile, selection)  # the whole file, before anything is written
        except BadFile as e:
            err.write(f"agent-coord migrate: error: {e}\n")
            return EXIT_USAGE
        file_total = sum(checked.counts.values())
    started_ms = cp.started_ms if cp is not None else clock.now_ms()
    summary = Summary.from_json(cp.summary) if cp is not None else Summary()
    t0 = time.monotonic()
    quarantine_path = args.quarantine or state_dir / "quarantine.ndjson"
    quarantine_path.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    spec = None
    if _uses_reader(args):
        spec = _reader_spec(args, settings, selection, None if cp is None else cp.position)
    try:
        async with open_stores(args, settings, clock, spec) as stores:
            with quarantine_path.open("ab" if cp is not None else "wb") as quarantine:
                job = _Job(args, selection, cp, identity, started_ms, summary, state_dir, clock, file_total)
                await _run(job, stores, quarantine, err)
            if refills_redis(args, selection):
                await _record_refill(
                    args, stores, settings, started_ms, clock.now_ms(), summary.total("read")
                )
                notes.append(
                    "Redis was refilled from the actors: the guard on leaving cutover accepts the move"
                )
            legacy: LegacySource | ReaderProcess | None = stores.reader or stores.legacy
            if legacy is not None and getattr(args, "source", None) == "legacy":
                if legacy.conflicts:
                    notes.append(
                        f"{len(legacy.conflicts)} claims had several legacy fields for one `what` (known "
                        "conflicts, docs/mapping.md): the DO claim was carried, the others left in Redis"
                    )
                if legacy.unreachable_conversations:
                    notes.append(
                        f"{len(legacy.unreachable_conversations)} DM conversations are listed by no user: "
                        "no inbox serves them, so they were not carried"
                    )
    except ReaderBadFile as e:
        err.write(f"agent-coord migrate: error: {e}\n")
        return EXIT_USAGE
    except ReaderFailed as e:
        unreachable = isinstance(e, ReaderUnreachable)
        err.write(f"agent-coord migrate: error: {'a store cannot be reached: ' if unreachable else ''}{e}\n")
        log.warning("migrate.reader_failed", error=str(e), unreachable=unreachable)
        return EXIT_UNREACHABLE
    except (ActorOwnedElsewhere, GatewayError, AdminRejected, OSError) as e:
        message = getattr(e, "message", None) or str(e)
        err.write(f"agent-coord migrate: error: a store cannot be reached: {message}\n")
        log.warning("migrate.store_unreachable", error=message)
        return EXIT_UNREACHABLE
    except BadFile as e:
        err.write(f"agent-coord migrate: error: {e}\n")
        return EXIT_USAGE
    if not args.dry_run:
        Checkpoint.clear(state_dir)
    if getattr(args, "target", None) == "legacy":
        only = [d for d in selection.domains if actor_only(d)]  # no legacy counterpart
        if only:
            notes.append(f"actor-only domains, not carried to Redis: {', '.join(only)}")
    report = _report(
        args,
        summary,
        seconds=time.monotonic() - t0,
        started_ms=started_ms,
        notes=notes,
        quarantine=quarantine_path,
    )
    _print(report, out)
    if args.summary:
        args.summary.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return EXIT_QUARANTINED if summary.total("quarantined") else EXIT_OK


def refills_redis(args: argparse.Namespace, selection: Selection) -> bool:
    """A complete copy of the actors into Redis: every domain, every agent, not a dry run."""
    full = selection.agents is None and set(selection.domains) == set(DOMAINS)
    return full and not args.dry_run and args.migrate_command == "copy" and args.target == "legacy"


async def _record_refill(  # noqa: PLR0917 - the run and the record's fields
    args: argparse.Namespace,
    stores: _Stores,
    settings: Settings,
    started_ms: int,
    finished_ms: int,
    entities: int,
) -> None:
    """Record the refill for the cutover guard: through a running gateway's admin API (the tool
    opens no file under it), else in the data directory the tool holds itself (the reader
    process, which read the actors from it, has ended and let it go)."""
    if isinstance(stores.actors, RemoteActorSide):
        await stores.actors.record_reverse_sync(
            started_ms=started_ms, finished_ms=finished_ms, entities=entities
        )
    elif stores.reader is not None and stores.reader.mode == "admin-api":
        where = _actor_endpoint(args, settings)
        assert where.url is not None  # noqa: S101 - the reader reached the gateway with them
        assert where.token is not None  # noqa: S101
        remote = RemoteActorSide(where.url, where.token)
        try:
            await remote.record_reverse_sync(
                started_ms=started_ms, finished_ms=finished_ms, entities=entities
            )
        finally:
            await remote.close()
    else:
        record_reverse_sync(
            Path(settings.storage.data_dir), started_ms=started_ms, finished_ms=finished_ms, entities=entities
        )


Counts = Callable[[Selection], Awaitable[dict[str, int] | None]]


def _source_of(
    args: argparse.Namespace, stores: _Stores, selection: Selection, position: str | int | None
) -> tuple[AsyncIterator[tuple[list[Item], str | int | None]], Counts | None]:
    """The run's batches (from the reader process, the file or the source store) and how to
    count the source (None: a file, counted when it was checked)."""
    reader = stores.reader
    if reader is not None:

        async def reader_counts(_s: Selection) -> dict[str, int] | None:
            return reader.counts

        return reader.batches(), reader_counts
    if args.migrate_command == "import":
        return _file_batches(args.infile, selection, int(position or 0), args.batch), None
    source = stores.source(args.source)
    after = None if position is None else str(position)
    return _store_batches(source, selection, after, args.batch), source.count


@dataclass(slots=True)
class _Job:
    """One run's parameters and state."""

    args: argparse.Namespace
    selection: Selection
    cp: Checkpoint | None
    identity: dict[str, Any]
    started_ms: int
    summary: Summary
    state_dir: Path
    clock: SystemClock
    file_total: int | None


async def _run(job: _Job, stores: _Stores, quarantine: IO[bytes], err: TextIO) -> None:
    args, selection, cp, identity = job.args, job.selection, job.cp, job.identity
    started_ms, summary, state_dir, clock, file_total = (
        job.started_ms,
        job.summary,
        job.state_dir,
        job.clock,
        job.file_total,
    )
    cmd = args.migrate_command
    position = None if cp is None else cp.position
    batches, counts_of = _source_of(args, stores, selection, position)
    checkpoint = None if args.dry_run else (cp or Checkpoint(identity, started_ms))
    writer: ExportWriter | None = None
    after_write = None
    if cmd == "export":
        writer = ExportWriter(args.out)
        if cp is not None and cp.out_size is not None:
            writer.resume_at(cp.out_size)
        else:
            size = writer.start(
                {
                    "source": args.source,
                    "createdAt": iso_from_ms(started_ms),
                    "selection": {"domains": identity["domains"], "agents": identity["agents"]},
                    "counts": None if counts_of is None else await counts_of(selection),
                }
            )
            if checkpoint is not None:
                checkpoint.out_size = size
                checkpoint.save(state_dir)
        sizes = [checkpoint.out_size if checkpoint is not None else None]
        w = writer

        async def write(items: list[tuple[EntityKey, Entity]]) -> WriteResult:
            result = WriteResult()
            if not args.dry_run:
                sizes[0] = w.write(items)
            for key, _ in items:
                result.add(key, "written")
            return result

        def after_write_fn(c: Checkpoint) -> None:
            c.out_size = sizes[0]

        after_write = after_write_fn
    else:
        sink = stores.sink(args.target, clock)
        if stores.reader is not None and isinstance(sink, LegacySink):
            sink.prepared = stores.reader.prepared

        async def write(items: list[tuple[EntityKey, Entity]]) -> WriteResult:
            result: WriteResult = await sink.write_batch(items, dry_run=args.dry_run)
            return result

    total = file_total
    if total is None and counts_of is not None:
        got = await counts_of(selection)
        total = sum(got.values()) if got else None
    bar = not args.no_progress and err.isatty()
    with progress(bar, total, err) as update:
        if cp is not None:
            update(summary.total("read"))
        await run_batches(
            batches,
            write,
            summary=summary,
            quarantine=quarantine,
            rate=RateLimit(args.rate),
            checkpoint=checkpoint,
            state_dir=state_dir,
            progress=update,
            after_write=after_write,
        )
    if writer is not None and not args.dry_run:
        counts = {d: row["written"] for d, row in summary.domains.items() if row["written"]}
        writer.finish(summary.total("written"), counts)


def _report(
    args: argparse.Namespace,
    summary: Summary,
    *,
    seconds: float,
    started_ms: int,
    notes: list[str],
    quarantine: Path,
) -> dict[str, Any]:
    read = summary.total("read")
    return {
        "command": args.migrate_command,
        "from": getattr(args, "source", None) or str(getattr(args, "infile", "")),
        "to": getattr(args, "target", None) or str(getattr(args, "out", "")),
        "dryRun": bool(args.dry_run),
        "startedAt": iso_from_ms(started_ms),
        "durationS": round(seconds, 3),
        "ratePerS": round(read / seconds, 1) if seconds > 0 else None,
        "totals": {c: summary.total(c) for c in ("read", "written", "unchanged", "skipped", "quarantined")},
        **summary.to_json(),
        "quarantineFile": str(quarantine) if summary.total("quarantined") else None,
        "notes": notes,
    }


def _print(report: dict[str, Any], out: TextIO) -> None:
    would = "would write" if report["dryRun"] else "written"
    out.write(
        f"{'domain':<12} {'read':>9} {would:>11} {'unchanged':>10} {'skipped':>8} {'quarantined':>12}\n"
    )
    for d in DOMAINS:
        row = report["domains"].get(d)
        if row:
            out.write(
                f"{d:<12} {row['read']:>9,} {row['written']:>11,} {row['unchanged']:>10,} "
                f"{row['skipped']:>8,} {row['quarantined']:>12,}\n"
            )
    t = report["totals"]
    rate = f", {report['ratePerS']:,.0f} entities/s" if report["ratePerS"] else ""
    out.write(f"{report['command']}: {t['read']:,} read in {report['durationS']:.1f} s{rate}\n")
    if report["command"] != "export" and t["written"] == 0 and t["read"] > 0:
        out.write("nothing to write: the target already holds every entity (a second run changes nothing)\n")
    if t["skipped"]:
        out.write(
            f"{t['skipped']:,} left alone: the target holds a newer version (a live write) or a value it "
            "cannot read\n"
        )
    if t["quarantined"]:
        out.write(f"{t['quarantined']:,} unreadable records quarantined in {report['quarantineFile']}\n")
    if report["dryRun"]:
        out.write("dry run: nothing was written\n")
    for note in report["notes"]:
        out.write(f"note: {note}\n")
