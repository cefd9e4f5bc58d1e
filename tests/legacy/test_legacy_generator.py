"""gateway.legacy.generator and `agent-coord dev seed-legacy`: a realistic, reproducible legacy data set."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from gateway.legacy import keys
from gateway.legacy.codec import Corrupt, decode
from gateway.legacy.generator import AGENT_SHAPES, SeedSummary, generate, plan
from gateway.legacy.seed_cli import SCALE_100_VALUES
from gateway.legacy.seed_cli import main as seed_main

pytestmark = pytest.mark.integration


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def seeded(r: redis.asyncio.Redis) -> SeedSummary:
    return await generate(r, scale=40, seed=7, flush=True)


async def dump(r: redis.asyncio.Redis) -> dict[str, object]:
    out: dict[str, object] = {}
    async for key in r.scan_iter(count=500):
        kind = await r.type(key)
        if kind == "hash":
            out[key] = await r.hgetall(key)
        elif kind == "list":
            out[key] = await r.lrange(key, 0, -1)
        elif kind == "set":
            out[key] = sorted(await r.smembers(key))
        else:
            out[key] = await r.get(key)
    return out


async def test_every_truth_family_is_present(r: redis.asyncio.Redis, seeded: SeedSummary) -> None:
    """Every key family of sections 1-8 holds data, plus the tag index sets."""
    for key in keys.TRUTH:
        assert await r.exists(key), key
    assert [k async for k in r.scan_iter(match=keys.MEMORY_TAG_PREFIX + "*")]


async def test_every_agent_writer_shape_is_present(r: redis.asyncio.Redis, seeded: SeedSummary) -> None:
    """The seven writer shapes of §1.1 are all there, recognisable by their fields."""
    assert set(seeded.agent_shapes) == set(AGENT_SHAPES)
    values = [decode(v, key="a") for v in (await r.hgetall(keys.ACTIVE_AGENTS)).values()]
    agents = [v for v in values if isinstance(v, dict)]
    seven_field = ["id", "name", "status", "currentTask", "workingOn", "role", "lastSeen"]
    assert any(list(a) == seven_field for a in agents)
    assert any("roles" in a and "createdAt" in a for a in agents)  # status merge
    assert any("metrics" in a and "clusterProficiency" in a for a in agents)  # rich PATCH default
    assert any(list(a) == ["id", "name", "lastSeen", "status"] for a in agents)  # sync
    assert any(a.get("status") == "queued" and "lastSeen" not in a for a in agents)  # spawn
    assert any(a.get("status") == "restored" and "restoredAt" in a for a in agents)


async def test_chat_is_past_the_1000_trim_with_image_only_messages(
    r: redis.asyncio.Redis, seeded: SeedSummary
) -> None:
    """The chat list is over 1000 long, newest first, and has image-only messages without `message`."""
    raw = await r.lrange(keys.MESSAGES, 0, -1)
    assert len(raw) > keys.CHAT_MAX
    msgs = [m for m in (decode(x, key="c") for x in raw) if isinstance(m, dict)]
    stamps = [m["timestamp"] for m in msgs]
    assert stamps == sorted(stamps, reverse=True)
    assert msgs[0]["authorType"] == "system"  # posted after the last trim
    assert any("message" not in m and "imageData" in m for m in msgs)


async def test_dm_conversations_reach_the_500_cap_with_unread_and_attachments(
    r: redis.asyncio.Redis, seeded: SeedSummary
) -> None:
    """One conversation holds exactly 500 messages; read and unread markers and attachments exist."""
    arrays = [json.loads(v) for f, v in (await r.hgetall(keys.DM_MESSAGES)).items() if "corrupt" not in f]
    assert max(len(a) for a in arrays) == keys.DM_MAX
    flat = [m for a in arrays for m in a]
    assert any(m["read"] and "readAt" in m for m in flat)
    assert any(not m["read"] for m in flat)
    assert any("attachments" in m for m in flat)


async def test_claims_locks_tasks_and_handoffs_cover_their_cases(
    r: redis.asyncio.Redis, seeded: SeedSummary
) -> None:
    """Several claims per `what`, expired and live locks, orchestration subtasks, every handoff status."""
    claims = [json.loads(v) for f, v in (await r.hgetall(keys.CLAIMS)).items() if "corrupt" not in f]
    whats = [c["what"] for c in claims]
    assert len(whats) > len(set(whats))
    locks = [json.loads(v) for f, v in (await r.hgetall(keys.LOCKS)).items() if "corrupt" not in f]
    base = "2025-12-03T20:00:00.000Z"
    assert any(lk["expiresAt"] < base for lk in locks)
    assert any(lk["expiresAt"] > base for lk in locks)
    tasks = [
        t for t in (decode(v, key="t") for v in (await r.hgetall(keys.TASKS)).values()) if isinstance(t, dict)
    ]
    assert any(t["id"].startswith("orch-") and "assignee" not in t for t in tasks)
    assert {"", None} <= {t.get("assignee", "absent") for t in tasks}
    assert {"todo", "in-progress", "review", "done", "blocked"} <= {t["status"] for t in tasks}
    assert {"low", "medium", "high", "critical"} <= {t["priority"] for t in tasks}
    handoffs = [json.loads(v) for f, v in (await r.hgetall(keys.HANDOFFS)).items() if "corrupt" not in f]
    assert {"submitted", "claimed", "in_review", "integrated", "rejected"} <= {h["status"] for h in handoffs}
    assert any("context" not in h for h in handoffs)
    assert any(h["toAgent"] == "any" for h in handoffs)


async def test_quirks_are_present(r: redis.asyncio.Redis, seeded: SeedSummary) -> None:
    """Corrupt values, double-encoded values, stale keys and the phantom lock table are all there."""
    assert len(seeded.corrupt) >= 5
    for key, field in seeded.corrupt:
        if field is not None and key != keys.AGENT_PRESENCE:
            raw = await r.hget(key, field)
            assert raw is not None
            assert isinstance(decode(raw, key=key, field=field), Corrupt)
    for key, field in seeded.double_encoded:
        raw = await r.hget(key, field)
        assert raw is not None
        assert isinstance(json.loads(raw), str)
        assert isinstance(decode(raw, key=key), dict)
    for key in (keys.STALE_AGENTS, keys.STALE_GROUP_CHAT, keys.STALE_RESOURCE_LOCKS):
        assert await r.exists(key)
    cps = [json.loads(v) for f, v in (await r.hgetall(keys.CHECKPOINTS)).items() if "corrupt" not in f]
    assert any(isinstance(cp.get("recentContext"), str) and cp["recentContext"].startswith("{") for cp in cps)


async def test_same_seed_and_scale_give_the_same_data(r: redis.asyncio.Redis) -> None:
    """Reproducible: two runs with one seed write identical keys and values; another seed differs."""
    await generate(r, scale=30, seed=11, flush=True)
    first = await dump(r)
    await generate(r, scale=30, seed=11, flush=True)
    assert await dump(r) == first
    await generate(r, scale=30, seed=12, flush=True)
    assert await dump(r) != first


async def test_scale_grows_the_families(r: redis.asyncio.Redis) -> None:
    """A larger scale writes more tasks and memories; the chat stays near its cap."""
    small = await generate(r, scale=30, seed=1, flush=True)
    large = await generate(r, scale=3000, seed=1, flush=True, batch=100)
    assert large.families[keys.TASKS] > 10 * small.families[keys.TASKS]
    assert await r.hlen(keys.TASKS) == large.families[keys.TASKS]
    assert keys.CHAT_MAX < await r.llen(keys.MESSAGES) < keys.CHAT_MAX + 60


def test_cli_seeds_and_prints_a_summary(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`dev seed-legacy` writes the data set and prints the per-family summary as JSON."""
    code = seed_main(["dev", "seed-legacy", "--redis-url", redis_url, "--scale", "20", "--seed", "3"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["families"][keys.MESSAGES] > keys.CHAT_MAX
    assert summary["seed"] == 3


def test_cli_refuses_a_non_empty_database_without_flush(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second run without --flush or --append is refused (exit 1), protecting real data."""
    assert seed_main(["dev", "seed-legacy", "--redis-url", redis_url, "--scale", "5"]) == 0
    capsys.readouterr()
    assert seed_main(["dev", "seed-legacy", "--redis-url", redis_url, "--scale", "5"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert seed_main(["dev", "seed-legacy", "--redis-url", redis_url, "--scale", "5", "--flush"]) == 0


def test_help_names_what_scale_100_writes() -> None:
    """`dev seed-legacy --help` says how many values `--scale 100` writes, as the generator plans."""
    assert plan(100).total == SCALE_100_VALUES


def test_the_command_line_does_not_import_the_generator_or_redis() -> None:
    """Building `agent-coord`'s parser (done by every command) imports neither the generator nor
    redis (about 0.2 s); `dev seed-legacy` imports them when it runs."""
    code = (
        "import sys; from gateway.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('gateway.legacy.generator', 'redis') if m in sys.modules))"
    )
    out = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
