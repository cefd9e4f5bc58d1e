"""Goals: an agent's queue of autonomous work (agent actor `goals` table, do-api.md 7.5, `7583389`).

A goal is created `pending`, started (`in_progress`), then completed (its `xpReward` added to the
soul), failed or abandoned. Upstream's shapes; the transitions are decided by `transition`.

Deliberate differences (docs/compatibility.md, "Souls, traces and goals"): an unknown goal id is
a 404 (upstream answered `success` with a made-up goal); a goal that is already completed,
failed or abandoned cannot change again (409), so its XP is awarded once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

__all__ = ["ACTIONS", "FINAL", "Goal", "goal_stats", "transition"]

ACTIONS: Final = ("create", "start", "complete", "fail", "abandon")
FINAL: Final = frozenset({"completed", "failed", "abandoned"})


@dataclass(slots=True)
class Goal:
    """One `goals` row."""

    id: str
    title: str
    description: str | None
    type: str
    priority: int
    status: str
    xp_reward: int
    source: str
    assigned_by: str | None
    context: str | None
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    outcome: str | None = None

    def to_json(self) -> dict[str, Any]:
        """An entry of `?action=list`."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "type": self.type,
            "priority": self.priority,
            "status": self.status,
            "xpReward": self.xp_reward,
            "source": self.source,
            "assignedBy": self.assigned_by,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
        }

    def create_json(self) -> dict[str, Any]:
        """POST create's `goal`."""
        return {
            "id": self.id,
            "title": self.title,
            "priority": self.priority,
            "status": self.status,
            "createdAt": self.created_at,
        }

    def next_json(self) -> dict[str, Any]:
        """`?action=next`."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "type": self.type,
            "priority": self.priority,
            "xpReward": self.xp_reward,
            "context": self.context,
        }

    def active_json(self) -> dict[str, Any]:
        """`?action=active`."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "type": self.type,
            "priority": self.priority,
            "startedAt": self.started_at,
        }


def transition(
    goal: Goal, action: str, now_iso: str, outcome: str | None
) -> tuple[Goal, dict[str, Any]] | str:
    """start / complete / fail / abandon: the new goal and its answer fields, or why not."""
    if goal.status in FINAL:
        return f"Goal already {goal.status}"
    if action == "start":
        g = replace(goal, status="in_progress", started_at=now_iso)
        return g, {"goal": {"id": g.id, "status": g.status, "startedAt": now_iso}}
    if action == "complete":
        g = replace(goal, status="completed", completed_at=now_iso, outcome=outcome or "completed")
        return g, {
            "goal": {"id": g.id, "status": g.status, "completedAt": now_iso, "xpReward": g.xp_reward},
            "xpAwarded": g.xp_reward,
        }
    if action == "fail":
        g = replace(goal, status="failed", completed_at=now_iso, outcome=outcome or "failed")
        return g, {"goal": {"id": g.id, "status": g.status, "completedAt": now_iso}}
    g = replace(goal, status="abandoned")
    return g, {"goal": {"id": g.id, "status": g.status}}


def goal_stats(goals: list[Goal]) -> dict[str, int]:
    """`?action=stats`: counts per status and the XP earned and pending."""
    return {
        "total": len(goals),
        "pending": sum(1 for g in goals if g.status == "pending"),
        "inProgress": sum(1 for g in goals if g.status == "in_progress"),
        "completed": sum(1 for g in goals if g.status == "completed"),
        "failed": sum(1 for g in goals if g.status == "failed"),
        "totalXpEarned": sum(g.xp_reward for g in goals if g.status == "completed"),
        "totalXpPending": sum(g.xp_reward for g in goals if g.status == "pending"),
    }
