"""Every WebSocket frame the server sends (do-api.md 8), built once, as JSON text.

The actors send them from their turns; while the legacy Redis serves, the phase router sends
the same frames itself (the actors then only receive replicated entities, which never push).
Both build them here, so a client cannot tell which store served.

Events are `{type, payload, timestamp}`; the two answers to a client's own frame (`pong`,
`checkpoint-saved`) carry no payload, as upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.domain.model import Agent, AgentStateView, DirectMessage, GroupMessage, Handoff, Lock, Task

__all__ = [
    "agent_offline",
    "agent_registered",
    "chat_posted",
    "checkpoint_saved",
    "dm_sent",
    "handoff_created",
    "lock_acquired",
    "lock_released",
    "pong",
    "state_sync",
    "task_created",
    "task_updated",
    "welcome",
]


def _event(kind: str, payload: Any, timestamp: str) -> str:
    return orjson.dumps({"type": kind, "payload": payload, "timestamp": timestamp}).decode()


def _answer(kind: str, timestamp: str) -> str:
    return orjson.dumps({"type": kind, "timestamp": timestamp}).decode()


# -- coordinator sockets ----------------------------------------------------------------------------


def welcome(agent_id: str, team: Sequence[Agent], now_iso: str) -> str:
    """`agent-update` to a coordinator socket just opened: the active agents and a greeting."""
    payload = {"agents": [a.to_json() for a in team], "message": f"Welcome {agent_id}!"}
    return _event("agent-update", payload, now_iso)


def agent_registered(body: dict[str, Any], now_iso: str) -> str:
    """`agent-update` on POST /agents: the request body as given (upstream)."""
    return _event("agent-update", body, now_iso)


def agent_offline(agent_id: str, now_iso: str) -> str:
    """`agent-update` when an agent's last coordinator socket closed."""
    return _event("agent-update", {"agentId": agent_id, "status": "offline"}, now_iso)


def chat_posted(msg: GroupMessage) -> str:
    """`chat` on a group message, at the message's own time."""
    return _event("chat", msg.to_json(), msg.timestamp)


def task_created(task: Task) -> str:
    """`task-update` on a new task (its create form)."""
    return _event("task-update", task.create_json(), task.created_at)


def task_updated(task: Task) -> str:
    """`task-update` on a changed task (its read-back form)."""
    return _event("task-update", task.to_json(), task.updated_at)


def handoff_created(h: Handoff) -> str:
    """`task-update {action: 'handoff-created'}` on a new handoff."""
    return _event("task-update", {"action": "handoff-created", "handoff": h.create_json()}, h.created_at)


def lock_acquired(lock: Lock, now_iso: str) -> str:
    """`lock-update {action: 'locked'}` on a lock, a re-lock or a takeover."""
    return _event(
        "lock-update",
        {"action": "locked", "resourcePath": lock.resource_path, "lock": lock.create_json()},
        now_iso,
    )


def lock_released(lock: Lock, reason: str, now_iso: str) -> str:
    """`lock-update` when a lock goes: `expired` for an expiry, else `unlocked` (manual, stolen)."""
    payload = {
        "action": "expired" if reason == "expired" else "unlocked",
        "resourcePath": lock.resource_path,
        "previousOwner": lock.locked_by,
        "releaseReason": reason,
    }
    return _event("lock-update", payload, now_iso)


def pong(now_iso: str) -> str:
    """The answer to a client's `ping` (no payload)."""
    return _answer("pong", now_iso)


# -- agent sockets --------------------------------------------------------------------------------


def state_sync(view: AgentStateView, now_iso: str) -> str:
    """`state-sync` to an agent socket just opened: the agent's state."""
    return _event("state-sync", view.to_json(), now_iso)


def dm_sent(dm: DirectMessage) -> str:
    """`chat` to the recipient's sockets on a direct message, at the message's time."""
    return _event("chat", dm.to_json(), dm.timestamp)


def checkpoint_saved(now_iso: str) -> str:
    """The answer to a client's `checkpoint-save` (no payload)."""
    return _answer("checkpoint-saved", now_iso)
