"""Issue 9's HTTP figure: a lock acquire on a new path against a lock check on an existing one.

The acquire creates an actor (its first write: a row in its shard and a group commit); the check
reads one that exists. The issue asks for the acquire to cost at most twice the check. Both go
through a gateway this script starts (`cutover`, a temporary data directory), one request at a
time on one keep-alive connection (`RawClient` of `gateway_bench.py`), in alternating blocks of
`--block` requests so that a change of load on this shared machine hits both sides alike.
Reported per operation: median, mean and p90 client latency, and the server's CPU per request
(from /proc, the figure that does not depend on the client or on the other processes), with the
ratios acquire / check. Run from the repository root::

    .venv/bin/python bench/lock_ratio_bench.py --rounds 10 --json var/lock_ratio.json

A benchmark, not a test: it checks statuses and asserts nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_bench import CpuMeter, RawClient, js_json, loadavg, machine, out, spawned, timed

OK = 200


async def measure(base: str, pid: int, rounds: int, block: int) -> dict[str, Any]:
    parts = urlsplit(base)
    client = RawClient(parts.hostname or "127.0.0.1", parts.port or 80)
    meter = CpuMeter(pid)
    tag = uuid.uuid4().hex[:8]
    agent = f"bench-{tag}"
    body = js_json({"agentId": agent, "reason": "Benchmark", "ttlMs": 600_000})
    existing = quote(f"src/existing-{tag}.ts", safe="")
    status, _ = await client.request("POST", f"/lock/{existing}/lock", body)
    if status != OK:
        raise SystemExit(f"could not lock the existing path: {status}")
    samples: dict[str, list[float]] = {"acquire": [], "check": []}
    cpu: dict[str, float] = {"acquire": 0.0, "check": 0.0}
    counter = 0

    def request(op: str) -> tuple[str, str, bytes | None]:
        nonlocal counter
        if op == "check":
            return "GET", f"/lock/{existing}/check", None
        counter += 1
        return "POST", f"/lock/{quote(f'src/new-{tag}-{counter}.ts', safe='')}/lock", body

    for op in ("acquire", "check"):  # warm-up, not counted
        for _ in range(20):
            await timed(client, *request(op))
    for _ in range(rounds):
        for op in ("acquire", "check"):
            before = meter.seconds() or 0.0
            for _ in range(block):
                ms, status = await timed(client, *request(op))
                if status != OK:
                    raise SystemExit(f"{op} answered {status}")
                samples[op].append(ms)
            cpu[op] += (meter.seconds() or 0.0) - before
    await client.close()
    report: dict[str, Any] = {}
    for op, ms in samples.items():
        ms.sort()
        report[op] = {
            "requests": len(ms),
            "median_ms": round(statistics.median(ms), 3),
            "mean_ms": round(statistics.fmean(ms), 3),
            "p90_ms": round(ms[int(0.9 * len(ms))], 3),
            "server_cpu_us": round(cpu[op] / len(ms) * 1e6, 1),
        }
    a, c = report["acquire"], report["check"]
    report["ratio"] = {
        key: round(a[key] / c[key], 2)
        for key in ("median_ms", "mean_ms", "p90_ms", "server_cpu_us")
        if c[key]
    }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=10, help="alternating blocks of each operation")
    parser.add_argument("--block", type=int, default=50, help="requests per block")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    load_before = loadavg()
    started = time.perf_counter()
    with spawned("cutover", "warning", keep=False) as (base, pid):
        report = asyncio.run(measure(base, pid, args.rounds, args.block))
    report["machine"] = machine() | {"load_before": load_before, "load_after": loadavg()}
    report["seconds"] = round(time.perf_counter() - started, 1)
    out(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
