"""The router over HTTP: CORS, OPTIONS, 404/400/405/413 JSON bodies, encoded paths, `/` and `/health`."""

from __future__ import annotations

import re

from gateway.http.handlers import ROOT_LISTING

from .conftest import Api

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, X-Agent-Id, X-Resource-Path",
}
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def test_health_shape_and_headers(api: Api) -> None:
    """/health: exact keys and order, ms timestamp, exact Content-Type and the CORS headers."""
    resp = await api.request("GET", "/health")
    body = await resp.json()
    assert resp.status == 200
    assert list(body) == ["status", "service", "timestamp", "durableObjects"]
    assert body["service"] == "agent-coord-do"
    assert body["timestamp"] == "2026-11-25T17:28:47.041Z"
    assert resp.headers["Content-Type"] == "application/json"
    for k, v in CORS.items():
        assert resp.headers[k] == v


async def test_root_listing(api: Api) -> None:
    """/ answers upstream's informational listing."""
    assert await api.get("/") == (200, ROOT_LISTING)


async def test_options_any_path(api: Api) -> None:
    """OPTIONS on any path (even an undecodable one): 200, empty body, CORS, no Content-Type."""
    for path in ("/", "/coordinator/agents", "/agent/%ZZ/state", "/nowhere"):
        resp = await api.request("OPTIONS", path)
        assert resp.status == 200
        assert await resp.read() == b""
        assert resp.headers["Content-Length"] == "0"
        assert "Content-Type" not in resp.headers
        for k, v in CORS.items():
            assert resp.headers[k] == v


async def test_router_404_echoes_raw_path(api: Api) -> None:
    """Unknown paths: 404 with the still-encoded path; CORS on errors too."""
    resp = await api.request("GET", "/nope%20x")
    assert resp.status == 404
    assert await resp.json() == {"error": "Not found", "path": "/nope%20x"}
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert await api.get("/%C3%BCber") == (404, {"error": "Not found", "path": "/%C3%BCber"})
    assert await api.get("//health") == (404, {"error": "Not found", "path": "//health"})
    assert await api.get("/health/") == (404, {"error": "Not found", "path": "/health/"})


async def test_dot_segments_are_removed_before_routing(api: Api) -> None:
    """`..` and `%2E%2E` are dot segments; `..%2F` stays inside one segment."""
    status, body = await api.get("/coordinator/../health")
    assert status == 200
    assert body["status"] == "ok"
    assert await api.get("/lock/%2E%2E/check") == (404, {"error": "Not found", "path": "/check"})
    assert await api.get("/lock/..%2Fsecret/check") == (200, {"locked": False, "resourcePath": "../secret"})
    assert await api.get("/agent/x/%2e%2e/y/health") == (
        200,
        {"status": "ok", "type": "agent-state", "agentId": "y"},
    )


async def test_encoded_ids(api: Api) -> None:
    """Ids decode strictly once: '+' kept, UTF-8, %252F stays %2F, src%2Fa.ts is one resource."""
    assert (await api.get("/agent/a+b/health"))[1]["agentId"] == "a+b"
    assert (await api.get("/agent/%C3%BCber/health"))[1]["agentId"] == "über"
    assert (await api.get("/lock/x%252Fdouble/check"))[1] == {"locked": False, "resourcePath": "x%2Fdouble"}
    assert (await api.get("/lock/src%2Fa.ts/health"))[1]["resourcePath"] == "src/a.ts"
    assert (await api.get("/agent/alice/health?agentId=evil"))[1]["agentId"] == "alice"
    assert await api.post("/lock/src/a.ts/lock", raw=b"") == (404, {"error": "Not found"})


async def test_invalid_paths_are_400(api: Api) -> None:
    """Empty ids and malformed escapes are a 400 Invalid agent/lock path (upstream: 500)."""
    assert await api.get("/agent/") == (400, {"error": "Invalid agent path"})
    assert await api.get("/lock/") == (400, {"error": "Invalid lock path"})
    assert await api.get("/agent/%ZZ/state") == (400, {"error": "Invalid agent path"})
    assert await api.get("/lock/%E0%A4%A/check") == (400, {"error": "Invalid lock path"})


async def test_do_level_404_has_no_path(api: Api) -> None:
    """Unknown sub-paths inside an actor are `{"error":"Not found"}`."""
    for path in (
        "/coordinator",
        "/coordinatorX/agents",
        "/coordinator/agents/",
        "/coordinator/onboard/",
        "/agent/a/nope",
        "/agent/a/soul/",
        "/agent/a/vmpool",
        "/lock/p/nope",
    ):
        assert await api.get(path) == (404, {"error": "Not found"}), path


async def test_bare_question_mark_is_accepted(api: Api) -> None:
    """`/coordinator/tasks?` (the client's bare '?') is the plain list."""
    assert await api.get("/coordinator/tasks?") == (200, {"tasks": []})


async def test_wrong_methods_are_405(api: Api) -> None:
    """405 `{"error":"Method not allowed"}` on wrong methods, GET /lock and GET /unlock included."""
    for method, path in (
        ("PUT", "/coordinator/agents"),
        ("DELETE", "/coordinator/chat"),
        ("PUT", "/coordinator/zones"),
        ("DELETE", "/coordinator/claims"),
        ("PUT", "/coordinator/handoffs"),
        ("PUT", "/agent/a/messages"),
        ("DELETE", "/agent/a/checkpoint"),
        ("PUT", "/agent/a/memory"),
        ("GET", "/lock/p/lock"),
        ("GET", "/lock/p/unlock"),
    ):
        assert await api.call(method, path) == (405, {"error": "Method not allowed"}), (method, path)


async def test_invalid_json_body_is_400(api: Api) -> None:
    """A malformed or empty body is a 400 JSON error (upstream: router 500)."""
    status, body = await api.post("/coordinator/agents", raw=b"{bad json")
    assert status == 400
    assert body["error"] == "Invalid JSON body"
    status, body = await api.post("/agent/a/checkpoint", raw=b"[1,")
    assert status == 400
    status, body = await api.call("PATCH", "/coordinator/tasks")
    assert status == 400


async def test_body_over_limit_is_413(api: Api) -> None:
    """A body over server.max_body_bytes is a 413 JSON error and nothing is stored."""
    big = b'{"author":"a","message":"' + b"x" * (70 * 1024) + b'"}'
    status, body = await api.post("/coordinator/chat", raw=big)
    assert status == 413
    assert body["error"] == "Request body too large"
    assert (await api.get("/coordinator/chat"))[1]["messages"] == []


async def test_content_type_is_ignored(api: Api) -> None:
    """The body is parsed as JSON whatever the Content-Type says."""
    status, body = await api.post(
        "/coordinator/chat", {"author": "a", "message": "m"}, headers={"Content-Type": "text/plain"}
    )
    assert status == 200
    assert body["message"]["message"] == "m"


async def test_a_ten_thousand_character_agent_id_gets_a_json_400(api: Api) -> None:
    """A request line longer than aiohttp's 8 KiB default reaches the gateway, whose 400 names the
    id limit in JSON (instead of aiohttp's plain-text answer to a long line)."""
    status, body = await api.get(f"/agent/{'a' * 10_000}/health")
    assert status == 400
    assert (body["field"], body["maxChars"]) == ("agentId", 256)


async def test_a_newline_in_an_id_reaches_the_gateway(api: Api) -> None:
    """`%0A` decodes to a newline, which aiohttp's `.*` route pattern did not match: every path
    goes to the gateway's router, which answers JSON."""
    assert await api.get("/agent/%0A/state") == (
        200,
        {"agentId": "\n", "checkpoint": None, "unreadMessages": [], "recentMemories": []},
    )
    assert await api.get("/x%0Ay") == (404, {"error": "Not found", "path": "/x%0Ay"})
