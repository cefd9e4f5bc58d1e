"""`agent-coord migrate`: legacy Redis to the actors and back, through a file or directly, on a
real redis-server and real data directories; what arrives is checked field by field."""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from gateway.clock import SystemClock
from gateway.legacy import keys
from gateway.legacy.generator import SeedSummary
from gateway.testing import RedisServer
from gateway.testing.snapshots import actor_snapshot, legacy_snapshot
from tests.migration.conftest import Result
from tests.not_utf8 import NAMED_BY_FIELD, plant_names_not_utf8

pytestmark = pytest.mark.integration

Migrate = Callable[..., Result]


def planted(seeded: SeedSummary) -> int:
    return sum(1 for k, _ in seeded.corrupt if k != keys.AGENT_PRESENCE)  # presence is no entity


def test_copy_carries_every_entity_and_a_second_run_writes_nothing(
    migrate: Migrate, redis_url: str, seeded: SeedSummary, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    summary = tmp_path / "summary.json"
    common = ["--redis-url", redis_url, "--data-dir", str(data), "--no-progress"]
    first = migrate("copy", "--from", "legacy", "--to", "actors", *common, "--summary", str(summary))
    assert first.code == 1, first.err  # done, with the planted corrupt values quarantined
    now = SystemClock().now_ms()
    assert actor_snapshot(data, now) == legacy_snapshot(sync_redis, now)
    report = json.loads(summary.read_text())
    assert report["totals"]["quarantined"] == planted(seeded)
    # every readable entity written, but the expired locks: an expired lock is no lock
    expired = report["domains"]["lock"]["unchanged"]
    assert expired == report["domains"]["lock"]["read"] - 1  # the generated locks all expired by now
    assert report["totals"]["written"] == report["totals"]["read"] - planted(seeded) - expired
    assert report["domains"]["task"]["written"] == report["domains"]["task"]["read"] - 1
    quarantined = (data / "migrate" / "quarantine.ndjson").read_text().splitlines()
    assert len(quarantined) == planted(seeded)
    assert all(json.loads(x)["raw"] and json.loads(x)["reason"] for x in quarantined)
    assert "known conflicts" in first.out

    again = migrate("copy", "--from", "legacy", "--to", "actors", *common, "--summary", str(summary))
    assert again.code == 1
    assert "nothing to write" in again.out, again.out
    report = json.loads(summary.read_text())
    assert report["totals"]["written"] == 0
    assert report["totals"]["unchanged"] == report["totals"]["read"] - planted(seeded)
    assert not (data / "migrate" / "checkpoint.json").exists()


def test_export_and_import_through_a_gzip_file(
    migrate: Migrate, redis_url: str, seeded: SeedSummary, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    out = tmp_path / "export.ndjson.gz"
    state = ["--state-dir", str(tmp_path / "state"), "--no-progress"]
    exported = migrate("export", "--from", "legacy", "--out", str(out), "--redis-url", redis_url, *state)
    assert exported.code == 1, exported.err
    lines = gzip.decompress(out.read_bytes()).splitlines()
    header, trailer = orjson.loads(lines[0]), orjson.loads(lines[-1])
    assert header["format"] == "agent-coord-entities"
    assert header["version"] == 1
    assert header["source"] == "legacy"
    assert header["counts"]["task"] > 0
    assert trailer["end"] is True
    assert trailer["entities"] == len(lines) - 2
    assert all(orjson.loads(x)["key"][0] for x in lines[1:-1])

    data = tmp_path / "data"
    dry = migrate("import", "--to", "actors", "--in", str(out), "--data-dir", str(data), "--dry-run", *state)
    assert dry.code == 0, dry.err
    assert "dry run: nothing was written" in dry.out
    now = SystemClock().now_ms()
    assert all(not v for v in actor_snapshot(data, now).values())

    imported = migrate("import", "--to", "actors", "--in", str(out), "--data-dir", str(data), *state)
    assert imported.code == 0, imported.err
    assert actor_snapshot(data, now) == legacy_snapshot(sync_redis, now)


def test_actors_back_to_a_fresh_redis_give_the_same_data(
    migrate: Migrate, redis_url: str, seeded: SeedSummary, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--no-progress"]
    assert migrate("copy", "--from", "legacy", "--to", "actors", "--redis-url", redis_url, *common).code == 1
    with RedisServer() as fresh:
        back = migrate("copy", "--from", "actors", "--to", "legacy", "--redis-url", fresh.url, *common)
        assert back.code == 0, back.err
        assert "guard on leaving cutover accepts the move" in back.out
        with sqlite3.connect(data / "control.sqlite") as db:  # what the guard reads
            assert db.execute("SELECT COUNT(*) FROM reverse_sync").fetchone() == (1,)
        r2 = redis.Redis.from_url(fresh.url, decode_responses=True)
        try:
            now = SystemClock().now_ms()
            back_snap, source_snap = legacy_snapshot(r2, now), legacy_snapshot(sync_redis, now)
            # the documented exception (docs/mapping.md): the chat list keeps the newest 1,000
            newest = sorted(source_snap["chat"], key=lambda i: source_snap["chat"][i]["timestamp"])
            trimmed = newest[: len(newest) - keys.CHAT_MAX]
            assert sorted(set(source_snap["chat"]) - set(back_snap["chat"])) == sorted(trimmed)
            for i in trimmed:
                del source_snap["chat"][i]
            assert back_snap == source_snap
            again = migrate("copy", "--from", "actors", "--to", "legacy", "--redis-url", fresh.url, *common)
            assert again.code == 0
            assert "nothing to write" in again.out
            assert "actor-only domains, not carried to Redis: soul, trace" in again.out
        finally:
            r2.close()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) * 2 // 3], "cut short"),
        (
            lambda b: b.replace(b"\n", b"\nthis is not json\n", 3).replace(b"\nthis is not json\n", b"\n", 2),
            "not JSON",
        ),
        (lambda b: b.replace(b'"version":1', b'"version":99', 1), "newer than this tool reads"),
        (lambda b: b.replace(b'"key":["task"', b'"key":["tasks"', 1), "unknown domain 'tasks'"),
        (lambda b: b.replace(b'"read":false', b'"read":"no"', 1), "'read' has the wrong type"),
    ],
    ids=["truncated", "garbage-line", "newer-version", "unknown-domain", "wrong-type"],
)
@pytest.mark.usefixtures("seeded")
def test_a_bad_file_is_refused_before_anything_is_written(
    migrate: Migrate, redis_url: str, tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    good = tmp_path / "export.ndjson"
    state = ["--state-dir", str(tmp_path / "state"), "--no-progress"]
    assert (
        migrate("export", "--from", "legacy", "--out", str(good), "--redis-url", redis_url, *state).code == 1
    )
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(damage(good.read_bytes()))
    data = tmp_path / "data"
    result = migrate("import", "--to", "actors", "--in", str(bad), "--data-dir", str(data), *state)
    assert result.code == 2
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (data / "host.sqlite").exists()  # no actor was created, nothing written


def test_a_truncated_gzip_file_is_refused(
    migrate: Migrate, redis_url: str, seeded: SeedSummary, tmp_path: Path
) -> None:
    good = tmp_path / "export.ndjson.gz"
    state = ["--state-dir", str(tmp_path / "state"), "--no-progress"]
    assert (
        migrate("export", "--from", "legacy", "--out", str(good), "--redis-url", redis_url, *state).code == 1
    )
    bad = tmp_path / "bad.ndjson.gz"
    bad.write_bytes(good.read_bytes()[:-40])
    result = migrate("import", "--to", "actors", "--in", str(bad), "--data-dir", str(tmp_path / "d"), *state)
    assert result.code == 2
    assert "cut short" in result.err


def test_usage_errors_and_an_unreachable_redis(migrate: Migrate, tmp_path: Path) -> None:
    wrong = migrate("copy", "--from", "legacy", "--to", "actors", "--domain", "tasks")
    assert wrong.code == 2
    assert "invalid choice: 'tasks'" in wrong.err
    same = migrate("copy", "--from", "legacy", "--to", "legacy", "--redis-url", "redis://127.0.0.1:1/0")
    assert same.code == 2
    assert "different stores" in same.err
    gone = migrate(
        "copy", "--from", "legacy", "--to", "actors", "--redis-url", "redis://127.0.0.1:1/0",
        "--data-dir", str(tmp_path / "d"), "--no-progress",
    )  # fmt: skip
    assert gone.code == 3
    assert "cannot be reached" in gone.err


def test_field_names_that_are_not_utf8_are_quarantined(
    migrate: Migrate, redis_url: str, seeded: SeedSummary, tmp_path: Path
) -> None:
    """Redis takes any bytes as a field name; no actor can hold one that is not UTF-8. The copy
    quarantines each such value with its name as Redis holds it, and carries everything else
    (it stopped on the first with a TypeError)."""
    names = asyncio.run(plant_names_not_utf8(redis_url, per_hash=3))
    data = tmp_path / "data"
    summary = tmp_path / "summary.json"
    common = ["--redis-url", redis_url, "--data-dir", str(data), "--no-progress"]
    first = migrate("copy", "--from", "legacy", "--to", "actors", *common, "--summary", str(summary))
    assert first.code == 1, first.err  # done, with the unreadable values quarantined
    report = json.loads(summary.read_text())
    planted_names = len(names) * len(NAMED_BY_FIELD)
    assert report["totals"]["quarantined"] == planted(seeded) + planted_names
    lines = (data / "migrate" / "quarantine.ndjson").read_bytes().splitlines()
    records = [json.loads(x) for x in lines]
    assert len(records) == planted(seeded) + planted_names
    not_utf8 = [r for r in records if "the field name is not valid UTF-8" in r["reason"]]
    assert len(not_utf8) == planted_names
    # the name reads back as the bytes Redis holds (claims are keyed by their `what`)
    held = {r["key"][2].encode("utf-8", "surrogateescape") for r in not_utf8 if r["key"][0] == "task"}
    assert held == set(names)
