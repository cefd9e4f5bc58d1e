"""`agent-coord migrate` killed at several points (a real process: a crash point that ends it at
once, or SIGKILL from outside), then `--resume`: the end state is that of an uninterrupted run,
entity by entity in canonical form. A second run writes nothing; `--dry-run` writes nothing."""

from __future__ import annotations

import gzip
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio

from gateway.actors.crash import CRASH_EXIT_CODE
from gateway.clock import SystemClock
from gateway.testing import RedisServer
from gateway.testing.snapshots import Snapshot, actor_snapshot, legacy_snapshot
from tests.migration.conftest import Result, fill_legacy
from tests.migration.live import migrate_process

pytestmark = pytest.mark.integration

Migrate = Callable[..., Result]
BATCH = "100"


@pytest.fixture
def seeded_big(redis_url: str) -> str:
    """A legacy Redis with enough entities for a dozen batches (the corrupt ones included)."""
    fill_legacy(redis_url, scale=300, seed=5)
    return redis_url


def run_to_exit(argv: list[str], log: Path, env: dict[str, str] | None = None, timeout_s: float = 120) -> int:
    proc = migrate_process(*argv, log=log, env=env)
    try:
        return proc.wait(timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()


def actors_now(data: Path) -> Snapshot:
    return actor_snapshot(data, SystemClock().now_ms())


@pytest.mark.parametrize(
    "point",
    ["migrate.batch.1.read", "migrate.batch.3.written", "migrate.batch.4.saved", "migrate.batch.9.written"],
)
def test_killed_at_a_crash_point_and_resumed_ends_as_an_uninterrupted_copy(
    migrate: Migrate, seeded_big: str, tmp_path: Path, point: str
) -> None:
    ref = tmp_path / "ref"
    args = ["copy", "--from", "legacy", "--to", "actors", "--redis-url", seeded_big, "--batch", BATCH]
    args += ["--no-progress"]
    whole = migrate(*args, "--data-dir", str(ref), "--summary", str(tmp_path / "ref.json"))
    assert whole.code == 1, whole.err

    data = tmp_path / "data"
    code = run_to_exit(
        [*args, "--data-dir", str(data)], tmp_path / "crash.log", {"AGENT_COORD_CRASH_AT": point}
    )
    assert code == CRASH_EXIT_CODE, (tmp_path / "crash.log").read_text()
    assert (data / "migrate" / "checkpoint.json").exists() or point.endswith(".1.read")
    resumed = migrate(*args, "--data-dir", str(data), "--resume", "--summary", str(tmp_path / "resumed.json"))
    assert resumed.code == 1, resumed.err
    assert actors_now(data) == actors_now(ref)
    done, expected = (
        json.loads((tmp_path / "resumed.json").read_text()),
        json.loads((tmp_path / "ref.json").read_text()),
    )
    assert done["totals"]["read"] == expected["totals"]["read"]
    assert done["totals"]["quarantined"] == expected["totals"]["quarantined"]
    # a batch written but not checkpointed is read again, and found there
    assert done["totals"]["written"] + done["totals"]["unchanged"] == (
        expected["totals"]["written"] + expected["totals"]["unchanged"]
    )
    again = migrate(*args, "--data-dir", str(data), "--summary", str(tmp_path / "again.json"))
    assert again.code == 1
    assert json.loads((tmp_path / "again.json").read_text())["totals"]["written"] == 0


def test_sigkill_from_outside_then_resume_both_ways(
    migrate: Migrate, seeded_big: str, tmp_path: Path
) -> None:
    ref = tmp_path / "ref"
    args = ["--batch", BATCH, "--no-progress"]
    assert (
        migrate(
            "copy",
            "--from",
            "legacy",
            "--to",
            "actors",
            "--redis-url",
            seeded_big,
            "--data-dir",
            str(ref),
            *args,
        ).code
        == 1
    )

    data = tmp_path / "data"
    argv = [
        "copy",
        "--from",
        "legacy",
        "--to",
        "actors",
        "--redis-url",
        seeded_big,
        "--data-dir",
        str(data),
        *args,
    ]
    proc = migrate_process(*argv, log=tmp_path / "kill.log")
    checkpoint = data / "migrate" / "checkpoint.json"
    deadline = time.monotonic() + 60
    while proc.poll() is None:  # killed once a few batches are in
        if checkpoint.exists():
            with_counts = json.loads(checkpoint.read_text() or "{}").get("summary", {}).get("domains", {})
            if sum(row["read"] for row in with_counts.values()) >= 300:
                proc.send_signal(signal.SIGKILL)
                break
        assert time.monotonic() < deadline, "the copy did not get going"
        time.sleep(0.005)
    assert proc.wait(10) == -signal.SIGKILL, "the copy finished before it could be killed"
    assert migrate(*argv, "--resume").code == 1
    assert actors_now(data) == actors_now(ref)

    # and back, into a fresh Redis: killed, resumed, the same as an uninterrupted copy back
    with RedisServer() as fresh, RedisServer() as fresh_ref:
        back = ["copy", "--from", "actors", "--to", "legacy", *args]
        assert migrate(*back, "--redis-url", fresh_ref.url, "--data-dir", str(ref)).code == 0
        dry = migrate(*back, "--redis-url", fresh.url, "--data-dir", str(data), "--dry-run")
        assert dry.code == 0, dry.err
        r = redis.Redis.from_url(fresh.url, decode_responses=True)
        r_ref = redis.Redis.from_url(fresh_ref.url, decode_responses=True)
        try:
            assert r.dbsize() == 0  # the dry run wrote nothing
            argv = [*back, "--redis-url", fresh.url, "--data-dir", str(data)]
            env = {"AGENT_COORD_CRASH_AT": "migrate.batch.5.written"}
            assert run_to_exit(argv, tmp_path / "back.log", env) == CRASH_EXIT_CODE
            assert migrate(*argv, "--resume").code == 0
            now = SystemClock().now_ms()
            assert legacy_snapshot(r, now) == legacy_snapshot(r_ref, now)
            again = migrate(*argv)
            assert "nothing to write" in again.out
        finally:
            r.close()
            r_ref.close()


def test_an_export_killed_and_resumed_holds_the_same_lines(
    migrate: Migrate, seeded_big: str, tmp_path: Path
) -> None:
    args = ["export", "--from", "legacy", "--redis-url", seeded_big, "--batch", BATCH, "--no-progress"]
    ref, out = tmp_path / "ref.ndjson.gz", tmp_path / "out.ndjson.gz"
    assert migrate(*args, "--out", str(ref), "--state-dir", str(tmp_path / "s1")).code == 1
    argv = [*args, "--out", str(out), "--state-dir", str(tmp_path / "s2")]
    env = {"AGENT_COORD_CRASH_AT": "migrate.batch.6.written"}  # the batch is in the file, not checkpointed
    assert run_to_exit(argv, tmp_path / "export.log", env) == CRASH_EXIT_CODE
    assert migrate(*argv, "--resume").code == 1
    lines, expected = (
        gzip.decompress(out.read_bytes()).splitlines(),
        gzip.decompress(ref.read_bytes()).splitlines(),
    )
    assert lines[1:] == expected[1:]  # every entity once, in order, and the same end line
    assert json.loads(lines[0])["counts"] == json.loads(expected[0])["counts"]
