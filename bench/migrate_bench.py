"""Benchmark of `agent-coord migrate copy`, both ways: entities per second and peak memory.

Run from the repository root (the 1,000,000-entity data set takes a long while to build)::

    .venv/bin/python bench/migrate_bench.py --scale 100000 --json bench/results/migrate-<commit>.json

It starts a private redis-server and fills it with the realistic legacy data set
(`gateway.legacy.generator`, `--scale` primary entities), then runs the real command line as
its own process, twice: `migrate copy --from legacy --to actors` into a fresh data directory,
and `migrate copy --from actors --to legacy` from it into a second, empty redis-server. For
each: the wall time, the entities read (summary `totals.read`), entities per second and that
process's peak resident memory (`ru_maxrss` of the child). With `--gateway`, a real
`agent-coord serve` owns the data directory and both copies go through its admin API; its own
peak resident memory (`VmHWM`) is reported too.

This is a benchmark, not a test: it asserts nothing and prints a table (and JSON with --json).
The machine is shared: run it more than once, and read the figures as noisy.
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
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from gateway.legacy.generator import generate
from gateway.testing import RedisServer
from gateway.testing.gateway_process import GatewayProcess

_CHILD = """
import resource, sys
from gateway.cli import main
code = main(sys.argv[1:])
u = resource.getrusage(resource.RUSAGE_SELF)
c = resource.getrusage(resource.RUSAGE_CHILDREN)
hwm = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))
sys.stderr.write(
    f"\\nMAXRSS_KB={hwm} CPU_S={u.ru_utime + u.ru_stime:.2f} READER_CPU_S={c.ru_utime + c.ru_stime:.2f}\\n"
)
sys.exit(code)
"""
"""The copy, run as `agent-coord migrate` is, then its own peak resident memory and CPU time
(user + system) on stderr, and the CPU time of its reader process (`--jobs 2`, the only child it
waits for). The peak is VmHWM, not `ru_maxrss`: the child is forked from this process, and
`ru_maxrss` keeps the parent's peak (the seeding) across the exec. The reader's own peak is in
its `migrate.reader_done` log line."""


async def seed(url: str, scale: int) -> float:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    started = time.perf_counter()
    try:
        await generate(r, scale=scale, seed=1, flush=True, batch=5000)
    finally:
        await r.aclose()
    return round(time.perf_counter() - started, 1)


def run_copy(
    source: str,
    target: str,
    url: str,
    data_dir: Path,
    *,
    batch: int,
    gw_url: str | None,
    gw_pid: int | None = None,
    jobs: int = 2,
) -> dict[str, Any]:
    """One `agent-coord migrate copy` process: wall time, entities read, rate, peak RSS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
    summary = data_dir.parent / f"summary-{source}-{target}.json"
    cmd = [
        sys.executable, "-c", _CHILD, "migrate", "copy", "--from", source, "--to", target,
        "--redis-url", url, "--data-dir", str(data_dir), "--batch", str(batch), "--no-progress",
        "--summary", str(summary), "--state-dir", str(data_dir.parent / "state"), "--jobs", str(jobs),
    ]  # fmt: skip
    if gw_url is not None:
        cmd += ["--url", gw_url]
    load = os.getloadavg()[0]
    gw_cpu = None if gw_pid is None else proc_cpu_s(gw_pid)
    started = time.perf_counter()
    ran = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)  # noqa: S603
    wall = time.perf_counter() - started
    gw_used = None if gw_pid is None or gw_cpu is None else proc_cpu_s(gw_pid) - gw_cpu
    if ran.returncode not in (0, 1):
        raise RuntimeError(f"migrate failed ({ran.returncode}): {ran.stderr[-2000:]}")
    tail = ran.stderr.rsplit("MAXRSS_KB=", 1)[1].split()
    peak_kb = int(tail[0])
    cpu_s = float(tail[1].removeprefix("CPU_S="))
    reader_cpu_s = float(tail[2].removeprefix("READER_CPU_S="))
    reader_mb = None
    for line in ran.stderr.splitlines():
        if '"migrate.reader_done"' in line:
            reader_mb = json.loads(line).get("peak_rss_mb")
    totals = json.loads(summary.read_text())["totals"]
    return {
        "copy": f"{source} -> {target}",
        "jobs": jobs,
        "wall_s": round(wall, 2),
        "read": totals["read"],
        "written": totals["written"],
        "per_s": round(totals["read"] / wall),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "cpu_s": round(cpu_s, 2),
        "per_cpu_s": round(totals["read"] / cpu_s) if cpu_s else None,
        "reader_cpu_s": round(reader_cpu_s, 2),
        "reader_peak_rss_mb": reader_mb,
        "gateway_cpu_s": None if gw_used is None else round(gw_used, 2),
        "load_1m_before": round(load, 2),
    }


def proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) process `pid` has used so far (`/proc/<pid>/stat`)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--gateway", action="store_true", help="through a running gateway's admin API")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=2, help="migrate --jobs (default 2)")
    args = parser.parse_args()
    with RedisServer() as source, RedisServer() as target, tempfile.TemporaryDirectory(prefix="mig-") as tmp:
        data_dir = Path(tmp) / "data"
        seed_s = asyncio.run(seed(source.url, args.scale))
        gateway_mb: float | None = None
        if args.gateway:
            with GatewayProcess(data_dir, redis_url=source.url, phase="parallel") as gw:
                assert gw.proc is not None  # noqa: S101 - started
                pid = gw.proc.pid
                runs = [
                    run_copy(
                        "legacy",
                        "actors",
                        source.url,
                        data_dir,
                        batch=args.batch,
                        gw_url=gw.url,
                        gw_pid=pid,
                        jobs=args.jobs,
                    )
                ]
                runs.append(
                    run_copy(
                        "actors",
                        "legacy",
                        target.url,
                        data_dir,
                        batch=args.batch,
                        gw_url=gw.url,
                        gw_pid=pid,
                        jobs=args.jobs,
                    )
                )
                gateway_mb = vm_hwm_mb(gw.proc.pid)
        else:
            runs = [
                run_copy(
                    "legacy", "actors", source.url, data_dir, batch=args.batch, gw_url=None, jobs=args.jobs
                )
            ]
            runs.append(
                run_copy(
                    "actors", "legacy", target.url, data_dir, batch=args.batch, gw_url=None, jobs=args.jobs
                )
            )
    result = {
        "scale": args.scale,
        "batch": args.batch,
        "gateway": args.gateway,
        "seed_s": seed_s,
        "runs": runs,
        "gateway_peak_rss_mb": gateway_mb,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load": os.getloadavg(),
    }
    lines = [
        f"scale {args.scale}: seeded in {seed_s} s; batch {args.batch}; --jobs {args.jobs}; "
        f"{'through a gateway' if args.gateway else 'data directory opened by the tool'}",
        f"{'copy':<20}{'wall s':>10}{'read':>10}{'written':>10}{'per s':>10}{'cpu s':>8}{'per cpu s':>10}"
        f"{'peak MB':>9}{'rd cpu s':>9}{'rd MB':>7}{'gw cpu s':>9}{'load':>6}",
    ]
    lines += [
        f"{r['copy']:<20}{r['wall_s']:>10}{r['read']:>10}{r['written']:>10}{r['per_s']:>10}{r['cpu_s']:>8}"
        f"{r['per_cpu_s']!s:>10}{r['peak_rss_mb']!s:>9}{r['reader_cpu_s']!s:>9}{r['reader_peak_rss_mb']!s:>7}"
        f"{r['gateway_cpu_s']!s:>9}{r['load_1m_before']:>6}"
        for r in runs
    ]
    if gateway_mb is not None:
        lines.append(f"gateway peak RSS: {gateway_mb} MB")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
