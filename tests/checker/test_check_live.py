"""`agent-coord check` beside a live `agent-coord serve` process: the actors are read through its
admin API while a writer changes entities through the gateway; the read-switch guard of that
gateway takes the check's report."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.legacy import keys
from gateway.phases.reports import newest_report
from gateway.testing import RedisServer
from gateway.testing.gateway_process import GatewayProcess

from .test_check_stores import seed_and_import

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def command(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m gateway.cli ARGS` as its own process, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env=env,
    )


def post(url: str, body: Any) -> int:
    req = urllib.request.Request(  # noqa: S310 - loopback
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


class Writer(threading.Thread):
    """Creates tasks and re-registers agents through the gateway until stopped (bounded)."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.halt = threading.Event()
        self.writes = 0
        self.failures = 0

    def run(self) -> None:
        for i in range(100_000):
            if self.halt.is_set():
                return
            task = {"id": f"live-{i:05d}", "title": f"live {i}"}
            status = post(f"{self.base}/coordinator/tasks", task)
            status2 = post(
                f"{self.base}/coordinator/agents", {"agentId": f"live-agent-{i % 5}", "status": f"s{i}"}
            )
            self.writes += 2
            self.failures += (status != 200) + (status2 != 200)


@pytest.fixture
def gateway(redis_url: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    asyncio.run(seed_and_import(redis_url, data_dir))
    proc = GatewayProcess(data_dir, redis_url=redis_url, phase="write-through").start()
    try:
        yield proc
    finally:
        proc.kill()


Ran = subprocess.CompletedProcess[str]


def check(proc: GatewayProcess, *extra: str) -> tuple[Ran, dict[str, Any]]:
    ran = command(
        "check",
        "--url",
        proc.url,
        "--data-dir",
        str(proc.data_dir),
        "--redis-url",
        str(proc.redis_url),
        *extra,
    )
    info = newest_report(proc.data_dir)
    assert info is not None, ran.stderr
    return ran, json.loads(Path(info.path).read_text(encoding="utf-8"))


def phase_set(proc: GatewayProcess, phase: str) -> Ran:
    return command(
        "phase", "set", phase, "--reason", "e2e", "--url", proc.url, "--data-dir", str(proc.data_dir)
    )


def test_a_check_beside_a_live_gateway_reports_only_what_persists_and_opens_read_switch(
    gateway: GatewayProcess,
) -> None:
    proc = gateway
    refused = phase_set(proc, "read-switch")
    assert refused.returncode == 1
    assert "run `agent-coord check` first" in refused.stderr

    # a legacy-only task planted before the check and left in place: Redis is written directly
    r = redis.Redis.from_url(str(proc.redis_url), decode_responses=True)
    try:
        r.hset(keys.TASKS, "planted-task", json.dumps({
            "id": "planted-task", "title": "only in Redis", "status": "todo", "priority": "medium",
            "createdBy": "ops", "createdAt": "2026-01-01T00:00:00.000Z", "tags": [],
        }))  # fmt: skip
    finally:
        r.close()

    writer = Writer(proc.url)
    writer.start()
    try:
        ran, doc = check(proc, "--rounds", "3", "--recheck-delay", "0.5", "--samples", "50")
    finally:
        writer.halt.set()
        writer.join(timeout=30)
    assert writer.writes > 0
    assert writer.failures == 0
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert doc["stores"]["actors"] == proc.url  # read through the admin API, not the files
    assert doc["complete"] is True
    found = [(s["key"], s["kind"]) for s in doc["samples"]]
    assert found == [("task:planted-task", "missingInActors")], doc["samples"]
    assert doc["totals"]["differences"] == 1

    refused = phase_set(proc, "read-switch")
    assert refused.returncode == 1
    assert "not clean" in refused.stderr

    # repair from the phase's authoritative store (Redis in write-through), through the gateway
    ran, repaired = check(proc, "--rounds", "1", "--recheck-delay", "0.2", "--repair")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "create in actors: task:planted-task  [from legacy]" in ran.stdout
    assert repaired["clean"] is True
    assert (repaired["repair"]["from"], repaired["repair"]["written"]) == ("legacy", 1)

    shown = command("phase", "show", "--url", proc.url, "--data-dir", str(proc.data_dir))
    assert "consistency report  clean, finished " in shown.stdout, shown.stdout
    accepted = phase_set(proc, "read-switch")
    assert accepted.returncode == 0, accepted.stderr
    assert "write-through -> read-switch at" in accepted.stdout
    assert "(forced)" not in accepted.stdout


@pytest.fixture
def own_redis_gateway(tmp_path: Path) -> Iterator[tuple[GatewayProcess, RedisServer]]:
    """A gateway on a Redis of this test's own (which the test may kill), whose read-switch
    guard takes reports up to 15 s old."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with RedisServer() as server:
        asyncio.run(seed_and_import(server.url, data_dir))
        proc = GatewayProcess(
            data_dir,
            redis_url=server.url,
            phase="write-through",
            env={"AGENT_COORD_MIGRATION_CONSISTENCY_MAX_AGE_S": str(MAX_AGE_S)},
        ).start()
        try:
            yield proc, server
        finally:
            proc.kill()


MAX_AGE_S = 15


def test_a_stale_report_is_refused_by_a_running_gateway_and_a_fresh_one_accepted(
    own_redis_gateway: tuple[GatewayProcess, RedisServer],
) -> None:
    proc, _server = own_redis_gateway
    ran, doc = check(proc, "--rounds", "0")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (doc["clean"], doc["complete"], doc["stores"]["actors"]) == (True, True, proc.url)
    time.sleep(MAX_AGE_S + 1)
    refused = phase_set(proc, "read-switch")
    assert refused.returncode == 1
    assert f"s old (limit {MAX_AGE_S} s)" in refused.stderr, refused.stderr
    ran, _doc = check(proc, "--rounds", "0")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    accepted = phase_set(proc, "read-switch")
    assert accepted.returncode == 0, accepted.stderr
    assert "write-through -> read-switch at" in accepted.stdout


def test_redis_gone_mid_check_is_exit_3_and_a_running_gateway_refuses_the_incomplete_report(
    own_redis_gateway: tuple[GatewayProcess, RedisServer],
) -> None:
    """A difference is planted so that the check re-reads it after 5 s; Redis is killed once the
    walk is over (the check logs `consistency.walked`): the re-check cannot read it, the check
    ends with exit status 3 and an incomplete report, and the gateway's guard refuses it."""
    proc, server = own_redis_gateway
    r = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        r.hset(keys.TASKS, "planted-task", json.dumps({"id": "planted-task", "title": "only in Redis"}))
    finally:
        r.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
    args = ["check", "--url", proc.url, "--data-dir", str(proc.data_dir), "--redis-url", server.url]
    with subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway.cli", *args, "--rounds", "1", "--recheck-delay", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as running:
        lines: queue.Queue[str] = queue.Queue()

        def read_stderr() -> None:
            for line in running.stderr or ():
                lines.put(line)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        try:
            line = ""
            while "consistency.walked" not in line:
                line = lines.get(timeout=120)  # queue.Empty: the walk never ended
            assert json.loads(line)["to_recheck"] == 1, line
            server.kill()
            assert running.wait(timeout=120) == 3
        finally:
            if running.poll() is None:
                running.kill()
            reader.join(timeout=10)
    info = newest_report(proc.data_dir)
    assert info is not None
    assert (info.complete, info.clean) == (False, False)
    refused = phase_set(proc, "read-switch")
    assert refused.returncode == 1
    assert "the newest consistency report is incomplete" in refused.stderr, refused.stderr
