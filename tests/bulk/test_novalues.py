"""HSCAN NOVALUES (Redis 7.4 and later, Valkey 8 and later): a legacy hash listed in steps sends
its names alone where the server takes it, and the scans yield what they yield without it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio

from gateway.bulk.items import Selection
from gateway.bulk.legacy_side import LegacySource
from gateway.bulk.sides import open_legacy_side
from gateway.legacy.generator import generate
from gateway.testing import RedisServer
from tests.bulk.conftest import settings_for
from tests.bulk.test_bulk_read import scan_all
from tests.valkey import valkey_binary

pytestmark = pytest.mark.integration

SELECTIONS = [Selection.of(), *(dataclasses.replace(Selection.of(), sample=0.3, seed=s) for s in (1, 2))]


@pytest.fixture(scope="module")
def valkey_url() -> Iterator[str]:
    binary, where = valkey_binary()
    if binary is None:
        pytest.skip(f"no Valkey 8 server for the HSCAN NOVALUES tests: {where}")
    with RedisServer(binary=binary) as server:
        yield server.url


@pytest.fixture
async def on_valkey(valkey_url: str, tmp_path: Path) -> AsyncIterator[LegacySource]:
    r = redis.asyncio.Redis.from_url(valkey_url, decode_responses=True)
    try:
        await generate(r, scale=40, seed=7, flush=True)
    finally:
        await r.aclose()
    async with open_legacy_side(settings_for(tmp_path / "data", valkey_url), valkey_url) as side:
        side.hkeys_max = 0  # every keyed hash listed in steps
        yield side


async def sent_bytes(url: str) -> int:
    r = redis.asyncio.Redis.from_url(url)
    try:
        return int((await r.info("stats"))["total_net_output_bytes"])
    finally:
        await r.aclose()


async def test_a_server_with_novalues_lists_names_alone_and_the_scans_are_the_same(
    on_valkey: LegacySource, valkey_url: str
) -> None:
    before = await sent_bytes(valkey_url)
    names_only = [await scan_all(on_valkey, sel, batch=13) for sel in SELECTIONS[1:]]
    between = await sent_bytes(valkey_url)
    assert on_valkey.novalues is True
    on_valkey.novalues = False  # as on a server without it: plain HSCAN steps, values and all
    with_values = [await scan_all(on_valkey, sel, batch=13) for sel in SELECTIONS[1:]]
    after = await sent_bytes(valkey_url)
    assert names_only == with_values
    assert all(names_only)
    # the chosen values are read by HMGET instead: still less than every value of every step
    assert between - before < 0.8 * (after - between), (between - before, after - between)

    on_valkey.novalues = None
    full_names_only = await scan_all(on_valkey, SELECTIONS[0], batch=13)
    assert on_valkey.novalues is True
    on_valkey.novalues = False  # the keys-only script's steps
    assert await scan_all(on_valkey, SELECTIONS[0], batch=13) == full_names_only


async def test_a_server_without_novalues_is_asked_once_and_listed_as_before(
    legacy: LegacySource, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = redis.asyncio.Redis.from_url(redis_url)
    version = (await r.info("server"))["redis_version"]
    await r.aclose()
    if tuple(int(x) for x in str(version).split(".")[:2]) >= (7, 4):
        pytest.skip(f"this redis-server ({version}) has HSCAN NOVALUES")
    monkeypatch.setattr(legacy, "hkeys_max", 0)
    stepped = [await scan_all(legacy, sel, batch=13) for sel in SELECTIONS]
    assert legacy.novalues is False
    assert all(stepped)


async def test_a_hash_gone_before_the_question_decides_nothing(
    legacy: LegacySource, on_valkey: LegacySource
) -> None:
    """Redis 7.0 answers HSCAN of a missing key with an empty step before it reads NOVALUES: such
    an answer lists that hash without NOVALUES and leaves the question to the next hash."""
    for source, takes_it in ((legacy, False), (on_valkey, True)):
        assert await source._has_novalues("agent-coord:no-such-hash") is False
        assert source.novalues is None
        assert await source._has_novalues("agent-coord:tasks") is takes_it
        assert source.novalues is takes_it
