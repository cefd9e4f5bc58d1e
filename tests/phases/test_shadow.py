"""Shadow reads: compared in the background, counted per domain, never served."""

from __future__ import annotations

import random
from typing import Any

from gateway.clock import FakeClock
from gateway.phases.shadow import MAX_SAMPLES, ShadowReader, first_difference


def test_first_difference_ignores_key_order_but_not_values() -> None:
    """JSON is compared as data: key order does not matter, values and lengths do."""
    assert first_difference({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}) is None
    assert first_difference({"a": 1}, {"a": 1.5}) == "$.a"
    assert first_difference({"a": [1]}, {"a": [1, 2]}) == "$.a.length"
    assert first_difference({"a": 1}, {"a": 1, "b": None}) == "$.b"
    assert first_difference({"a": 1}, {"a": True}) == "$.a"


async def test_mismatches_are_counted_per_domain_with_samples() -> None:
    """A differing shadow read counts as a mismatch with both values kept."""
    shadow = ShadowReader(FakeClock(), 1.0)

    async def same() -> Any:
        return {"tasks": [1]}

    async def other() -> Any:
        return {"tasks": [2]}

    shadow.submit("task", "list", {"tasks": [1]}, same)
    shadow.submit("task", "list", {"tasks": [1]}, other)
    await shadow.drain()
    report = shadow.to_json()
    assert report["domains"]["task"]["compared"] == 2
    assert report["domains"]["task"]["mismatched"] == 1
    assert report["domains"]["task"]["mismatchRate"] == 0.5
    sample = report["samples"][0]
    assert (sample["path"], sample["served"], sample["shadow"]) == (
        "$.tasks[0]",
        {"tasks": [1]},
        {"tasks": [2]},
    )


async def test_shadow_errors_are_counted_not_raised() -> None:
    """A failing shadow store only bumps the error count."""
    shadow = ShadowReader(FakeClock(), 1.0)

    async def broken() -> Any:
        raise RuntimeError("redis down")

    shadow.submit("chat", "get", {}, broken)
    await shadow.drain()
    assert shadow.to_json()["domains"]["chat"]["errors"] == 1


async def test_samples_are_bounded() -> None:
    """However many mismatches, only the newest MAX_SAMPLES are kept."""
    shadow = ShadowReader(FakeClock(), 1.0)
    for i in range(MAX_SAMPLES + 20):

        async def read(i: int = i) -> Any:
            return i + 1

        shadow.submit("agent", "list", i, read)
        await shadow.drain()
    assert len(shadow.to_json()["samples"]) == MAX_SAMPLES
    assert shadow.to_json()["domains"]["agent"]["mismatched"] == MAX_SAMPLES + 20


def test_sampling_rate_is_respected() -> None:
    """A 0.1 sample rate shadows about a tenth of reads; 0 shadows none."""
    shadow = ShadowReader(FakeClock(), 0.1, rng=random.Random(7))
    hits = sum(shadow.sampled() for _ in range(10_000))
    assert 800 < hits < 1200
    assert not any(ShadowReader(FakeClock(), 0.0).sampled() for _ in range(100))
