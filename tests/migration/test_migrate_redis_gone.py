"""`agent-coord migrate` when the legacy Redis disappears in the middle of a run (the fixture's
redis-server killed while the migrate process waits on a batch): a clear one-line error, exit
status 3, and every entity the actors got is whole."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.testing import RedisServer
from gateway.testing.snapshots import actor_snapshot
from tests.migration.conftest import Result, fill_legacy
from tests.migration.live import migrate_process

pytestmark = pytest.mark.integration


def test_redis_killed_mid_run_gives_exit_3_and_no_half_written_entity(
    migrate: object, own_redis: RedisServer, tmp_path: Path
) -> None:
    fill_legacy(own_redis.url, scale=200, seed=3)
    args = ["copy", "--from", "legacy", "--to", "actors", "--redis-url", own_redis.url, "--batch", "50"]
    args += ["--no-progress"]
    ref = tmp_path / "ref"
    whole: Result = migrate(*args, "--data-dir", str(ref))  # type: ignore[operator]
    assert whole.code == 1, whole.err

    data, pause, log = tmp_path / "data", tmp_path / "pause", tmp_path / "migrate.log"
    pause.mkdir()
    env = {"AGENT_COORD_PAUSE_AT": "migrate.before_write", "AGENT_COORD_PAUSE_DIR": str(pause)}
    proc = migrate_process(*args, "--data-dir", str(data), log=log, env=env)
    deadline = time.monotonic() + 60
    n = 1
    while proc.poll() is None and time.monotonic() < deadline:
        if (pause / f"{n}.keys").exists():
            if n == 3:
                own_redis.kill()  # gone while batch 3 is on its way to the actors
            (pause / f"{n}.go").touch()
            n += 1
        time.sleep(0.01)
    assert proc.wait(max(deadline - time.monotonic(), 1)) == 3, log.read_text()
    errors = [line for line in log.read_text().splitlines() if line.startswith("agent-coord migrate: error:")]
    assert len(errors) == 1, log.read_text()
    assert "a store cannot be reached" in errors[0]
    assert own_redis.url.split("//")[1].split("/")[0] in errors[0] or "Redis" in errors[0]

    now = SystemClock().now_ms()
    partial, expected = actor_snapshot(data, now), actor_snapshot(ref, now)
    held = {(d, i) for d, rows in partial.items() for i in rows}
    assert len(held) >= 100  # the batches before the end arrived
    assert held < {(d, i) for d, rows in expected.items() for i in rows}
    for domain, rows in partial.items():
        for ident, form in rows.items():
            assert form == expected[domain][ident], f"{domain} {ident} arrived incomplete"
    assert (data / "migrate" / "checkpoint.json").exists()  # `--resume` continues once Redis is back
