"""The routes of do-api.md 7.4 and 7.5 over HTTP, in every serving store: onboarding, session
resume, soul, dashboard, traces, heartbeat, shadow and goals, with upstream's shapes and the
fixes of docs/compatibility.md ("Souls, traces and goals")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from gateway.app import GATEWAY
from gateway.clock import FakeClock
from gateway.settings import Settings

from .conftest import Api

A = "/agent/alice"
SOUL_KEYS = [
    "soulId",
    "name",
    "personality",
    "createdAt",
    "totalXP",
    "level",
    "currentStreak",
    "longestStreak",
    "tasksCompleted",
    "tasksSuccessful",
    "totalTokensUsed",
    "avgEfficiency",
    "peersHelped",
    "escalationCount",
    "selfResolvedCount",
    "peerAssistCount",
    "humanEscalationCount",
    "specializations",
    "achievements",
    "abilities",
    "trustScore",
    "transparencyScore",
    "trackRecordScore",
]


async def test_soul_lifecycle_keeps_progress(api: Api, clock: FakeClock) -> None:
    """GET null, POST creates (create form), add-xp, a second POST renames and keeps the XP."""
    assert await api.get(f"{A}/soul") == (200, {"soul": None})
    status, body = await api.post(f"{A}/soul", {"name": "Alice", "personality": "curious"})
    assert status == 200
    assert list(body["soul"]) == SOUL_KEYS
    assert body["soul"]["soulId"] == "alice"
    assert body["soul"]["createdAt"] == "2026-11-25T17:28:47.041Z"
    status, body = await api.call("PATCH", f"{A}/soul", {"action": "add-xp", "xp": 50, "source": "t"})
    assert status == 200
    assert (body["success"], body["xpGained"], body["totalXP"]) == (True, 50, 50)
    assert "levelUp" not in body
    assert body["soul"]["lastTraceId"] is None
    assert (body["soul"]["rustLevel"], body["soul"]["effectiveXPMultiplier"]) == (0, 1)
    await clock.advance(1000)
    status, body = await api.post(f"{A}/soul", {"name": "Alice II"})
    assert status == 200
    soul = body["soul"]
    assert (soul["name"], soul["personality"], soul["totalXP"]) == ("Alice II", "curious", 50)
    assert soul["createdAt"] == "2026-11-25T17:28:47.041Z"
    status, body = await api.call(
        "PATCH", f"{A}/soul", {"action": "unlock-achievement", "achievementId": "x"}
    )
    assert (status, body["alreadyUnlocked"], body["soul"]["achievements"]) == (200, False, ["x"])
    status, body = await api.call(
        "PATCH", f"{A}/soul", {"action": "unlock-achievement", "achievementId": "x"}
    )
    assert (status, body["alreadyUnlocked"], body["soul"]["achievements"]) == (200, True, ["x"])


async def test_soul_patch_rejects_bad_bodies(api: Api) -> None:
    """Every PATCH that upstream could not act on is a 400 naming the problem."""
    for body in (
        {"action": "add-xp"},
        {"action": "add-xp", "xp": -1},
        {"action": "add-xp", "xp": "50"},
        {"action": "add-xp", "xp": 10**12},
        {"action": "unlock-achievement"},
        {"action": "nope"},
        {},
        {"traceId": 5},
        {"traceId": "t", "domain": "cooking"},
    ):
        status, got = await api.call("PATCH", f"{A}/soul", body)
        assert status == 400, body
        assert "error" in got
    assert await api.get(f"{A}/soul") == (200, {"soul": None})


async def test_traces_steps_escalations_and_credit(api: Api, clock: FakeClock) -> None:
    """A trace's life: start, steps (three dead ends escalate), resolve, complete, credit the soul once."""
    status, body = await api.post(f"{A}/trace", {"task": "Fix it", "sessionId": "s1"})
    assert body == {
        "success": True,
        "trace": {
            "sessionId": "s1",
            "agentId": "alice",
            "task": "Fix it",
            "startedAt": "2026-11-25T17:28:47.041Z",
            "steps": [],
        },
    }
    assert (await api.post(f"{A}/trace", {"task": "again", "sessionId": "s1"}))[0] == 409
    status, body = await api.post(f"{A}/trace", {"taskDescription": "other"})
    assert body["trace"]["sessionId"].startswith("trace-1795627727041-")
    escalation = None
    for i in range(3):
        await clock.advance(10)
        status, body = await api.post(
            f"{A}/trace/s1/step",
            {"tool": "grep", "intent": f"try {i}", "outcome": "nothing", "durationMs": 5},
        )
        assert status == 200
        assert "contributionType" not in body["step"]
        escalation = body.get("escalation")
    assert escalation is not None
    assert [t["type"] for t in escalation["triggers"]] == ["stuck_loop", "repeated_failures"]
    assert (escalation["highestLevel"], escalation["shouldEscalate"]) == (2, True)
    esc_id = escalation["escalationId"]
    status, body = await api.get(f"{A}/trace/s1/escalations")
    assert [e["id"] for e in body["escalations"]] == [esc_id]
    assert body["escalations"][0]["resolvedAt"] is None
    status, body = await api.post(
        f"{A}/trace/s1/resolve-escalation", {"escalationId": esc_id, "resolvedBy": "self"}
    )
    assert body == {
        "success": True,
        "resolution": {
            "escalationId": esc_id,
            "resolvedBy": "self",
            "resolutionTime": "2026-11-25T17:28:47.071Z",
        },
    }
    assert (
        await api.post(f"{A}/trace/s1/resolve-escalation", {"escalationId": "esc-x", "resolvedBy": "self"})
    )[0] == 404
    assert await api.post(f"{A}/trace/nope/complete") == (404, {"error": "Trace not found"})
    assert await api.post(f"{A}/trace/nope/step", {"tool": "x"}) == (404, {"error": "Trace not found"})
    assert await api.get(f"{A}/trace/nope") == (404, {"error": "Trace not found"})
    assert await api.get(f"{A}/trace/s1/bogus") == (400, {"error": "Invalid trace action"})
    status, body = await api.post(f"{A}/trace/s1/complete")
    summary = body["trace"]["summary"]
    assert summary == {
        "totalSteps": 3,
        "deadEnds": 3,
        "explorationTimeMs": 15,
        "solutionTimeMs": 0,
        "efficiency": 0,
    }
    status, body = await api.get(f"{A}/trace")
    assert [t["sessionId"] for t in body["traces"]][-1] == "s1"
    status, body = await api.call("PATCH", f"{A}/soul", {"traceId": "s1", "domain": "backend"})
    assert status == 200
    # base 10 + self-resolved 10 (one escalation, resolved by self)
    assert (body["xpGained"], body["soul"]["totalXP"], body["soul"]["currentStreak"]) == (20, 20, 1)
    assert body["soul"]["specializations"]["backend"] == 10
    assert body["soul"]["lastTraceId"] == "s1"
    assert (await api.call("PATCH", f"{A}/soul", {"traceId": "s1"}))[0] == 409
    assert (await api.call("PATCH", f"{A}/soul", {"traceId": "nope"}))[0] == 404


async def test_heartbeat_log_is_pruned_to_100(api: Api, clock: FakeClock) -> None:
    """105 heartbeats: the log keeps the newest 100; GET reports the last one and the newest 10."""
    for _ in range(105):
        await clock.advance(1)
        status, body = await api.post(f"{A}/heartbeat", {"tokensUsed": 3, "currentTask": "t"})
        assert status == 200
    await clock.advance(8)
    status, body = await api.get(f"{A}/heartbeat")
    assert status == 200
    assert body["heartbeatCount"] == 100
    assert body["lastHeartbeat"] == "2026-11-25T17:28:47.146Z"
    assert (body["stalledForMs"], body["stalledForMinutes"], body["isHealthy"]) == (8, 0, True)
    assert len(body["recentHeartbeats"]) == 10
    assert body["recentHeartbeats"][0] == {"timestamp": "2026-11-25T17:28:47.146Z", "status": "healthy"}


async def test_shadow_actions(api: Api) -> None:
    """register-shadow, become-shadow, configure and takeover, with upstream's answers."""
    status, body = await api.get(f"{A}/shadow")
    assert (body["hasShadow"], body["shadowStatus"], body["isHealthy"]) == (False, "none", True)
    assert (await api.post(f"{A}/shadow", {"action": "register-shadow"}))[0] == 400
    assert (await api.post(f"{A}/shadow", {"action": "become-shadow"}))[0] == 400
    assert await api.post(f"{A}/shadow", {"action": "dance"}) == (
        400,
        {"error": "Unknown action. Use: register-shadow, become-shadow, takeover, configure"},
    )
    status, body = await api.post(f"{A}/shadow", {"action": "register-shadow", "shadowId": "bob"})
    assert (status, body["message"]) == (200, "Shadow bob registered for monitoring")
    assert await api.post(f"{A}/shadow?action=configure", {"stallThresholdMs": 1000}) == (
        200,
        {"success": True, "config": {"stallThresholdMs": 1000, "heartbeatIntervalMs": 60000}},
    )
    body = (await api.post(f"{A}/shadow", {"action": "takeover"}))[1]
    assert body["takeover"]["previousStatus"] == "monitoring"
    body = (await api.get(f"{A}/shadow"))[1]
    assert (body["shadowId"], body["shadowStatus"], body["stallThresholdMs"]) == ("bob", "taken-over", 1000)
    _status, body = await api.post("/agent/bob/shadow", {"action": "become-shadow", "primaryAgent": "alice"})
    assert body["config"]["isShadow"] is True


async def test_goals_queue_and_xp_reward(api: Api, clock: FakeClock) -> None:
    """create, list by priority, next, start, active, complete (XP to the soul, once), stats."""
    await api.post(f"{A}/soul", {})
    ids = []
    for title, prio in (("low", 2), ("high", 8)):
        status, body = await api.post(
            f"{A}/goals", {"action": "create", "title": title, "priority": prio, "xpReward": 20}
        )
        assert (status, body["goal"]["status"]) == (200, "pending")
        ids.append(body["goal"]["id"])
        await clock.advance(1)
    status, body = await api.get(f"{A}/goals")
    assert [g["title"] for g in body["goals"]] == ["high", "low"]
    assert (await api.get(f"{A}/goals?action=next"))[1]["goal"]["title"] == "high"
    assert await api.get(f"{A}/goals?action=active") == (200, {"goal": None})
    status, body = await api.post(f"{A}/goals?action=start", {"id": ids[1]})
    assert body["goal"]["status"] == "in_progress"
    assert (await api.get(f"{A}/goals?action=active"))[1]["goal"]["id"] == ids[1]
    status, body = await api.post(f"{A}/goals", {"action": "complete", "id": ids[1]})
    assert (body["xpAwarded"], body["goal"]["xpReward"]) == (20, 20)
    assert (await api.post(f"{A}/goals", {"action": "complete", "id": ids[1]}))[0] == 409
    assert (await api.post(f"{A}/goals", {"action": "start", "id": "goal-nope"}))[0] == 404
    soul = (await api.get(f"{A}/soul"))[1]["soul"]
    assert (soul["totalXP"], soul["tasksCompleted"], soul["tasksSuccessful"]) == (20, 1, 1)
    assert (await api.post(f"{A}/goals", {"action": "abandon", "id": ids[0]}))[1]["goal"][
        "status"
    ] == "abandoned"
    status, body = await api.get(f"{A}/goals?action=stats")
    assert body["stats"] == {
        "total": 2,
        "pending": 0,
        "inProgress": 0,
        "completed": 1,
        "failed": 0,
        "totalXpEarned": 20,
        "totalXpPending": 0,
    }
    assert await api.call("DELETE", f"{A}/goals?id={ids[0]}") == (200, {"success": True, "deleted": ids[0]})
    assert (await api.call("DELETE", f"{A}/goals"))[0] == 400
    assert (await api.post(f"{A}/goals", {"action": "create"}))[0] == 400
    assert (await api.post(f"{A}/goals", {"action": "start"}))[0] == 400
    assert (await api.post(f"{A}/goals", {"action": "explode", "id": "x"}))[0] == 400


async def test_dashboard(api: Api) -> None:
    """404 without a soul; with one, upstream's keys and a novice's level progress."""
    assert await api.get(f"{A}/dashboard") == (
        404,
        {"error": "No soul data", "hint": "POST to /soul first to initialize"},
    )
    await api.post(f"{A}/soul", {})
    _status, body = await api.get(f"{A}/dashboard")
    d = body["dashboard"]
    assert list(d) == [
        "agentId",
        "timestamp",
        "level",
        "streak",
        "rust",
        "flow",
        "session",
        "trust",
        "abilities",
        "specializations",
        "recentAchievements",
        "alerts",
        "shadow",
        "heartbeat",
        "suggestions",
    ]
    assert d["level"] == {
        "current": "novice",
        "xp": 0,
        "nextLevel": "capable",
        "xpNeeded": 100,
        "xpProgress": 0,
        "streakNeeded": 3,
        "tasksNeeded": 5,
    }
    assert d["flow"] == {"status": "offline", "durationMinutes": 0, "respectFlow": False}
    assert (await api.post(f"{A}/dashboard", {}))[0] == 405


async def test_onboard_reads_each_online_agent_once(
    api: Api, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Onboarding a new agent: its soul is created, each online teammate's actor is read once
    (never more than `limits.onboard_parallel_reads` at once), the oldest pending handoff is suggested."""
    assert await api.get("/coordinator/onboard") == (400, {"error": "agentId query parameter required"})
    for agent in ("bob", "carol", "dave"):
        await api.post("/coordinator/agents", {"agentId": agent, "status": "active"})
    await api.post("/agent/bob/soul", {})
    await api.post("/coordinator/handoffs", {"fromAgent": "bob", "title": "first", "context": "c"})
    await clock.advance(1)  # Redis keeps no order among equal timestamps (compatibility.md 40)
    await api.post("/coordinator/handoffs", {"fromAgent": "bob", "title": "second", "context": "c"})
    await api.post("/coordinator/chat", {"author": "bob", "message": "hello"})
    progress = api.app[GATEWAY].progress.progress
    reads: list[str] = []
    active = 0
    peak = 0
    real = progress.flow_status

    async def counted(agent_id: str, now_ms: int) -> str:
        nonlocal active, peak
        reads.append(agent_id)
        active += 1
        peak = max(peak, active)
        try:
            await asyncio.sleep(0)
            return await real(agent_id, now_ms)
        finally:
            active -= 1

    monkeypatch.setattr(progress, "flow_status", counted)
    status, body = await api.get("/coordinator/onboard?agentId=a%2Bb")
    assert status == 200
    ob = body["onboarding"]
    assert sorted(reads) == ["bob", "carol", "dave"]
    assert peak <= api.app[GATEWAY].limits.onboard_parallel_reads
    assert (ob["agentId"], ob["isNewAgent"], ob["checkpoint"]) == ("a+b", True, None)
    assert ob["soul"]["soulId"] == "a+b"
    assert ob["soul"]["personality"] == "helpful assistant"
    assert {t["agentId"]: t["flowStatus"] for t in ob["teamOnline"]} == {
        "bob": "offline",
        "carol": "unknown",
        "dave": "unknown",
    }
    assert ob["suggestedTask"]["task"] == "Help needed: first"
    assert [m["message"] for m in ob["recentChat"]] == ["hello"]
    assert "reactions" not in ob["recentChat"][0]
    # the soul is the agent's own, under its decoded id
    assert (await api.get("/agent/a%2Bb/soul"))[1]["soul"]["soulId"] == "a+b"
    # a returning agent with a checkpoint is told to resume
    await api.post("/agent/a%2Bb/checkpoint", {"conversationSummary": "the parser"})
    status, body = await api.get("/coordinator/onboard?agentId=a%2Bb")
    ob = body["onboarding"]
    assert (ob["isNewAgent"], ob["checkpoint"]["conversationSummary"]) == (False, "the parser")
    assert ob["suggestedTask"] == {
        "task": "the parser",
        "reason": "Continues your previous session",
        "xpEstimate": 30,
        "priority": "high",
    }
    assert ob["welcomeMessage"] == 'Welcome back, a+b! You were working on: "the parser"'
    assert (await api.post("/coordinator/onboard?agentId=x", {}))[0] == 405


async def test_session_resume(api: Api, clock: FakeClock) -> None:
    """Participants by message count, accomplishments, pending work and the summary line."""
    body = (await api.get("/coordinator/session-resume"))[1]
    empty = body["sessionResume"]
    assert empty["session"]["durationDescription"] == "Unknown"
    assert empty["summaryText"] == "No recent activity"
    await api.post("/coordinator/chat", {"author": "bob", "message": "start"})
    await clock.advance(61 * 60 * 1000)
    await api.post("/coordinator/chat", {"author": "alice", "message": "✅ shipped the parser\nmore"})
    await api.post("/coordinator/chat", {"author": "alice", "message": "ok"})
    await api.post("/coordinator/tasks", {"title": "T", "createdBy": "bob", "status": "in-progress"})
    await api.post("/coordinator/handoffs", {"fromAgent": "bob", "title": "H", "context": "c"})
    await api.post("/coordinator/claims", {"action": "claim", "what": "w", "by": "bob"})
    _status, body = await api.get("/coordinator/session-resume")
    sr = body["sessionResume"]
    assert [(p["agentId"], p["messageCount"], p["lastMessage"]) for p in sr["participants"]] == [
        ("alice", 2, "ok"),
        ("bob", 1, "start"),
    ]
    assert sr["session"]["durationDescription"] == "1h 1m"
    assert sr["accomplishments"] == ["✅ shipped the parser"]
    assert [h["title"] for h in sr["pending"]["handoffs"]] == ["H"]
    assert [t["title"] for t in sr["pending"]["tasks"]] == ["T"]
    assert [c["what"] for c in sr["pending"]["claims"]] == ["w"]
    assert [q["action"] for q in sr["quickActions"]] == [
        "review_handoffs",
        "check_progress",
        "spawn_team",
        "view_chat",
    ]
    assert sr["summaryText"] == "2 agents active • 1 thing shipped • 1 handoff pending • 1 task in progress"
    assert (await api.post("/coordinator/session-resume", {}))[0] == 405


async def test_progress_is_not_mirrored_to_redis(api: Api, settings: Settings) -> None:
    """The actor-only domains never reach the legacy store, in any phase."""
    await api.post(f"{A}/soul", {})
    await api.post(f"{A}/trace", {"task": "t", "sessionId": "s"})
    await api.post(f"{A}/goals", {"action": "create", "title": "g"})
    await api.post(f"{A}/heartbeat", {})
    await api.settle()
    if settings.legacy.redis_url is None:
        return
    r = redis.Redis.from_url(settings.legacy.redis_url, decode_responses=True)
    try:
        keys: list[Any] = list(r.scan_iter("*"))
        assert [k for k in keys if any(w in k for w in ("soul", "trace", "goal", "heartbeat"))] == []
    finally:
        r.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/soul", {"name": 5}),
        ("POST", "/soul", {"soulId": "x" * 300}),
        ("POST", "/soul", {"personality": "x" * 70_000}),
        ("POST", "/trace", {"task": ["a"]}),
        ("POST", "/trace", {"sessionId": 7}),
        ("POST", "/trace/s/step", {"outcome": "maybe"}),
        ("POST", "/trace/s/step", {"durationMs": "5"}),
        ("POST", "/trace/s/step", {"knowledgeGained": [1]}),
        ("POST", "/trace/s/resolve-escalation", {"resolvedBy": "self"}),
        ("POST", "/trace/s/resolve-escalation", {"escalationId": "e", "resolvedBy": "god"}),
        ("POST", "/heartbeat", {"tokensUsed": -1}),
        ("POST", "/heartbeat", {"currentTask": {"a": 1}}),
        ("POST", "/shadow", {"action": "configure", "stallThresholdMs": 1.5}),
        ("POST", "/goals", {"action": "create", "title": "t", "priority": "high"}),
        ("POST", "/goals", {"action": "create", "title": "t", "xpReward": 10**9}),
        ("POST", "/goals", {"action": "create", "title": "x" * 70_000}),
        ("POST", "/goals", []),
        ("PATCH", "/soul", "not json"),
    ],
)
async def test_bad_bodies_are_4xx_json(api: Api, method: str, path: str, body: Any) -> None:
    """Wrong types, unknown values, missing ids and huge strings: a 4xx with a JSON error."""
    await api.post(f"{A}/trace", {"task": "t", "sessionId": "s"})
    if isinstance(body, str):
        status, got = await api.call(method, A + path, raw=body.encode())
    else:
        status, got = await api.call(method, A + path, body)
    assert 400 <= status < 500, (status, got)
    assert isinstance(got, dict)
    assert "error" in got
