"""WebSocket push works in every phase (migration.md: it is part of the gateway, not of a store).

When legacy Redis is authoritative the router pushes the frames the actors would have pushed;
the frames must be the same, in the same order, whichever store decided.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType

from gateway.domain.phase import PHASES

from .conftest import GwFactory
from .helpers import lock_url, poll


async def recv(ws: ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


def frame(kind: str, payload: Any, timestamp: str) -> dict[str, Any]:
    return {"type": kind, "payload": payload, "timestamp": timestamp}


@pytest.mark.parametrize("phase", PHASES)
async def test_coordinator_socket_sees_every_push(start_gw: GwFactory, phase: str) -> None:
    """A coordinator socket gets agent, chat, task, handoff and lock updates, and the offline
    update when another agent's socket closes; the closed agent is offline in the stores."""
    gw = await start_gw(phase)
    c = gw.client
    now = "2026-11-25T17:28:47.041Z"
    watcher = await c.ws("/coordinator?agentId=watcher")
    welcome = await recv(watcher)
    assert welcome["type"] == "agent-update"
    assert [a["agentId"] for a in welcome["payload"]["agents"]] == ["watcher"]
    leaver = await c.ws("/coordinator?agentId=leaver")
    assert (await recv(leaver))["payload"]["message"] == "Welcome leaver!"

    await c.ok("POST", "/coordinator/agents", {"agentId": "carol", "status": "busy"})
    msg = (await c.ok("POST", "/coordinator/chat", {"author": "carol", "message": "hello"}))["message"]
    created = (await c.ok("POST", "/coordinator/tasks", {"id": "t1", "title": "T"}))["task"]
    updated = (await c.ok("PATCH", "/coordinator/tasks", {"id": "t1", "status": "done"}))["task"]
    handoff = (
        await c.ok("POST", "/coordinator/handoffs", {"fromAgent": "carol", "title": "h", "context": "x"})
    )["handoff"]
    lock = (await c.ok("POST", lock_url("src/a.ts", "lock"), {"agentId": "carol"}))["lock"]
    await c.ok("POST", lock_url("src/a.ts", "unlock"), {"agentId": "carol"})
    await leaver.close()

    expected = [
        frame("agent-update", {"agentId": "carol", "status": "busy"}, now),
        frame("chat", msg, now),
        frame("task-update", created, now),
        frame("task-update", updated, now),
        frame("task-update", {"action": "handoff-created", "handoff": handoff}, now),
        frame("lock-update", {"action": "locked", "resourcePath": "src/a.ts", "lock": lock}, now),
        frame(
            "lock-update",
            {
                "action": "unlocked",
                "resourcePath": "src/a.ts",
                "previousOwner": "carol",
                "releaseReason": "manual",
            },
            now,
        ),
        frame("agent-update", {"agentId": "leaver", "status": "offline"}, now),
    ]
    assert [await recv(watcher) for _ in expected] == expected
    await watcher.close()

    async def both_offline() -> bool:
        await gw.router.drain()
        stores = [gw.actors.snapshot()] + ([] if phase == "cutover" else [gw.legacy.snapshot()])
        return all(
            s["agent"].get(a, {}).get("status") == "offline" for s in stores for a in ("leaver", "watcher")
        )

    await poll(both_offline, what="the closed sockets' agents to be offline in the stores")


@pytest.mark.parametrize("phase", PHASES)
async def test_agent_socket_gets_state_dms_and_checkpoint_acks(start_gw: GwFactory, phase: str) -> None:
    """An agent socket gets its state on open, a push per DM sent to it, and `checkpoint-saved`
    for a checkpoint it saves over the socket (which lands where the phase writes)."""
    gw = await start_gw(phase, shadow_sample_rate=1.0)
    now = "2026-11-25T17:28:47.041Z"
    ws = await gw.client.ws("/agent/bob")
    sync = await recv(ws)
    assert sync["type"] == "state-sync"
    assert sync["payload"]["agentId"] == "bob"
    dm = (await gw.client.ok("POST", "/agent/bob/messages", {"from": "alice", "message": "hi"}))["message"]
    assert await recv(ws) == frame("chat", dm, now)
    await ws.send_str(
        orjson.dumps({"type": "checkpoint-save", "payload": {"conversationSummary": "s"}}).decode()
    )
    assert await recv(ws) == {"type": "checkpoint-saved", "timestamp": now}
    await ws.close()
    await gw.router.drain()
    stores = [gw.actors.snapshot()] + ([] if phase == "cutover" else [gw.legacy.snapshot()])
    for snap in stores:
        assert snap["checkpoint"]["bob"]["conversationSummary"] == "s"
        assert list(snap["dm"]) == [dm["id"]]
