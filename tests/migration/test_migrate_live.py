"""`agent-coord migrate` beside a running gateway in `write-through`: a writer changes entities
through the gateway's HTTP API while the import runs (a real `agent-coord serve`, a real
migrate process, a real redis-server), and no entity ends older than its newest acknowledged
write, in either store."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
import redis.asyncio

from gateway.bulk.actor_side import ActorSide
from gateway.bulk.legacy_side import LegacySource
from gateway.bulk.sides import ActorEndpoint, open_actor_side, open_legacy_side
from gateway.bulk.versions import version
from gateway.clock import SystemClock
from gateway.domain.entities import Entity, EntityKey, Unreadable
from gateway.legacy import keys
from gateway.legacy.generator import generate
from gateway.settings import LegacySettings, Settings, StorageSettings
from gateway.testing import RedisServer
from gateway.testing.gateway_process import GatewayProcess
from gateway.testing.snapshots import actor_snapshot, legacy_snapshot
from tests.migration.conftest import Result
from tests.migration.live import Acked, Writer, migrate_process

pytestmark = pytest.mark.integration

IMPORT_TIMEOUT_S = 120.0


def settings_for(data_dir: Path, redis_url: str) -> Settings:
    return Settings(
        storage=StorageSettings(data_dir=data_dir),
        legacy=LegacySettings(redis_url=redis_url, timeout_s=2.0, retries=1),
    )


async def seed(redis_url: str) -> tuple[list[str], list[str]]:
    """The legacy Redis seeded; the ids of its readable tasks and agents (the writer's targets)."""
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        summary = await generate(r, scale=200, seed=11, flush=True)
        corrupt = {f for _k, f in summary.corrupt} | {f for _k, f in summary.double_encoded}
        tasks = sorted({str(f) for f in await r.hkeys(keys.TASKS)} - corrupt)
        agents = sorted({str(f) for f in await r.hkeys(keys.ACTIVE_AGENTS)} - corrupt)
    finally:
        await r.aclose()
    return tasks, agents


def run_beside_writer(writer: Writer, argv: list[str], tmp_path: Path, point: str) -> int:
    """The migrate process, paused at `point` on every batch while the writer changes some of
    the batch's entities through the gateway; its exit status."""
    pause_dir = tmp_path / "pause"
    pause_dir.mkdir()
    env = {"AGENT_COORD_PAUSE_AT": point, "AGENT_COORD_PAUSE_DIR": str(pause_dir)}
    proc = migrate_process(*argv, log=tmp_path / "migrate.log", env=env)
    return asyncio.run(writer.follow(pause_dir, proc, timeout_s=IMPORT_TIMEOUT_S))


async def read_both(data_dir: Path, redis_url: str, ks: list[EntityKey]) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """What each store holds for `ks` (the gateway stopped: the data directory opened directly)."""
    settings = settings_for(data_dir, redis_url)
    async with open_legacy_side(settings, redis_url) as legacy:
        assert isinstance(legacy, LegacySource)
        in_redis = await legacy.read_many(ks)
    async with open_actor_side(settings, ActorEndpoint(data_dir=data_dir)) as side:
        assert isinstance(side, ActorSide)
        in_actors = await side.read_many(ks)
    return in_redis, in_actors


def assert_none_older(acked: Acked, held: dict[EntityKey, Entity | Unreadable | None], store: str) -> None:
    older = []
    for key, v in acked.versions.items():
        got = held.get(key)
        if got is None or isinstance(got, Unreadable) or version(got) < v:
            older.append(f"{key}: acked {v}, {store} holds {None if got is None else version(got)}")  # type: ignore[arg-type]
    assert not older, f"{len(older)} entities in {store} older than their acknowledged write: {older[:5]}"


def check_stores(data_dir: Path, redis_url: str, acked: Acked) -> None:
    in_redis, in_actors = asyncio.run(read_both(data_dir, redis_url, list(acked.versions)))
    assert_none_older(acked, in_redis, "Redis")
    assert_none_older(acked, in_actors, "the actors")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        now = SystemClock().now_ms()
        assert actor_snapshot(data_dir, now) == legacy_snapshot(r, now)
    finally:
        r.close()


def test_an_import_into_the_actors_beside_write_through_keeps_every_newer_write(
    redis_url: str, tmp_path: Path
) -> None:
    tasks, agents = asyncio.run(seed(redis_url))
    data = tmp_path / "data"
    summary = tmp_path / "summary.json"
    log = tmp_path / "migrate.log"
    with GatewayProcess(data, redis_url=redis_url, phase="write-through") as gw:
        writer = Writer(gw.url, tasks, agents)
        argv = [
            "copy", "--from", "legacy", "--to", "actors", "--redis-url", redis_url,
            "--data-dir", str(data), "--url", gw.url, "--batch", "20", "--no-progress",
            "--summary", str(summary),
        ]  # fmt: skip
        code = run_beside_writer(writer, argv, tmp_path, "migrate.before_write")
        assert code == 1, log.read_text()  # done, with the generator's corrupt values quarantined
        assert not writer.errors, writer.errors[:3]
    assert writer.acked.during_import >= 10, "the writer did not change entities under the import"
    report = json.loads(summary.read_text())
    assert report["totals"]["read"] > 1000
    assert report["totals"]["skipped"] >= len(writer.acked.versions)  # left alone, each of them
    check_stores(data, redis_url, writer.acked)


def _make_stale(redis_url: str) -> int:
    """Every task in Redis an hour older and retitled: the actors hold the newer copies (as after
    writes taken in `cutover`), so the reverse copy has them to write."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        n = 0
        for fld, raw in r.hgetall(keys.TASKS).items():
            try:
                task = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(task, dict) or not isinstance(task.get("updatedAt"), str):
                continue
            task["title"] = "stale: " + str(task.get("title"))
            task["updatedAt"] = "2000-01-01T00:00:00.000Z"
            r.hset(keys.TASKS, fld, json.dumps(task))
            n += 1
        return n
    finally:
        r.close()


def test_a_copy_back_into_redis_beside_write_through_keeps_every_newer_write(
    migrate: object, redis_url: str, tmp_path: Path
) -> None:
    tasks, agents = asyncio.run(seed(redis_url))
    data = tmp_path / "data"
    common = ["--redis-url", redis_url, "--data-dir", str(data), "--no-progress"]
    first: Result = migrate("copy", "--from", "legacy", "--to", "actors", *common)  # type: ignore[operator]
    assert first.code == 1, first.err
    assert _make_stale(redis_url) >= len(tasks)
    summary = tmp_path / "summary.json"
    log = tmp_path / "migrate.log"
    with GatewayProcess(data, redis_url=redis_url, phase="write-through") as gw:
        writer = Writer(gw.url, tasks, agents)
        argv = [
            "copy", "--from", "actors", "--to", "legacy", *common, "--url", gw.url, "--batch", "20",
            "--summary", str(summary),
        ]  # fmt: skip
        code = run_beside_writer(writer, argv, tmp_path, "legacy_sink.before_write")
        assert code == 0, log.read_text()
        assert "Redis was refilled" in log.read_text()  # recorded through the gateway's admin API
        assert not writer.errors, writer.errors[:3]
    assert writer.acked.during_import >= 10, "the writer did not change entities under the import"
    report = json.loads(summary.read_text())
    assert report["domains"]["task"]["skipped"] >= sum(k.domain == "task" for k in writer.acked.versions)
    assert report["domains"]["task"]["written"] > 0  # the stale tasks were refilled
    check_stores(data, redis_url, writer.acked)


def _set_phase(gw: GatewayProcess, token: str, phase: str) -> int:
    """`POST /admin/phase` without force; the status."""
    body = json.dumps({"phase": phase, "reason": "rolling back after a refill"}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"{gw.url}/admin/phase",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_a_copy_back_beside_a_gateway_in_cutover_is_recorded_through_it(
    migrate: object, redis_url: str, tmp_path: Path
) -> None:
    asyncio.run(seed(redis_url))
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--no-progress"]
    first: Result = migrate("copy", "--from", "legacy", "--to", "actors", "--redis-url", redis_url, *common)  # type: ignore[operator]
    assert first.code == 1, first.err
    with RedisServer() as fresh, GatewayProcess(data, redis_url=fresh.url, phase="cutover") as gw:
        token = (data / "admin-token").read_text().strip()
        assert _set_phase(gw, token, "read-switch") == 409  # Redis was not refilled since cutover began
        back: Result = migrate(  # type: ignore[operator]
            "copy", "--from", "actors", "--to", "legacy", "--redis-url", fresh.url, "--url", gw.url, *common
        )
        assert back.code == 0, back.err
        assert "Redis was refilled" in back.out
        assert _set_phase(gw, token, "read-switch") == 200  # the guard read the gateway's record
