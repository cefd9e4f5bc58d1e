"""Onboarding and session resume (GET /coordinator/onboard and /coordinator/session-resume,
do-api.md 7.4): the bundles built from coordinator lists and agent actor reads, as pure functions.

The reads happen elsewhere (gateway/http/progress.py): the coordinator's lists through the
phase's store, each online agent's flow state with one read of its actor (bounded parallelism),
the onboarding agent's soul and dashboard with one turn of its actor. Upstream fetched every
online agent's whole dashboard one after another, and built its internal URLs from the
unencoded agent id (do-api.md 10.12); neither happens here.
"""

from __future__ import annotations

import math
from typing import Any, Final

from gateway.domain.jscompat import parse_js_date
from gateway.domain.model import Agent, Checkpoint, Claim, GroupMessage, Handoff, Task

__all__ = [
    "ACCOMPLISHMENT_WORDS",
    "RECENT_ONBOARD_CHAT",
    "RESUME_MESSAGES",
    "session_resume",
    "suggest_task",
    "team_entry",
    "welcome_message",
]

RECENT_ONBOARD_CHAT: Final = 5
RESUME_MESSAGES: Final = 100
RESUME_HANDOFFS: Final = 5
RESUME_TASKS: Final = 5
RESUME_CLAIMS: Final = 10
ACCOMPLISHMENT_WORDS: Final = (
    "✅",
    "shipped",
    "completed",
    "built",
    "added",
    "fixed",
    "implemented",
    "deployed",
)


def team_entry(agent: Agent, flow_status: str) -> dict[str, Any]:
    """An entry of `teamOnline`."""
    return {
        "agentId": agent.agent_id,
        "status": agent.status,
        "flowStatus": flow_status,
        "currentTask": agent.current_task,
    }


def suggest_task(
    checkpoint: Checkpoint | None, pending_handoff: Handoff | None, todo: Task | None
) -> dict[str, Any]:
    """Resume the checkpoint (30 XP), help with a pending handoff (50), an unassigned todo task
    (25), or introduce yourself (10)."""
    if checkpoint is not None and (checkpoint.conversation_summary or checkpoint.pending_work):
        first = checkpoint.pending_work[0] if checkpoint.pending_work else None
        return {
            "task": checkpoint.conversation_summary or first or "Resume previous work",
            "reason": "Continues your previous session",
            "xpEstimate": 30,
            "priority": "high",
        }
    if pending_handoff is not None:
        return {
            "task": f"Help needed: {pending_handoff.title}",
            "reason": "Someone needs help! Great XP opportunity",
            "xpEstimate": 50,
            "priority": "medium",
        }
    if todo is not None:
        return {
            "task": todo.title,
            "reason": "Unassigned task waiting for pickup",
            "xpEstimate": 25,
            "priority": todo.priority,
        }
    return {
        "task": "Introduce yourself in the group chat",
        "reason": "Say hello to the team!",
        "xpEstimate": 10,
        "priority": "low",
    }


def welcome_message(agent_id: str, is_new: bool, checkpoint: Checkpoint | None) -> str:
    """The onboarding greeting."""
    if is_new:
        return (
            f"Welcome to the team, {agent_id}! 🎉 You're starting fresh with 0 XP. "
            "Complete your first task to begin leveling up!"
        )
    if checkpoint is not None:
        return (
            f'Welcome back, {agent_id}! You were working on: "{checkpoint.conversation_summary or "a task"}"'
        )
    return f"Welcome back, {agent_id}! Ready to start fresh?"


def recent_chat(messages: list[GroupMessage]) -> list[dict[str, Any]]:
    """Onboarding's `recentChat`: the given messages (chronological) without reactions."""
    return [
        {
            "id": m.id,
            "author": m.author,
            "authorType": m.author_type,
            "message": m.message,
            "timestamp": m.timestamp,
        }
        for m in messages
    ]


def _duration(start: str, end: str) -> str:
    s, e = parse_js_date(start), parse_js_date(end)
    if s is None or e is None:
        return "Unknown"
    mins = math.floor((e - s) / 60000)
    hours = math.floor(mins / 60)
    return f"{hours}h {mins % 60}m" if hours > 0 else f"{mins}m"


def _plural(n: int, word: str, tail: str) -> str:
    return f"{n} {word}{'s' if n > 1 else ''} {tail}"


def _summary(participants: int, shipped: int, handoffs: int, tasks: int) -> str:
    parts = []
    if participants > 0:
        parts.append(_plural(participants, "agent", "active"))
    if shipped > 0:
        parts.append(_plural(shipped, "thing", "shipped"))
    if handoffs > 0:
        parts.append(_plural(handoffs, "handoff", "pending"))
    if tasks > 0:
        parts.append(_plural(tasks, "task", "in progress"))
    return " • ".join(parts) or "No recent activity"


def _participants(newest_first: list[GroupMessage]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for m in newest_first:
        if m.author_type not in ("agent", "human"):
            continue
        entry = seen.get(m.author)
        if entry is None:
            seen[m.author] = {
                "agentId": m.author,
                "messageCount": 1,
                "lastMessage": m.message[:100],
                "lastActive": m.timestamp,
            }
        else:
            entry["messageCount"] += 1
    return sorted(seen.values(), key=lambda p: -p["messageCount"])  # stable, as JS sort


def _accomplishments(newest_first: list[GroupMessage]) -> list[str]:
    out: list[str] = []
    for m in newest_first:
        text = m.message.lower()
        if any(w in text for w in ACCOMPLISHMENT_WORDS):
            first = m.message.split("\n")[0][:150]
            if first not in out and len(out) < 10:  # noqa: PLR2004
                out.append(first)
    return out


def session_resume(
    now_iso: str,
    newest_first: list[GroupMessage],
    pending_handoffs: list[Handoff],
    in_progress: list[Task],
    claims: list[Claim],
) -> dict[str, Any]:
    """The `sessionResume` object from the newest 100 chat messages (newest first), the newest
    pending handoffs, the most recently updated in-progress tasks and the newest claims."""
    msgs = newest_first[:RESUME_MESSAGES]
    participants = _participants(msgs)
    shipped = _accomplishments(msgs)
    handoffs = [
        {
            "id": h.id,
            "title": h.title,
            "fromAgent": h.from_agent,
            "context": h.context[:200],
            "priority": h.priority,
            "createdAt": h.created_at,
        }
        for h in pending_handoffs[:RESUME_HANDOFFS]
    ]
    tasks = [
        {
            "id": t.id,
            "title": t.title,
            "assignee": t.assignee,
            "priority": t.priority,
            "description": t.description,
        }
        for t in in_progress[:RESUME_TASKS]
    ]
    quick: list[dict[str, Any]] = []
    if handoffs:
        quick.append(
            {
                "action": "review_handoffs",
                "label": "📋 Review Handoffs",
                "description": f"{len(handoffs)} handoff(s) need attention",
                "priority": "high",
            }
        )
    if tasks:
        quick.append(
            {
                "action": "check_progress",
                "label": "🔄 Check In-Progress",
                "description": f"{len(tasks)} task(s) in progress",
                "priority": "medium",
            }
        )
    quick.append(
        {
            "action": "spawn_team",
            "label": "🚀 Spawn Agent Team",
            "description": "Start a new autonomous session",
            "priority": "medium",
        }
    )
    quick.append(
        {
            "action": "view_chat",
            "label": "💬 View Group Chat",
            "description": "See latest team discussion",
            "priority": "low",
        }
    )
    start = msgs[-1].timestamp if msgs else None
    end = msgs[0].timestamp if msgs else None
    return {
        "timestamp": now_iso,
        "session": {
            "messageCount": len(msgs),
            "participantCount": len(participants),
            "startTime": start,
            "endTime": end,
            "durationDescription": _duration(start, end) if start and end else "Unknown",
        },
        "participants": participants,
        "accomplishments": shipped,
        "pending": {
            "handoffs": handoffs,
            "tasks": tasks,
            "claims": [
                {"what": c.what, "by": c.by, "description": c.description, "since": c.since}
                for c in claims[:RESUME_CLAIMS]
            ],
        },
        "quickActions": quick,
        "recentContext": [
            {"author": m.author, "message": m.message[:200], "timestamp": m.timestamp}
            for m in reversed(msgs[:5])
        ],
        "summaryText": _summary(len(participants), len(shipped), len(handoffs), len(tasks)),
    }
