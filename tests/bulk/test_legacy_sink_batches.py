"""The Redis sink's batched claims, chat and DMs: one compare-and-set per batch, and a live write
that lands between the sink's read and its write is never overwritten with the older copy."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import pytest
import redis.asyncio

from gateway.bulk import legacy_sink
from gateway.bulk.items import Selection
from gateway.bulk.legacy_side import LegacySource
from gateway.bulk.legacy_sink import LegacySink
from gateway.clock import SystemClock
from gateway.domain.entities import Entity, EntityKey, Unreadable
from gateway.domain.model import Claim, DirectMessage, GroupMessage
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.codec import dumps

pytestmark = pytest.mark.integration


async def items_of(legacy: LegacySource, domain: str) -> list[tuple[EntityKey, Any]]:
    out: list[tuple[EntityKey, Any]] = []
    async for batch in legacy.scan(Selection.of([domain])):
        out += [(k, v) for k, v in batch if not isinstance(v, Unreadable)]
    return out


def on_pause(monkeypatch: pytest.MonkeyPatch, change: Any) -> list[int]:
    """Run `change()` at the sink's pause point (between its read and its write), once."""
    calls: list[int] = []

    async def pause(_name: str, _keys: Iterable[EntityKey]) -> None:
        if not calls:
            calls.append(1)
            await change()

    monkeypatch.setattr(legacy_sink, "pause_point", pause)
    return calls


async def test_a_claim_changed_between_read_and_write_is_left_alone(
    legacy: LegacySource, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = [(k, c) for k, c in await items_of(legacy, "claim") if isinstance(c, Claim)]
    (key, claim), (other_key, other) = claims[0], claims[1]
    fld = keys.claim_field(claim.by, claim.what)
    live = dataclasses.replace(claim, since="2999-01-01T00:00:00.000Z", description="live")
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)

    async def change() -> None:
        await r.hset(keys.CLAIMS, fld, dumps(m.claim_to_legacy(live)))

    calls = on_pause(monkeypatch, change)
    try:
        sink = LegacySink(legacy, SystemClock())
        older = dataclasses.replace(claim, since="2998-01-01T00:00:00.000Z", description="import")
        changed = dataclasses.replace(other, description="the import's copy")
        result = await sink.write_batch([(key, older), (other_key, changed)])
        assert calls
        assert result.skipped == {"claim": 1}  # decided again on the live value: newer
        assert result.written == {"claim": 1}
        held = await legacy.read_many([key, other_key])
        assert isinstance(held[key], Claim)
        assert held[key].description == "live"  # type: ignore[union-attr]
        assert isinstance(held[other_key], Claim)
        assert held[other_key].description == "the import's copy"  # type: ignore[union-attr]
        again = await sink.write_batch([(other_key, changed)])
        assert again.unchanged == {"claim": 1}
    finally:
        await r.aclose()


async def test_a_dm_marked_read_between_read_and_write_stays_read(
    legacy: LegacySource, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dms = [(k, d) for k, d in await items_of(legacy, "dm") if isinstance(d, DirectMessage)]
    key, dm = next((k, d) for k, d in dms if not d.read)
    conv = m.conversation_id(dm.from_agent, key.scope)
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)

    async def change() -> None:  # the recipient reads it: the legacy API marks it read
        msgs = json.loads(await r.hget(keys.DM_MESSAGES, conv) or "[]")
        for x in msgs:
            if x.get("id") == dm.id:
                x["read"] = True
        await r.hset(keys.DM_MESSAGES, conv, dumps(msgs))

    calls = on_pause(monkeypatch, change)
    try:
        sink = LegacySink(legacy, SystemClock())
        edited = dataclasses.replace(dm, message="the import's copy")  # same version, other content
        result = await sink.write_batch([(key, edited)])
        assert calls
        assert result.skipped == {"dm": 1}
        held = (await legacy.read_many([key]))[key]
        assert isinstance(held, DirectMessage)
        assert held.read
        assert held.message == dm.message
    finally:
        await r.aclose()


async def test_dms_chat_and_claims_written_in_batches_read_back_equal(
    legacy: LegacySource, redis_url: str
) -> None:
    """Everything of the three domains written into an emptied Redis reads back equal, and
    the conversations are listed for both participants."""
    items: list[tuple[EntityKey, Entity]] = []
    for domain in ("chat", "claim", "dm"):
        items += await items_of(legacy, domain)
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        await r.flushdb()
        sink = LegacySink(legacy, SystemClock())
        result = await sink.write_batch(items)
        assert sum(result.written.values()) == len(items)
        chat = [v for _k, v in items if isinstance(v, GroupMessage)]
        trimmed = {v.id for v in chat[: -keys.CHAT_MAX]}  # the list keeps the newest 1,000 pushed
        held = await legacy.read_many([k for k, _ in items])
        for key, value in items:
            got = held[key]
            if key.domain == "chat" and key.id in trimmed:
                continue
            assert got is not None, key
            assert not isinstance(got, Unreadable), key
            assert m.canonical(got) == m.canonical(value), key
        assert await r.llen(keys.MESSAGES) == min(len(chat), keys.CHAT_MAX)
        again = await sink.write_batch(items)
        assert again.written == {}
    finally:
        await r.aclose()
