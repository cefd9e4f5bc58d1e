"""Fixtures of the bulk layer's tests: a seeded legacy Redis, settings for a data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from gateway.bulk.legacy_side import LegacySource
from gateway.bulk.sides import open_legacy_side
from gateway.legacy.generator import SeedSummary, generate
from gateway.settings import LegacySettings, Settings, StorageSettings


def settings_for(data_dir: Path, redis_url: str | None = None) -> Settings:
    return Settings(
        storage=StorageSettings(data_dir=data_dir),
        legacy=LegacySettings(redis_url=redis_url, timeout_s=2.0, retries=1),
    )


@pytest.fixture
async def seeded(redis_url: str) -> SeedSummary:
    """The legacy Redis filled with a small realistic data set (corrupt values included)."""
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        return await generate(r, scale=40, seed=7, flush=True)
    finally:
        await r.aclose()


@pytest.fixture
async def legacy(redis_url: str, tmp_path: Path, seeded: SeedSummary) -> AsyncIterator[LegacySource]:
    async with open_legacy_side(settings_for(tmp_path / "data", redis_url), redis_url) as side:
        yield side
