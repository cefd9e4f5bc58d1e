"""Benchmark of `agent-coord check`: entities compared per second and peak memory, full and sampled.

Run from the repository root (the 1,000,000-entity data set takes a long while to build)::

    .venv/bin/python bench/check_bench.py --scale 1000000 --json bench/results/check-<commit>.json

It starts a private redis-server, fills it with the realistic legacy data set
(`gateway.legacy.generator`, `--scale` primary entities), imports every readable entity into a
fresh data directory through the bulk layer (what the migration tool does), and then runs the
real command line, `python -m gateway.cli check --json --rounds 0`, once in full and once per
`--sample` rate, each as its own process, `--repeat` times interleaved: the wall time, the CPU
time (user + system: less sensitive than the wall time to the other processes of a shared
machine; with `--jobs 2` the second process's apart too, and the Redis server's from its INFO,
with the bytes it sent: on a server without HSCAN NOVALUES most of a sampled check's are values
it does not compare),
the entities it compared (report `totals.compared`, the keys of either store in the
sample), that process's peak resident memory (`ru_maxrss` of the child) and the process tree's
(the largest sum of the resident memory of the check and every process it started, read from
/proc every 50 ms; with the number of processes). Setup times are reported apart.

With `--redis-url` and `--data-dir` it checks an existing imported pair instead of building one
(e.g. `agent-coord dev seed-legacy --scale 1000000` then `agent-coord migrate copy`).
`--listing whole` runs each check with `--whole-hashes` (every legacy hash listed with one
HKEYS); `--listing steps --listing whole` interleaves both.

This is a benchmark, not a test: it asserts nothing and prints a table (and JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from gateway.bulk.items import Selection
from gateway.bulk.sides import ActorEndpoint, open_actor_side, open_legacy_side
from gateway.domain.entities import Unreadable
from gateway.legacy.generator import generate
from gateway.settings import load_settings
from gateway.testing import RedisServer

_CHILD = """
import resource, sys
from gateway.cli import main
code = main(sys.argv[1:])
u = resource.getrusage(resource.RUSAGE_SELF)
c = resource.getrusage(resource.RUSAGE_CHILDREN)  # the legacy scan's process (--jobs 2)
cpu = u.ru_utime + u.ru_stime + c.ru_utime + c.ru_stime
child = c.ru_utime + c.ru_stime
sys.stderr.write(f"\\nMAXRSS_KB={u.ru_maxrss} CHILD_MAXRSS_KB={c.ru_maxrss} CPU_S={cpu:.2f} ")
sys.stderr.write(f"CHILD_CPU_S={child:.2f}\\n")
sys.exit(code)
"""
"""The check, run as `agent-coord check` is, then its own peak resident memory on stderr."""


async def build(url: str, data_dir: Path, scale: int) -> dict[str, Any]:
    """Seed Redis and import it into the actors; the times and the number imported."""
    r = aioredis.Redis.from_url(url, decode_responses=True)
    started = time.perf_counter()
    try:
        await generate(r, scale=scale, seed=1, flush=True, batch=5000)
    finally:
        await r.aclose()
    seeded = time.perf_counter()
    settings = load_settings(overrides={"storage.data_dir": str(data_dir), "legacy.redis_url": url})
    imported = 0
    async with (
        open_legacy_side(settings, url) as legacy,
        open_actor_side(settings, ActorEndpoint(data_dir=data_dir)) as actors,
    ):
        async for batch in legacy.scan(Selection.of(), batch=2000):
            items = [(k, v) for k, v in batch if not isinstance(v, Unreadable)]
            await actors.write_batch(items)
            imported += len(items)
    done = time.perf_counter()
    return {"seed_s": round(seeded - started, 1), "import_s": round(done - seeded, 1), "imported": imported}


def _server(url: str) -> dict[str, Any]:
    """Which server holds the legacy data (its version; Valkey's too), and whether it takes
    HSCAN NOVALUES, which changes how a check lists a large hash (docs/consistency.md)."""

    def version(text: object) -> tuple[int, ...]:
        return tuple(int(x) for x in str(text).split(".")[:2])

    async def ask() -> dict[str, Any]:
        r = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            info = await r.info("server")
        finally:
            await r.aclose()
        found = {k: info[k] for k in ("redis_version", "valkey_version") if k in info}
        novalues = version(found.get("valkey_version", "0.0")) >= (8, 0) or version(
            found.get("redis_version", "0.0")
        ) >= (7, 4)
        return {**found, "hscan_novalues": novalues}

    return asyncio.run(ask())


def _redis_counters(url: str) -> tuple[float, int]:
    """What the Redis server has done so far: its CPU seconds (user + system) and the bytes it
    has sent its clients (`total_net_output_bytes`: on a server without HSCAN NOVALUES most of a
    sampled check's are the values of the fields it does not keep, docs/consistency.md)."""

    async def ask() -> tuple[float, int]:
        r = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            cpu = await r.info("cpu")
            stats = await r.info("stats")
        finally:
            await r.aclose()
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), int(stats["total_net_output_bytes"])

    return asyncio.run(ask())


def run_check(url: str, data_dir: Path, *extra: str) -> dict[str, Any]:
    """One `agent-coord check` process: wall time, compared, rate and its peak RSS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
    cmd = [
        sys.executable, "-c", _CHILD, "check", "--redis-url", url, "--data-dir", str(data_dir),
        "--json", "--rounds", "0", "--no-progress", "--batch", "2000", *extra,
    ]  # fmt: skip
    cpu_before, sent_before = _redis_counters(url)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # noqa: S603
    tree = _TreeWatch(proc.pid)
    tree.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    tree.stop.set()
    tree.join()
    ran = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    cpu_after, sent_after = _redis_counters(url)
    if ran.returncode not in (0, 1):
        raise RuntimeError(f"check failed ({ran.returncode}): {ran.stderr[-2000:]}")
    peak_kb = int(ran.stderr.rsplit("\nMAXRSS_KB=", 1)[1].split()[0])
    child_kb = int(ran.stderr.rsplit("CHILD_MAXRSS_KB=", 1)[1].split()[0])
    cpu_s = float(ran.stderr.rsplit(" CPU_S=", 1)[1].split()[0])
    child_cpu_s = float(ran.stderr.rsplit("CHILD_CPU_S=", 1)[1].split()[0])
    doc = json.loads(ran.stdout)
    compared = int(doc["totals"]["compared"])
    return {
        "args": list(extra),
        "exit": ran.returncode,
        "wall_s": round(wall, 2),
        "compared": compared,
        "per_s": round(compared / wall),
        "cpu_s": cpu_s,
        "child_cpu_s": child_cpu_s,
        "redis_cpu_s": round(cpu_after - cpu_before, 2),
        "redis_sent_mb": round((sent_after - sent_before) / 1e6, 1),
        "load": round(os.getloadavg()[0], 2),
        "per_cpu_s": round(compared / cpu_s),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "child_peak_rss_mb": round(child_kb / 1024, 1),
        "differences": doc["totals"]["differences"],
        "tree_peak_mb": round(tree.peak_kb / 1024, 1),
        "tree_processes": tree.most,
    }


def _tree_rss_kb(root: int) -> tuple[int, int]:
    """The resident memory (kB) of `root` and all its descendants, and how many there are."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8")
            pages = int((entry / "statm").read_text(encoding="utf-8").split()[1])
        except OSError:
            continue
        pid = int(entry.name)
        parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[pid] = pages * page_kb
    inside = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in inside and pid not in inside:
                inside.add(pid)
                changed = True
    return sum(rss.get(p, 0) for p in inside), len(inside & rss.keys())


class _TreeWatch(threading.Thread):
    """Samples the check's process tree (the checking process, any process it starts) every
    50 ms: the largest sum of their resident memory at one moment, and the most processes."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.peak_kb = 0
        self.most = 0

    def run(self) -> None:
        while not self.stop.wait(0.05):
            kb, n = _tree_rss_kb(self.root)
            self.peak_kb = max(self.peak_kb, kb)
            self.most = max(self.most, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1_000_000)
    parser.add_argument("--sample", type=float, action="append", help="sample rates (default 0.1)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the runs, interleaved")
    parser.add_argument("--redis-url", help="an existing legacy Redis (with --data-dir): no build")
    parser.add_argument("--data-dir", type=Path, help="its imported data directory")
    parser.add_argument("--jobs", type=int, action="append", help="check --jobs values, interleaved")
    parser.add_argument("--sampled-only", action="store_true", help="no full check, the sampled ones only")
    parser.add_argument(
        "--listing",
        choices=("steps", "whole"),
        action="append",
        help="the legacy hashes listed in HSCAN steps (the default) or whole (check --whole-hashes); "
        "repeat to interleave both",
    )
    args = parser.parse_args()
    samples = args.sample or [0.1]

    def runs_on(url: str, data_dir: Path) -> list[dict[str, Any]]:
        out = []
        jobs = [("--jobs", str(j)) for j in args.jobs] if args.jobs else [()]
        listings = [("--whole-hashes",) if x == "whole" else () for x in args.listing or ["steps"]]
        variants = [(*j, *listing) for j in jobs for listing in listings]
        for _ in range(args.repeat):
            for variant in variants:
                if not args.sampled_only:
                    out.append(run_check(url, data_dir, *variant))
                out += [
                    run_check(url, data_dir, *variant, "--sample", str(rate), "--seed", "1")
                    for rate in samples
                ]
        return out

    if args.redis_url and args.data_dir:
        setup: dict[str, Any] = {"existing": True}
        server_info = _server(args.redis_url)
        runs = runs_on(args.redis_url, args.data_dir)
    else:
        with RedisServer() as server, tempfile.TemporaryDirectory(prefix="check-bench-") as tmp:
            setup = asyncio.run(build(server.url, Path(tmp), args.scale))
            server_info = _server(server.url)
            runs = runs_on(server.url, Path(tmp))
    result = {
        "scale": args.scale,
        "setup": setup,
        "server": server_info,
        "runs": runs,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    lines = [
        f"scale {args.scale}: {setup}; server {server_info}",
        f"{'run':<32}{'wall s':>8}{'cpu s (child)':>15}{'redis cpu':>10}{'sent MB':>9}"
        f"{'compared':>10}{'per s':>8}{'per cpu s':>10}{'peak MB':>9}{'load':>6}{'tree MB':>9}{'diffs':>6}",
    ]
    for r in runs:
        name = " ".join(r["args"]) or "full"
        lines.append(
            f"{name:<32}{r['wall_s']:>8}{r['cpu_s']:>8} ({r['child_cpu_s']})"
            f"{r['redis_cpu_s']:>10}{r['redis_sent_mb']:>9}"
            f"{r['compared']:>10}{r['per_s']:>8}{r['per_cpu_s']:>10}{r['peak_rss_mb']!s:>9}"
            f" (+{r['child_peak_rss_mb']} child){r['load']:>6}{r['tree_peak_mb']:>7} ({r['tree_processes']})"
            f"{r['differences']:>6}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
