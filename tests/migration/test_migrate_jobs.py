"""`agent-coord migrate --jobs 2` (the source read by a reader process, `migrate.reader`) against
`--jobs 1`: the same stores, summaries and quarantine in both directions; a reader that dies
ends the run with one line and exit status 3, and `--resume` completes it; a killed run takes its
reader with it, so `--resume` can open the data directory at once."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio

from gateway.clock import SystemClock
from gateway.testing import RedisServer
from gateway.testing.snapshots import actor_snapshot, legacy_snapshot
from tests.migration.conftest import Result, fill_legacy
from tests.migration.live import migrate_process

pytestmark = pytest.mark.integration

Migrate = Callable[..., Result]
BATCH = "100"
WAIT_S = 60.0


@pytest.fixture
def seeded_jobs(redis_url: str) -> str:
    """A legacy Redis with a dozen batches of entities, the corrupt ones and conflicts included."""
    fill_legacy(redis_url, scale=300, seed=11)
    return redis_url


def _summary(path: Path) -> dict[str, object]:
    doc = json.loads(path.read_text())
    return {k: doc[k] for k in ("totals", "domains", "skippedKeys", "notes")}


def _every_key(r: redis.Redis) -> dict[str, object]:
    """Every key Redis holds (indexes and presence too), by type; a set's members sorted."""
    out: dict[str, object] = {}
    for key in sorted(r.scan_iter(count=1000)):
        kind = r.type(key)
        if kind == "hash":
            out[key] = r.hgetall(key)
        elif kind == "list":
            out[key] = r.lrange(key, 0, -1)
        elif kind == "set":
            out[key] = sorted(r.smembers(key))
        elif kind == "zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = (kind, r.get(key))
    return out


def test_two_processes_copy_exactly_what_one_does_both_ways(
    migrate: Migrate, seeded_jobs: str, tmp_path: Path
) -> None:
    now = SystemClock().now_ms()
    results = {}
    with RedisServer() as back1, RedisServer() as back2:
        for jobs, back in (("1", back1), ("2", back2)):
            data, state = tmp_path / f"data{jobs}", tmp_path / f"state{jobs}"
            common = ["--batch", BATCH, "--no-progress", "--jobs", jobs, "--data-dir", str(data)]
            to_actors = migrate(
                "copy", "--from", "legacy", "--to", "actors", "--redis-url", seeded_jobs, *common,
                "--state-dir", str(state), "--summary", str(tmp_path / f"in{jobs}.json"),
            )  # fmt: skip
            assert to_actors.code == 1, to_actors.err  # the planted corrupt records
            again = migrate(
                "copy", "--from", "legacy", "--to", "actors", "--redis-url", seeded_jobs, *common,
                "--state-dir", str(state),
            )  # fmt: skip
            assert "nothing to write" in again.out, again.out
            dry = migrate(
                "copy", "--from", "actors", "--to", "legacy", "--redis-url", back.url, *common,
                "--state-dir", str(state), "--dry-run",
            )  # fmt: skip
            assert dry.code == 0, dry.err
            r = redis.Redis.from_url(back.url, decode_responses=True)
            try:
                assert r.dbsize() == 0  # the dry run wrote nothing
                to_legacy = migrate(
                    "copy", "--from", "actors", "--to", "legacy", "--redis-url", back.url, *common,
                    "--state-dir", str(state), "--summary", str(tmp_path / f"out{jobs}.json"),
                )  # fmt: skip
                assert to_legacy.code == 0, to_legacy.err
                results[jobs] = {
                    "actors": actor_snapshot(data, now),
                    "legacy": legacy_snapshot(r, now),
                    "raw": _every_key(r),
                    "in": _summary(tmp_path / f"in{jobs}.json"),
                    "out": _summary(tmp_path / f"out{jobs}.json"),
                    "quarantine": (state / "quarantine.ndjson").read_text(),
                }
            finally:
                r.close()
    one, two = results["1"], results["2"]
    assert two["in"]["totals"]["written"] > 1000  # type: ignore[index]
    for part in ("actors", "legacy", "raw", "in", "out", "quarantine"):
        assert two[part] == one[part], part
    assert any("known conflicts" in n for n in one["in"]["notes"])  # type: ignore[index]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _reader_of(pid: int) -> int:
    """The reader process of migrate process `pid` (waits for it to start)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for child in _children(pid):
            if "--multiprocessing-fork" in Path(f"/proc/{child}/cmdline").read_bytes().decode(
                errors="replace"
            ):
                return child
        time.sleep(0.01)
    raise AssertionError("no reader process started")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}/status").exists() else ""
    return "State:\tZ" in status


def test_a_reader_that_dies_ends_the_run_with_exit_3_and_resume_completes_it(
    migrate: Migrate, seeded_jobs: str, tmp_path: Path
) -> None:
    args = ["copy", "--from", "legacy", "--to", "actors", "--redis-url", seeded_jobs, "--batch", BATCH]
    args += ["--no-progress", "--jobs", "2"]
    ref = tmp_path / "ref"
    assert migrate(*args, "--data-dir", str(ref)).code == 1

    data, pause, log = tmp_path / "data", tmp_path / "pause", tmp_path / "migrate.log"
    pause.mkdir()
    env = {"AGENT_COORD_PAUSE_AT": "migrate.before_write", "AGENT_COORD_PAUSE_DIR": str(pause)}
    proc = migrate_process(*args, "--data-dir", str(data), log=log, env=env)
    try:
        reader = _reader_of(proc.pid)
        deadline = time.monotonic() + WAIT_S
        n = 1
        while proc.poll() is None and time.monotonic() < deadline:
            if (pause / f"{n}.keys").exists():
                if n == 3:
                    os.kill(reader, signal.SIGKILL)  # the reader dies while batch 3 is being written
                (pause / f"{n}.go").touch()
                n += 1
            time.sleep(0.01)
        assert proc.wait(max(deadline - time.monotonic(), 1)) == 3, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    errors = [line for line in log.read_text().splitlines() if line.startswith("agent-coord migrate: error:")]
    assert errors == [
        "agent-coord migrate: error: the reader process ended without finishing (exit code -9)"
    ], log.read_text()
    assert (data / "migrate" / "checkpoint.json").exists()
    resumed = migrate(*args, "--data-dir", str(data), "--resume")
    assert resumed.code == 1, resumed.err
    now = SystemClock().now_ms()
    assert actor_snapshot(data, now) == actor_snapshot(ref, now)


def test_a_reader_that_cannot_reach_its_store_gives_exit_3(migrate: Migrate, tmp_path: Path) -> None:
    with RedisServer() as gone:
        url = gone.url
    result = migrate(
        "copy", "--from", "legacy", "--to", "actors", "--redis-url", url, "--jobs", "2",
        "--data-dir", str(tmp_path / "data"), "--no-progress",
    )  # fmt: skip
    assert result.code == 3, result.err
    lines = [x for x in result.err.splitlines() if x.startswith("agent-coord migrate:")]
    assert len(lines) == 1
    assert lines[0].startswith("agent-coord migrate: error: a store cannot be reached: ")


def test_a_killed_run_takes_its_reader_with_it_and_resumes_at_once(
    migrate: Migrate, seeded_jobs: str, tmp_path: Path
) -> None:
    """Actors to Redis: the reader holds the data directory; SIGKILL of the run ends it too, so
    `--resume` right after opens the directory and ends as an uninterrupted copy."""
    data = tmp_path / "data"
    common = ["--batch", BATCH, "--no-progress", "--jobs", "2", "--data-dir", str(data)]
    assert (
        migrate("copy", "--from", "legacy", "--to", "actors", "--redis-url", seeded_jobs, *common).code == 1
    )
    with RedisServer() as target, RedisServer() as ref:
        back = ["copy", "--from", "actors", "--to", "legacy", *common]
        assert migrate(*back, "--redis-url", ref.url).code == 0
        pause, log = tmp_path / "pause", tmp_path / "back.log"
        pause.mkdir()
        env = {"AGENT_COORD_PAUSE_AT": "migrate.before_write", "AGENT_COORD_PAUSE_DIR": str(pause)}
        proc = migrate_process(*back, "--redis-url", target.url, log=log, env=env)
        try:
            reader = _reader_of(proc.pid)
            deadline = time.monotonic() + WAIT_S
            n = 1
            while n <= 3 and time.monotonic() < deadline:  # let three batches through, hold the 4th
                if (pause / f"{n}.keys").exists():
                    (pause / f"{n}.go").touch()
                    n += 1
                time.sleep(0.01)
            while not (pause / "4.keys").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert (pause / "4.keys").exists(), log.read_text()
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        while not _gone(reader) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _gone(reader), "the reader outlived the run"
        assert migrate(*back, "--redis-url", target.url, "--resume").code == 0
        r, r_ref = (redis.Redis.from_url(u, decode_responses=True) for u in (target.url, ref.url))
        try:
            now = SystemClock().now_ms()
            assert legacy_snapshot(r, now) == legacy_snapshot(r_ref, now)
        finally:
            r.close()
            r_ref.close()
