"""The read side's fast paths: the sharded actors' rows read from the shard tables without
activating any actor, and sampled scans that choose their keys before reading values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.bulk.actor_side import ActorSide
from gateway.bulk.admin_service import selection_from_query
from gateway.bulk.items import SAMPLE_RULE, Item, Selection, cursor_of
from gateway.bulk.legacy_side import Deferred, LegacySource
from gateway.bulk.sides import ActorEndpoint, open_actor_side
from gateway.clock import SystemClock
from gateway.domain.entities import EntityKey, Unreadable
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.model import Lock
from tests.bulk.conftest import settings_for
from tests.bulk.test_bulk_read import fill_actors, plain, scan_all

pytestmark = pytest.mark.integration

SHARDED = ("checkpoint", "dm", "memory", "lock")


def live_locks(n: int) -> list[tuple[EntityKey, Lock]]:
    now = SystemClock().now_ms()
    out = []
    for i in range(n):
        lock = Lock(f"src/f{i:02d}.py", "file-lock", f"agent-{i % 3}", "r", iso_from_ms(now), "", 0)
        lock = dataclasses.replace(lock, expires_at=iso_from_ms(now + 3_600_000), expires_ms=now + 3_600_000)
        out.append((EntityKey("lock", "", lock.resource_path), lock))
    return out


async def test_sharded_domains_are_read_without_activating_actors_and_resume_anywhere(
    legacy: LegacySource, tmp_path: Path
) -> None:
    """Across 8 shards, the agents' checkpoints, DMs and memories and the locks come in scan
    order with every field (`extra` included), resume after any of their keys, filter by agent,
    and no actor is activated."""
    data_dir = tmp_path / "actors"
    written = await fill_actors(data_dir, await scan_all(legacy))
    locks = live_locks(12)
    async with open_actor_side(settings_for(data_dir), ActorEndpoint(data_dir=data_dir)) as side:
        assert isinstance(side, ActorSide)
        await side.write_batch(locks)
    expected = {k: v for k, v in [*written, *locks] if k.domain in SHARDED}
    async with open_actor_side(settings_for(data_dir), ActorEndpoint(data_dir=data_dir)) as side:
        assert isinstance(side, ActorSide)
        host = side.replica.host
        items = await scan_all(side, Selection.of(SHARDED), batch=7)
        assert [k for k, _ in items] == sorted(
            expected, key=lambda k: (SHARDED.index(k.domain), k.scope, k.id)
        )
        bad = [(k, v, expected[k]) for k, v in items if plain(v) != plain(expected[k])]
        assert not bad, bad[:2]
        for cut in range(0, len(items) - 1, max(1, len(items) // 17)):
            tail = await scan_all(side, Selection.of(SHARDED), start_after=cursor_of(items[cut][0]), batch=5)
            assert [k for k, _ in tail] == [k for k, _ in items[cut + 1 :]], cut
        agents = sorted({k.scope for k in expected if k.scope})[1:4:2]
        mine = await scan_all(side, Selection.of(SHARDED, agents))
        assert [k for k, _ in mine] == [k for k, _ in items if k.scope in agents]
        assert host.activations == 0


async def test_a_sampled_scan_holds_the_sample_of_the_full_scan(legacy: LegacySource, tmp_path: Path) -> None:
    """On both stores, a sampled scan yields every key of the full scan that the sample keeps,
    with the same value, and the hash and table domains map no value outside the sample."""
    data_dir = tmp_path / "actors"
    await fill_actors(data_dir, await scan_all(legacy))
    async with open_actor_side(settings_for(data_dir), ActorEndpoint(data_dir=data_dir)) as actors:
        for side in (legacy, actors):
            full = await scan_all(side)
            dm_extras = 0  # DMs (sampled by inbox) with the fields the actors keep in `_extra`
            for seed in (1, 3):
                sel = dataclasses.replace(Selection.of(), sample=0.3, seed=seed)
                part: list[Item] = await scan_all(side, sel, batch=13)
                kept = [(k, v) for k, v in full if sel.in_sample(k)]
                assert [(k, v) for k, v in part if sel.in_sample(k)] == kept
                outside = [k for k, v in part if not sel.in_sample(k) and not isinstance(v, Unreadable)]
                assert all(k.domain == "chat" or (side is actors and k.domain != "dm") for k in outside), (
                    outside
                )
                assert 0.15 * len(full) < len(kept) < 0.45 * len(full)
                dm_extras += sum(1 for k, v in kept if k.domain == "dm" and getattr(v, "extra", None))
                # and filtered by agent: the agents' sampled memories with their extra fields too
                extras = sorted(
                    {
                        k.scope
                        for k, v in kept
                        if k.domain == "memory" and k.scope and getattr(v, "extra", None)
                    }
                )
                agents = frozenset(extras[:3])
                mine = dataclasses.replace(sel, agents=agents)
                wanted = [(k, v) for k, v in kept if mine.wants_key(k)]
                assert [
                    (k, v) for k, v in await scan_all(side, mine, batch=13) if mine.wants_key(k)
                ] == wanted
                assert any(k.domain == "memory" and getattr(v, "extra", None) for k, v in wanted), (
                    "memories with extras"
                )
            assert dm_extras > 100, dm_extras


@pytest.mark.parametrize(
    "query", [{"sample": "0"}, {"sample": "1.5"}, {"sample": "x"}, {"sample": "0.5", "seed": "z"}]
)
def test_the_admin_api_refuses_a_bad_sample(query: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="sample"):
        selection_from_query(query)


def test_the_admin_api_takes_a_sample() -> None:
    sel = selection_from_query({"domain": "task", "sample": "0.25", "seed": "9"})
    assert (sel.domains, sel.sample, sel.seed) == (("task",), 0.25, 9)


def test_the_admin_api_refuses_another_sampling_rule() -> None:
    """A checker of another version would sample other keys: its scan is refused, not mixed."""
    sel = selection_from_query({"sample": "0.5", "seed": "1", "sampleRule": str(SAMPLE_RULE)})
    assert sel.sample == 0.5
    with pytest.raises(ValueError, match="sampleRule"):
        selection_from_query({"sample": "0.5", "seed": "1", "sampleRule": "1"})


async def test_small_hashes_are_listed_whole_with_the_same_keys(
    legacy: LegacySource, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hash of at most `hkeys_max` fields (`legacy.hkeys_max`, `WHOLE_MAX` by default) is
    listed with one HKEYS (no value crosses the wire to be dropped), a larger one in HSCAN steps:
    full and sampled scans yield the same items either way."""
    import redis.asyncio  # noqa: PLC0415

    r = redis.asyncio.Redis.from_url(redis_url)

    async def calls(command: str) -> int:
        stats = await r.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    selections = [Selection.of()] + [
        dataclasses.replace(Selection.of(), sample=0.3, seed=seed) for seed in (1, 2)
    ]
    try:
        before = (await calls("hkeys"), await calls("hscan"))
        whole = [await scan_all(legacy, sel, batch=13) for sel in selections]
        after = (await calls("hkeys"), await calls("hscan"))
        assert after[0] - before[0] >= 6 * len(selections)  # every keyed hash of the small set
        monkeypatch.setattr(legacy, "hkeys_max", 0)
        stepped = [await scan_all(legacy, sel, batch=13) for sel in selections]
        assert await calls("hkeys") == after[0]
        assert await calls("hscan") > after[1]
    finally:
        await r.aclose()
    assert stepped == whole
    assert all(whole)


async def test_a_sample_keeps_the_values_its_listing_carried(
    legacy: LegacySource, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sampled scan of hashes listed in HSCAN steps takes the chosen values from the steps (no
    HMGET), and yields the same items as one that reads them again (`KEEP_MAX` exceeded)."""
    import redis.asyncio  # noqa: PLC0415

    from gateway.bulk import legacy_side  # noqa: PLC0415

    r = redis.asyncio.Redis.from_url(redis_url)

    async def hmgets() -> int:
        stats = await r.info("commandstats")
        return int(stats.get("cmdstat_hmget", {}).get("calls", 0))

    monkeypatch.setattr(legacy, "hkeys_max", 0)  # every hash in HSCAN steps
    selections = [
        dataclasses.replace(Selection.of(), sample=rate, seed=seed) for rate, seed in ((0.3, 1), (0.7, 2))
    ]
    legacy.defer = True
    try:
        before = await hmgets()
        kept = [await scan_all(legacy, sel, batch=13) for sel in selections]
        between = await hmgets()
        monkeypatch.setattr(legacy_side, "KEEP_MAX", 0)
        read_again = [await scan_all(legacy, sel, batch=13) for sel in selections]
        after = await hmgets()
    finally:
        await r.aclose()
    assert [[(k, _raw(v)) for k, v in items] for items in kept] == [
        [(k, _raw(v)) for k, v in items] for items in read_again
    ]
    assert all(kept)
    assert between - before < after - between  # only the DMs' arrays are read by HMGET


def _raw(value: object) -> object:
    """A deferred value as what it holds (it has no equality of its own)."""
    if isinstance(value, Deferred):
        return (value.raw, value.hash_key, value.field, value.entity())
    return value
