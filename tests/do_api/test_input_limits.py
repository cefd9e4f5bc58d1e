"""Input the gateway cannot store or answer is refused with a 400 naming the limit, before any write."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import WSServerHandshakeError

from gateway.clock import FakeClock
from gateway.settings import Settings

from .conftest import Api, start_api, with_limits


def nested(depth: int) -> bytes:
    """`depth` arrays around a string, as JSON text (orjson cannot write such a value)."""
    return b"[" * depth + b'"x"' + b"]" * depth


async def test_a_deeply_nested_extra_field_is_refused_before_it_is_stored(api: Api) -> None:
    """An agent body nested 300 levels deep is a 400 naming the depth limit, and no agent is stored."""
    raw = b'{"agentId":"deep","x":' + nested(300) + b"}"
    status, body = await api.post("/coordinator/agents", raw=raw)
    assert status == 400
    assert body["error"] == "Invalid JSON body"
    assert body["maxDepth"] == 64
    assert (await api.get("/coordinator/agents"))[1]["agents"] == []


async def test_nesting_up_to_the_limit_is_stored_and_answered(api: Api) -> None:
    """A value nested to the depth limit is stored and echoed unchanged."""
    raw = b'{"agentId":"deep","x":' + nested(63) + b"}"  # with the body object: depth 64
    status, body = await api.post("/coordinator/agents", raw=raw)
    assert (status, body["agent"]) == (200, orjson.loads(raw))


LONG = "a" * 257
MAX_ID = "a" * 256


def names_the_id_limit(body: Any, field: str) -> bool:
    return body.get("field") == field and body.get("maxChars") == 256 and "256" in body["error"]


@pytest.mark.parametrize("path", [f"/coordinator?agentId={LONG}", f"/agent/{LONG}"])
async def test_a_websocket_with_an_over_long_id_is_refused_before_the_upgrade(api: Api, path: str) -> None:
    """A WebSocket whose agent id is over 256 characters gets a 400 JSON answer instead of a 101."""
    with pytest.raises(WSServerHandshakeError) as refused:
        await api.ws(path)
    assert refused.value.status == 400
    resp = await api.request("GET", path, headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert resp.status == 400
    assert names_the_id_limit(await resp.json(), "agentId")


async def test_a_websocket_with_an_id_at_the_limit_is_served(api: Api) -> None:
    """256 characters is still an agent id: both sockets open and greet."""
    coordinator = await api.ws(f"/coordinator?agentId={MAX_ID}")
    assert (await coordinator.receive_json(timeout=5))["type"] == "agent-update"
    agent = await api.ws(f"/agent/{MAX_ID}")
    assert (await agent.receive_json(timeout=5))["type"] == "state-sync"
    await coordinator.close()
    await agent.close()


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"/agent/{LONG}/state", "agentId"),
        (f"/agent/{LONG}/checkpoint", "agentId"),
        (f"/lock/{LONG}/check", "resourcePath"),
        (f"/coordinator/work?agentId={LONG}", "agentId"),
        (f"/coordinator/chat?agentId={LONG}", "agentId"),
        (f"/coordinator/tasks?assignee={LONG}", "assignee"),
        (f"/coordinator/handoffs?id={LONG}", "id"),
    ],
)
async def test_an_over_long_id_in_a_path_or_query_is_a_400(api: Api, path: str, field: str) -> None:
    """An id over 256 characters in the path or the query is a 400 naming the field and the limit."""
    status, body = await api.get(path)
    assert status == 400
    assert names_the_id_limit(body, field)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/coordinator/agents", {"agentId": LONG}, "agentId"),
        ("/coordinator/chat", {"author": LONG, "message": "hi"}, "author"),
        ("/coordinator/tasks", {"id": LONG, "title": "t"}, "id"),
        ("/coordinator/tasks", {"title": "t", "assignee": LONG}, "assignee"),
        ("/coordinator/zones", {"action": "claim", "zoneId": LONG, "path": "p/", "owner": "o"}, "zoneId"),
        ("/coordinator/claims", {"action": "claim", "what": "w", "by": LONG}, "by"),
        ("/coordinator/handoffs", {"fromAgent": LONG, "title": "t", "context": "c"}, "fromAgent"),
        ("/agent/bob/messages", {"from": LONG, "message": "m"}, "from"),
        ("/lock/src%2Fa.ts/lock", {"agentId": LONG}, "agentId"),
    ],
)
async def test_an_over_long_id_in_a_body_is_a_400_and_stores_nothing(
    api: Api, path: str, body: dict[str, Any], field: str
) -> None:
    """An id over 256 characters in a body is a 400 naming the field and the limit; nothing changes."""
    status, answer = await api.post(path, body)
    assert status == 400
    assert names_the_id_limit(answer, field)
    assert (await api.get("/coordinator/agents"))[1]["agents"] == []
    assert (await api.get("/coordinator/tasks"))[1]["tasks"] == []
    assert (await api.get("/coordinator/chat"))[1]["messages"] == []
    assert (await api.get("/agent/bob/messages"))[1]["messages"] == []


def too_large(body: Any, field: str, limit: int) -> bool:
    return body.get("field") == field and body.get("maxBytes") == limit and field in body["error"]


@pytest.fixture
def small_text_limits(settings: Settings) -> Settings:
    """Text limits of 1 KiB, 2 KiB, 3 KiB and 4 KiB, to show each is its own setting."""
    return with_limits(
        settings,
        chat_message_max_bytes=1024,
        dm_message_max_bytes=2048,
        memory_content_max_bytes=3072,
        checkpoint_max_bytes=4096,
    )


@pytest.mark.parametrize(
    "case",
    [
        ("/coordinator/chat", "message", 1024, lambda text: {"author": "a", "message": text}),
        ("/agent/bob/messages", "message", 2048, lambda text: {"from": "a", "message": text}),
        ("/agent/bob/memory", "content", 3072, lambda text: {"content": text}),
        ("/agent/bob/checkpoint", "conversationSummary", 4096, lambda text: {"conversationSummary": text}),
        ("/agent/bob/checkpoint", "recentContext", 4096, lambda text: {"recentContext": text}),
        (
            "/agent/bob/checkpoint",
            "pendingWork",
            4096,
            lambda text: {"pendingWork": [text[:2000], text[2000:]]},
        ),
    ],
)
async def test_a_text_field_over_its_limit_is_a_413_naming_field_and_limit(
    small_text_limits: Settings, clock: FakeClock, case: tuple[str, str, int, Any]
) -> None:
    """A stored text field over its configured size is a 413 naming the field and the limit, and
    nothing is stored; at the limit (in UTF-8 bytes) it is accepted."""
    path, field, limit, make = case
    server, session = await start_api(small_text_limits, clock)
    try:
        api = Api(server, session)
        status, body = await api.post(path, make("é" * (limit // 2) + "x"))
        assert status == 413
        assert too_large(body, field, limit)
        assert (await api.get("/coordinator/chat"))[1]["messages"] == []
        assert (await api.get("/agent/bob/state"))[1]["checkpoint"] is None
        assert (await api.get("/agent/bob/messages"))[1]["messages"] == []
        assert (await api.get("/agent/bob/memory"))[1]["memories"] == []
        status, body = await api.post(path, make("é" * (limit // 2)))
        assert status == 200, body
    finally:
        await session.close()
        await server.close()


async def test_a_chat_frame_over_the_limit_is_not_posted(
    small_text_limits: Settings, clock: FakeClock
) -> None:
    """A WebSocket chat frame over the chat limit is dropped; the next one is posted."""
    server, session = await start_api(small_text_limits, clock)
    try:
        api = Api(server, session)
        ws = await api.ws("/coordinator?agentId=a")
        await ws.receive_json(timeout=5)
        for text in ("x" * 1025, "fits"):
            await ws.send_json({"type": "chat", "payload": {"author": "a", "message": text}})
        frame = await ws.receive_json(timeout=5)
        assert (frame["type"], frame["payload"]["message"]) == ("chat", "fits")
        assert [m["message"] for m in (await api.get("/coordinator/chat"))[1]["messages"]] == ["fits"]
        await ws.close()
    finally:
        await session.close()
        await server.close()


def test_the_default_text_limits_are_generous() -> None:
    """Defaults: 64 KiB per chat message, DM and memory, 256 KiB per checkpoint field."""
    limits = Settings().limits
    assert limits.chat_message_max_bytes == limits.dm_message_max_bytes == 65_536
    assert limits.memory_content_max_bytes == 65_536
    assert limits.checkpoint_max_bytes == 262_144


OTHER_TEXTS = [
    ("POST", "/coordinator/agents", "currentTask", lambda t: {"agentId": "a", "currentTask": t}),
    ("POST", "/coordinator/agents", "workingOn", lambda t: {"agentId": "a", "workingOn": t}),
    ("POST", "/coordinator/agents", "capabilities", lambda t: {"agentId": "a", "capabilities": [t]}),
    ("POST", "/coordinator/tasks", "title", lambda t: {"id": "t", "title": t}),
    ("POST", "/coordinator/tasks", "description", lambda t: {"id": "t", "description": t}),
    ("POST", "/coordinator/tasks", "tags", lambda t: {"id": "t", "tags": [t[:600], t[600:]]}),
    ("PATCH", "/coordinator/tasks", "description", lambda t: {"id": "t0", "description": t}),
    ("PATCH", "/coordinator/tasks", "title", lambda t: {"id": "t0", "title": t}),
    ("POST", "/coordinator/zones", "description", lambda t: {"action": "claim", "zoneId": "z", "path": "p/",
                                                              "owner": "a", "description": t}),
    ("POST", "/coordinator/zones", "path", lambda t: {"action": "claim", "zoneId": "z", "path": t,
                                                       "owner": "a"}),
    ("POST", "/coordinator/claims", "description", lambda t: {"action": "claim", "what": "w", "by": "a",
                                                               "description": t}),
    ("POST", "/coordinator/handoffs", "context", lambda t: {"fromAgent": "a", "title": "x", "context": t}),
    ("POST", "/coordinator/handoffs", "code", lambda t: {"fromAgent": "a", "title": "x", "context": "c",
                                                         "code": t}),
    ("POST", "/coordinator/handoffs", "nextSteps", lambda t: {"fromAgent": "a", "title": "x", "context": "c",
                                                              "nextSteps": [t]}),
    ("POST", "/lock/src%2Fa.ts/lock", "reason", lambda t: {"agentId": "a", "reason": t}),
]  # fmt: skip


@pytest.mark.parametrize("case", OTHER_TEXTS, ids=[f"{c[1]}-{c[2]}" for c in OTHER_TEXTS])
async def test_every_other_stored_text_has_a_limit_too(
    settings: Settings, clock: FakeClock, case: tuple[str, str, str, Any]
) -> None:
    """Issue 15, finding 5 on every route: the texts of agents, tasks, zones, claims, handoffs and
    lock reasons are bounded by `limits.text_max_bytes` (a 413 naming field and limit, nothing
    stored), so no listing can grow to hundreds of MB from a few writes."""
    method, path, field, make = case
    server, session = await start_api(with_limits(settings, text_max_bytes=1024), clock)
    try:
        api = Api(server, session)
        assert (await api.post("/coordinator/tasks", {"id": "t0", "title": "x"}))[0] == 200
        before = [(await api.get(p))[1] for p in ("/coordinator/agents", "/coordinator/tasks",
                                                   "/coordinator/zones", "/coordinator/claims",
                                                   "/coordinator/handoffs")]  # fmt: skip
        status, body = await api.call(method, path, make("é" * 512 + "x"))
        assert status == 413
        assert too_large(body, field, 1024)
        after = [(await api.get(p))[1] for p in ("/coordinator/agents", "/coordinator/tasks",
                                                  "/coordinator/zones", "/coordinator/claims",
                                                  "/coordinator/handoffs")]  # fmt: skip
        assert after == before
        status, body = await api.call(method, path, make("é" * 512))
        assert status == 200, body
    finally:
        await session.close()
        await server.close()
