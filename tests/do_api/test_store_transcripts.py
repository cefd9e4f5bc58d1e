"""One scenario over every endpoint, played against the actor store alone and against each
two-store phase: the transcripts (status and JSON of every answer) must be equal.

The endpoint tests check chosen fields per store; this checks everything at once, including the
answers nobody thought to assert. Ids are made by a seeded generator in each gateway, so they
match too. The differences docs/compatibility.md lists under "Serving from the legacy store" are
left out of the scenario (lock history content, expiry by alarm, the handoff target `any`,
listing order within one millisecond) or applied to the expected answers
(`as_served_from_redis`).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.app import GATEWAY
from gateway.clock import FakeClock
from gateway.domain.ids import IdGenerator
from gateway.settings import Settings

from .conftest import START_MS, Api, start_api

MIN = 60_000
Transcript = list[tuple[str, int, Any]]


async def play(api: Api, clock: FakeClock) -> Transcript:  # noqa: PLR0915 - one long scenario
    """The scenario: every endpoint, with the edge cases that a store could answer differently."""
    out: Transcript = []

    async def call(method: str, path: str, body: Any = None) -> Any:
        status, answer = await api.call(method, path, body)
        out.append((f"{method} {path}", status, answer))
        return answer

    async def tick(ms: int = 1) -> None:
        await clock.advance(ms)
        await api.settle()

    # agents
    await call(
        "POST",
        "/coordinator/agents",
        {
            "agentId": "ana",
            "status": "active",
            "currentTask": "T",
            "workingOn": "src/a.ts",
            "capabilities": ["py"],
            "x": 1,
        },
    )
    await tick()
    await call("POST", "/coordinator/agents", {"agentId": "bo", "status": "busy", "offers": ["review"]})
    await tick()
    await call("POST", "/coordinator/agents", {"agentId": "ana", "currentTask": "", "status": "idle"})
    await call("POST", "/coordinator/agents", {"agentId": "gone", "status": "offline"})
    await tick()  # listings from Redis do not order equal timestamps (see the module docstring)
    await call("POST", "/coordinator/agents", {"agentId": "über", "needs": ["ünïcode"]})
    await call("GET", "/coordinator/agents")
    await call("POST", "/coordinator/agents", {"status": "idle"})
    # chat, mentions, inbox
    for i, (author, text) in enumerate(
        [
            ("bo", "@ana hi"),
            ("cy", "@all ship"),
            ("ana", "@ana me"),
            ("dee", "@anax no"),
            ("bo", "plain"),
            ("cy", "@über ü"),
        ]
    ):
        await tick(i + 1)
        await call("POST", "/coordinator/chat", {"author": author, "message": text})
    await call("POST", "/coordinator/chat", {"author": "h", "message": "human", "authorType": "human"})
    await call("POST", "/coordinator/chat", {"author": "h", "message": "same ms"})
    await call("GET", "/coordinator/chat?limit=3")
    await call("GET", "/coordinator/chat?since=2026-11-25T17:28:47.050Z&limit=10")
    await call("GET", "/coordinator/chat?since=garbage")
    await call("GET", "/coordinator/chat?limit=-1")
    await call("GET", "/coordinator/chat?agentId=ana&limit=2")
    await call("GET", "/coordinator/chat?agentId=ana&inbox=true")
    await tick()
    await call("GET", "/coordinator/chat?agentId=%C3%BCber&inbox=true")
    await call("GET", "/coordinator/chat?agentId=nobody")
    await call("GET", "/coordinator/agents")
    # tasks and /work
    await tick()
    await call("POST", "/coordinator/tasks", {"id": "t1", "title": "One", "assignee": "ana", "tags": ["a"]})
    await tick()
    await call(
        "POST",
        "/coordinator/tasks",
        {"id": "t2", "description": "d", "priority": "urgent", "files": ["f.py"], "status": "review"},
    )
    await tick()
    await call("POST", "/coordinator/tasks", {"title": "generated id", "assignee": ""})
    await call("POST", "/coordinator/tasks", {"id": "t1"})
    await call("POST", "/coordinator/tasks", {"id": "t9", "title": 5})
    await call("GET", "/coordinator/tasks")
    await call("GET", "/coordinator/tasks?status=todo&limit=5")
    await call("GET", "/coordinator/tasks?assignee=ana")
    await tick()
    await call(
        "PATCH", "/coordinator/tasks", {"id": "t1", "status": "done", "assignee": None, "description": "now"}
    )
    await call("PATCH", "/coordinator/tasks", {"id": "t2", "title": "Two", "tags": ["x", "y"]})
    await call("PATCH", "/coordinator/tasks", {"id": "nope", "status": "done"})
    await call("GET", "/coordinator/tasks")
    await tick()
    await call("GET", "/coordinator/work?agentId=ana")
    await call("GET", "/coordinator/work?agentId=ana")
    await call("GET", "/coordinator/work")
    # zones
    await call(
        "POST", "/coordinator/zones", {"action": "claim", "zoneId": "z1", "path": "src/", "owner": "ana"}
    )
    await tick()
    await call(
        "POST",
        "/coordinator/zones",
        {"action": "claim", "zoneId": "z2", "path": "src/deep/", "owner": "bo", "description": "d"},
    )
    await call("GET", "/coordinator/zones")
    await call("GET", "/coordinator/zones?path=src/deep/x.ts")
    await call("GET", "/coordinator/zones?owner=ana&limit=1")
    await call("POST", "/coordinator/zones", {"action": "release", "zoneId": "z1", "owner": "bo"})
    await call("POST", "/coordinator/zones", {"action": "release", "zoneId": "z1", "owner": "ana"})
    await call("POST", "/coordinator/zones", {"action": "release", "zoneId": "z1", "owner": "ana"})
    # claims, staleness, takeover
    await call(
        "POST", "/coordinator/claims", {"action": "claim", "what": "w", "by": "ana", "description": "d"}
    )
    await call("POST", "/coordinator/claims", {"action": "claim", "what": "w", "by": "bo"})
    await tick()
    await call("POST", "/coordinator/claims", {"action": "claim", "what": "v", "by": "bo"})
    await call("GET", "/coordinator/claims")
    await call("GET", "/coordinator/claims?what=w")
    await call("GET", "/coordinator/claims?what=none")
    await tick(31 * MIN)
    await call("GET", "/coordinator/claims")
    await call("GET", "/coordinator/claims?includeStale=true")
    await call("POST", "/coordinator/claims", {"action": "claim", "what": "w", "by": "bo"})
    await call("POST", "/coordinator/claims", {"action": "release", "what": "w", "by": "ana"})
    await call("POST", "/coordinator/claims", {"action": "release", "what": "w", "by": "bo"})
    await call("POST", "/coordinator/claims", {"action": "release", "what": "w", "by": "bo"})
    # handoffs
    h1 = await call(
        "POST",
        "/coordinator/handoffs",
        {
            "fromAgent": "ana",
            "toAgent": "bo",
            "title": "t",
            "context": "c",
            "code": "x = 1",
            "filePath": "a.py",
            "nextSteps": ["n"],
            "priority": "high",
        },
    )
    await tick()
    h2 = await call(
        "POST",
        "/coordinator/handoffs",
        {"action": "create", "fromAgent": "bo", "title": "open", "context": "c2"},
    )
    await call("POST", "/coordinator/handoffs", {"fromAgent": "bo", "title": "no context"})
    hid, oid = h1["handoff"]["id"], h2["handoff"]["id"]
    await call("GET", f"/coordinator/handoffs?id={hid}")
    await call("GET", "/coordinator/handoffs?toAgent=bo")
    await call("GET", "/coordinator/handoffs?fromAgent=bo&status=pending")
    await call("POST", "/coordinator/handoffs", {"action": "claim", "handoffId": hid, "agentId": "cy"})
    await call("POST", "/coordinator/handoffs", {"action": "complete", "handoffId": hid, "agentId": "bo"})
    await tick()
    await call("POST", "/coordinator/handoffs", {"action": "claim", "handoffId": hid, "agentId": "bo"})
    await call("POST", "/coordinator/handoffs", {"action": "claim", "handoffId": oid, "agentId": "cy"})
    await call("POST", "/coordinator/handoffs", {"action": "complete", "handoffId": hid, "agentId": "ana"})
    await tick()
    await call("POST", "/coordinator/handoffs", {"action": "complete", "handoffId": hid, "agentId": "bo"})
    await call("POST", "/coordinator/handoffs", {"action": "claim", "handoffId": hid, "agentId": "bo"})
    await call("GET", "/coordinator/handoffs?status=completed")
    await call("GET", "/coordinator/handoffs")
    # the agent actor: checkpoint, DMs, memory, state
    await call("GET", "/agent/ana/checkpoint")
    await call(
        "POST",
        "/agent/ana/checkpoint",
        {
            "conversationSummary": "S",
            "accomplishments": ["a"],
            "pendingWork": ["p"],
            "recentContext": '{"v":2}',
            "filesEdited": ["f"],
        },
    )
    await tick()
    await call("POST", "/agent/ana/checkpoint", {"conversationSummary": "", "pendingWork": ["q"]})
    await call("GET", "/agent/ana/checkpoint")
    m1 = await call("POST", "/agent/ana/messages", {"from": "bo", "message": "first"})
    await tick()
    await call("POST", "/agent/ana/messages", {"from": "cy", "message": "second", "type": "handoff"})
    await call("POST", "/agent/bo/messages", {"from": "ana", "message": "reply"})
    await call("GET", "/agent/ana/messages")
    await call("GET", "/agent/ana/messages?unread=true")
    await tick()
    await call("PATCH", "/agent/ana/messages", {"messageIds": [m1["message"]["id"], "unknown"]})
    await call("GET", "/agent/ana/messages?unread=1")
    await call("GET", "/agent/ana/messages?limit=1")
    await call(
        "POST", "/agent/ana/memory", {"category": "discovery", "content": "Found a race", "tags": ["Locks"]}
    )
    await tick()
    await call("POST", "/agent/ana/memory", {"content": "100% sure_thing"})
    await call("POST", "/agent/bo/memory", {"content": "not ana's"})
    await call("GET", "/agent/ana/memory")
    await call("GET", "/agent/ana/memory?category=discovery")
    await call("GET", "/agent/ana/memory?query=LOCKS")
    await call("GET", "/agent/ana/memory?query=%25%20s_re")
    await call("GET", "/agent/ana/memory?limit=1")
    await call("GET", "/agent/ana/state")
    await call("GET", "/agent/bo")
    await call("GET", "/agent/nobody/state")
    # locks (their history is the actors' in every phase, see test_lock_api.py)
    lock = "/lock/src%2Fa.ts"
    await call("GET", f"{lock}/check")
    await call("POST", f"{lock}/lock", {"agentId": "ana", "reason": "edit", "ttlMs": 90_000})
    await tick(1000)
    await call("POST", f"{lock}/lock", {"agentId": "bo"})
    await call("POST", f"{lock}/lock", {"agentId": "ana", "ttlMs": 1000, "resourceType": "branch"})
    await call("GET", f"{lock}/check")
    await call("POST", f"{lock}/unlock", {"agentId": "bo"})
    await call("POST", f"{lock}/unlock", {"agentId": "bo", "force": True})
    await call("POST", f"{lock}/unlock", {"agentId": "ana"})
    await call("POST", f"{lock}/lock", {"agentId": "cy", "ttlMs": 5000})
    await call("POST", f"{lock}/unlock", {"agentId": "cy"})
    await call("GET", f"{lock}")
    # edges
    await tick()
    await call("POST", "/coordinator/agents", {"agentId": "new", "currentTask": "", "workingOn": ""})
    await tick()
    z2 = {"action": "claim", "zoneId": "z2", "path": "src/deep/", "owner": "cy"}
    await call("POST", "/coordinator/zones", z2)
    await call("GET", "/coordinator/zones?owner=bo")
    again = {"action": "claim", "what": "v", "by": "bo", "description": "again"}
    await call("POST", "/coordinator/claims", again)
    await call("GET", "/coordinator/claims?what=v")
    await call("POST", "/agent/ana/messages", {"from": "ana", "message": "note to self"})
    await tick()
    await call("GET", "/agent/ana/messages")
    await call("PATCH", "/agent/bo/messages", {"messageIds": [m1["message"]["id"]]})
    await call("PATCH", "/agent/ana/messages", {"messageIds": []})
    await call("GET", "/agent/ana/state")
    await call("POST", "/agent/%C3%BCber/memory", {"content": "ü", "tags": ["Ü", "ü"]})
    await call("GET", "/agent/%C3%BCber/memory?query=%C3%BC")
    await call("GET", "/coordinator/handoffs?toAgent=zed")
    await call("POST", "/coordinator/tasks", {"id": "t3", "status": "blocked", "tags": []})
    await tick()
    await call("PATCH", "/coordinator/tasks", {"id": "t3", "status": "completed", "files": []})
    await call("GET", "/coordinator/tasks?status=completed")
    await call("GET", "/coordinator/chat?limit=0")
    await call("GET", "/coordinator/chat?limit=2000")
    await call("POST", "/lock/x/lock", {"agentId": "ana", "ttlMs": 0})
    await call("POST", "/lock/x/lock", {"agentId": "ana", "ttlMs": None, "reason": "r"})
    await call("GET", "/lock/x/check")
    await call("POST", "/lock/x/unlock", {"agentId": "ana", "force": False})
    await call("GET", "/coordinator/work?agentId=new&limit=1")
    await call("GET", "/coordinator/agents")
    return out


async def transcript(settings: Settings, clock: FakeClock) -> Transcript:
    server, session = await start_api(settings, clock)
    api = Api(server, session)
    try:
        api.app[GATEWAY].ids = IdGenerator(random.Random(7))
        return await play(api, clock)
    finally:
        await session.close()
        await server.close()


@pytest.fixture
def actor_settings(tmp_path: Path, settings: Settings) -> Settings:
    """The same settings on the actor store alone, in a data directory of its own."""
    return Settings(
        server=settings.server,
        storage=dataclasses.replace(settings.storage, data_dir=tmp_path / "actors-only"),
    )


@pytest.mark.parametrize("store_kind", ["write-through", "read-switch"])
async def test_every_phase_answers_as_the_actors(settings: Settings, actor_settings: Settings) -> None:
    """The same requests give the same statuses and JSON from the actors and from each phase."""
    expected = await transcript(actor_settings, FakeClock(START_MS))
    if settings.migration.phase in ("parallel", "write-through"):
        expected = as_served_from_redis(expected)
    got = await transcript(settings, FakeClock(START_MS))
    assert len(got) == len(expected)
    for (request, *want), (_, *have) in zip(expected, got, strict=True):
        assert have == want, f"{request}: {difference(want, have)}"


def as_served_from_redis(actors: Transcript) -> Transcript:
    """The actors' transcript with the documented differences of Redis serving applied
    (docs/compatibility.md, "Serving from the legacy store"): a task `assignee` of `""` reads
    back as `null`, since the legacy layout writes `""` for unassigned."""

    def unassigned(value: Any) -> Any:
        if isinstance(value, list):
            return [unassigned(v) for v in value]
        if isinstance(value, dict):
            return {k: None if k == "assignee" and v == "" else unassigned(v) for k, v in value.items()}
        return value

    return [
        (request, status, body if request == "POST /coordinator/tasks" else unassigned(body))
        for request, status, body in actors
    ]


def difference(a: Any, b: Any, path: str = "$") -> str | None:
    """Where two JSON values first differ (key order included), with both values there."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)} != {list(b)}"
        pairs = [(f"{path}.{k}", a[k], b[k]) for k in a]
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        pairs = [(f"{path}[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b, strict=True))]
    else:
        return None if type(a) is type(b) and a == b else f"{path}: {a!r} != {b!r}"
    return next((d for sub, x, y in pairs if (d := difference(x, y, sub))), None)
