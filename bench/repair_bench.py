"""Micro-benchmark of the repair queue: what an enqueue costs the event loop, and what finding
the next due entry of one target costs with and without its index.

Run from the repository root (a few seconds)::

    .venv/bin/python bench/repair_bench.py --json var/repair_bench.json

- `stall`: a ticker task sleeps 1 ms in a loop while 200 repair entries are enqueued one after
  the other, and records how late each tick woke (the time the loop was held). Measured for the
  queue as it is (`RepairQueue.enqueue`: the FULL commit on the queue's thread) and, as the
  floor of the same run, for the former way (the same statement and FULL commit on the loop).
- `next_due`: `next_due_ms(target)` (`MIN(next_ms) ... WHERE target = ?`) over 10,000 entries
  of two targets, with the `repair_target_due` index and with it dropped, on the same file.

This is a benchmark, not a test: it asserts nothing and prints a table (and JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.clock import SystemClock
from gateway.domain.entities import EntityKey
from gateway.phases.repair import _ENQUEUE, RepairQueue

ENTRIES = 200
TICK_S = 0.001


async def _stalls(enqueue_all: Any) -> dict[str, float]:
    """Run `enqueue_all()` beside a 1 ms ticker; the ticker's lateness in ms."""
    late: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            late.append((time.perf_counter() - before - TICK_S) * 1000)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    await enqueue_all()
    total = time.perf_counter() - started
    done.set()
    await tick
    late.sort()
    return {
        "entries": ENTRIES,
        "total_ms": round(total * 1000, 1),
        "per_entry_ms": round(total * 1000 / ENTRIES, 3),
        "ticks": len(late),
        "stall_p50_ms": round(statistics.median(late), 3),
        "stall_p99_ms": round(late[int(len(late) * 0.99) - 1], 3),
        "stall_max_ms": round(late[-1], 3),
    }


async def stall(tmp: Path) -> dict[str, Any]:
    queue = RepairQueue(tmp / "new", SystemClock())

    async def new() -> None:
        for i in range(ENTRIES):
            await queue.enqueue(EntityKey("task", "", f"t-{i}"), "legacy", "bench")

    after = await _stalls(new)
    queue.close()

    (tmp / "old").mkdir()
    db = sqlite3.connect(tmp / "old" / "repair.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    RepairQueue(tmp / "old", SystemClock()).close()  # the schema

    async def old() -> None:
        for i in range(ENTRIES):
            now = int(time.time() * 1000)
            db.execute(_ENQUEUE, ("task", "", f"t-{i}", "legacy", now, now, "bench"))
            await asyncio.sleep(0)  # a request's other awaits

    before = await _stalls(old)
    db.close()
    return {"on_the_loop (before)": before, "on_its_thread (after)": after}


def next_due(tmp: Path, entries: int = 10_000, reps: int = 2_000) -> dict[str, Any]:
    """`MIN(next_ms)` of a target whose 100 entries are all due after the other target's
    `entries` (a down target's entries wait for its next attempt), with and without the index."""
    RepairQueue(tmp / "due", SystemClock()).close()
    path = tmp / "due" / "repair.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    for i in range(entries):
        db.execute(_ENQUEUE, ("task", "", f"a-{i}", "actors", i, i, "bench"))
    for i in range(100):
        db.execute(_ENQUEUE, ("task", "", f"l-{i}", "legacy", i, 10 * entries + i, "bench"))
    db.execute("COMMIT")
    db.close()
    out: dict[str, Any] = {"entries": entries + 100}
    sql = "SELECT MIN(next_ms) FROM repair WHERE target = ?"
    for label in ("with the index", "without it"):
        db = sqlite3.connect(path, isolation_level=None)
        if label == "without it":
            db.execute("DROP INDEX repair_target_due")
        plan = db.execute(f"EXPLAIN QUERY PLAN {sql}", ("legacy",)).fetchall()
        started = time.perf_counter()
        for _ in range(reps):
            db.execute(sql, ("legacy",)).fetchall()
        out[label] = {
            "us_per_query": round((time.perf_counter() - started) / reps * 1e6, 2),
            "plan": " / ".join(str(row[-1]) for row in plan),
        }
        db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results = {
            "machine": {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version},
            "stall": asyncio.run(stall(tmp)),
            "next_due": next_due(tmp),
        }
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
