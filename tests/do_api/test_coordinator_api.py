"""Coordinator agents, chat, tasks and /work over HTTP (do-api.md 3)."""

from __future__ import annotations

from gateway.clock import FakeClock

from .conftest import Api

AGENT_KEYS = ["agentId", "status", "currentTask", "workingOn", "lastSeen", "capabilities", "offers", "needs"]
MSG_KEYS = ["id", "author", "authorType", "message", "timestamp", "reactions"]
TASK_KEYS = [
    "id",
    "title",
    "description",
    "status",
    "assignee",
    "createdBy",
    "priority",
    "tags",
    "files",
    "createdAt",
    "updatedAt",
]


async def chat(api: Api, clock: FakeClock, author: str, message: str) -> dict[str, object]:
    await clock.advance(1)
    status, body = await api.post("/coordinator/chat", {"author": author, "message": message})
    assert status == 200
    return body["message"]  # type: ignore[no-any-return]


async def test_register_echoes_raw_body_and_lists_read_back_form(api: Api, clock: FakeClock) -> None:
    """POST /agents echoes the raw body; GET lists the stored rows with nulls, newest first."""
    full = {
        "agentId": "alice",
        "status": "active",
        "currentTask": "Build",
        "workingOn": "src/x.ts",
        "capabilities": ["ts"],
        "offers": ["review"],
        "needs": ["tests"],
        "extra": 1,
    }
    assert await api.post("/coordinator/agents", full) == (200, {"success": True, "agent": full})
    await clock.advance(5)
    assert await api.post("/coordinator/agents", {"agentId": "bob"}) == (
        200,
        {"success": True, "agent": {"agentId": "bob"}},
    )
    status, body = await api.get("/coordinator/agents")
    assert status == 200
    assert [a["agentId"] for a in body["agents"]] == ["bob", "alice"]
    assert list(body["agents"][0]) == AGENT_KEYS
    assert body["agents"][0] == {
        "agentId": "bob",
        "status": "active",
        "currentTask": None,
        "workingOn": None,
        "lastSeen": "2026-11-25T17:28:47.046Z",
        "capabilities": [],
        "offers": [],
        "needs": [],
    }


async def test_partial_update_keeps_task_and_wipes_lists(api: Api, clock: FakeClock) -> None:
    """Upstream upsert: empty currentTask keeps the old one, omitted arrays become []."""
    await api.post("/coordinator/agents", {"agentId": "a", "currentTask": "T", "capabilities": ["x"]})
    await api.post("/coordinator/agents", {"agentId": "a", "currentTask": "", "status": "idle"})
    agent = (await api.get("/coordinator/agents"))[1]["agents"][0]
    assert (agent["status"], agent["currentTask"], agent["capabilities"]) == ("idle", "T", [])


async def test_offline_and_silent_agents_are_not_listed(api: Api, clock: FakeClock) -> None:
    """status offline hides an agent; so does silence longer than agent_offline_after_s."""
    await api.post("/coordinator/agents", {"agentId": "gone", "status": "offline"})
    await api.post("/coordinator/agents", {"agentId": "quiet"})
    assert [a["agentId"] for a in (await api.get("/coordinator/agents"))[1]["agents"]] == ["quiet"]
    await clock.advance(1800 * 1000 + 1)
    assert (await api.get("/coordinator/agents"))[1]["agents"] == []


async def test_missing_agent_id_is_400(api: Api) -> None:
    """POST /agents without agentId is a 400 naming the field (upstream stored a null agent)."""
    status, body = await api.post("/coordinator/agents", {"status": "idle"})
    assert status == 400
    assert body["field"] == "agentId"
    assert (await api.get("/coordinator/agents"))[1]["agents"] == []


async def test_chat_post_shape(api: Api, clock: FakeClock) -> None:
    """POST /chat answers the message; authorType defaults to agent; reactions []."""
    status, body = await api.post("/coordinator/chat", {"author": "a", "message": "hi"})
    assert status == 200
    msg = body["message"]
    assert list(msg) == MSG_KEYS
    assert msg["authorType"] == "agent"
    assert msg["reactions"] == []
    assert msg["timestamp"] == "2026-11-25T17:28:47.041Z"
    assert msg["id"].startswith("1795627727041-")


async def test_chat_returns_newest_n_in_order(api: Api, clock: FakeClock) -> None:
    """GET /chat?limit=N gives the newest N, oldest first, and count = N returned."""
    for i in range(8):
        await chat(api, clock, "f", f"m{i}")
    status, body = await api.get("/coordinator/chat?limit=3")
    assert status == 200
    assert [m["message"] for m in body["messages"]] == ["m5", "m6", "m7"]
    assert body["count"] == 3
    assert list(body) == ["messages", "count"]


async def test_chat_equal_timestamps_keep_insertion_order(api: Api) -> None:
    """Messages in the same millisecond come back in the order they were stored."""
    for i in range(5):
        await api.post("/coordinator/chat", {"author": "f", "message": f"m{i}"})
    body = (await api.get("/coordinator/chat?limit=3"))[1]
    assert [m["message"] for m in body["messages"]] == ["m2", "m3", "m4"]


async def test_chat_since(api: Api, clock: FakeClock) -> None:
    """since keeps messages strictly later; an invalid since gives an empty list."""
    first = await chat(api, clock, "a", "one")
    await chat(api, clock, "a", "two")
    await chat(api, clock, "a", "three")
    body = (await api.get(f"/coordinator/chat?since={first['timestamp']}&limit=10"))[1]
    assert [m["message"] for m in body["messages"]] == ["two", "three"]
    assert body["count"] == 2
    assert (await api.get("/coordinator/chat?since=garbage"))[1] == {"messages": [], "count": 0}


async def test_chat_bad_limit_is_400(api: Api) -> None:
    """limit=x and negative limits are 400s that still carry an empty list."""
    for q in ("x", "-5"):
        status, body = await api.get(f"/coordinator/chat?limit={q}")
        assert status == 400
        assert body["field"] == "limit"
        assert body["messages"] == []


async def test_mentions_and_inbox_use_their_own_cursor(api: Api, clock: FakeClock) -> None:
    """pendingMentions since the last check; a presence heartbeat does not consume them."""
    await api.post("/coordinator/agents", {"agentId": "alice"})
    await chat(api, clock, "bob", "@alice please review")
    await chat(api, clock, "carol", "@all shipped")
    await chat(api, clock, "alice", "@alice self mention")
    await chat(api, clock, "dave", "@alicex not me")
    await api.post("/coordinator/agents", {"agentId": "alice"})  # heartbeat: not a read
    status, body = await api.get("/coordinator/chat?agentId=alice&limit=2")
    assert status == 200
    assert list(body) == ["messages", "count", "pendingMentions", "pendingCount", "hint"]
    assert [m["message"] for m in body["pendingMentions"]] == ["@alice please review", "@all shipped"]
    assert body["pendingCount"] == 2
    assert body["hint"] == "You have 2 unread mention(s). Check and respond!"
    assert await api.get("/coordinator/chat?agentId=alice&inbox=true") == (
        200,
        {"messages": [], "count": 0, "agentId": "alice", "isInbox": True},
    )
    await chat(api, clock, "carol", "@ALICE are you there?")
    body = (await api.get("/coordinator/chat?agentId=alice&inbox=true"))[1]
    assert [m["message"] for m in body["messages"]] == ["@ALICE are you there?"]


async def test_mention_id_is_regex_escaped(api: Api, clock: FakeClock) -> None:
    """An agent id with regex metacharacters matches literally (upstream: 500)."""
    await chat(api, clock, "x", "@a(b hello")
    await chat(api, clock, "x", "@ab hello")
    status, body = await api.get("/coordinator/chat?agentId=a(b&inbox=true")
    assert status == 200
    assert [m["message"] for m in body["messages"]] == ["@a(b hello"]


async def test_chat_read_does_not_register_unknown_agent(api: Api) -> None:
    """GET /chat?agentId= refreshes a registered agent but does not create one."""
    await api.get("/coordinator/chat?agentId=ghost")
    assert (await api.get("/coordinator/agents"))[1]["agents"] == []


async def test_task_create_forms(api: Api, clock: FakeClock) -> None:
    """Create form omits description/assignee when absent; read-back form has nulls."""
    status, body = await api.post("/coordinator/tasks", {})
    assert status == 200
    task = body["task"]
    assert list(task) == [
        "id",
        "title",
        "status",
        "createdBy",
        "priority",
        "tags",
        "files",
        "createdAt",
        "updatedAt",
    ]
    assert (task["title"], task["status"], task["createdBy"], task["priority"]) == (
        "Untitled Task",
        "todo",
        "system",
        "medium",
    )
    listed = (await api.get("/coordinator/tasks"))[1]["tasks"][0]
    assert list(listed) == TASK_KEYS
    assert listed["description"] is None
    assert listed["assignee"] is None


async def test_task_duplicate_id_is_409(api: Api) -> None:
    """A client-supplied id that exists is a 409 (upstream: 500)."""
    assert (await api.post("/coordinator/tasks", {"id": "t1"}))[0] == 200
    status, body = await api.post("/coordinator/tasks", {"id": "t1", "title": "dup"})
    assert status == 409
    assert body["id"] == "t1"


async def test_task_list_filters_and_order(api: Api, clock: FakeClock) -> None:
    """status/assignee filters; newest first; '+' in the query is a space; limit bounds."""
    await api.post("/coordinator/tasks", {"id": "t1", "assignee": "a b"})
    await clock.advance(1)
    await api.post("/coordinator/tasks", {"id": "t2", "status": "done"})
    await clock.advance(1)
    await api.post("/coordinator/tasks", {"id": "t3"})
    assert [t["id"] for t in (await api.get("/coordinator/tasks"))[1]["tasks"]] == ["t3", "t2", "t1"]
    assert [t["id"] for t in (await api.get("/coordinator/tasks?status=todo"))[1]["tasks"]] == ["t3", "t1"]
    assert [t["id"] for t in (await api.get("/coordinator/tasks?assignee=a+b"))[1]["tasks"]] == ["t1"]
    assert [t["id"] for t in (await api.get("/coordinator/tasks?limit=1"))[1]["tasks"]] == ["t3"]


async def test_task_patch(api: Api, clock: FakeClock) -> None:
    """PATCH /tasks updates the given fields, bumps updatedAt and answers the read-back form."""
    await api.post("/coordinator/tasks", {"id": "t1", "title": "T", "assignee": "a"})
    await clock.advance(10)
    status, body = await api.call(
        "PATCH", "/coordinator/tasks", {"id": "t1", "status": "in-progress", "assignee": None}
    )
    assert status == 200
    task = body["task"]
    assert list(body) == ["success", "task"]
    assert list(task) == TASK_KEYS
    assert (task["status"], task["assignee"], task["title"]) == ("in-progress", None, "T")
    assert task["updatedAt"] == "2026-11-25T17:28:47.051Z"
    assert task["createdAt"] == "2026-11-25T17:28:47.041Z"
    assert (await api.call("PATCH", "/coordinator/tasks", {"id": "nope"}))[0] == 404
    assert (await api.call("PATCH", "/coordinator/tasks", {"id": "t1", "tags": "x"}))[1]["field"] == "tags"


async def test_work_bundle(api: Api, clock: FakeClock) -> None:
    """/work: HEAD shape, newest 20 chat, mentions read before the heartbeat; agentId required."""
    assert await api.get("/coordinator/work") == (400, {"error": "agentId required"})
    await api.post("/coordinator/tasks", {"id": "mine", "assignee": "alice", "status": "in-progress"})
    await api.post("/coordinator/tasks", {"id": "todo1"})
    for i in range(25):
        await chat(api, clock, "f", f"m{i}")
    await chat(api, clock, "bob", "@alice look")
    status, body = await api.call("POST", "/coordinator/work?agentId=alice", raw=b"")
    assert status == 200
    assert list(body) == ["agentId", "summary", "team", "tasks", "recentChat", "inbox"]
    assert body["summary"] == {"activeAgents": 1, "todoTasks": 1, "inProgressTasks": 1, "pendingMentions": 1}
    assert [a["agentId"] for a in body["team"]] == ["alice"]
    assert [t["id"] for t in body["tasks"]["mine"]] == ["mine"]
    assert len(body["recentChat"]) == 20
    assert body["recentChat"][-1]["message"] == "@alice look"
    assert body["recentChat"][0]["message"] == "m6"
    assert body["inbox"]["count"] == 1
    assert body["inbox"]["hint"] == "You have 1 unread mention(s)! Respond to keep the conversation flowing."


async def test_a_mention_in_the_same_millisecond_after_a_check_is_not_lost(api: Api) -> None:
    """The mention cursor is a position in the chat, not a time: a message posted in the same
    millisecond right after a check is reported by the next check (compatibility.md 17)."""
    await api.post("/coordinator/agents", {"agentId": "alice"})
    await api.post("/coordinator/chat", {"author": "bob", "message": "@alice one"})
    first = (await api.get("/coordinator/chat?agentId=alice&inbox=true"))[1]
    await api.post("/coordinator/chat", {"author": "bob", "message": "@alice two"})
    second = (await api.get("/coordinator/chat?agentId=alice&inbox=true"))[1]
    assert [m["message"] for m in first["messages"]] == ["@alice one"]
    assert [m["message"] for m in second["messages"]] == ["@alice two"]
    assert (await api.get("/coordinator/chat?agentId=alice&inbox=true"))[1]["messages"] == []
