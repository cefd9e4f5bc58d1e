"""The parsed legacy values are shared between requests and must never be changed in place.

`LegacyRecords.parse_shared` keeps each parsed agent, lock, checkpoint, task and chat message by
its exact text, and `LegacyRecords.fragment` keeps each one's rendered JSON by object: a route
that changed a shared record in place (`agent.status = ...` on what `agent_of` returned) would
serve the changed value to every later reader of the unchanged text, and its stale JSON too.
This drives every write and the mix's reads through a write-through gateway, twice over, and
checks that every value the cache handed out is still what it was when it was parsed.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.legacy.records import DecodedValues

from .conftest import GwFactory
from .helpers import AGENTS, LOCK_KEPT, Client, lock_url, write_everything

pytestmark = pytest.mark.asyncio

READS = [
    "/coordinator/agents",
    "/coordinator/chat?limit=50",
    "/coordinator/tasks",
    "/coordinator/tasks?status=todo",
    "/coordinator/work?agentId=alice",
    "/coordinator/work?agentId=bob",
    lock_url(LOCK_KEPT, "check"),
    "/agent/alice/checkpoint",
    "/agent/alice/state",
    "/agent/bob/state",
]


async def read_everything(c: Client) -> None:
    for path in READS:
        await c.ok("GET", path)


async def write_again(c: Client) -> None:
    """Writes that read an existing record and make a changed one from it."""
    for agent in AGENTS:
        body = {"agentId": agent, "status": "busy", "currentTask": "again"}
        await c.ok("POST", "/coordinator/agents", body)
    await c.ok("POST", lock_url(LOCK_KEPT, "lock"), {"agentId": "alice", "reason": "refresh"})
    await c.ok("POST", "/agent/alice/checkpoint", {"conversationSummary": "again", "pendingWork": []})
    tasks = await c.ok("GET", "/coordinator/tasks")
    for task in tasks["tasks"]:
        await c.ok("PATCH", "/coordinator/tasks", {"id": task["id"], "status": "done"})
    await c.ok("POST", "/coordinator/chat", {"author": "bob", "message": "again"})


async def test_shared_parsed_values_are_never_changed_in_place(
    start_gw: GwFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed_out: list[tuple[tuple[str, str | None], Any, Any]] = []
    put = DecodedValues.put

    def recording_put(self: DecodedValues, key: str, field: str | None, raw: str, value: Any) -> None:
        handed_out.append(((key, field), value, copy.deepcopy(value)))
        put(self, key, field, raw, value)

    monkeypatch.setattr(DecodedValues, "put", recording_put)
    gw = await start_gw("write-through")
    c = gw.client
    await write_everything(c)
    for _ in range(2):
        await read_everything(c)
        await write_again(c)
    await read_everything(c)

    kinds = {type(value).__name__ for _, value, _ in handed_out}
    assert {"Agent", "Lock", "Checkpoint", "Task", "GroupMessage"} <= kinds, kinds
    changed = [(where, kept, now) for where, now, kept in handed_out if now != kept]
    assert not changed, f"shared parsed values changed in place: {changed[:3]}"
