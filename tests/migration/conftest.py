"""Fixtures of the migration tool's tests: a seeded legacy Redis, the CLI run in-process."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import pytest
import redis
import redis.asyncio

from gateway.cli import main
from gateway.legacy.generator import SeedSummary, generate


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def migrate(restore_logging: None, clean_env: None) -> Callable[..., Result]:
    """Run `agent-coord migrate ...` in this process; its exit status, stdout and stderr."""

    def run(*argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(["migrate", *argv])
            except SystemExit as e:  # argparse
                code = int(e.code or 0)
        return Result(code, out.getvalue(), err.getvalue())

    return run


async def fill_legacy_async(redis_url: str, *, scale: int, seed: int) -> SeedSummary:
    """Empty the Redis at `redis_url` and fill it with the generator's data set (corrupt values
    and claim conflicts included)."""
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        return await generate(r, scale=scale, seed=seed, flush=True)
    finally:
        await r.aclose()


def fill_legacy(redis_url: str, *, scale: int, seed: int) -> SeedSummary:
    """`fill_legacy_async` for a test outside an event loop."""
    return asyncio.run(fill_legacy_async(redis_url, scale=scale, seed=seed))


@pytest.fixture
async def seeded(redis_url: str) -> SeedSummary:
    return await fill_legacy_async(redis_url, scale=40, seed=7)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    r.close()
