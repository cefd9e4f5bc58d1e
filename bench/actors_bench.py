"""Micro-benchmark of the actor host: turns per second, and what 10,000 actors cost in open
databases and threads.

Run from the repository root (about two minutes with the defaults on 2 cores)::

    .venv/bin/python bench/actors_bench.py --json var/actors_bench.json

Scenarios, each under `synchronous=NORMAL` and `FULL`:

- `read` / `write` turns on one actor and round-robin over 1,000 actors, sequentially and with
  64 concurrent callers. A read turn is one point SELECT; a write turn one upsert, committed.
  The 1,000 actors are activated before timing and stay open (`max_open` 1,024), so these rows
  measure turns, not activation. The concurrent callers yield to the loop once per turn, as
  requests arriving from the network would, so they really interleave and queue on the gates.
- `churn`: the same round-robin with `max_open` 256 (`--max-open`), so every turn finds its
  actor evicted and reopens its database: the cost of reactivation.
- `touch`: 10,000 new actors, one write turn each, 64 at a time, `max_open` 256: the peak number
  of open databases and of threads (`threading.active_count()`, sampled after every turn).
- `scale` (issue 9): `--scale` (100,000) actors of a sharded kind (`storage.shards` 8, `max_open`
  256): created with one write turn each, then as many read turns and write turns on actors
  drawn at random, 64 callers; the open descriptors (`/proc/self/fd`, sampled every 500 turns)
  and the resident set (`VmRSS`, `VmHWM`) of the process. Run it alone
  (`--scenarios scale,layouts`) for an RSS that is not the other scenarios'.
- `layouts`: the same create / random read / random write on `--layout-actors` (2,000) actors in
  each layout: one SQLite file per actor (upstream's model, `ctx.sql`) and shard files
  (`ctx.tables`).

This is a benchmark, not a test: it asserts nothing and prints a table (and JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import shlex
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gateway.actors import Actor, ActorContext, ActorHost, ActorRef, HostLimits
from gateway.actors.tables import TableSpec

Turn = Callable[[Any], Awaitable[Any]]


class BenchActor(Actor):
    """One key-value table; the constructor creates it."""

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        ctx.sql.exec("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")


async def read_turn(actor: BenchActor) -> Any:
    return actor.ctx.sql.exec("SELECT v FROM kv WHERE k = ?", "n").first()


async def write_turn(actor: BenchActor) -> None:
    actor.ctx.sql.exec("INSERT INTO kv (k, v) VALUES (?, 1) ON CONFLICT(k) DO UPDATE SET v = v + 1", "n")


TURNS: dict[str, Turn] = {"read": read_turn, "write": write_turn}

SHARD_TABLES = [TableSpec("kv", "k TEXT NOT NULL, v INTEGER NOT NULL", key=("k",))]


class ShardBenchActor(Actor):
    """The same key-value table, in the shard files (`ctx.tables`)."""


async def shard_read_turn(actor: ShardBenchActor) -> Any:
    return actor.ctx.tables.first("kv", "v", "k = ?", "n")


async def shard_write_turn(actor: ShardBenchActor) -> None:
    t = actor.ctx.tables
    row = t.first("kv", "v", "k = ?", "n")
    t.insert("kv", {"k": "n", "v": 1 if row is None else int(row[0]) + 1}, conflict="replace")


@dataclass
class Row:
    """One measured scenario."""

    scenario: str
    synchronous: str
    actors: int
    concurrency: int
    turns: int
    seconds: float
    turns_per_s: float
    p50_us: float
    p99_us: float
    peak_open: int = 0
    peak_fds: int = 0
    rss_mb: float = 0.0
    peak_threads: int = 0
    threads_before: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def drive(
    host: ActorHost, refs: Sequence[ActorRef], turn: Turn, concurrency: int, seconds: float
) -> tuple[int, float, list[float]]:
    """Run turns round-robin over `refs` from `concurrency` callers until `seconds` have passed."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    count = len(refs)

    async def caller(first: int) -> None:
        i = first
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await host.call(refs[i % count], turn)
            latencies.append(time.perf_counter() - started)
            i += concurrency
            if concurrency > 1:
                await asyncio.sleep(0)  # a network client would yield here too

    began = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    return len(latencies), time.perf_counter() - began, latencies


def make_row(
    scenario: str, sync: str, *, actors: int, concurrency: int, turns: int, seconds: float, lat: list[float]
) -> Row:
    lat.sort()
    return Row(
        scenario=scenario,
        synchronous=sync,
        actors=actors,
        concurrency=concurrency,
        turns=turns,
        seconds=round(seconds, 3),
        turns_per_s=round(turns / seconds, 1) if seconds else 0.0,
        p50_us=round(percentile(lat, 0.50) * 1e6, 1),
        p99_us=round(percentile(lat, 0.99) * 1e6, 1),
    )


async def turn_rates(args: argparse.Namespace, sync: str, root: Path) -> list[Row]:
    rows: list[Row] = []
    limits = HostLimits(max_open=max(args.actors + 24, 1024))
    host = ActorHost(root / f"turns-{sync}", {"b": BenchActor}, limits=limits, synchronous=sync)
    await host.start()
    try:
        one = [ActorRef("b", "one")]
        many = [ActorRef("b", f"a{i}") for i in range(args.actors)]
        for ref in [*one, *many]:  # activate (and create the row) before timing
            await host.call(ref, write_turn)
        for kind, turn in TURNS.items():
            for refs in (one, many):
                for conc in (1, args.concurrency):
                    turns, secs, lat = await drive(host, refs, turn, conc, args.seconds)
                    rows.append(
                        make_row(
                            kind, sync, actors=len(refs), concurrency=conc, turns=turns, seconds=secs, lat=lat
                        )
                    )
    finally:
        await host.close(5.0)
    return rows


async def churn_rates(args: argparse.Namespace, sync: str, root: Path) -> list[Row]:
    rows: list[Row] = []
    # the actors of turn_rates(), reopened under the smaller bound: they exist, so no warm-up
    host = ActorHost(
        root / f"turns-{sync}", {"b": BenchActor}, limits=HostLimits(max_open=args.max_open), synchronous=sync
    )
    await host.start()
    try:
        many = [ActorRef("b", f"a{i}") for i in range(args.actors)]
        for kind, turn in TURNS.items():
            before = host.evictions
            turns, secs, lat = await drive(host, many, turn, 1, args.seconds)
            row = make_row(
                f"{kind} (churn)", sync, actors=len(many), concurrency=1, turns=turns, seconds=secs, lat=lat
            )
            row.peak_open = host.peak_open
            row.extra = {"max_open": args.max_open, "evictions": host.evictions - before}
            rows.append(row)
    finally:
        await host.close(5.0)
    return rows


async def touch(args: argparse.Namespace, sync: str, root: Path) -> Row:
    threads_before = threading.active_count()
    host = ActorHost(
        root / f"touch-{sync}", {"b": BenchActor}, limits=HostLimits(max_open=args.max_open), synchronous=sync
    )
    await host.start()
    peak_threads = threading.active_count()
    refs = [ActorRef("b", f"t{i}") for i in range(args.touch)]
    latencies: list[float] = []
    try:
        began = time.perf_counter()

        async def caller(first: int) -> None:
            nonlocal peak_threads
            for i in range(first, len(refs), args.concurrency):
                started = time.perf_counter()
                await host.call(refs[i], write_turn)
                latencies.append(time.perf_counter() - started)
                peak_threads = max(peak_threads, threading.active_count())

        await asyncio.gather(*(caller(c) for c in range(args.concurrency)))
        elapsed = time.perf_counter() - began
        row = make_row(
            "touch (new actors)",
            sync,
            actors=len(refs),
            concurrency=args.concurrency,
            turns=len(latencies),
            seconds=elapsed,
            lat=latencies,
        )
        row.peak_open = host.peak_open
        row.peak_threads = peak_threads
        row.threads_before = threads_before
        row.extra = {"max_open": args.max_open, "open_at_end": host.open_count, "evictions": host.evictions}
    finally:
        await host.close(5.0)
    return row


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def memory_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return round(found["VmRSS"], 1), round(found["VmHWM"], 1)


async def each(
    count: int, concurrency: int, pick: Callable[[int], int], run: Turn
) -> tuple[float, list[float]]:
    """`run(pick(i))` for i in range(count) from `concurrency` callers; (seconds, latencies)."""
    latencies: list[float] = []

    async def caller(first: int) -> None:
        for i in range(first, count, concurrency):
            started = time.perf_counter()
            await run(pick(i))
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    return time.perf_counter() - began, latencies


async def layout_rows(
    label: str,
    host: ActorHost,
    *,
    kind: str,
    turns: tuple[Turn, Turn],
    actors: int,
    concurrency: int,
    sync: str,
) -> list[Row]:
    """create / random read / random write on `actors` actors of `kind`; fds and RSS per row."""
    read, write = turns
    refs = [ActorRef(kind, f"agent-{i:06d}") for i in range(actors)]
    fds_before = open_fds()
    peak = [fds_before]
    rng = random.Random(9)  # noqa: S311 - a benchmark's draws, not a secret
    draws = [rng.randrange(actors) for _ in range(actors)]

    def runner(turn: Turn) -> Turn:
        async def run(i: int) -> None:
            await host.call(refs[i], turn)
            if i % 500 == 0:
                peak[0] = max(peak[0], open_fds())

        return run

    rows: list[Row] = []
    for scenario, pick, turn in (
        ("create", lambda i: i, write),
        ("read random", lambda i: draws[i], read),
        ("write random", lambda i: draws[(i * 7) % actors], write),
    ):
        peak[0] = open_fds()
        cpu = time.process_time()
        secs, lat = await each(actors, concurrency, pick, runner(turn))
        cpu = time.process_time() - cpu
        row = make_row(
            f"{scenario} ({label})",
            sync,
            actors=actors,
            concurrency=concurrency,
            turns=len(lat),
            seconds=secs,
            lat=lat,
        )
        row.peak_open = host.peak_open
        row.peak_fds = peak[0]
        rss, hwm = memory_mb()
        row.rss_mb = rss
        row.extra = {
            "cpu_us_per_turn": round(cpu / max(1, len(lat)) * 1e6, 1),
            "fds_before": fds_before,
            "vm_hwm_mb": hwm,
            "max_open": host.limits.max_open,
        }
        shards = host.shard_set
        if shards is not None:
            commits, committed = shards.group_commit_stats()
            row.extra |= {"shards": shards.count, "commits": commits, "turns_committed": committed}
        rows.append(row)
    return rows


def bench_host(path: Path, args: argparse.Namespace, sync: str, *, sharded: bool) -> ActorHost:
    """A host of the bench actor kind: `b` in one file each, or `s` in `args.shards` shards."""
    limits = HostLimits(max_open=args.max_open)
    if not sharded:
        return ActorHost(path, {"b": BenchActor}, limits=limits, synchronous=sync)
    return ActorHost(
        path,
        {"s": ShardBenchActor},
        limits=limits,
        synchronous=sync,
        sharded={"s": SHARD_TABLES},
        shards=args.shards,
    )


async def rows_on(
    label: str, path: Path, args: argparse.Namespace, sync: str, *, sharded: bool, actors: int
) -> list[Row]:
    """Create, random reads and random writes on `actors` actors of a fresh host."""
    host = bench_host(path, args, sync, sharded=sharded)
    await host.start()
    try:
        turns = (shard_read_turn, shard_write_turn) if sharded else (read_turn, write_turn)
        kind = "s" if sharded else "b"
        return await layout_rows(
            label, host, kind=kind, turns=turns, actors=actors, concurrency=args.concurrency, sync=sync
        )
    finally:
        await host.close(5.0)


async def scale(args: argparse.Namespace, sync: str, root: Path) -> list[Row]:
    """`args.scale` sharded actors: create, random reads, random writes."""
    return await rows_on("shards", root / f"scale-{sync}", args, sync, sharded=True, actors=args.scale)


async def layouts(args: argparse.Namespace, sync: str, root: Path) -> list[Row]:
    """The same rows on `args.layout_actors` actors, one file each and in shards."""
    n = args.layout_actors
    files = await rows_on("one file each", root / f"layout-files-{sync}", args, sync, sharded=False, actors=n)
    shards = await rows_on("shards", root / f"layout-shards-{sync}", args, sync, sharded=True, actors=n)
    return files + shards


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
    }


def print_table(rows: list[Row]) -> None:
    head = f"{'scenario':<22}{'sync':<8}{'actors':>7}{'conc':>6}{'turns':>9}{'turns/s':>10}"
    head += f"{'p50 us':>9}{'p99 us':>9}{'peak open':>11}{'fds':>6}{'RSS MB':>8}{'threads':>9}"
    sys.stdout.write(head + "\n" + "-" * len(head) + "\n")
    for r in rows:
        threads = f"{r.threads_before}->{r.peak_threads}" if r.peak_threads else ""
        peak = str(r.peak_open) if r.peak_open else ""
        fds = str(r.peak_fds) if r.peak_fds else ""
        rss = f"{r.rss_mb:.0f}" if r.rss_mb else ""
        sys.stdout.write(
            f"{r.scenario:<22}{r.synchronous:<8}{r.actors:>7}{r.concurrency:>6}{r.turns:>9}"
            f"{r.turns_per_s:>10,.0f}{r.p50_us:>9.1f}{r.p99_us:>9.1f}{peak:>11}{fds:>6}{rss:>8}{threads:>9}\n"
        )


async def main(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="actors-bench-", dir=args.data_dir) as tmp:
        root = Path(tmp)
        for sync in args.sync:
            if "scale" in args.scenarios:
                rows += await scale(args, sync, root)
            if "layouts" in args.scenarios:
                rows += await layouts(args, sync, root)
            if "turns" in args.scenarios:
                rows += await turn_rates(args, sync, root)
            if "churn" in args.scenarios:
                rows += await churn_rates(args, sync, root)
            if "touch" in args.scenarios and args.touch:
                rows.append(await touch(args, sync, root))
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per turn-rate scenario")
    parser.add_argument("--actors", type=int, default=1000, help="actors in the many-actor scenarios")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent callers")
    parser.add_argument("--touch", type=int, default=10_000, help="new actors touched once (0 skips)")
    parser.add_argument("--max-open", type=int, default=256, help="max_open for churn, touch, scale, layouts")
    parser.add_argument("--scale", type=int, default=100_000, help="sharded actors in the scale rows")
    parser.add_argument("--layout-actors", type=int, default=2_000, help="actors per layout compared")
    parser.add_argument("--shards", type=int, default=8, help="storage.shards for scale and layouts")
    parser.add_argument(
        "--scenarios",
        type=lambda s: s.split(","),
        default=["scale", "layouts", "turns", "churn", "touch"],
        help="comma-separated: scale,layouts,turns,churn,touch",
    )
    parser.add_argument(
        "--sync", type=lambda s: s.upper().split(","), default=["NORMAL", "FULL"], help="e.g. NORMAL,FULL"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="where the temporary databases go")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    arguments = parse_args()
    info = machine()
    sys.stdout.write(
        f"# {info['cpus']} CPUs, Python {info['python']}, SQLite {info['sqlite']}, {info['platform']}\n"
    )
    results = asyncio.run(main(arguments))
    print_table(results)
    if arguments.json is not None:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": info, "rows": [asdict(r) for r in results]}
        arguments.json.write_text(json.dumps(payload, indent=2) + "\n")
