"""The lock endpoints over HTTP (do-api.md 5) from every store: lock, re-lock, unlock, history, expiry."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio

from gateway.clock import FakeClock
from gateway.settings import Settings

from .conftest import Api, start_api

L = "/lock/src%2Fa.ts"
LOCK_KEYS = ["resourcePath", "resourceType", "lockedBy", "reason", "lockedAt", "expiresAt"]


async def test_lock_check_unlock_cycle(api: Api, clock: FakeClock) -> None:
    """Acquire (JS minutes), check with remainingMs, 409 for others, 403 for non-owner, force, history."""
    assert await api.get(L) == (200, {"locked": False, "resourcePath": "src/a.ts"})
    status, body = await api.post(f"{L}/lock", {"agentId": "alice", "reason": "editing", "ttlMs": 120000})
    assert status == 200
    assert body["message"] == "Lock acquired for 2 minutes"
    assert body["lock"] == {
        "resourcePath": "src/a.ts",
        "resourceType": "file-lock",
        "lockedBy": "alice",
        "reason": "editing",
        "lockedAt": "2026-11-25T17:28:47.041Z",
        "expiresAt": "2026-11-25T17:30:47.041Z",
    }
    await clock.advance(1000)
    status, body = await api.get(f"{L}/check")
    assert list(body) == ["locked", "lock"]
    assert list(body["lock"]) == [*LOCK_KEYS, "remainingMs"]
    assert body["lock"]["remainingMs"] == 119000
    status, body = await api.post(f"{L}/lock", {"agentId": "bob", "ttlMs": 1000})
    assert status == 409
    assert body == {
        "success": False,
        "error": "Resource is locked",
        "lockedBy": "alice",
        "expiresAt": "2026-11-25T17:30:47.041Z",
        "remainingMs": 119000,
    }
    assert await api.post(f"{L}/unlock", {"agentId": "bob"}) == (
        403,
        {"success": False, "error": "Not lock owner", "lockedBy": "alice"},
    )
    assert await api.post(f"{L}/unlock", {"agentId": "bob", "force": True}) == (
        200,
        {"success": True, "message": "Lock released", "previousOwner": "alice"},
    )
    assert await api.post(f"{L}/unlock", {"agentId": "alice"}) == (
        200,
        {"success": True, "message": "No lock to release"},
    )
    status, body = await api.post(f"{L}/lock", {"agentId": "bob", "resourceType": "branch"})
    assert body["message"] == "Lock acquired for 120 minutes"
    assert "reason" not in body["lock"]
    assert body["lock"]["resourceType"] == "branch"
    assert (await api.post(f"{L}/unlock", {"agentId": "bob"}))[1]["message"] == "Lock released"
    await api.settle()  # in parallel the actors, whose history /history reads, get it in the background
    hist = (await api.get(f"{L}/history"))[1]
    assert list(hist) == ["resourcePath", "currentLock", "history"]
    assert hist["currentLock"] is None
    assert [h["lockedBy"] for h in hist["history"]] == ["bob", "alice"]
    assert list(hist["history"][0]) == ["id", "lockedBy", "reason", "lockedAt", "releasedAt", "releaseReason"]
    assert hist["history"][0]["reason"] is None
    assert hist["history"][0]["releaseReason"] == "manual"
    assert len({h["id"] for h in hist["history"]}) == 2


@pytest.mark.actors_only("lock history content: `stolen` is known to the lock actor only (compatibility 37)")
async def test_history_records_why_each_lock_ended(api: Api, clock: FakeClock) -> None:
    """History rows say how each holding ended: manual, stolen (forced by another agent)."""
    await api.post(f"{L}/lock", {"agentId": "alice", "ttlMs": 120000})
    await api.post(f"{L}/unlock", {"agentId": "bob", "force": True})
    await clock.advance(1)
    await api.post(f"{L}/lock", {"agentId": "bob"})
    await api.post(f"{L}/unlock", {"agentId": "bob"})
    hist = (await api.get(f"{L}/history"))[1]
    assert [(h["lockedBy"], h["releaseReason"]) for h in hist["history"]] == [
        ("bob", "manual"),
        ("alice", "stolen"),
    ]


async def test_relock_extends_and_keeps_one_history_row(api: Api, clock: FakeClock) -> None:
    """A re-lock by the holder keeps lockedAt and reason, never shortens, keeps one open row."""
    await api.post(f"{L}/lock", {"agentId": "alice", "reason": "editing", "ttlMs": 120000})
    await clock.advance(1000)
    status, body = await api.post(f"{L}/lock", {"agentId": "alice", "ttlMs": 90000})
    assert status == 200
    assert body["message"] == "Lock acquired for 1.5 minutes"
    assert body["lock"]["lockedAt"] == "2026-11-25T17:28:47.041Z"
    assert body["lock"]["expiresAt"] == "2026-11-25T17:30:47.041Z"
    assert body["lock"]["reason"] == "editing"
    status, body = await api.post(f"{L}/lock", {"agentId": "alice", "ttlMs": 600000, "reason": "longer"})
    assert body["lock"]["expiresAt"] == "2026-11-25T17:38:48.041Z"
    await api.settle()  # in parallel the actors, whose history /history reads, get it in the background
    hist = (await api.get(f"{L}/history"))[1]
    assert len(hist["history"]) == 1
    assert hist["history"][0]["releasedAt"] is None
    assert hist["history"][0]["reason"] == "longer"
    assert hist["currentLock"]["reason"] == "longer"


async def test_lock_validation(api: Api) -> None:
    """Missing agentId, string/negative/too-large ttlMs are 400s naming the field."""
    for body, field in (
        ({"reason": "x"}, "agentId"),
        ({"agentId": "a", "ttlMs": "100"}, "ttlMs"),
        ({"agentId": "a", "ttlMs": -60000}, "ttlMs"),
        ({"agentId": "a", "ttlMs": 86_400_001}, "ttlMs"),
    ):
        status, out = await api.post(f"{L}/lock", body)
        assert (status, out["field"]) == (400, field)
    assert await api.get(L) == (200, {"locked": False, "resourcePath": "src/a.ts"})


@pytest.mark.actors_only("the lock actor's expiry alarm; Redis expires a lock lazily (compatibility 36)")
async def test_lock_expires_by_alarm(api: Api, clock: FakeClock) -> None:
    """The alarm releases an expired lock with reason `expired`, without any request."""
    await api.post(f"{L}/lock", {"agentId": "alice", "ttlMs": 1000})
    await clock.advance(999)
    await api.host.wait_idle()
    assert (await api.get(L))[1]["locked"] is True
    await clock.advance(1)
    await api.host.wait_idle()
    hist = (await api.get(f"{L}/history"))[1]
    assert hist["currentLock"] is None
    assert hist["history"][0]["releaseReason"] == "expired"
    assert hist["history"][0]["releasedAt"] == "2026-11-25T17:28:48.041Z"
    assert await api.get(L) == (200, {"locked": False, "resourcePath": "src/a.ts"})


async def test_an_expired_lock_is_free_and_reported_as_expired(api: Api, clock: FakeClock) -> None:
    """Past its expiry a lock no longer holds: /check says unlocked and anyone may take it. Served
    from Redis, the first request to find it expired adds the note (Redis has no alarm)."""
    await api.post(f"{L}/lock", {"agentId": "alice", "ttlMs": 1000})
    await clock.advance(1001)
    await api.settle()
    unlocked: dict[str, object] = {"locked": False, "resourcePath": "src/a.ts"}
    if api.legacy_serves:  # docs/compatibility.md 36
        unlocked["note"] = "Previous lock expired"
    assert await api.get(L) == (200, unlocked)
    assert await api.get(L) == (200, {"locked": False, "resourcePath": "src/a.ts"})
    status, body = await api.post(f"{L}/lock", {"agentId": "bob", "ttlMs": 1000})
    assert (status, body["lock"]["lockedBy"]) == (200, "bob")


async def test_expired_lock_unlocked_by_other_is_no_lock(api: Api, clock: FakeClock) -> None:
    """Unlocking someone else's expired lock releases it as expired instead of a 403."""
    await api.post(f"{L}/lock", {"agentId": "alice", "ttlMs": 1000})
    await api.settle()  # in parallel the actors are mirrored after the reply: before the clock swap
    api.host.clock = FakeClock(0)  # keep the alarm from firing: the lock stays, expired, in the table
    await clock.advance(5000)
    assert await api.post(f"{L}/unlock", {"agentId": "bob"}) == (
        200,
        {"success": True, "message": "No lock to release"},
    )
    await api.settle()  # and the actors, which keep the history, after this reply too
    assert (await api.get(f"{L}/history"))[1]["history"][0]["releaseReason"] == "expired"


async def test_check_releases_an_expired_lock_with_note(api: Api, clock: FakeClock) -> None:
    """/check on a lock past its expiry releases it and says so (when the alarm has not yet run)."""
    await api.post(f"{L}/lock", {"agentId": "alice", "ttlMs": 1000})
    api.host.clock = FakeClock(0)
    await clock.advance(1001)
    assert await api.get(L) == (
        200,
        {"locked": False, "resourcePath": "src/a.ts", "note": "Previous lock expired"},
    )


@pytest.mark.actors_only("a restart of the actor host and its persisted expiry alarm (compatibility 36)")
async def test_lock_expires_after_restart(settings: Settings, clock: FakeClock) -> None:
    """A lock whose expiry passes while the gateway is down is released when it starts again."""
    server, session = await start_api(settings, clock)
    api = Api(server, session)
    try:
        assert (await api.post(f"{L}/lock", {"agentId": "alice", "ttlMs": 60000}))[0] == 200
    finally:
        await session.close()
        await server.close()
    await clock.advance(120_000)
    server, session = await start_api(settings, clock)
    api = Api(server, session)
    try:
        await clock.advance(0)
        await api.host.wait_idle()
        hist = (await api.get(f"{L}/history"))[1]
        assert hist["currentLock"] is None
        assert hist["history"][0]["releaseReason"] == "expired"
    finally:
        await session.close()
        await server.close()


@pytest.mark.parametrize("store_kind", ["read-switch"])
async def test_an_alarm_expiry_reaches_redis_in_read_switch(
    api: Api, clock: FakeClock, redis_url: str
) -> None:
    """While the actors are authoritative, a lock their alarm expires is removed from Redis too."""
    await api.post(f"{L}/lock", {"agentId": "alice", "ttlMs": 1000})
    legacy = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await legacy.hexists("agent-coord:locks", "src/a.ts")
        await clock.advance(1000)
        await api.settle()
        for _ in range(300):  # the repair worker copies it in the background (bounded wait)
            if not await legacy.hexists("agent-coord:locks", "src/a.ts"):
                break
            await asyncio.sleep(0.01)
        assert not await legacy.hexists("agent-coord:locks", "src/a.ts")
    finally:
        await legacy.aclose()
