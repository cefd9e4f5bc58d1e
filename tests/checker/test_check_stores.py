"""`agent-coord check` on a real Redis and a real data directory: the realistic data set,
imported, checks clean; seeded differences of every kind are found with exact counts; repair;
sampling; a store that goes away."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from consistency.check import CheckAborted, Checker, CheckOptions
from consistency.compare import Kind, classify, merge
from consistency.report import save
from consistency.rules import Expectations
from consistency.stores import LegacyExpectations
from gateway.actors.layout import shard_files
from gateway.bulk.items import SAMPLE_RULE, Selection, in_sample
from gateway.bulk.sides import ActorEndpoint, open_actor_side, open_legacy_side
from gateway.cli import main
from gateway.clock import SystemClock
from gateway.domain.entities import DOMAINS, Entity, EntityKey, Unreadable, actor_only
from gateway.domain.jscompat import iso_from_ms, parse_js_date
from gateway.domain.model import Claim, DirectMessage, GroupMessage, Lock, Memory, Task
from gateway.legacy import keys
from gateway.legacy.generator import generate
from gateway.legacy.replica import LegacyReplica
from gateway.phases.control import PhaseControl
from gateway.phases.reports import newest_report
from gateway.settings import Settings, load_settings
from gateway.testing import RedisServer
from tests.not_utf8 import NAMED_BY_FIELD, plant_names_not_utf8

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("restore_logging")]

SCALE = 30


def settings_for(url: str, data_dir: Path) -> Settings:
    return load_settings(overrides={"storage.data_dir": str(data_dir), "legacy.redis_url": url})


async def seed_and_import(url: str, data_dir: Path) -> None:
    """The realistic legacy data set, imported into the actors (every readable entity)."""
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await generate(r, scale=SCALE, seed=7, flush=True)
    finally:
        await r.aclose()
    settings = settings_for(url, data_dir)
    async with (
        open_legacy_side(settings, url) as legacy,
        open_actor_side(settings, ActorEndpoint(data_dir=data_dir)) as actors,
    ):
        async for batch in legacy.scan(Selection.of()):
            await actors.write_batch([(k, v) for k, v in batch if not isinstance(v, Unreadable)])
        # live locks (the generated ones expired long ago), held by both stores
        now = SystemClock().now_ms()
        replica = LegacyReplica(legacy.records, SystemClock())
        for i in range(4):
            lock = Lock(f"src/live{i}.py", "file-lock", "agent-x", "planted", iso_from_ms(now), "", 0)
            lock = dataclasses.replace(
                lock, expires_at=iso_from_ms(now + 3_600_000), expires_ms=now + 3_600_000
            )
            key = EntityKey("lock", "", lock.resource_path)
            await replica.write_entity(key, lock)
            await actors.write_batch([(key, lock)])


def check(url: str, data_dir: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """Run the real command line; the exit status and the report it wrote."""
    status = main(["check", "--redis-url", url, "--data-dir", str(data_dir), "--no-progress", *extra])
    info = newest_report(data_dir)
    assert info is not None
    return status, json.loads(Path(info.path).read_text(encoding="utf-8"))


@pytest.fixture
def imported(redis_url: str, tmp_path: Path) -> tuple[str, Path]:
    asyncio.run(seed_and_import(redis_url, tmp_path))
    return redis_url, tmp_path


_FIELD: dict[str, str] = {
    "agent": "status",
    "chat": "message",
    "task": "title",
    "zone": "path",
    "claim": "description",
    "handoff": "title",
    "checkpoint": "conversation_summary",
    "dm": "message",
    "memory": "content",
    "lock": "reason",
}
_HASH_FIELD: dict[str, tuple[str, Callable[[EntityKey], str]]] = {
    "agent": (keys.ACTIVE_AGENTS, lambda k: k.id),
    "task": (keys.TASKS, lambda k: k.id),
    "zone": (keys.ZONES, lambda k: k.id),
    "handoff": (keys.HANDOFFS, lambda k: k.id),
    "checkpoint": (keys.CHECKPOINTS, lambda k: k.scope),
    "lock": (keys.LOCKS, lambda k: k.id),
}
"""Where an unreadable value is planted. Not in memories: the legacy scan cannot tell the owner
of a memory it cannot read, so such a value is reported under another key (as never imported);
chat and DMs are lists, whose corrupt elements have no id either."""


async def plant(url: str, data_dir: Path, *, unreadable: bool = True) -> dict[str, dict[str, int]]:
    """In every domain: one entity deleted from the actors, one from Redis, one changed in the
    actors and (hash domains) one made unreadable in Redis. Returns the planted counts."""
    settings = settings_for(url, data_dir)
    planted: dict[str, dict[str, int]] = {}
    async with (
        open_legacy_side(settings, url) as legacy,
        open_actor_side(settings, ActorEndpoint(data_dir=data_dir)) as actors,
    ):
        exp = Expectations(SystemClock().now_ms())
        # differences can only be planted where both stores hold the domain
        same: dict[str, list[tuple[EntityKey, Entity]]] = {d: [] for d in DOMAINS if not actor_only(d)}
        async for key, left, right in merge(legacy.scan(Selection.of()), actors.scan(Selection.of())):
            if (
                left is not None
                and right is not None
                and classify(key, left, right, exp).kind is Kind.SAME
                and not isinstance(right, Unreadable)
            ):
                same[key.domain].append((key, right))
        conflicted = {c.what for c in legacy.conflicts}  # deleting one would promote another claim
        same["claim"] = [kv for kv in same["claim"] if kv[0].id not in conflicted]
        replica = LegacyReplica(legacy.records, SystemClock())
        raw = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            for domain, pool in same.items():
                if domain == "chat":  # the newest messages: inside the legacy window
                    pool.sort(
                        key=lambda kv: (
                            -(parse_js_date(kv[1].timestamp) or 0) if isinstance(kv[1], GroupMessage) else 0
                        )
                    )
                assert len(pool) >= 4, (domain, len(pool))
                (k1, _), (k2, _), (k3, v3), (k4, _) = pool[:4]
                await actors.write_batch([(k1, None)])
                await replica.write_entity(k2, None)
                changed = dataclasses.replace(v3, **{_FIELD[domain]: "planted difference"})  # type: ignore[arg-type]
                await actors.write_batch([(k3, changed)])
                counts = {"missingInActors": 1, "missingInLegacy": 1, "differs": 1, "unreadable": 0}
                if unreadable and domain in _HASH_FIELD:
                    hash_key, fld = _HASH_FIELD[domain]
                    await raw.hset(hash_key, fld(k4), '{"planted": ')
                    counts["unreadable"] = 1
                planted[domain] = counts
        finally:
            await raw.aclose()
    return planted


VOLATILE = ("runId", "startedAt", "finishedAt", "durationS", "files")
"""Report fields that differ between two checks of the same stores."""


def same_part(doc: dict[str, Any]) -> dict[str, Any]:
    """A report without its run's id, times and files: what two checks of the same stores share."""
    return {k: v for k, v in doc.items() if k not in VOLATILE}


def differences(doc: dict[str, Any]) -> dict[str, dict[str, int]]:
    kinds = ("missingInActors", "missingInLegacy", "differs", "unreadable")
    return {d: {k: c[k] for k in kinds} for d, c in doc["domains"].items()}


@pytest.mark.slow
def test_the_imported_data_set_checks_clean_and_every_planted_difference_is_found(
    imported: tuple[str, Path],
) -> None:
    url, data_dir = imported
    status, clean = check(url, data_dir, "--rounds", "0")
    assert status == 0, clean["samples"]
    assert clean["clean"] is True
    assert clean["totals"]["differences"] == 0
    assert clean["totals"]["compared"] > 2000
    # the generator's quirks and its expired locks are there, and allowed
    assert set(clean["totals"]["expected"]) >= {"expired-locks", "unreadable-legacy", "claim-conflicts"}

    planted = asyncio.run(plant(url, data_dir))
    status, found = check(url, data_dir, "--rounds", "0", "--samples", "100")
    assert status == 1
    assert differences(found) == planted
    assert found["totals"]["expected"] == clean["totals"]["expected"]  # nothing else moved
    assert found["totals"]["compared"] == clean["totals"]["compared"]
    kinds = {(s["domain"], s["kind"]) for s in found["samples"]}
    assert ("task", "differs") in kinds
    sample = next(s for s in found["samples"] if s["domain"] == "task" and s["kind"] == "differs")
    assert sample["fields"] == ["title"]
    assert sample["actors"]["title"] == "planted difference"
    assert sample["legacy"]["title"] != "planted difference"
    unread = next(s for s in found["samples"] if s["domain"] == "agent" and s["kind"] == "unreadable")
    assert unread["legacy"]["raw"] == '{"planted": '
    assert unread["actors"] is not None


@pytest.mark.slow
def test_repair_dry_run_changes_nothing_and_repair_makes_the_check_clean(
    imported: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, data_dir = imported
    PhaseControl(data_dir, SystemClock(), "write-through").close()  # Redis is authoritative
    planted = asyncio.run(plant(url, data_dir, unreadable=False))
    total = sum(sum(c.values()) for c in planted.values())
    status, dry = check(url, data_dir, "--rounds", "0", "--repair", "--dry-run")
    assert status == 1
    assert dry["repair"]["dryRun"] is True
    assert dry["repair"]["planned"] == total
    out = capsys.readouterr().out
    assert out.count("would create in actors: ") == 10  # the ones deleted from the actors
    assert out.count("would delete from actors: ") == 10  # Redis (authoritative) lost them
    assert out.count("would update in actors: ") == 10
    status, still = check(url, data_dir, "--rounds", "0")
    assert differences(still) == planted  # the dry run wrote nothing

    status, repaired = check(url, data_dir, "--rounds", "0", "--repair")
    assert status == 0, repaired["samples"]
    assert repaired["clean"] is True
    assert repaired["repair"]["written"] == total
    status, again = check(url, data_dir, "--rounds", "0")
    assert (status, again["totals"]["differences"]) == (0, 0)


@pytest.mark.slow
def test_repair_from_the_actors_fills_redis(imported: tuple[str, Path]) -> None:
    url, data_dir = imported
    asyncio.run(plant(url, data_dir, unreadable=False))
    status, repaired = check(url, data_dir, "--rounds", "0", "--repair", "--from", "actors")
    assert (repaired["repair"]["from"], repaired["repair"]["to"]) == ("actors", "legacy")
    # all but the changed chat message: the legacy list keeps a message as it was posted
    assert status == 1
    assert len(repaired["repair"]["skipped"]) == 1
    assert repaired["repair"]["skipped"][0].startswith("chat:")
    assert [(s["domain"], s["kind"]) for s in repaired["samples"]] == [("chat", "differs")]


@pytest.mark.slow
def test_a_sampled_check_finds_planted_differences_at_the_rate(imported: tuple[str, Path]) -> None:
    """Planted in both directions: 200 tasks and 100 DMs (to 100 new agents) only in the actors,
    100 memories and 100 claims only in Redis. --sample 0.3 finds exactly those of them in the
    seeded sample (about 30 %), over several seeds; its report is not full (the guard would
    refuse it) and records its sampling rule."""
    url, data_dir = imported
    tasks = [EntityKey("task", "", f"sampled-{i:04d}") for i in range(200)]
    dms = [EntityKey("dm", f"planted-agent-{i:03d}", f"msg-planted-{i:03d}") for i in range(100)]
    memories = [EntityKey("memory", "agent-planted", f"mem-planted-{i:03d}") for i in range(100)]
    claims = [EntityKey("claim", "", f"src/planted-{i:03d}.py:{i}") for i in range(100)]

    async def create() -> None:
        settings = settings_for(url, data_dir)
        now = iso_from_ms(SystemClock().now_ms())
        async with (
            open_legacy_side(settings, url) as legacy,
            open_actor_side(settings, ActorEndpoint(data_dir=data_dir)) as actors,
        ):
            task = Task("", "sampled", None, "todo", None, "ops", "medium", [], [], now, now)
            items: list[tuple[EntityKey, Entity | None]] = []
            items += [(k, dataclasses.replace(task, id=k.id)) for k in tasks]
            items += [(k, DirectMessage(k.id, "agent-planted", "note", "hi", now)) for k in dms]
            await actors.write_batch(items)
            replica = LegacyReplica(legacy.records, SystemClock())
            for k in memories:
                await replica.write_entity(k, Memory(k.id, "learning", "planted", [], now))
            for k in claims:
                await replica.write_entity(k, Claim(k.id, "agent-planted", "planted", now))

    asyncio.run(create())
    seen = set()
    for seed in (1, 2, 3, 4):
        status, doc = check(url, data_dir, "--rounds", "0", "--sample", "0.3", "--seed", str(seed))
        assert status == 1
        assert doc["scope"]["full"] is False
        assert doc["scope"]["sampleRule"] == SAMPLE_RULE
        in_actors = sum(in_sample(k, 0.3, seed) for k in [*tasks, *dms])
        in_redis = sum(in_sample(k, 0.3, seed) for k in [*memories, *claims])
        assert doc["totals"]["missingInLegacy"] == in_actors
        assert doc["totals"]["missingInActors"] == in_redis
        assert doc["totals"]["differences"] == in_actors + in_redis
        assert doc["domains"]["dm"]["missingInLegacy"] == sum(in_sample(k, 0.3, seed) for k in dms)
        assert doc["domains"]["claim"]["missingInActors"] == sum(in_sample(k, 0.3, seed) for k in claims)
        assert 35 <= sum(in_sample(k, 0.3, seed) for k in tasks) <= 85
        assert 0.15 * 500 <= in_actors + in_redis <= 0.45 * 500
        seen.add((in_actors, in_redis))
    assert len(seen) > 1  # another seed, other keys


def unreadable_legacy(doc: dict[str, Any]) -> dict[str, int]:
    return {d: c["expected"].get("unreadable-legacy", 0) for d, c in doc["domains"].items()}


@pytest.mark.slow
def test_field_names_that_are_not_utf8_are_unreadable_legacy_values_not_a_failed_check(
    imported: tuple[str, Path],
) -> None:
    """Redis holds any bytes as a field name; the actors cannot hold such a name. A full and a
    sampled check report each as an unreadable legacy value (expected: left in Redis, never
    imported), spelled out in the report, and finish (they stopped with exit status 3)."""
    url, data_dir = imported
    before = unreadable_legacy(check(url, data_dir, "--rounds", "0")[1])
    sampled_before = {
        seed: unreadable_legacy(
            check(url, data_dir, "--rounds", "0", "--sample", "0.5", "--seed", str(seed))[1]
        )
        for seed in (1, 2)
    }
    names = asyncio.run(plant_names_not_utf8(url, per_hash=6))

    status, doc = check(url, data_dir, "--rounds", "0", "--samples", "100")
    assert (status, doc["complete"], doc["clean"]) == (0, True, True), doc["incompleteReason"]
    after = unreadable_legacy(doc)
    assert {d: after[d] - before[d] for d in NAMED_BY_FIELD} == dict.fromkeys(NAMED_BY_FIELD, len(names))
    task = next(s for s in doc["expectedSamples"] if s["domain"] == "task" and s["id"].startswith("bad"))
    assert task["id"] == "bad\\xff\\xfe-0:x\\xc3"  # the bytes that are not UTF-8 spelled out
    assert "the field name is not valid UTF-8" in task["legacy"]["unreadable"]
    assert json.loads(Path(doc["files"]["json"]).read_bytes().decode("utf-8")) == doc  # a UTF-8 file

    for seed in (1, 2):
        status, doc = check(url, data_dir, "--rounds", "0", "--sample", "0.5", "--seed", str(seed))
        assert (status, doc["complete"]) == (0, True), doc["incompleteReason"]
        after = unreadable_legacy(doc)
        for domain in ("agent", "task", "zone", "handoff", "lock"):  # keyed by the field name
            # the sample hashes a name as the bytes Redis holds
            chosen = sum(
                in_sample(EntityKey(domain, "", n.decode("utf-8", "surrogateescape")), 0.5, seed)
                for n in names
            )
            assert after[domain] - sampled_before[seed][domain] == chosen, (domain, seed)


@pytest.mark.slow
def test_json_output_is_the_report_alone_and_logs_go_to_stderr(
    imported: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json` prints only the document on stdout (a script or cron job parses it)."""
    url, data_dir = imported
    capsys.readouterr()
    status = main(["check", "--redis-url", url, "--data-dir", str(data_dir), "--json", "--rounds", "0"])
    out, err = capsys.readouterr()
    assert status == 0
    assert json.loads(out)["clean"] is True
    assert "actor_host.started" in err


def test_bad_usage_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["check", "--data-dir", str(tmp_path), "--redis-url", "redis://127.0.0.1:1", "--sample", "2"])
        == 2
    )
    assert "--sample must be in (0, 1]" in capsys.readouterr().err
    assert main(["check", "--data-dir", str(tmp_path), "--redis-url", "redis://x", "--dry-run"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["check", "--domain", "nope"])
    assert e.value.code == 2


def test_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = capsys.readouterr().out
    for line in ("0  clean", "1  differences found", "2  bad usage", "3  a store could not be reached"):
        assert line in out


@pytest.mark.slow
def test_an_unreachable_redis_is_exit_3_with_an_incomplete_report(tmp_path: Path) -> None:
    with RedisServer() as server:
        url = server.url
        asyncio.run(seed_and_import(url, tmp_path))
        server.stop()
        status = main(["check", "--redis-url", url, "--data-dir", str(tmp_path), "--no-progress"])
    assert status == 3
    info = newest_report(tmp_path)
    assert info is not None
    assert (info.complete, info.clean) == (False, False)


@pytest.mark.slow
async def test_a_store_that_disappears_mid_check_leaves_an_incomplete_report(tmp_path: Path) -> None:
    """Redis is killed after the first batch: the check aborts, its report is incomplete and the
    read-switch guard would not accept it; `--resume` later goes on from where it stopped."""
    with RedisServer() as server:
        await seed_and_import(server.url, tmp_path)
        settings = settings_for(server.url, tmp_path)
        async with (
            open_legacy_side(settings, server.url) as legacy,
            open_actor_side(settings, ActorEndpoint(data_dir=tmp_path)) as actors,
        ):
            checker = Checker(legacy, actors, SystemClock(), LegacyExpectations(legacy), data_dir=tmp_path)

            def kill_after_first(walked: int) -> None:
                if walked >= 100 and server.running:
                    server.kill()

            with pytest.raises(CheckAborted) as aborted:
                await checker.run(CheckOptions(rounds=0, batch=100), progress=kill_after_first)
        report = aborted.value.report
        save(report, tmp_path)
    info = newest_report(tmp_path)
    assert info is not None
    assert (info.complete, info.clean, report.complete) == (False, False, False)
    assert report.incomplete_reason
    assert list((tmp_path / "consistency").glob("run-*.state.json"))


@pytest.mark.slow
def test_a_check_on_the_data_directory_fires_no_alarm(tmp_path: Path) -> None:
    """A lock that expired since the import is due for its alarm: the check reports it as an
    expected difference and leaves it in place (only a gateway fires alarms; a check changes
    nothing in the store it checks)."""
    with RedisServer() as server:
        asyncio.run(seed_and_import(server.url, tmp_path))

        async def soon_expiring() -> None:
            settings = settings_for(server.url, tmp_path)
            now = SystemClock().now_ms()
            lock = Lock("src/soon.py", "file-lock", "agent-x", "planted", iso_from_ms(now), "", 0)
            lock = dataclasses.replace(lock, expires_at=iso_from_ms(now + 300), expires_ms=now + 300)
            async with open_actor_side(settings, ActorEndpoint(data_dir=tmp_path)) as actors:
                await actors.write_batch([(EntityKey("lock", "", lock.resource_path), lock)])

        asyncio.run(soon_expiring())
        time.sleep(0.5)
        status, doc = check(server.url, tmp_path, "--rounds", "0", "--domain", "lock")
    assert status == 0
    assert doc["domains"]["lock"]["missingInLegacy"] == 0
    rows = []
    for path in shard_files(tmp_path):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows += conn.execute(
                "SELECT actor FROM lock__current_lock WHERE actor = ?", ("src/soon.py",)
            ).fetchall()
            rows += conn.execute("SELECT name FROM _alarms WHERE name = ?", ("src/soon.py",)).fetchall()
        finally:
            conn.close()
    assert rows == [("src/soon.py",), ("src/soon.py",)]
