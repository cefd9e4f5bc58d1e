"""End-to-end benchmark of the gateway over HTTP: upstream's twelve operations, a mixed workload
under concurrency, and (optionally) wrk for raw GET throughput.

Against a running gateway, or one this script starts and stops itself::

    .venv/bin/python bench/gateway_bench.py --base http://127.0.0.1:8787
    .venv/bin/python bench/gateway_bench.py --spawn                       # cutover, temp data dir
    .venv/bin/python bench/gateway_bench.py --spawn --phase write-through # + its own redis-server
    .venv/bin/python bench/gateway_bench.py --spawn --wrk --json var/bench.json

Parts (docs/benchmarks.md has the figures and how to read them):

1. `sequential`: upstream's `benchmark/do-benchmark.ts` (do-api.md section 9): the same twelve
   operations, bodies and iteration counts (5 warm-up calls, then 100 timed; 50 for lock acquire,
   which takes a new resource, and so a new actor, on every call), one client, one request at a
   time. Unlike upstream (section 12.8) every body is read before the clock stops, every status is
   checked, and the lock paths are new in every run. Reported per operation: avg/min/max/p50/p95/
   p99 ms and ops/s = 1000 / avg; then the mean of the twelve averages, set against upstream's.
2. `concurrency`: a mixed workload (80 % reads, 20 % writes; `MIX` below) from 1, 16 and 64
   connections, each a simulated agent with its own id, for a fixed time per level (bounded in
   requests too). Reported: throughput, p50/p90/p99/max latency, and errors.
3. `wrk` (with `--wrk`, if `wrk` is on PATH): raw keep-alive GET throughput on `/health` and
   `/coordinator/agents`.
4. `realistic` (with `--realistic`, alone; needs wrk): issue 13's mix (`bench/mix.lua`: 200 agents,
   2,000 lock paths, mostly reads) from 64 connections with wrk, and the twelve operations, each
   run against the gateway and against a bare aiohttp app answering fixed JSON
   (`bench/floor_app.py`, the floor) in the same round, with the gateway's figures as ratios to
   the floor's. Lock conflicts (409) are counted apart from failures. Upstream ran the twelve
   operations once, on a fresh store (do-api.md section 9); so with `--spawn` each round's twelve
   operations that count for the target (`seq_ratio`) run on a fresh gateway of the same phase
   (fresh data dir, and outside cutover a fresh redis-server), its CPU metered by its pid, once
   its start-up work is done (no CPU tick for two 0.2 s windows, at most 10 s). The
   twelve are also run on the mix's gateway, after the setup and the earlier rounds' mix (up to
   ~1,000 open tasks, /work and the task list some 250 KB each): reported beside, as
   "on the mix's state", for information. With `--base` the gateway cannot be respawned: the
   twelve run on its existing state only, and that figure is the one set against the target.
   With `--mix-ops N`, each operation of the mix then runs alone for N s (wrk, 16 connections):
   its CPU per request.

The client: by default a minimal HTTP/1.1 keep-alive client on asyncio streams (`RawClient`),
one connection per concurrent worker, because aiohttp's client costs several times more CPU per
request than the server's fast paths and this machine has only two cores, shared by client and
server. `--client aiohttp` uses one `aiohttp.ClientSession` (keep-alive) instead, for comparison.
When the server's pid is known (`--spawn`, or `--server-pid`), the server's own CPU time per
request is reported too: it does not depend on what the client costs. With `--spawn` the
gateway's event loop stalls are reported at the end (`gateway_loop_stalls` in the JSON: its
`loop.stalled` lines, each a stall of 250 ms or more with what held the loop,
`gateway/loop_watch.py`), so a round's p99 that jumped can be told from the machine's noise.

Traffic goes to 127.0.0.1 only. Every loop is bounded in count and in time. This is a benchmark,
not a test: it checks statuses but asserts nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

# Upstream's figures (do-api.md section 12.8): measured on its worker, bodies read, sequential,
# one client, on this 2-core machine; the mean of the twelve averages is the median of 3 runs.
UPSTREAM_MEAN_MS: Final = 5.1
UPSTREAM_HEALTH_MS: Final = 2.3
UPSTREAM_LOCK_ACQUIRE_MS: Final = 7.7

WARMUP: Final = 5
ITERATIONS: Final = 100
LOCK_ITERATIONS: Final = 50
REQUEST_TIMEOUT_S: Final = 30.0
LOCK_TTL_MS: Final = 60_000
HTTP_OK: Final = 200

Response = tuple[int, bytes]


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# -- clients ------------------------------------------------------------------------------------


class Client(Protocol):
    """One keep-alive HTTP connection (or pool); `request` returns the status and the whole body."""

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response: ...

    async def close(self) -> None: ...


class HttpProtocolError(Exception):
    """The server's answer is not the HTTP/1.1 the raw client understands."""


class RawClient:
    """HTTP/1.1 over one asyncio stream, kept alive; sends the path byte for byte.

    It understands what the gateway sends: a status line, headers, then a `Content-Length` body
    (or a chunked one). It reconnects if the server closed the connection.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        reader, writer = await self._connect()
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host_header
        if body is None:
            writer.write(head + b"\r\n")
        else:
            writer.write(
                head
                + b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        raw_head = await reader.readuntil(b"\r\n\r\n")
        lines = raw_head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):  # noqa: PLR2004 - version, status
            raise HttpProtocolError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        length = -1
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"connection":
                close = value.strip().lower() == b"close"
        if chunked:
            data = await self._read_chunked(reader)
        elif length >= 0:
            data = await reader.readexactly(length)
        else:
            data = await reader.read()
            close = True
        if close:
            await self.close()
        return status, data

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers from the gateway
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class AiohttpClient:
    """One `aiohttp.ClientSession` (keep-alive pool shared by every caller of this client)."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        headers = {"Content-Type": "application/json"} if body is not None else None
        async with self.session.request(
            method, URL(self.base + path, encoded=True), data=body, headers=headers
        ) as resp:
            return resp.status, await resp.read()

    async def close(self) -> None:
        """The session is closed by its owner, not by each user of it."""


class ClientFactory:
    """Makes one client per worker: a raw connection each, or users of one shared session."""

    def __init__(self, base: str, kind: str) -> None:
        parts = urlsplit(base)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"--base must be a loopback address, got {base!r}")
        self.base = base.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.kind = kind
        self._session: aiohttp.ClientSession | None = None

    def make(self) -> Client:
        if self.kind == "raw":
            return RawClient(self.host, self.port)
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            # limit=0: one keep-alive connection per concurrent request, as with the raw client.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=timeout, auto_decompress=False
            )
        return AiohttpClient(self.base, self._session)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def timed(client: Client, method: str, path: str, body: bytes | None) -> tuple[float, int]:
    """One request and its whole body; the time in ms and the status."""
    started = time.perf_counter_ns()
    status, _ = await asyncio.wait_for(client.request(method, path, body), REQUEST_TIMEOUT_S)
    return (time.perf_counter_ns() - started) / 1e6, status


# -- statistics ---------------------------------------------------------------------------------


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_ms:
        return float("nan")
    rank = max(1, min(len(sorted_ms), round(q / 100 * len(sorted_ms) + 0.5)))
    return sorted_ms[rank - 1]


@dataclass
class OpResult:
    """One operation of the sequential part."""

    operation: str
    iterations: int
    total_ms: float
    avg_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ops_per_s: float
    errors: int
    statuses: dict[str, int]

    @classmethod
    def of(cls, name: str, samples: list[float], statuses: list[int]) -> OpResult:
        s = sorted(samples)
        total = sum(s)
        avg = total / len(s)
        counts: dict[str, int] = {}
        for st in statuses:
            counts[str(st)] = counts.get(str(st), 0) + 1
        return cls(
            operation=name,
            iterations=len(s),
            total_ms=total,
            avg_ms=avg,
            min_ms=s[0],
            max_ms=s[-1],
            p50_ms=percentile(s, 50),
            p95_ms=percentile(s, 95),
            p99_ms=percentile(s, 99),
            ops_per_s=1000 / avg,
            errors=sum(1 for st in statuses if st != HTTP_OK),
            statuses=counts,
        )


# -- server CPU ---------------------------------------------------------------------------------


class CpuMeter:
    """User + system CPU seconds of one process and its children (from /proc), to report server
    CPU per request: the gateway's checkpoint helper process is part of the server."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float | None:
        if self.pid is None:
            return None
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        # utime, stime, and the children's that ended (cutime, cstime): fields 14-17
        ticks = sum(int(f) for f in fields[11:15])
        return (ticks + self._live_children_ticks()) / self._tick

    def _live_children_ticks(self) -> int:
        try:
            pids = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return 0
        ticks = 0
        for child in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks

    @contextlib.contextmanager
    def measure(self, into: dict[str, Any]) -> Iterator[None]:
        """Record the server's and this client's CPU seconds spent in the block."""
        before, client_before = self.seconds(), time.process_time()
        yield
        after = self.seconds()
        into["client_cpu_s"] = time.process_time() - client_before
        into["server_cpu_s"] = None if before is None or after is None else after - before


def cpu_us_per_request(section: dict[str, Any], requests: int, who: str = "server") -> float | None:
    cpu = section.get(f"{who}_cpu_s")
    return None if cpu is None or requests == 0 else cpu / requests * 1e6


# -- part 1: upstream's twelve operations --------------------------------------------------------


def js_json(obj: Any) -> bytes:
    """`JSON.stringify`: compact, key order kept."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Operation:
    name: str
    call: Callable[[], tuple[str, str, bytes | None]]  # the next request: method, path, body
    iterations: int = ITERATIONS


def upstream_operations(run_tag: str) -> list[Operation]:
    """do-benchmark.ts's operations, bodies and order; lock paths unique to `run_tag`."""
    agent_id = f"bench-agent-{run_tag}"
    enc_agent = quote(agent_id, safe="")
    counters = {"chat": 0, "task": 0, "lock": 0}

    def nxt(key: str) -> int:
        n = counters[key]
        counters[key] = n + 1
        return n

    register = js_json({"agentId": agent_id, "status": "active", "currentTask": "Benchmarking"})
    checkpoint = js_json(
        {
            "conversationSummary": "Benchmark session",
            "currentTask": "Performance testing",
            "pendingWork": ["More benchmarks"],
            "filesEdited": ["src/test.ts"],
            "accomplishments": ["Ran benchmarks"],
        }
    )
    check_path = quote("src/benchmark-test.ts", safe="")
    lock_body = js_json({"agentId": agent_id, "reason": "Benchmark", "ttlMs": LOCK_TTL_MS})

    def chat() -> tuple[str, str, bytes | None]:
        body = {"author": agent_id, "message": f"Benchmark message {nxt('chat')}", "authorType": "agent"}
        return "POST", "/coordinator/chat", js_json(body)

    def task() -> tuple[str, str, bytes | None]:
        body = {
            "title": f"Benchmark Task {nxt('task')}",
            "description": "Performance test",
            "createdBy": agent_id,
            "priority": "medium",
        }
        return "POST", "/coordinator/tasks", js_json(body)

    def lock() -> tuple[str, str, bytes | None]:
        path = quote(f"src/benchmark-{run_tag}-{nxt('lock')}.ts", safe="")
        return "POST", f"/lock/{path}/lock", lock_body

    return [
        Operation("Health Check", lambda: ("GET", "/health", None)),
        Operation("Agent Register", lambda: ("POST", "/coordinator/agents", register)),
        Operation("Get Work", lambda: ("GET", f"/coordinator/work?agentId={enc_agent}", None)),
        Operation("Post Chat", chat),
        Operation("Get Chat", lambda: ("GET", "/coordinator/chat?limit=50", None)),
        Operation("Create Task", task),
        Operation("List Tasks", lambda: ("GET", "/coordinator/tasks", None)),
        Operation("Lock Check", lambda: ("GET", f"/lock/{check_path}/check", None)),
        Operation("Lock Acquire", lock, LOCK_ITERATIONS),
        Operation("Save Checkpoint", lambda: ("POST", f"/agent/{enc_agent}/checkpoint", checkpoint)),
        Operation("Get Checkpoint", lambda: ("GET", f"/agent/{enc_agent}/checkpoint", None)),
        Operation("Get Agent State", lambda: ("GET", f"/agent/{enc_agent}/state", None)),
    ]


PLACEMENTS: Final = ("none", "same", "cross")
CLIENT_CPU: Final = 0
SERVER_CPU: Final = 1


def _pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` on `cpus` (a thread it starts later inherits its creator's)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def placed(pin: str, server_pid: int | None) -> Iterator[None]:
    """`--pin`: the CPUs of the sequential part, the same for the floor and the gateway. "none"
    (the default, the issue's method) leaves them to the scheduler; "same" puts the server under
    test and this client on CPU 1, "cross" the server on CPU 1 and the client on CPU 0; both are
    set back to every CPU after. A diagnostic: a ping-pong of one request at a time runs about
    twice as fast with both on one CPU as on two, but pinning did not make the twelve's ratio
    steadier from run to run (docs/benchmarks.md, eighteenth pass)."""
    if pin == "none" or server_pid is None:
        yield
        return
    every = os.sched_getaffinity(0)
    _pin_process(server_pid, {SERVER_CPU})
    os.sched_setaffinity(0, {SERVER_CPU} if pin == "same" else {CLIENT_CPU})
    try:
        yield
    finally:
        os.sched_setaffinity(0, every)
        _pin_process(server_pid, every)


async def _run_twelve(
    client: Any, meter: CpuMeter, run_tag: str, section: dict[str, Any], results: list[OpResult]
) -> None:
    """The twelve operations, warmed up and timed, one request at a time; the server's CPU into
    `section`."""
    try:
        status, _ = await client.request("GET", "/health")
        if status != HTTP_OK:
            raise SystemExit(f"/health answered {status}; is the gateway running?")
        with meter.measure(section):
            for op in upstream_operations(run_tag):
                for _ in range(WARMUP):
                    await timed(client, *op.call())
                samples: list[float] = []
                statuses: list[int] = []
                for _ in range(op.iterations):
                    ms, st = await timed(client, *op.call())
                    samples.append(ms)
                    statuses.append(st)
                results.append(OpResult.of(op.name, samples, statuses))
    finally:
        await client.close()


async def run_sequential(
    factory: ClientFactory, meter: CpuMeter, run_tag: str, pin: str = "none"
) -> dict[str, Any]:
    client = factory.make()
    section: dict[str, Any] = {"run_tag": run_tag, "pin": pin}
    results: list[OpResult] = []
    with placed(pin, meter.pid):
        await _run_twelve(client, meter, run_tag, section, results)
    total_ops = sum(r.iterations for r in results)
    total_ms = sum(r.total_ms for r in results)
    section["operations"] = [asdict(r) for r in results]
    section["summary"] = {
        "total_operations": total_ops,
        "total_ms": total_ms,
        "mean_of_avgs_ms": sum(r.avg_ms for r in results) / len(results),
        "throughput_ops_per_s": total_ops / (total_ms / 1000),
        "errors": sum(r.errors for r in results),
        "server_cpu_us_per_request": cpu_us_per_request(section, total_ops + WARMUP * len(results)),
        "client_cpu_us_per_request": cpu_us_per_request(section, total_ops + WARMUP * len(results), "client"),
    }
    return section


def print_sequential(section: dict[str, Any]) -> None:
    out(f"\nSequential, upstream's twelve operations (run {section['run_tag']}):")
    head = (
        f"{'operation':<16} {'n':>4} {'avg ms':>8} {'min':>7} {'max':>7} {'p50':>7} {'p95':>7} "
        f"{'p99':>7} {'ops/s':>7} {'err':>4}"
    )
    out(head)
    out("-" * len(head))
    for r in section["operations"]:
        out(
            f"{r['operation']:<16} {r['iterations']:>4} {r['avg_ms']:>8.3f} {r['min_ms']:>7.3f} "
            f"{r['max_ms']:>7.3f} {r['p50_ms']:>7.3f} {r['p95_ms']:>7.3f} {r['p99_ms']:>7.3f} "
            f"{r['ops_per_s']:>7.0f} {r['errors']:>4}"
        )
    s = section["summary"]
    cpu = s["server_cpu_us_per_request"]
    out(
        f"mean of the twelve averages {s['mean_of_avgs_ms']:.3f} ms, "
        f"{s['throughput_ops_per_s']:.0f} ops/s over {s['total_operations']} operations, "
        f"{s['errors']} errors; CPU per request: client {s['client_cpu_us_per_request']:.0f} us"
        + ("" if cpu is None else f", server {cpu:.0f} us")
    )


def compare_with_upstream(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over runs of the mean, health and lock acquire, against section 12.8's figures."""

    def median(values: list[float]) -> float:
        s = sorted(values)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2

    def op_avg(run: dict[str, Any], name: str) -> float:
        return float(next(r["avg_ms"] for r in run["operations"] if r["operation"] == name))

    ours = {
        "mean_of_avgs_ms": median([r["summary"]["mean_of_avgs_ms"] for r in runs]),
        "health_ms": median([op_avg(r, "Health Check") for r in runs]),
        "lock_acquire_ms": median([op_avg(r, "Lock Acquire") for r in runs]),
    }
    upstream = {
        "mean_of_avgs_ms": UPSTREAM_MEAN_MS,
        "health_ms": UPSTREAM_HEALTH_MS,
        "lock_acquire_ms": UPSTREAM_LOCK_ACQUIRE_MS,
    }
    return {
        "runs": len(runs),
        "ours": ours,
        "upstream": upstream,
        "speedup": {k: upstream[k] / ours[k] for k in ours},
    }


def print_comparison(cmp: dict[str, Any]) -> None:
    out(f"\nAgainst upstream's worker (do-api.md 12.8; ours: median of {cmp['runs']} run(s)):")
    labels = {
        "mean_of_avgs_ms": "mean of 12 avgs",
        "health_ms": "health",
        "lock_acquire_ms": "lock acquire",
    }
    for key, label in labels.items():
        out(
            f"  {label:<16} ours {cmp['ours'][key]:7.3f} ms   upstream {cmp['upstream'][key]:5.1f} ms   "
            f"x{cmp['speedup'][key]:.1f}"
        )


# -- part 2: mixed workload under concurrency ----------------------------------------------------

# (name, weight, is_write): 80 % reads, 20 % writes, drawn per request with a seeded RNG.
MIX: Final = (
    ("get_work", 10, False),
    ("get_chat", 15, False),
    ("list_agents", 5, False),
    ("lock_check", 15, False),
    ("get_checkpoint", 15, False),
    ("agent_state", 10, False),
    ("health", 10, False),
    ("post_chat", 5, True),
    ("save_checkpoint", 5, True),
    ("heartbeat", 3, True),
    ("lock_toggle", 5, True),  # acquire, then release on the next draw: the lock path stays usable
    ("send_dm", 2, True),
)


class MixAgent:
    """One worker of the mixed workload: an agent with its own id, lock path and RNG."""

    def __init__(self, run_tag: str, index: int, peers: int) -> None:
        self.agent_id = f"bench-mix-{run_tag}-{index}"
        self.enc = quote(self.agent_id, safe="")
        self.peer = quote(f"bench-mix-{run_tag}-{(index + 1) % peers}", safe="")
        self.lock_path = quote(f"src/mix-{run_tag}-{index}.ts", safe="")
        self.rng = random.Random(index)  # noqa: S311 - a reproducible workload, not a secret
        self.holding = False
        self.n = 0
        self._names = [m[0] for m in MIX]
        self._weights = [m[1] for m in MIX]

    def register(self) -> tuple[str, str, bytes | None]:
        body = js_json({"agentId": self.agent_id, "status": "active", "currentTask": "Benchmarking"})
        return "POST", "/coordinator/agents", body

    def next(self) -> tuple[str, str, str, bytes | None]:  # noqa: PLR0911 - one per operation
        name = self.rng.choices(self._names, self._weights)[0]
        self.n += 1
        if name == "get_work":
            return name, "GET", f"/coordinator/work?agentId={self.enc}", None
        if name == "get_chat":
            return name, "GET", "/coordinator/chat?limit=50", None
        if name == "list_agents":
            return name, "GET", "/coordinator/agents", None
        if name == "lock_check":
            return name, "GET", f"/lock/{self.lock_path}/check", None
        if name == "get_checkpoint":
            return name, "GET", f"/agent/{self.enc}/checkpoint", None
        if name == "agent_state":
            return name, "GET", f"/agent/{self.enc}/state", None
        if name == "health":
            return name, "GET", "/health", None
        if name == "post_chat":
            body: dict[str, Any] = {
                "author": self.agent_id,
                "message": f"mix message {self.n}",
                "authorType": "agent",
            }
            return name, "POST", "/coordinator/chat", js_json(body)
        if name == "save_checkpoint":
            body = {"conversationSummary": f"mix {self.n}", "currentTask": "Benchmarking"}
            return name, "POST", f"/agent/{self.enc}/checkpoint", js_json(body)
        if name == "heartbeat":
            return (name, *self.register())
        if name == "lock_toggle":
            self.holding = not self.holding
            action = "lock" if self.holding else "unlock"
            body = {"agentId": self.agent_id, "reason": "mix", "ttlMs": LOCK_TTL_MS}
            return name, "POST", f"/lock/{self.lock_path}/{action}", js_json(body)
        body = {"from": self.agent_id, "message": f"dm {self.n}"}
        return "send_dm", "POST", f"/agent/{self.peer}/messages", js_json(body)


async def run_level(
    factory: ClientFactory,
    meter: CpuMeter,
    run_tag: str,
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> dict[str, Any]:
    """`concurrency` workers for `duration_s` (or until `max_requests` in all)."""
    tag = f"{run_tag}-c{concurrency}"
    agents = [MixAgent(tag, i, concurrency) for i in range(concurrency)]
    clients = [factory.make() for _ in agents]
    samples: dict[str, list[float]] = {m[0]: [] for m in MIX}
    statuses: dict[int, int] = {}
    budget = [max_requests]
    section: dict[str, Any] = {"concurrency": concurrency}
    try:
        await asyncio.gather(*(c.request(*a.register()) for c, a in zip(clients, agents, strict=True)))
        deadline = time.monotonic() + duration_s

        async def worker(client: Client, agent: MixAgent) -> None:
            while budget[0] > 0 and time.monotonic() < deadline:
                budget[0] -= 1
                name, method, path, body = agent.next()
                ms, status = await timed(client, method, path, body)
                samples[name].append(ms)
                statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        with meter.measure(section):
            await asyncio.gather(*(worker(c, a) for c, a in zip(clients, agents, strict=True)))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    every = sorted(ms for v in samples.values() for ms in v)
    reads = sorted(ms for name, _, wr in MIX if not wr for ms in samples[name])
    writes = sorted(ms for name, _, wr in MIX if wr for ms in samples[name])
    n = len(every)
    section.update(
        {
            "duration_s": elapsed,
            "requests": n,
            "throughput_rps": n / elapsed,
            "p50_ms": percentile(every, 50),
            "p90_ms": percentile(every, 90),
            "p99_ms": percentile(every, 99),
            "max_ms": every[-1] if every else float("nan"),
            "read_p50_ms": percentile(reads, 50),
            "read_p99_ms": percentile(reads, 99),
            "write_p50_ms": percentile(writes, 50),
            "write_p99_ms": percentile(writes, 99),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            # 200 everywhere except a release that finds no lock of ours (cannot happen here)
            "errors": sum(v for k, v in statuses.items() if k != HTTP_OK),
            "per_operation": {
                name: {
                    "count": len(v),
                    "p50_ms": percentile(sorted(v), 50),
                    "p99_ms": percentile(sorted(v), 99),
                }
                for name, v in samples.items()
            },
        }
    )
    section["server_cpu_us_per_request"] = cpu_us_per_request(section, n)
    section["client_cpu_us_per_request"] = cpu_us_per_request(section, n, "client")
    return section


def print_concurrency(levels: list[dict[str, Any]], duration_s: float) -> None:
    out(f"\nMixed workload (80 % reads / 20 % writes), {duration_s:g} s per level:")
    head = (
        f"{'conns':>5} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p90':>7} {'p99':>7} {'max':>8} "
        f"{'rd p99':>7} {'wr p99':>7} {'err':>4} {'srv us/req':>10} {'cli us/req':>10}"
    )
    out(head)
    out("-" * len(head))
    for s in levels:
        cpu = s["server_cpu_us_per_request"]
        out(
            f"{s['concurrency']:>5} {s['requests']:>9} {s['throughput_rps']:>8.0f} {s['p50_ms']:>8.3f} "
            f"{s['p90_ms']:>7.3f} {s['p99_ms']:>7.3f} {s['max_ms']:>8.2f} {s['read_p99_ms']:>7.3f} "
            f"{s['write_p99_ms']:>7.3f} {s['errors']:>4} {'-' if cpu is None else f'{cpu:.0f}':>10} "
            f"{s['client_cpu_us_per_request']:>10.0f}"
        )


# -- part 3: wrk ---------------------------------------------------------------------------------

_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_PCT = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_ERR = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")
_UNIT_MS: Final = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(
    base: str, meter: CpuMeter, *, paths: list[str], conns: list[int], duration_s: int, threads: int
) -> list[dict[str, Any]]:
    binary = shutil.which("wrk")
    if binary is None:
        out("\nwrk: not installed (apt-get install -y wrk); skipped")
        return []
    rows: list[dict[str, Any]] = []
    for path in paths:
        for c in conns:
            cmd = [binary, f"-t{min(threads, c)}", f"-c{c}", f"-d{duration_s}s", "--latency", base + path]
            row: dict[str, Any] = {"path": path, "connections": c, "command": " ".join(cmd)}
            with meter.measure(row):
                # A fixed binary and argv list, a loopback URL: no shell involved.
                done = subprocess.run(  # noqa: S603
                    cmd, capture_output=True, text=True, timeout=duration_s + 30, check=False
                )
            text = done.stdout
            m = _WRK_RPS.search(text)
            row["throughput_rps"] = float(m.group(1)) if m else None
            for pct, value, unit in _WRK_PCT.findall(text):
                row[f"p{pct}_ms"] = float(value) * _UNIT_MS[unit]
            row["errors"] = [e for pair in _WRK_ERR.findall(text) for e in pair if e]
            total = re.search(r"(\d+) requests in", text)
            row["requests"] = int(total.group(1)) if total else None
            row["server_cpu_us_per_request"] = cpu_us_per_request(row, row["requests"] or 0)
            rows.append(row)
    out(f"\nwrk, keep-alive GETs, {duration_s} s each:")
    head = f"{'path':<22} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'srv us/req':>10}  errors"
    out(head)
    out("-" * len(head))
    for r in rows:
        cpu = r["server_cpu_us_per_request"]
        out(
            f"{r['path']:<22} {r['connections']:>5} {r.get('throughput_rps') or 0:>8.0f} "
            f"{r.get('p50_ms', float('nan')):>8.3f} {r.get('p99_ms', float('nan')):>8.3f} "
            f"{'-' if cpu is None else f'{cpu:.0f}':>10}  {', '.join(r['errors']) or '-'}"
        )
    return rows


# -- part 4: the realistic mix against the floor (issue 13) -------------------------------------

MIX_SCRIPT: Final = Path(__file__).with_name("mix.lua")
FLOOR_APP: Final = Path(__file__).with_name("floor_app.py")
MIX_AGENTS: Final = 200
MIX_PATHS: Final = 2000
HTTP_CONFLICT: Final = 409
# The issue's floor on this machine (wrk -c64, same mix) and its targets. A target is a ratio to
# the floor measured in the same run: 5,000 req/s against a floor of 20,500 is 0.244 of the floor.
ISSUE_FLOOR_RPS: Final = 20_500.0
ISSUE_FLOOR_P99_MS: Final = 5.8
TARGETS: Final = {
    "cutover": {"rps": 5000.0, "p99_ms": 25.0, "seq_ratio": 1.5},
    "write-through": {"rps": 2500.0, "p99_ms": 50.0, "seq_ratio": 3.0},
}


@contextlib.contextmanager
def floor_process() -> Iterator[tuple[str, int]]:
    """`bench/floor_app.py` on a free loopback port; stopped (SIGTERM, then SIGKILL) after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    # our own interpreter and a script beside this one: no shell, no outside input
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, str(FLOOR_APP), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the floor app exited with {proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise SystemExit("the floor app did not listen within 15 s")
            time.sleep(0.05)
        out(f"floor (bare aiohttp, fixed JSON) on {url} (pid {proc.pid})")
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def setup_mix(factory: ClientFactory, tag: str) -> dict[str, int]:
    """What the mix expects to find: its 200 agents (each with a checkpoint), its 2,000 lock
    actors, 50 chat messages and 20 open tasks. 16 connections; returns the statuses."""
    jobs: list[tuple[str, str, bytes | None]] = []
    for i in range(1, MIX_AGENTS + 1):
        agent = f"mix-{tag}-{i}"
        jobs.append(("POST", "/coordinator/agents", js_json({"agentId": agent, "status": "active"})))
        jobs.append(
            (
                "POST",
                f"/agent/{agent}/checkpoint",
                js_json({"conversationSummary": "setup", "currentTask": "Benchmarking"}),
            )
        )
    jobs += [("GET", f"/lock/src%2Fmix-{tag}%2Ff{i}.ts/check", None) for i in range(1, MIX_PATHS + 1)]
    jobs += [
        ("POST", "/coordinator/chat", js_json({"author": f"mix-{tag}-1", "message": f"setup {i}"}))
        for i in range(50)
    ]
    jobs += [
        ("POST", "/coordinator/tasks", js_json({"title": f"setup task {i}", "createdBy": f"mix-{tag}-1"}))
        for i in range(20)
    ]
    statuses: dict[int, int] = {}
    queue = iter(jobs)

    async def worker(client: Client) -> None:
        try:
            for method, path, body in queue:
                status, _ = await asyncio.wait_for(client.request(method, path, body), REQUEST_TIMEOUT_S)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            await client.close()

    await asyncio.gather(*(worker(factory.make()) for _ in range(16)))
    return {str(k): v for k, v in sorted(statuses.items())}


def run_mix_wrk(
    binary: str,
    base: str,
    meter: CpuMeter,
    *,
    tag: str,
    conns: int,
    duration_s: int,
    max_requests: int,
    only: str | None = None,
) -> dict[str, Any]:
    """One wrk run of `bench/mix.lua` (one thread) against `base`; with `only`, that operation alone."""
    cmd = [
        binary,
        "-t1",
        f"-c{conns}",
        f"-d{duration_s}s",
        "--timeout",
        "5s",
        "-s",
        str(MIX_SCRIPT),
        base,
        "--",
        tag,
        str(max_requests),
        *([only] if only else []),
    ]
    row: dict[str, Any] = {"connections": conns, "command": " ".join(cmd)}
    with meter.measure(row):
        # A fixed binary and argv list, a loopback URL: no shell involved.
        done = subprocess.run(  # noqa: S603
            cmd, capture_output=True, text=True, timeout=duration_s + 30, check=False
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("MIXJSON ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no MIXJSON line:\n{done.stdout}\n{done.stderr}")
    res = json.loads(line.removeprefix("MIXJSON "))
    statuses = {str(k): int(v) for k, v in res["statuses"].items()}
    requests = int(res["requests"])
    failed = sum(v for k, v in statuses.items() if int(k) not in (HTTP_OK, HTTP_CONFLICT))
    failed += sum(int(v) for k, v in res["errors"].items() if k != "status")
    row.update(
        {
            "requests": requests,
            "duration_s": res["duration_us"] / 1e6,
            "throughput_rps": requests / (res["duration_us"] / 1e6),
            "mean_ms": res["mean_us"] / 1000,
            "p50_ms": res["p50_us"] / 1000,
            "p90_ms": res["p90_us"] / 1000,
            "p99_ms": res["p99_us"] / 1000,
            "max_ms": res["max_us"] / 1000,
            "statuses": statuses,
            "wrk_errors": res["errors"],
            "bytes_per_answer": int(res["bytes"]) / max(requests, 1),
            "lock_conflicts": statuses.get(str(HTTP_CONFLICT), 0),
            "failures": failed,
        }
    )
    row["server_cpu_us_per_request"] = cpu_us_per_request(row, requests)
    return row


def _spread(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    mid = len(s) // 2
    med = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {"median": med, "min": s[0], "max": s[-1]}


async def run_realistic(
    args: argparse.Namespace, base: str, meter: CpuMeter, phase: str, run_tag: str
) -> dict[str, Any]:
    """Rounds of: the twelve operations on the floor, on a fresh gateway of `phase` (with
    `--spawn`) and on the mix's gateway; the mix with wrk on the floor, then on the gateway. Each
    figure also as a ratio to the floor of its round."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("--realistic needs wrk (Debian: apt-get install -y wrk)")
    gw_factory = ClientFactory(base, args.client)
    section: dict[str, Any] = {"phase": phase, "rounds": []}
    with floor_process() as (floor_base, floor_pid):
        floor_factory = ClientFactory(floor_base, args.client)
        floor_meter = CpuMeter(floor_pid)
        try:
            tag = f"{run_tag}"
            setup_started = time.perf_counter()
            section["setup_statuses"] = await setup_mix(gw_factory, tag)
            section["setup_s"] = time.perf_counter() - setup_started
            out(f"setup: {section['setup_statuses']} in {section['setup_s']:.1f} s")
            for i in range(args.mix_rounds):
                seq_floor = await run_sequential(floor_factory, floor_meter, f"{run_tag}-f{i}", args.pin)
                seq_gw = await run_sequential(gw_factory, meter, f"{run_tag}-g{i}", args.pin)
                seq_fresh = await run_fresh_sequential(args, phase, f"{run_tag}-n{i}") if args.spawn else None
                kw = {
                    "tag": tag,
                    "conns": args.mix_connections,
                    "duration_s": args.mix_duration,
                    "max_requests": args.max_requests,
                }
                mix_floor = run_mix_wrk(binary, floor_base, floor_meter, **kw)
                mix_gw = run_mix_wrk(binary, base, meter, **kw)
                on_mix = sequential_figures(seq_floor, seq_gw, "mix")
                rnd = {
                    "loadavg": loadavg(),
                    # the target's figure: a fresh store as upstream's, else (--base) the mix's state
                    "sequential": on_mix
                    if seq_fresh is None
                    else sequential_figures(seq_floor, seq_fresh, "fresh"),
                    "sequential_on_mix_state": on_mix,
                    "mix": {
                        "floor": mix_floor,
                        "gateway": mix_gw,
                        "rps_ratio": mix_gw["throughput_rps"] / mix_floor["throughput_rps"],
                        "p99_ratio": mix_gw["p99_ms"] / mix_floor["p99_ms"],
                    },
                }
                section["rounds"].append(rnd)
                print_realistic_round(i, rnd)
        finally:
            await gw_factory.close()
            await floor_factory.close()
    if args.mix_ops:
        section["operations"] = run_mix_operations(binary, base, meter, args, run_tag)
    section["summary"] = summarise_realistic(section["rounds"], phase)
    print_realistic_summary(section["summary"])
    return section


MIX_OPERATIONS: Final = (
    "chat_read",
    "lock_check",
    "checkpoint_read",
    "chat_post",
    "agent_list",
    "work",
    "heartbeat",
    "lock_acquire",
    "task_list",
    "checkpoint_save",
    "agent_state",
    "health",
    "task_create",
    "dm",
)
"""The operations of `bench/mix.lua`, in the order of its weights."""
MIX_OPS_CONNECTIONS: Final = 16


def sequential_figures(floor: dict[str, Any], gateway: dict[str, Any], state: str) -> dict[str, Any]:
    """The twelve operations on a gateway against the floor's of the same round; `state` says
    which store the gateway's ran on: "fresh" (as upstream's) or "mix" (the mix's gateway)."""
    f_mean = floor["summary"]["mean_of_avgs_ms"]
    g_mean = gateway["summary"]["mean_of_avgs_ms"]
    return {
        "state": state,
        "floor_mean_ms": f_mean,
        "gateway_mean_ms": g_mean,
        "ratio": g_mean / f_mean,
        "gateway_errors": gateway["summary"]["errors"],
        "gateway_operations": {r["operation"]: r["avg_ms"] for r in gateway["operations"]},
        "floor_operations": {r["operation"]: r["avg_ms"] for r in floor["operations"]},
        "gateway_server_cpu_us": gateway["summary"]["server_cpu_us_per_request"],
        "settle_s": gateway.get("settle_s"),
    }


async def run_fresh_sequential(args: argparse.Namespace, phase: str, run_tag: str) -> dict[str, Any]:
    """The twelve operations on a gateway of `phase` started for them alone (fresh data dir and,
    outside cutover, a fresh redis-server), as upstream ran them; its CPU metered by its pid."""
    with spawned(phase, args.log_level, keep=False) as (base, pid, _log):
        meter = CpuMeter(pid)
        settle_s = await settle(meter)
        factory = ClientFactory(base, args.client)
        try:
            section = await run_sequential(factory, meter, run_tag, args.pin)
        finally:
            await factory.close()
    section["settle_s"] = settle_s
    return section


async def run_twelve_only(args: argparse.Namespace, phase: str, run_tag: str) -> dict[str, Any]:
    """`--twelve-only N`: N rounds of the twelve operations alone, each on the floor and then on a
    fresh gateway of `phase` (as `--realistic --spawn` runs them, without the setup and the mix);
    per operation the median over the rounds, and the ratio's spread."""
    rounds: list[dict[str, Any]] = []
    with floor_process() as (floor_base, floor_pid):
        floor_factory = ClientFactory(floor_base, args.client)
        floor_meter = CpuMeter(floor_pid)
        try:
            for i in range(args.twelve_only):
                seq_floor = await run_sequential(floor_factory, floor_meter, f"{run_tag}-f{i}", args.pin)
                seq_fresh = await run_fresh_sequential(args, phase, f"{run_tag}-n{i}")
                rnd: dict[str, Any] = {
                    "loadavg": loadavg(),
                    "sequential": sequential_figures(seq_floor, seq_fresh, "fresh"),
                }
                rnd["floor_server_cpu_us"] = seq_floor["summary"]["server_cpu_us_per_request"]
                rounds.append(rnd)
                seq = rnd["sequential"]
                out(
                    f"round {i + 1} (load {rnd['loadavg']}): gateway {seq['gateway_mean_ms']:.3f} ms, "
                    f"floor {seq['floor_mean_ms']:.3f} ms, x{seq['ratio']:.2f}; server CPU us/req "
                    f"gateway {seq['gateway_server_cpu_us'] or 0:.0f}, "
                    f"floor {rnd['floor_server_cpu_us'] or 0:.0f}"
                )
        finally:
            await floor_factory.close()
    names = list(rounds[0]["sequential"]["gateway_operations"]) if rounds else []
    per_op = {
        name: {
            "gateway_ms": _spread([r["sequential"]["gateway_operations"][name] for r in rounds]),
            "floor_ms": _spread([r["sequential"]["floor_operations"][name] for r in rounds]),
        }
        for name in names
    }
    summary: dict[str, Any] = {
        "rounds": len(rounds),
        "seq_gateway_ms": _spread([r["sequential"]["gateway_mean_ms"] for r in rounds]),
        "seq_floor_ms": _spread([r["sequential"]["floor_mean_ms"] for r in rounds]),
        "seq_ratio": _spread([r["sequential"]["ratio"] for r in rounds]),
        "gateway_server_cpu_us": _spread([r["sequential"]["gateway_server_cpu_us"] or 0.0 for r in rounds]),
        "floor_server_cpu_us": _spread([r["floor_server_cpu_us"] or 0.0 for r in rounds]),
        "operations": per_op,
    }
    out(f"\nTwelve operations alone, {len(rounds)} round(s), median (min-max) of each average, ms:")
    out(f"{'operation':<16} {'gateway':>22} {'floor':>22}")
    for name, d in per_op.items():
        g, f = d["gateway_ms"], d["floor_ms"]
        out(
            f"{name:<16} {g['median']:>8.3f} ({g['min']:.3f}-{g['max']:.3f}) "
            f"{f['median']:>8.3f} ({f['min']:.3f}-{f['max']:.3f})"
        )
    for key, label in (
        ("seq_gateway_ms", "gateway mean"),
        ("seq_floor_ms", "floor mean"),
        ("seq_ratio", "ratio"),
    ):
        d = summary[key]
        out(f"{label}: {d['median']:.3f} ({d['min']:.3f}-{d['max']:.3f})")
    for key, label in (("gateway_server_cpu_us", "gateway"), ("floor_server_cpu_us", "floor")):
        d = summary[key]
        out(f"server CPU per request, {label}: {d['median']:.0f} ({d['min']:.0f}-{d['max']:.0f}) us")
    return {"phase": phase, "rounds": rounds, "summary": summary}


SETTLE_WINDOW_S: Final = 0.2
SETTLE_MAX_S: Final = 10.0


async def settle(meter: CpuMeter) -> float:
    """Wait until a just-started process has used no CPU tick for two windows in a row (its
    start-up work done), at most SETTLE_MAX_S; returns the seconds waited. Without it the first
    operations measured a process still warming up (e.g. Health Check x3 its settled time)."""
    started = time.monotonic()
    quiet, last = 0, meter.seconds()
    while quiet < 2 and time.monotonic() - started < SETTLE_MAX_S:  # noqa: PLR2004 - two windows
        await asyncio.sleep(SETTLE_WINDOW_S)
        now = meter.seconds()
        quiet = quiet + 1 if now == last else 0
        last = now
    return time.monotonic() - started


def run_mix_operations(
    binary: str, base: str, meter: CpuMeter, args: argparse.Namespace, tag: str
) -> list[dict[str, Any]]:
    """Each operation of the mix alone (wrk, 16 connections, `--mix-ops` seconds each) after the
    rounds: the server's CPU per request of each, the figure that survives a loaded machine."""
    out(f"\neach operation alone, wrk -c{MIX_OPS_CONNECTIONS}, {args.mix_ops} s each:")
    out(f"{'operation':<16} {'req/s':>8} {'p99 ms':>8} {'bytes':>8} {'srv us/req':>10}")
    rows = []
    for op in MIX_OPERATIONS:
        row = run_mix_wrk(
            binary,
            base,
            meter,
            tag=tag,
            conns=MIX_OPS_CONNECTIONS,
            duration_s=args.mix_ops,
            max_requests=args.max_requests,
            only=op,
        )
        row["operation"] = op
        rows.append(row)
        cpu = row["server_cpu_us_per_request"]
        out(
            f"{op:<16} {row['throughput_rps']:>8.0f} {row['p99_ms']:>8.2f} {row['bytes_per_answer']:>8.0f} "
            f"{'-' if cpu is None else f'{cpu:.0f}':>10}"
        )
    return rows


def print_realistic_round(i: int, rnd: dict[str, Any]) -> None:
    seq, on_mix, mix = rnd["sequential"], rnd["sequential_on_mix_state"], rnd["mix"]
    out(f"\nround {i + 1} (load {rnd['loadavg']}): twelve operations, mean of averages:")
    if seq["state"] == "fresh":
        out(
            f"  on a fresh gateway (the target's): {seq['gateway_mean_ms']:.3f} ms, floor "
            f"{seq['floor_mean_ms']:.3f} ms, x{seq['ratio']:.2f} ({seq['gateway_errors']} errors; "
            f"idle after {seq['settle_s']:.1f} s)"
        )
    else:
        out("  (--base: the gateway cannot be respawned; the twelve ran on its existing state)")
    out(
        f"  on the mix's state (informational): {on_mix['gateway_mean_ms']:.3f} ms, floor "
        f"{on_mix['floor_mean_ms']:.3f} ms, x{on_mix['ratio']:.2f} ({on_mix['gateway_errors']} errors)"
    )
    head = (
        f"{'mix':<8} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p90':>7} {'p99':>7} {'max':>8} "
        f"{'409':>6} {'failed':>6} {'srv us/req':>10}"
    )
    out(head)
    for who in ("floor", "gateway"):
        r = mix[who]
        cpu = r["server_cpu_us_per_request"]
        out(
            f"{who:<8} {r['requests']:>9} {r['throughput_rps']:>8.0f} {r['p50_ms']:>8.2f} "
            f"{r['p90_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['max_ms']:>8.1f} {r['lock_conflicts']:>6} "
            f"{r['failures']:>6} {'-' if cpu is None else f'{cpu:.0f}':>10}"
        )
    out(f"gateway / floor: req/s x{mix['rps_ratio']:.3f}, p99 x{mix['p99_ratio']:.2f}")


def summarise_realistic(rounds: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    """Median and spread over the rounds, and each target scaled to this run's floor."""
    gw = [r["mix"]["gateway"] for r in rounds]
    fl = [r["mix"]["floor"] for r in rounds]
    summary: dict[str, Any] = {
        "rounds": len(rounds),
        "gateway_rps": _spread([g["throughput_rps"] for g in gw]),
        "gateway_p99_ms": _spread([g["p99_ms"] for g in gw]),
        "floor_rps": _spread([f["throughput_rps"] for f in fl]),
        "floor_p99_ms": _spread([f["p99_ms"] for f in fl]),
        "rps_ratio": _spread([r["mix"]["rps_ratio"] for r in rounds]),
        "p99_ratio": _spread([r["mix"]["p99_ratio"] for r in rounds]),
        "seq_gateway_ms": _spread([r["sequential"]["gateway_mean_ms"] for r in rounds]),
        "seq_floor_ms": _spread([r["sequential"]["floor_mean_ms"] for r in rounds]),
        "seq_ratio": _spread([r["sequential"]["ratio"] for r in rounds]),
        "seq_state": rounds[0]["sequential"]["state"] if rounds else "none",
        "seq_mix_state_gateway_ms": _spread(
            [r["sequential_on_mix_state"]["gateway_mean_ms"] for r in rounds]
        ),
        "seq_mix_state_ratio": _spread([r["sequential_on_mix_state"]["ratio"] for r in rounds]),
        "failures": sum(g["failures"] for g in gw),
        "lock_conflicts": sum(g["lock_conflicts"] for g in gw),
        "gateway_server_cpu_us": _spread([g["server_cpu_us_per_request"] or 0.0 for g in gw]),
    }
    target = TARGETS.get(phase)
    if target is not None:
        rps_ratio = target["rps"] / ISSUE_FLOOR_RPS
        p99_ratio = target["p99_ms"] / ISSUE_FLOOR_P99_MS
        summary["target"] = {
            **target,
            "rps_ratio": rps_ratio,
            "p99_ratio": p99_ratio,
            "met_rps": summary["rps_ratio"]["median"] >= rps_ratio,
            "met_p99": summary["p99_ratio"]["median"] <= p99_ratio,
            "met_seq": summary["seq_ratio"]["median"] <= target["seq_ratio"],
            "met_failures": summary["failures"] == 0,
        }
    return summary


def print_realistic_summary(s: dict[str, Any]) -> None:
    def fmt(d: dict[str, float], spec: str) -> str:
        return f"{d['median']:{spec}} ({d['min']:{spec}}-{d['max']:{spec}})"

    out(f"\nRealistic mix, median (min-max) over {s['rounds']} round(s):")
    out(f"  gateway req/s {fmt(s['gateway_rps'], '.0f')}, p99 {fmt(s['gateway_p99_ms'], '.1f')} ms")
    out(f"  floor   req/s {fmt(s['floor_rps'], '.0f')}, p99 {fmt(s['floor_p99_ms'], '.1f')} ms")
    out(f"  ratio   req/s x{fmt(s['rps_ratio'], '.3f')}, p99 x{fmt(s['p99_ratio'], '.2f')}")
    where = "a fresh gateway" if s["seq_state"] == "fresh" else "the existing state (--base)"
    out(
        f"  twelve operations on {where}: gateway {fmt(s['seq_gateway_ms'], '.3f')} ms, floor "
        f"{fmt(s['seq_floor_ms'], '.3f')} ms, x{fmt(s['seq_ratio'], '.2f')}"
    )
    out(
        f"  twelve operations on the mix's state (informational): gateway "
        f"{fmt(s['seq_mix_state_gateway_ms'], '.3f')} ms, x{fmt(s['seq_mix_state_ratio'], '.2f')}"
    )
    out(f"  failures {s['failures']} (lock conflicts, not failures: {s['lock_conflicts']})")
    t = s.get("target")
    if t is not None:
        out(
            f"  target (scaled to the floor): req/s >= x{t['rps_ratio']:.3f} "
            f"{'met' if t['met_rps'] else 'MISSED'}; p99 <= x{t['p99_ratio']:.2f} "
            f"{'met' if t['met_p99'] else 'MISSED'}; twelve <= x{t['seq_ratio']:.1f} "
            f"{'met' if t['met_seq'] else 'MISSED'}; no failures {'met' if t['met_failures'] else 'MISSED'}"
        )


# -- environment and spawning --------------------------------------------------------------------


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]  # MemTotal: N kB
        mem_gib = round(int(first.split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "platform": platform.platform(),
    }


@contextlib.contextmanager
def spawned(
    phase: str, log_level: str, keep: bool, settings: Sequence[str] = ()
) -> Iterator[tuple[str, int, Path]]:
    """A gateway (and for non-cutover phases a redis-server) on free loopback ports, in a temp dir:
    its URL, pid and log file.

    Imported lazily so that `--base` runs need nothing from the package.
    """
    from gateway.testing import RedisServer  # noqa: PLC0415
    from gateway.testing.gateway_process import GatewayProcess  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp(prefix="agent-coord-bench-"))
    env = {"AGENT_COORD_LOG_LEVEL": log_level}
    for setting in settings:  # NAME=VALUE, checked by the argument parser
        name, _, value = setting.partition("=")
        env[name] = value
    with contextlib.ExitStack() as stack:
        if not keep:  # registered first, so it runs last: after the gateway and Redis have stopped
            stack.callback(shutil.rmtree, tmp, True)
        redis_url = None
        if phase != "cutover":
            redis = stack.enter_context(RedisServer())
            redis_url = redis.url
            out(f"redis-server on {redis_url} (pid {redis.pid})")
        gw = GatewayProcess(tmp / "data", redis_url=redis_url, phase=phase, env=env, log_path=tmp / "gw.log")
        stack.enter_context(gw)
        assert gw.proc is not None  # noqa: S101 - started by enter_context
        out(f"gateway {phase} on {gw.url} (pid {gw.proc.pid}), data and log in {tmp}")
        yield gw.url, gw.proc.pid, tmp / "gw.log"


def loop_stalls(log_path: Path) -> list[dict[str, Any]]:
    """The gateway's `loop.stalled` lines (`gateway/loop_watch.py`: its event loop held 250 ms or
    more, with what it was doing), read from its log."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    stalls: list[dict[str, Any]] = []
    for line in text.splitlines():
        if '"loop.stalled"' in line:
            with contextlib.suppress(json.JSONDecodeError):
                stalls.append(json.loads(line))
    return stalls


async def run_parts(args: argparse.Namespace, base: str, pid: int | None) -> dict[str, Any]:
    meter = CpuMeter(pid)
    factory = ClientFactory(base, args.client)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base": base,
        "phase": args.phase if args.spawn else None,
        "client": args.client,
        "server_pid": pid,
        "machine": machine(),
        "argv": sys.argv[1:],
        "loadavg_start": loadavg(),
    }
    load = report["loadavg_start"]
    if load is not None and load[0] > 0.5:  # noqa: PLR2004 - a quiet machine stays well below
        out(f"warning: load average {load[0]:.2f} before the run: other work will skew the figures")
    run_tag = args.tag or f"{int(time.time() * 1000)}"
    if args.twelve_only:
        report["twelve_only"] = await run_twelve_only(args, args.phase, run_tag)
        report["loadavg_end"] = loadavg()
        return report
    if args.realistic:
        phase = args.phase if args.spawn else args.target_phase
        report["realistic"] = await run_realistic(args, base, meter, phase, run_tag)
        report["loadavg_end"] = loadavg()
        return report
    try:
        if not args.skip_sequential:
            runs = []
            for i in range(args.seq_runs):
                run = await run_sequential(factory, meter, f"{run_tag}-s{i}", args.pin)
                print_sequential(run)
                runs.append(run)
            report["sequential"] = runs
            report["upstream_comparison"] = compare_with_upstream(runs)
            print_comparison(report["upstream_comparison"])
        if not args.skip_concurrency:
            levels = [
                await run_level(
                    factory,
                    meter,
                    run_tag,
                    concurrency=c,
                    duration_s=args.duration,
                    max_requests=args.max_requests,
                )
                for c in args.concurrency
            ]
            report["concurrency"] = {"duration_s": args.duration, "mix": MIX, "levels": levels}
            print_concurrency(levels, args.duration)
    finally:
        await factory.close()
    if args.wrk:
        report["wrk"] = run_wrk(
            base,
            meter,
            paths=args.wrk_paths,
            conns=args.wrk_connections,
            duration_s=args.wrk_duration,
            threads=args.wrk_threads,
        )
    report["loadavg_end"] = loadavg()
    return report


def gateway_setting(text: str) -> str:
    """An `--gateway-env` value: AGENT_COORD_<SECTION>_<NAME>=VALUE."""
    name, sep, _ = text.partition("=")
    if not sep or not name.startswith("AGENT_COORD_"):
        raise argparse.ArgumentTypeError(f"expected AGENT_COORD_<NAME>=VALUE, got {text!r}")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--base", help="a running gateway, e.g. http://127.0.0.1:8787 (loopback only)")
    target.add_argument("--spawn", action="store_true", help="start a gateway in a temp dir, stop it after")
    p.add_argument(
        "--phase",
        default="cutover",
        choices=["cutover", "write-through", "parallel", "read-switch"],
        help="--spawn: the phase; other than cutover also starts a redis-server on a free port",
    )
    p.add_argument("--log-level", default="info", help="--spawn: AGENT_COORD_LOG_LEVEL (default info)")
    p.add_argument("--keep", action="store_true", help="--spawn: keep the temp dir (data, gateway log)")
    p.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        type=gateway_setting,
        metavar="AGENT_COORD_X=VALUE",
        help="--spawn: a gateway setting (repeatable), e.g. AGENT_COORD_STORAGE_CHECKPOINT_HELPER=false",
    )
    p.add_argument("--server-pid", type=int, help="--base: the gateway's pid, to report its CPU per request")
    p.add_argument("--client", choices=["raw", "aiohttp"], default="raw", help="HTTP client (default raw)")
    p.add_argument("--tag", help="run tag in agent ids and lock paths (default: the time in ms)")
    p.add_argument("--seq-runs", type=int, default=1, help="runs of the sequential part (median reported)")
    p.add_argument(
        "--pin",
        choices=PLACEMENTS,
        default="none",
        help="the twelve operations' CPUs, alike for the floor and the gateway: none (the scheduler's), "
        f"same (server and client on CPU {SERVER_CPU}), "
        f"cross (server on {SERVER_CPU}, client on {CLIENT_CPU})",
    )
    # --realistic ignores both: each of its rounds runs the twelve operations (a target of issue 13)
    # and the mix, never the concurrency levels
    p.add_argument(
        "--skip-sequential",
        action="store_true",
        help="skip the twelve operations (not with --realistic: each round runs them)",
    )
    p.add_argument(
        "--skip-concurrency",
        action="store_true",
        help="skip the concurrency levels (--realistic never runs them)",
    )
    p.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 16, 64],
        help="connection counts of the mixed workload (default 1,16,64)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level (max 120)")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="request cap per concurrency level")
    p.add_argument("--wrk", action="store_true", help="also run wrk (if installed) on raw GETs")
    p.add_argument("--wrk-duration", type=int, default=5, help="seconds per wrk run (max 60)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: 2 cores here)")
    p.add_argument("--wrk-connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    p.add_argument(
        "--wrk-paths",
        type=lambda s: s.split(","),
        default=["/health", "/coordinator/agents"],
        help="comma-separated paths for wrk",
    )
    p.add_argument(
        "--realistic",
        action="store_true",
        help="run only the realistic mix (bench/mix.lua, wrk) and the twelve operations, each against "
        "a bare aiohttp floor started beside the gateway, in rounds; with --spawn the twelve that "
        "count for the target run on a fresh gateway each round (as upstream's, on a fresh store), "
        "and on the mix's gateway for information",
    )
    p.add_argument("--mix-rounds", type=int, default=3, help="--realistic: rounds (default 3, max 10)")
    p.add_argument("--mix-duration", type=int, default=10, help="--realistic: wrk seconds per run (max 60)")
    p.add_argument("--mix-connections", type=int, default=64, help="--realistic: wrk connections")
    p.add_argument(
        "--mix-ops",
        type=int,
        default=0,
        help="--realistic: then each operation of the mix alone for this many seconds (wrk -c16)",
    )
    p.add_argument(
        "--twelve-only",
        type=int,
        default=0,
        metavar="N",
        help="with --spawn: only N rounds of the twelve operations, each on the floor then on a fresh "
        "gateway (as --realistic runs them, without its setup and mix); per-operation medians",
    )
    p.add_argument(
        "--target-phase",
        default="cutover",
        choices=sorted(TARGETS),
        help="--realistic with --base: whose targets to compare with",
    )
    p.add_argument("--json", type=Path, help="write the full report as JSON to this file")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 120:  # noqa: PLR2004 - documented bound
        p.error("--duration must be in (0, 120]")
    if not 0 < args.wrk_duration <= 60:  # noqa: PLR2004 - documented bound
        p.error("--wrk-duration must be in (0, 60]")
    if not 1 <= args.seq_runs <= 10:  # noqa: PLR2004 - documented bound
        p.error("--seq-runs must be in 1..10")
    if not 1 <= args.mix_rounds <= 10 or not 0 < args.mix_duration <= 60:  # noqa: PLR2004 - documented
        p.error("--mix-rounds must be in 1..10 and --mix-duration in (0, 60]")
    if not 0 <= args.twelve_only <= 50 or (args.twelve_only and not args.spawn):  # noqa: PLR2004
        p.error("--twelve-only must be in 0..50 (0: not run) and needs --spawn")
    if args.pin != "none" and not {CLIENT_CPU, SERVER_CPU} <= os.sched_getaffinity(0):
        p.error(f"--pin {args.pin} needs CPUs {CLIENT_CPU} and {SERVER_CPU}")
    if not 0 <= args.mix_ops <= 60:  # noqa: PLR2004 - documented bound
        p.error("--mix-ops must be in 0..60 (0: not run)")
    if any(not 1 <= c <= 1024 for c in [*args.concurrency, *args.wrk_connections, args.mix_connections]):  # noqa: PLR2004
        p.error("connection counts must be in 1..1024")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out(f"machine: {machine()}")
    if args.spawn:
        with spawned(args.phase, args.log_level, args.keep, args.gateway_env) as (base, pid, log_path):
            report = asyncio.run(run_parts(args, base, pid))
            stalls = report["gateway_loop_stalls"] = loop_stalls(log_path)
        lags = ", ".join(
            f"{s.get('lag_ms')} ms ({s.get('syscall', '?')}, {s.get('where', '?')})" for s in stalls
        )
        out(f"\ngateway event loop stalls (loop.stalled): {len(stalls)}" + (f": {lags}" if stalls else ""))
    else:
        report = asyncio.run(run_parts(args, args.base.rstrip("/"), args.server_pid))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        out(f"\nJSON report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
