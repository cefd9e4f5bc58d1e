"""The optional bearer token of the DO API: shared, per agent, and admin-only force operations."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError

from gateway.clock import FakeClock
from gateway.errors import StartupRefused
from gateway.http.auth import load_agent_tokens
from gateway.settings import AuthSettings, MigrationSettings, Settings, SettingsError, load_settings

from .conftest import Api, start_api

pytestmark = pytest.mark.actors_only("tokens are checked before any store runs")

ADMIN = "admin-token-1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def serve(settings: Settings, clock: FakeClock, auth: AuthSettings) -> AsyncIterator[Api]:
    settings = dataclasses.replace(settings, auth=auth, migration=MigrationSettings(admin_token=ADMIN))
    server, session = await start_api(settings, clock)
    try:
        yield Api(server, session)
    finally:
        await session.close()
        await server.close()


@pytest.fixture
async def shared(settings: Settings, clock: FakeClock) -> AsyncIterator[Api]:
    """A gateway with one shared token, `team-token`."""
    async for api in serve(settings, clock, AuthSettings(token="team-token")):
        yield api


@pytest.fixture
async def per_agent(settings: Settings, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Api]:
    """A gateway with per-agent tokens: alice `ta`, bob `tb`."""
    tokens = tmp_path / "tokens"
    tokens.write_text("# agent token\nalice ta\n\nbob tb\n", encoding="utf-8")
    async for api in serve(settings, clock, AuthSettings(agent_tokens_file=tokens)):
        yield api


@pytest.fixture
async def admin_only(settings: Settings, clock: FakeClock) -> AsyncIterator[Api]:
    """Tokens off, but force-unlock and zone takeover limited to the admin token."""
    async for api in serve(settings, clock, AuthSettings(admin_only_force=True)):
        yield api


async def test_without_the_shared_token_every_do_api_request_is_a_401(shared: Api) -> None:
    """With auth.token set, a request without it, or with another, is a 401 JSON error; with it, 200;
    /, /health, /ready and CORS preflights need none; the admin token is accepted too."""
    for headers in ({}, bearer("wrong"), {"Authorization": "Basic dGVhbQ=="}):
        status, body = await shared.call("GET", "/coordinator/agents", headers=headers)
        assert (status, body) == (401, {"error": "Missing or wrong bearer token"})
    assert (await shared.call("GET", "/agent/x/state", headers={}))[0] == 401
    assert (await shared.call("GET", "/coordinator/agents", headers=bearer("team-token")))[0] == 200
    assert (await shared.call("GET", "/coordinator/agents", headers=bearer(ADMIN)))[0] == 200
    for path in ("/", "/health", "/ready"):
        assert (await shared.get(path))[0] == 200, path
    assert (await shared.request("OPTIONS", "/coordinator/agents")).status == 200


async def test_a_websocket_gives_the_shared_token_in_its_query(shared: Api) -> None:
    """A socket without the token is a 401 before the upgrade; `?token=` opens it."""
    with pytest.raises(WSServerHandshakeError) as refused:
        await shared.ws("/coordinator?agentId=a")
    assert refused.value.status == 401
    ws = await shared.ws("/coordinator?agentId=a&token=team-token")
    assert (await ws.receive_json(timeout=5))["type"] == "agent-update"
    await ws.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/coordinator/chat", {"author": "bob", "message": "hi"}, "author"),
        ("POST", "/coordinator/agents", {"agentId": "bob"}, "agentId"),
        ("POST", "/coordinator/claims", {"action": "claim", "what": "w", "by": "bob"}, "by"),
        (
            "POST",
            "/coordinator/zones",
            {"action": "claim", "zoneId": "z", "path": "p", "owner": "bob"},
            "owner",
        ),
        ("POST", "/coordinator/handoffs", {"fromAgent": "bob", "title": "t", "context": "c"}, "fromAgent"),
        ("POST", "/coordinator/handoffs", {"action": "claim", "handoffId": "h", "agentId": "bob"}, "agentId"),
        ("POST", "/agent/alice/messages", {"from": "bob", "message": "m"}, "from"),
        ("POST", "/lock/src%2Fa.ts/lock", {"agentId": "bob"}, "agentId"),
        ("GET", "/agent/bob/state", None, "agentId"),
        ("POST", "/agent/bob/checkpoint", {"conversationSummary": "s"}, "agentId"),
        ("GET", "/coordinator/work?agentId=bob", None, "agentId"),
        ("GET", "/coordinator/chat?agentId=bob", None, "agentId"),
    ],
)
async def test_a_per_agent_token_cannot_act_as_another_agent(
    per_agent: Api, method: str, path: str, body: Any, field: str
) -> None:
    """Alice's token acting as bob is a 403 naming the field, and nothing is written."""
    status, answer = await per_agent.call(method, path, body, headers=bearer("ta"))
    assert status == 403
    assert answer["field"] == field
    assert "alice" in answer["error"]
    assert (await per_agent.call("GET", "/coordinator/agents", headers=bearer(ADMIN)))[1]["agents"] == []


async def test_a_per_agent_token_acts_as_its_agent(per_agent: Api) -> None:
    """Alice's token posts as alice, reads her state and sends bob a DM; bob's token reads it;
    without a token it is a 401."""
    assert (await per_agent.call("POST", "/coordinator/chat", {"author": "alice", "message": "hi"}))[0] == 401
    ok = [
        ("POST", "/coordinator/chat", {"author": "alice", "message": "hi"}),
        ("GET", "/agent/alice/state", None),
        ("POST", "/agent/bob/messages", {"from": "alice", "message": "for bob"}),
        ("GET", "/coordinator/work?agentId=alice", None),
        ("GET", "/coordinator/tasks", None),
    ]
    for method, path, body in ok:
        status, answer = await per_agent.call(method, path, body, headers=bearer("ta"))
        assert status == 200, (path, answer)
    status, inbox = await per_agent.call("GET", "/agent/bob/messages", headers=bearer("tb"))
    assert [m["message"] for m in inbox["messages"]] == ["for bob"]


async def test_a_per_agent_socket_is_its_agents(per_agent: Api) -> None:
    """A socket with alice's token and no agentId is alice's; one for bob's agent socket is a 403;
    a chat frame authored as bob is dropped."""
    with pytest.raises(WSServerHandshakeError) as refused:
        await per_agent.ws("/agent/bob?token=ta")
    assert refused.value.status == 403
    ws = await per_agent.ws("/coordinator?token=ta")
    welcome = await ws.receive_json(timeout=5)
    assert welcome["payload"]["message"] == "Welcome alice!"
    await ws.send_json({"type": "chat", "payload": {"author": "bob", "message": "forged"}})
    await ws.send_json({"type": "chat", "payload": {"author": "alice", "message": "mine"}})
    frame = await ws.receive_json(timeout=5)
    assert frame["payload"]["message"] == "mine"
    await ws.close()


async def test_force_unlock_needs_the_admin_token_when_limited(admin_only: Api) -> None:
    """auth.admin_only_force: a force-unlock without the admin token is a 403 and the lock stays;
    the owner's own unlock and an admin's force-unlock work."""
    lock = "/lock/src%2Fa.ts"
    assert (await admin_only.post(f"{lock}/lock", {"agentId": "alice"}))[0] == 200
    status, body = await admin_only.post(f"{lock}/unlock", {"agentId": "bob", "force": True})
    assert (status, body["field"]) == (403, "force")
    assert (await admin_only.get(f"{lock}/check"))[1]["locked"] is True
    status, body = await admin_only.post(
        f"{lock}/unlock", {"agentId": "bob", "force": True}, headers=bearer(ADMIN)
    )
    assert (status, body["success"]) == (200, True)
    assert (await admin_only.get(f"{lock}/check"))[1]["locked"] is False


async def test_zone_takeover_needs_the_admin_token_when_limited(admin_only: Api) -> None:
    """auth.admin_only_force: claiming a zone another owner holds is a 403; the owner re-claims
    it, and the admin token may take it over."""
    claim = {"action": "claim", "zoneId": "z1", "path": "src/", "owner": "alice"}
    assert (await admin_only.post("/coordinator/zones", claim))[0] == 200
    status, body = await admin_only.post("/coordinator/zones", {**claim, "owner": "bob"})
    assert (status, body["field"]) == (403, "zoneId")
    assert (await admin_only.get("/coordinator/zones?path=src/x"))[1]["zone"]["owner"] == "alice"
    assert (await admin_only.post("/coordinator/zones", {**claim, "description": "again"}))[0] == 200
    status, _ = await admin_only.post("/coordinator/zones", {**claim, "owner": "bob"}, headers=bearer(ADMIN))
    assert status == 200
    assert (await admin_only.get("/coordinator/zones?path=src/x"))[1]["zone"]["owner"] == "bob"


async def test_without_the_setting_force_and_takeover_stay_open(api: Api) -> None:
    """By default (upstream's behaviour) anyone may force-unlock or take over a zone."""
    await api.post("/lock/p/lock", {"agentId": "alice"})
    assert (await api.post("/lock/p/unlock", {"agentId": "bob", "force": True}))[0] == 200
    claim = {"action": "claim", "zoneId": "z1", "path": "src/", "owner": "alice"}
    await api.post("/coordinator/zones", claim)
    assert (await api.post("/coordinator/zones", {**claim, "owner": "bob"}))[0] == 200


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice\n", "line 1: expected '<agent-id> <token>'"),
        ("alice t\nbob t\n", "line 2: this token is given twice"),
    ],
)
def test_a_malformed_tokens_file_refuses_to_start(tmp_path: Path, text: str, message: str) -> None:
    """A tokens file line without a token, or a token given twice, stops the start naming the line."""
    path = tmp_path / "tokens"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StartupRefused) as refused:
        load_agent_tokens(path)
    assert message in refused.value.message


def test_a_shared_token_and_a_tokens_file_together_are_refused(tmp_path: Path) -> None:
    """Setting both auth.token and auth.agent_tokens_file is a settings error naming both."""
    with pytest.raises(SettingsError, match=r"auth.token.*auth.agent_tokens_file"):
        load_settings(
            env={"AGENT_COORD_AUTH_TOKEN": "t", "AGENT_COORD_AUTH_AGENT_TOKENS_FILE": str(tmp_path)}
        )
