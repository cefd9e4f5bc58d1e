"""The agent actor over HTTP: checkpoint, direct messages, memory, state (do-api.md 4)."""

from __future__ import annotations

from gateway.clock import FakeClock

from .conftest import Api

A = "/agent/alice"


async def test_default_subpath_is_state(api: Api) -> None:
    """/agent/<id> is /state; an empty agent has a null checkpoint and empty lists."""
    assert await api.get(A) == (
        200,
        {"agentId": "alice", "checkpoint": None, "unreadMessages": [], "recentMemories": []},
    )


async def test_checkpoint_coalesce_rules(api: Api, clock: FakeClock) -> None:
    """Summary/context survive empty values; arrays are replaced ([] when missing); unknown keys ignored."""
    assert await api.get(f"{A}/checkpoint") == (200, {"checkpoint": None})
    body = {
        "conversationSummary": "S",
        "accomplishments": ["a"],
        "pendingWork": ["p"],
        "recentContext": "C",
        "filesEdited": ["f"],
        "currentTask": "ignored",
    }
    assert await api.post(f"{A}/checkpoint", body) == (200, {"success": True})
    await clock.advance(7)
    assert await api.post(f"{A}/checkpoint", {"conversationSummary": "", "accomplishments": ["b"]}) == (
        200,
        {"success": True},
    )
    cp = (await api.get(f"{A}/checkpoint"))[1]["checkpoint"]
    assert cp == {
        "agentId": "alice",
        "conversationSummary": "S",
        "accomplishments": ["b"],
        "pendingWork": [],
        "recentContext": "C",
        "filesEdited": [],
        "checkpointAt": "2026-11-25T17:28:47.048Z",
    }


async def test_direct_messages(api: Api, clock: FakeClock) -> None:
    """Send (type note), list newest first, mark read (unknown ids ignored), unread filter."""
    status, body = await api.post("/agent/bob/messages", {"from": "alice", "message": "first"})
    assert status == 200
    first = body["message"]
    assert list(first) == ["id", "from", "type", "message", "timestamp", "read"]
    assert (first["type"], first["read"]) == ("note", False)
    await clock.advance(1)
    await api.post("/agent/bob/messages", {"from": "carol", "message": "second", "type": "handoff"})
    msgs = (await api.get("/agent/bob/messages"))[1]["messages"]
    assert [m["message"] for m in msgs] == ["second", "first"]
    assert await api.call("PATCH", "/agent/bob/messages", {"messageIds": [first["id"], "nope"]}) == (
        200,
        {"success": True},
    )
    assert [m["message"] for m in (await api.get("/agent/bob/messages?unread=true"))[1]["messages"]] == [
        "second"
    ]
    assert [m["read"] for m in (await api.get("/agent/bob/messages?unread=1"))[1]["messages"]] == [
        False,
        True,
    ]
    state = (await api.get("/agent/bob/state"))[1]
    assert [m["message"] for m in state["unreadMessages"]] == ["second"]
    status, body = await api.post("/agent/bob/messages", {"message": "x"})
    assert (status, body["field"]) == (400, "from")
    status, body = await api.call("PATCH", "/agent/bob/messages", {"messageIds": "abc"})
    assert (status, body["field"]) == (400, "messageIds")


async def test_memory(api: Api, clock: FakeClock) -> None:
    """Add with defaults, list newest first, category filter, LIKE query on content and tags."""
    status, body = await api.post(
        f"{A}/memory", {"category": "discovery", "content": "Found a race", "tags": ["locks"]}
    )
    assert status == 200
    assert list(body["memory"]) == ["id", "category", "content", "tags", "createdAt"]
    await clock.advance(1)
    assert (await api.post(f"{A}/memory", {"content": "defaults"}))[1]["memory"]["category"] == "learning"
    await clock.advance(1)
    await api.post(f"{A}/memory", {"category": "decision", "content": "SQLite per actor", "tags": ["db"]})
    contents = [m["content"] for m in (await api.get(f"{A}/memory?"))[1]["memories"]]
    assert contents == ["SQLite per actor", "defaults", "Found a race"]
    assert [m["content"] for m in (await api.get(f"{A}/memory?category=decision"))[1]["memories"]] == [
        "SQLite per actor"
    ]
    assert [m["content"] for m in (await api.get(f"{A}/memory?query=RACE"))[1]["memories"]] == [
        "Found a race"
    ]
    assert [m["content"] for m in (await api.get(f"{A}/memory?query=db"))[1]["memories"]] == [
        "SQLite per actor"
    ]
    assert len((await api.get(f"{A}/memory?query=%25"))[1]["memories"]) == 3
    assert len((await api.get(A))[1]["recentMemories"]) == 3
    status, body = await api.post(f"{A}/memory", {"category": 7, "content": ["a"], "tags": "x"})
    assert (status, body["field"]) == (400, "category")
