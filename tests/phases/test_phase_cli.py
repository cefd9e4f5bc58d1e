"""`agent-coord phase show|set|history` against a real gateway process, and the admin API's token.

The CLI runs as its own process, as an operator would run it on the gateway's machine: the token
comes from the gateway's data directory.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.cli import build_parser
from gateway.legacy import keys
from gateway.phases.cli import run_phase
from gateway.settings import load_settings
from gateway.testing import RedisServer
from gateway.testing.gateway_process import GatewayProcess

MakeProc = Callable[..., GatewayProcess]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(proc: GatewayProcess, *args: str, token: str | None = None) -> Ran:
    """`agent-coord phase ARGS --url <gateway> --data-dir <its data dir>`, run in this process
    (the command's own code, against the gateway process); see `cli_process` for the real one."""
    argv = ["phase", *args, "--url", proc.url, "--data-dir", str(proc.data_dir)]
    if token is not None:
        argv += ["--token", token]
    out, err = io.StringIO(), io.StringIO()
    try:
        ns = build_parser().parse_args(argv)
    except SystemExit as e:
        return Ran(int(str(e.code)), "", "")
    settings = load_settings(overrides={"storage.data_dir": str(proc.data_dir)})
    code = run_phase(ns, settings, out=out, err=err)
    return Ran(code, out.getvalue(), err.getvalue())


def cli_process(proc: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway.cli phase ARGS ...` as its own process, as an operator runs it."""
    cmd = [
        sys.executable,
        "-m",
        "gateway.cli",
        "phase",
        *args,
        "--url",
        proc.url,
        "--data-dir",
        str(proc.data_dir),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_COORD_")}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        cmd, capture_output=True, text=True, timeout=30, check=False, env=env
    )


def get(url: str, token: str | None) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post(url: str, body: Any) -> int:
    req = urllib.request.Request(  # noqa: S310 - loopback
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll (bounded) a condition that depends on a real process."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("clean_env")
def test_phase_commands_walk_the_migration_with_guards_and_audit(
    gateway_proc: MakeProc, own_redis: RedisServer, data_dir: Path
) -> None:
    """show, set and history through the whole migration: each guard refuses with its reason,
    --force overrides the one that allows it, every change is audited, and the phase survives a
    restart even when the command line names another."""
    proc = gateway_proc(data_dir, own_redis.url, "write-through").start()
    token = (data_dir / "admin-token").read_text(encoding="utf-8").strip()

    first = cli_process(proc, "show")  # the real command line, token read from the data dir
    assert first.returncode == 0, first.stderr
    assert "write-through (since" in first.stdout
    assert "repair queue        0 entries" in first.stdout
    assert "no report yet (run `agent-coord check`)" in first.stdout
    as_json = json.loads(cli(proc, "show", "--json").stdout)
    assert (as_json["phase"], as_json["reads"], as_json["repairQueue"]["depth"]) == (
        "write-through",
        "legacy",
        0,
    )

    refused = cli(proc, "set", "read-switch", "--reason", "try")
    assert refused.returncode == 1
    assert "refused" in refused.stderr
    assert "run `agent-coord check` first" in refused.stderr
    assert "--force" in refused.stderr
    forced = cli(proc, "set", "read-switch", "--reason", "verified by hand", "--force", "--actor", "ops@test")
    assert forced.returncode == 0, forced.stderr
    assert "read-switch" in forced.stdout

    # a write while Redis is down queues a repair: cutover is refused until the queue drains
    own_redis.stop()
    assert post(f"{proc.url}/coordinator/tasks", {"id": "t-1", "title": "queued"}) == 200
    blocked = cli(proc, "set", "cutover", "--reason", "too early")
    assert blocked.returncode == 1
    assert "repair queue holds 1 entries" in blocked.stderr
    shown = cli(proc, "show")
    assert "repair queue        1 entries" in shown.stdout
    own_redis.start()
    wait_until(lambda: get(f"{proc.url}/admin/status", token)[1]["repairQueue"]["depth"] == 0, "the queue")

    done = cli(proc, "set", "cutover", "--reason", "queue empty", "--actor", "ops@test")
    assert done.returncode == 0, done.stderr

    back = cli(proc, "set", "read-switch", "--reason", "rollback")
    assert back.returncode == 1
    assert "refilled from the actors" in back.stderr
    back_forced = cli(proc, "set", "read-switch", "--reason", "rollback", "--force")
    assert back_forced.returncode == 0  # possible, and recorded as forced

    history = json.loads(cli(proc, "history", "--json").stdout)["changes"]
    assert [(c["from"], c["to"], c["forced"], c["actor"]) for c in history] == [
        (None, "write-through", False, "config"),
        ("write-through", "read-switch", True, "ops@test"),
        ("read-switch", "cutover", False, "ops@test"),
        ("cutover", "read-switch", True, history[-1]["actor"]),
    ]
    assert history[1]["reason"] == "verified by hand"
    human = cli(proc, "history")
    assert human.returncode == 0
    assert "verified by hand" in human.stdout

    # persisted: a restart with another --phase keeps the operator's decision
    assert proc.stop() == 0
    proc.phase = "parallel"
    proc.start()
    status, body = get(f"{proc.url}/admin/phase", token)
    assert (status, body["phase"]) == (200, "read-switch")
    assert len(json.loads(cli(proc, "history", "--json").stdout)["changes"]) == 4


@pytest.mark.integration
@pytest.mark.usefixtures("clean_env")
def test_dead_letters_are_shown_and_retried_through_the_cli(
    gateway_proc: MakeProc, own_redis: RedisServer, data_dir: Path
) -> None:
    """read-switch: a task whose Redis copy has wrong types is repaired twice in vain and
    dead-lettered; `show` and `dead-letters` list it, cutover is refused naming the commands, and
    once the value is fixed `retry-dead --all` gets it repaired and cutover allowed."""
    env = {"AGENT_COORD_MIGRATION_REPAIR_MAX_ATTEMPTS": "2"}
    proc = gateway_proc(data_dir, own_redis.url, "read-switch", env=env).start()
    token = (data_dir / "admin-token").read_text(encoding="utf-8").strip()
    r = redis.Redis.from_url(own_redis.url, decode_responses=True)
    r.hset(keys.TASKS, "t-bad", '{"id":5,"title":["x"],"status":null}')
    assert post(f"{proc.url}/coordinator/tasks", {"id": "t-bad", "title": "mine"}) == 200
    wait_until(lambda: get(f"{proc.url}/admin/status", token)[1]["repairQueue"]["deadLetters"] == 1, "burial")
    shown = cli(proc, "show")
    assert "dead letters        1 (blocking read-switch and cutover)" in shown.stdout
    assert "task t-bad -> legacy  after 2 attempts" in shown.stdout
    listed = cli(proc, "dead-letters")
    assert (listed.returncode, listed.stdout.splitlines()[0]) == (0, "1 dead letters")
    blocked = cli(proc, "set", "cutover", "--reason", "dead letter left")
    assert blocked.returncode == 1
    assert "agent-coord phase dead-letters" in blocked.stderr
    assert cli(proc, "retry-dead").returncode == 2  # neither numbers nor --all
    r.hdel(keys.TASKS, "t-bad")
    retried = cli(proc, "retry-dead", "--all")
    assert (retried.returncode, retried.stdout) == (0, "1 dead letters put back in the repair queue\n")
    wait_until(lambda: r.hexists(keys.TASKS, "t-bad"), "the retried repair")
    wait_until(lambda: get(f"{proc.url}/admin/status", token)[1]["repairQueue"]["depth"] == 0, "the queue")
    r.close()
    done = cli(proc, "set", "cutover", "--reason", "no dead letters left")
    assert done.returncode == 0, done.stderr


@pytest.mark.integration
@pytest.mark.usefixtures("clean_env")
def test_admin_api_needs_the_token(gateway_proc: MakeProc, redis_url: str, data_dir: Path) -> None:
    """No token or a wrong one is a 401 JSON answer, and the CLI says the token was refused (exit 3);
    an unreachable gateway is exit 3 too, bad usage exit 2."""
    proc = gateway_proc(data_dir, redis_url, "parallel").start()
    token = (data_dir / "admin-token").read_text(encoding="utf-8").strip()
    assert (data_dir / "admin-token").stat().st_mode & 0o777 == 0o600
    for given in (None, "wrong"):
        status, body = get(f"{proc.url}/admin/status", given)
        assert status == 401
        assert "token" in body["error"]
    assert get(f"{proc.url}/admin/status", token)[0] == 200
    wrong = cli(proc, "show", token="wrong")
    assert wrong.returncode == 3
    assert "refused the admin token" in wrong.stderr
    assert get(f"{proc.url}/admin/phase", token)[1]["phase"] == "parallel"  # nothing changed

    # port 1: privileged, never listened on here (as the other unreachable-store tests): a port
    # that was free a moment ago could be taken by a parallel test's server before the CLI connects
    gone = GatewayProcess(data_dir, port=1)
    unreachable = cli(gone, "show", token=token)
    assert unreachable.returncode == 3
    assert "cannot reach the gateway" in unreachable.stderr
    usage = cli_process(proc, "set", "cutover")  # no --reason
    assert usage.returncode == 2
    assert "--reason" in usage.stderr
