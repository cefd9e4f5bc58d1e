"""Instructions a request, counted by callgrind: the gateway (cutover or write-through) and the floor app.

Starts the real gateway (`--phase`, cutover by default, a fresh temporary data directory) under
`valgrind --tool=callgrind`; in write-through it runs in front of a private legacy Redis, a
`redis-server` on a free loopback port (never 6379, `gateway.testing.RedisServer`, as
`bench/gateway_bench.py --spawn` starts it; not under valgrind), passed as `--redis-url`. It
builds the state the realistic mix runs on (`bench/mix.lua`: 200 agents each with a checkpoint,
100 held locks on 200 lock paths, chat messages, about 1,100 open tasks), then, one request at a
time on one keep-alive connection, sends each operation of the mix `--warmup` times and `--count`
times between `callgrind_control --zero` and `--dump`, and a seeded draw of `--mix-requests`
requests with the mix's weights; with `--twelve N`, then upstream's twelve operations as
`bench/gateway_bench.py` sends them (`upstream_operations`: their bodies, a new lock path each
acquire), each warmed up and counted in a window of its own, N requests each (the standard bench
times 100, 50 acquires). Then the floor app (`bench/floor_app.py`) under the same method:
`/health` `--count` times. Start-up and set-up are outside every counted window (each window
starts with a zero of the counters).

    flock /work/bench.lock .venv/bin/python bench/instructions_bench.py --json FILE
    flock /work/bench.lock .venv/bin/python bench/instructions_bench.py --phase write-through --json FILE
    flock /work/bench.lock .venv/bin/python bench/instructions_bench.py --twelve 50 --json FILE

Reports thousand instructions (callgrind's `Ir`) a request per operation, the mix's weights
applied to them, the mix replayed, and the floor's `/health`. The counts do not depend on the
machine's speed (docs/benchmarks.md, "Instructions a request (callgrind)"); they do depend a
little on the run: alarms (lock expiries, checkpoints of the stores) that fall into a window are
counted with it. Large copies count about one instruction a byte (`rep movsb`), so the large
answers (`/work`, the task list) weigh more here than their time.

Traffic goes to 127.0.0.1 only; every loop is bounded; every process (the gateway, the floor, the
redis-server) is stopped at the end (a SIGTERM, then SIGKILL, bounded), and the temporary
directory removed unless `--keep`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from gateway_bench import WARMUP as TWELVE_WARMUP  # bench/ is this script's directory
from gateway_bench import upstream_operations

from gateway.testing.gateway_process import free_port

ROOT: Final = Path(__file__).resolve().parent.parent
FLOOR_APP: Final = ROOT / "bench" / "floor_app.py"

# bench/mix.lua: the operations and their weights (per 100 requests), its agents and lock paths
WEIGHTS: Final = (
    ("chat_read", 14),
    ("lock_check", 14),
    ("checkpoint_read", 10),
    ("chat_post", 8),
    ("agent_list", 8),
    ("work", 8),
    ("heartbeat", 6),
    ("lock_acquire", 6),
    ("task_list", 6),
    ("checkpoint_save", 5),
    ("agent_state", 5),
    ("health", 4),
    ("task_create", 3),
    ("dm", 3),
)
AGENTS: Final = 200
LOCK_PATHS: Final = 200  # the mix's 2,000 paths are mostly free; these 200 are half held
HELD_LOCKS: Final = 100
LOCK_TTL_MS: Final = 5000  # as bench/mix.lua
HELD_TTL_MS: Final = 3_600_000  # the set-up's locks stay held for the whole run
SETUP_MESSAGES: Final = 60
SETUP_TASKS: Final = 1100
TAG: Final = "cg"
TIMEOUT_S: Final = 120.0  # one request under valgrind, at most
START_TIMEOUT_S: Final = 180.0
MAX_COUNT: Final = 20_000  # requests a window, at most (bounded run time)
HTTP_OK: Final = 200
HTTP_CONFLICT: Final = 409
PHASES: Final = ("cutover", "write-through")  # write-through: in front of a private redis-server

Request = tuple[str, str, bytes | None]


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Connection:
    """HTTP/1.1 over one blocking keep-alive socket; bodies by `Content-Length` only (all the
    gateway's and the floor's answers have one)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.host = f"Host: 127.0.0.1:{port}\r\n".encode()

    def request(self, method: str, path: str, body: bytes | None = None) -> int:
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self.host
        if body is None:
            self.sock.sendall(head + b"\r\n")
        else:
            self.sock.sendall(
                head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        header, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self._recv()
        self.buf = self.buf[length:]
        return status

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


class Callgrind:
    """A process under callgrind; `window()` counts the instructions of what runs inside it."""

    def __init__(self, name: str, argv: list[str], tmp: Path, env: dict[str, str], keep: bool) -> None:
        self.name = name
        self.keep = keep  # keep each window's dump, named after it (for callgrind_annotate)
        self.port = free_port()
        self.out_file = tmp / f"{name}.callgrind"
        self.log = tmp / f"{name}.log"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={self.out_file}",
            "--compress-strings=no",  # each dump readable alone by callgrind_annotate
            *argv,
            "--port",
            str(self.port),
        ]
        with self.log.open("wb") as log:
            # fixed argv: valgrind, our own interpreter and a module or script of this checkout
            self.proc = subprocess.Popen(  # noqa: S603
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        self.dumps = 0

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            with contextlib.suppress(OSError, ConnectionError, ValueError, IndexError):
                conn = Connection(self.port)
                try:
                    if conn.request("GET", path) == HTTP_OK:
                        return
                finally:
                    conn.close()
            time.sleep(0.5)
        raise SystemExit(f"{self.name} did not answer {path} in {START_TIMEOUT_S} s; see {self.log}")

    def _control(self, *args: str) -> None:
        # callgrind_control talks to this one process by its pid
        subprocess.run(  # noqa: S603
            ["callgrind_control", *args, str(self.proc.pid)],  # noqa: S607 - valgrind's own tool
            check=True,
            capture_output=True,
            timeout=TIMEOUT_S,
        )

    def count(self, label: str, run: Callable[[], int]) -> tuple[int, int]:
        """Zero the counters, `run()` (returns how many requests it sent), dump: (instructions,
        requests)."""
        self._control("--zero")
        requests = run()
        before = set(self.out_file.parent.glob(self.out_file.name + "*"))
        self._control("--dump")
        self.dumps += 1
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            new = set(self.out_file.parent.glob(self.out_file.name + "*")) - before
            if new:
                text = max(new, key=lambda p: p.stat().st_mtime).read_text(errors="replace")
                for line in text.splitlines():
                    if line.startswith(("totals:", "summary:")):
                        for p in new:
                            if self.keep:
                                p.rename(p.with_name(f"{self.name}.{label}.callgrind"))
                            else:
                                p.unlink()
                        return int(line.split()[1]), requests
            if time.monotonic() > deadline:
                raise SystemExit(f"no callgrind dump from {self.name}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextlib.contextmanager
def under_callgrind(  # noqa: PLR0917 - one call per process, all arguments needed
    name: str, argv: list[str], tmp: Path, ready: str, env: dict[str, str], keep: bool
) -> Iterator[Callgrind]:
    cg = Callgrind(name, argv, tmp, env, keep)
    try:
        cg.wait_ready(ready)
        yield cg
    finally:
        cg.stop()


def agent(i: int) -> str:
    return f"mix-{TAG}-{i}"


def lock_path(i: int) -> str:
    return f"src%2Fmix-{TAG}%2Ff{i}.ts"


def js(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def mix_request(op: str, rng: random.Random, n: int) -> Request:  # noqa: PLR0911, PLR0912 - one per operation
    """One request of `op` as `bench/mix.lua` builds it (agent and lock path drawn by `rng`)."""
    a = agent(rng.randint(1, AGENTS))
    if op == "chat_read":
        return "GET", "/coordinator/chat?limit=50", None
    if op == "lock_check":
        return "GET", f"/lock/{lock_path(rng.randint(1, LOCK_PATHS))}/check", None
    if op == "checkpoint_read":
        return "GET", f"/agent/{a}/checkpoint", None
    if op == "chat_post":
        return (
            "POST",
            "/coordinator/chat",
            js({"author": a, "message": f"mix message {n}", "authorType": "agent"}),
        )
    if op == "agent_list":
        return "GET", "/coordinator/agents", None
    if op == "work":
        return "GET", f"/coordinator/work?agentId={a}", None
    if op == "heartbeat":
        return (
            "POST",
            "/coordinator/agents",
            js({"agentId": a, "status": "active", "currentTask": f"mix {n}"}),
        )
    if op == "lock_acquire":
        path = lock_path(rng.randint(1, LOCK_PATHS))
        return "POST", f"/lock/{path}/lock", js({"agentId": a, "reason": "mix", "ttlMs": LOCK_TTL_MS})
    if op == "task_list":
        return "GET", "/coordinator/tasks?status=todo", None
    if op == "checkpoint_save":
        body = {"conversationSummary": f"mix {n}", "currentTask": "Benchmarking", "pendingWork": ["more"]}
        return "POST", f"/agent/{a}/checkpoint", js(body)
    if op == "agent_state":
        return "GET", f"/agent/{a}/state", None
    if op == "health":
        return "GET", "/health", None
    if op == "task_create":
        return (
            "POST",
            "/coordinator/tasks",
            js({"title": f"mix task {n}", "createdBy": a, "priority": "medium"}),
        )
    peer = agent(rng.randint(1, AGENTS))
    return "POST", f"/agent/{peer}/messages", js({"from": a, "message": f"dm {n}"})


def setup_requests() -> list[Request]:
    """The mix's state: agents with checkpoints, held locks, chat messages, open tasks."""
    jobs: list[Request] = []
    body: dict[str, Any]
    for i in range(1, AGENTS + 1):
        jobs.append(("POST", "/coordinator/agents", js({"agentId": agent(i), "status": "active"})))
        body = {"conversationSummary": "setup", "currentTask": "Benchmarking"}
        jobs.append(("POST", f"/agent/{agent(i)}/checkpoint", js(body)))
    jobs += [("GET", f"/lock/{lock_path(i)}/check", None) for i in range(1, LOCK_PATHS + 1)]
    for i in range(1, HELD_LOCKS + 1):
        body = {"agentId": agent(i), "reason": "setup", "ttlMs": HELD_TTL_MS}
        jobs.append(("POST", f"/lock/{lock_path(2 * i)}/lock", js(body)))
    jobs += [
        ("POST", "/coordinator/chat", js({"author": agent(1 + i % AGENTS), "message": f"setup {i}"}))
        for i in range(SETUP_MESSAGES)
    ]
    for i in range(SETUP_TASKS):
        body = {"title": f"setup task {i}", "createdBy": agent(1 + i % AGENTS), "priority": "medium"}
        jobs.append(("POST", "/coordinator/tasks", js(body)))
    return jobs


class Sender:
    """Sends requests on one connection, counting statuses; fails on anything but 200 and 409."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.statuses: dict[str, int] = {}
        self.n = 0

    def send(self, requests: list[Request]) -> int:
        for method, path, body in requests:
            status = self.conn.request(method, path, body)
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            if status not in (HTTP_OK, HTTP_CONFLICT):
                raise SystemExit(f"{method} {path} answered {status}")
        return len(requests)

    def op_requests(self, op: str, count: int, seed: int) -> list[Request]:
        rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
        reqs = []
        for _ in range(count):
            self.n += 1
            reqs.append(mix_request(op, rng, self.n))
        return reqs

    def mix_requests(self, count: int, seed: int) -> tuple[list[Request], dict[str, int]]:
        rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
        slots = [op for op, w in WEIGHTS for _ in range(w)]
        drawn: dict[str, int] = {}
        reqs = []
        for _ in range(count):
            op = slots[rng.randrange(len(slots))]
            drawn[op] = drawn.get(op, 0) + 1
            self.n += 1
            reqs.append(mix_request(op, rng, self.n))
        return reqs, drawn


def kinstr(ir: int, requests: int) -> float:
    return round(ir / requests / 1000, 1)


@contextlib.contextmanager
def legacy_redis(phase: str) -> Iterator[str | None]:
    """For write-through, a private redis-server on a free loopback port (never 6379), stopped at
    the end (SIGTERM, then SIGKILL): its URL; for cutover, no Redis: None."""
    if phase == "cutover":
        yield None
        return
    from gateway.testing import RedisServer  # noqa: PLC0415 - only this phase needs it

    with RedisServer() as redis:
        out(f"legacy redis-server on {redis.url} (pid {redis.pid})")
        yield redis.url


def run_gateway(args: argparse.Namespace, tmp: Path, redis_url: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
    env.update(
        {"AGENT_COORD_LOG_FORMAT": "json", "AGENT_COORD_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
    )
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1"]
    argv += ["--data-dir", str(tmp / "data"), "--phase", args.phase]
    if redis_url is not None:
        argv += ["--redis-url", redis_url]
    section: dict[str, Any] = {"phase": args.phase, "operations": {}}
    with under_callgrind("gateway", argv, tmp, "/health", env, args.keep) as cg:
        sender = Sender(Connection(cg.port))
        started = time.monotonic()
        sender.send(setup_requests())
        section["setup_s"] = round(time.monotonic() - started, 1)
        section["setup_statuses"] = dict(sender.statuses)
        out(f"gateway set up in {section['setup_s']} s: {section['setup_statuses']}")
        for k, (op, _) in enumerate(WEIGHTS):
            sender.send(sender.op_requests(op, args.warmup, 1000 + k))
            reqs = sender.op_requests(op, args.count, 2000 + k)
            ir, n = cg.count(op, functools.partial(sender.send, reqs))
            section["operations"][op] = {
                "kinstr_per_request": kinstr(ir, n),
                "requests": n,
                "instructions": ir,
            }
            out(f"  {op:16} {kinstr(ir, n):8.1f} thousand instructions a request ({n})")
        reqs, drawn = sender.mix_requests(args.mix_requests, args.seed)
        ir, n = cg.count("mix", lambda: sender.send(reqs))
        section["mix_replayed"] = {
            "kinstr_per_request": kinstr(ir, n),
            "requests": n,
            "instructions": ir,
            "drawn": drawn,
        }
        if args.twelve:
            section["twelve"] = count_twelve(cg, sender, args.twelve)
        section["statuses"] = dict(sender.statuses)
        sender.conn.close()
    ops = section["operations"]
    weighted = sum(ops[op]["kinstr_per_request"] * w for op, w in WEIGHTS) / sum(w for _, w in WEIGHTS)
    section["mix_weighted_kinstr_per_request"] = round(weighted, 1)
    out(f"  the mix's weights applied {weighted:.1f}; the mix replayed ({n}) {kinstr(ir, n):.1f}")
    return section


def count_twelve(cg: Callgrind, sender: Sender, count: int) -> dict[str, Any]:
    """`--twelve N`: upstream's twelve operations (`gateway_bench.upstream_operations`: its
    bodies, a new lock path each acquire) on the mix's state, each warmed up as the standard
    bench does and then counted in a window of its own, N requests (at most the standard
    bench's iterations of it); and the mean over the twelve, the figure the target's ratio is of."""
    ops: dict[str, Any] = {}
    for op in upstream_operations(TAG):
        sender.send([op.call() for _ in range(TWELVE_WARMUP)])
        reqs = [op.call() for _ in range(min(count, op.iterations))]
        label = "twelve-" + op.name.lower().replace(" ", "-")
        ir, n = cg.count(label, functools.partial(sender.send, reqs))
        ops[op.name] = {"kinstr_per_request": kinstr(ir, n), "requests": n, "instructions": ir}
        out(f"  twelve: {op.name:16} {kinstr(ir, n):8.1f} thousand instructions a request ({n})")
    mean = round(sum(o["kinstr_per_request"] for o in ops.values()) / len(ops), 1)
    out(f"  twelve: the mean over the operations {mean:.1f}")
    return {"operations": ops, "mean_kinstr_per_request": mean}


def run_floor(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    env = dict(os.environ)
    with under_callgrind("floor", [sys.executable, str(FLOOR_APP)], tmp, "/health", env, args.keep) as cg:
        sender = Sender(Connection(cg.port))
        sender.send([("GET", "/health", None)] * args.warmup)
        ir, n = cg.count("health", lambda: sender.send([("GET", "/health", None)] * args.count))
        sender.conn.close()
    out(f"floor /health {kinstr(ir, n):.1f} thousand instructions a request ({n})")
    return {"health": {"kinstr_per_request": kinstr(ir, n), "requests": n, "instructions": ir}}


def git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - the checkout's own git
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--phase",
        choices=PHASES,
        default="cutover",
        help="the gateway's migration phase (default cutover); write-through also starts a private "
        "redis-server on a free loopback port as its legacy Redis",
    )
    p.add_argument("--count", type=int, default=200, help="counted requests per operation (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="uncounted requests before each (default 20)")
    p.add_argument("--mix-requests", type=int, default=1000, help="the seeded mix draw (default 1000)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--twelve",
        type=int,
        default=0,
        metavar="N",
        help="also count upstream's twelve operations after the mix, N requests each (default 0: not)",
    )
    p.add_argument("--skip-floor", action="store_true", help="count the gateway only")
    p.add_argument("--keep", action="store_true", help="keep the temp dir: logs, data, a dump per window")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--label", help="stored in the JSON, e.g. the commit of a `git archive` copy")
    args = p.parse_args(argv)
    if not (
        1 <= args.count <= MAX_COUNT
        and 0 <= args.warmup <= MAX_COUNT
        and 1 <= args.mix_requests <= MAX_COUNT
        and 0 <= args.twelve <= MAX_COUNT
    ):
        p.error(f"--count, --warmup, --mix-requests and --twelve are at most {MAX_COUNT}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind and callgrind_control (Debian: apt-get install -y valgrind)")
    tmp = Path(tempfile.mkdtemp(prefix="agent-coord-cg-"))
    result: dict[str, Any] = {
        "commit": git_commit(),
        "label": args.label,
        "phase": args.phase,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "valgrind": subprocess.run(
            ["valgrind", "--version"],  # noqa: S607 - the valgrind on PATH, checked above
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "weights": dict(WEIGHTS),
    }
    try:
        with legacy_redis(args.phase) as redis_url:
            result["gateway"] = run_gateway(args, tmp, redis_url)
        if not args.skip_floor:
            result["floor"] = run_floor(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            out(f"kept {tmp}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
