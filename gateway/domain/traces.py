"""Work traces ("show your work"): a trace, its steps and escalations, and the rules on them.

Upstream's `work_traces`, `work_steps` and `escalations` tables of the agent actor (do-api.md
7.5, `e6b866b`). The escalation detectors run after each step over the trace including it.

Deliberate differences (docs/compatibility.md, "Souls, traces and goals"): a step, a completion
or an escalation resolution on an unknown trace or escalation is a 404 (upstream stored an
orphan step, or answered `success` with a null trace); a second trace with the same sessionId is
a 409 (upstream: a 500); a trace is credited to the soul once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from gateway.domain.soul import js_number, js_round

__all__ = [
    "CONTRIBUTIONS",
    "OUTCOMES",
    "RESOLVERS",
    "Escalation",
    "Step",
    "Trace",
    "check_escalation",
    "summarize",
]

OUTCOMES: Final = ("found", "nothing", "error", "partial")
CONTRIBUTIONS: Final = ("enabling", "pruning", "direct", "minimal")
RESOLVERS: Final = ("self", "peer", "human")

TIME_LIMIT_MS: Final = 10 * 60 * 1000


@dataclass(slots=True)
class Step:
    """One logged step of a trace (`work_steps` row)."""

    id: str
    session_id: str
    timestamp: str
    tool: str
    intent: str
    outcome: str
    duration_ms: int
    contribution_type: str | None
    knowledge_gained: list[str]
    eliminated_paths: int
    depends_on: list[str]

    def to_json(self, *, created: bool = False) -> dict[str, Any]:
        """Read form (`contributionType` null when unset); the create form leaves it out."""
        out: dict[str, Any] = {
            "id": self.id,
            "sessionId": self.session_id,
            "timestamp": self.timestamp,
            "tool": self.tool,
            "intent": self.intent,
            "outcome": self.outcome,
            "durationMs": self.duration_ms,
            "contributionType": self.contribution_type,
            "knowledgeGained": self.knowledge_gained,
            "eliminatedPaths": self.eliminated_paths,
            "dependsOn": self.depends_on,
        }
        if created and self.contribution_type is None:
            del out["contributionType"]
        return out


@dataclass(slots=True)
class Trace:
    """A trace session (`work_traces` row) with its steps when loaded whole."""

    session_id: str
    task: str
    started_at: str
    completed_at: str | None = None
    summary: dict[str, Any] | None = None
    credited: bool = False
    steps: list[Step] = field(default_factory=list)

    def list_json(self) -> dict[str, Any]:
        """An entry of GET /trace."""
        return {
            "sessionId": self.session_id,
            "task": self.task,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
        }

    def to_json(self, agent_id: str) -> dict[str, Any]:
        """GET /trace/<sid>: `summary` only once completed."""
        out: dict[str, Any] = {
            "sessionId": self.session_id,
            "agentId": agent_id,
            "task": self.task,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
            "steps": [s.to_json() for s in self.steps],
        }
        if self.summary is not None:
            out["summary"] = self.summary
        return out

    def start_json(self, agent_id: str) -> dict[str, Any]:
        """POST /trace: the new trace, no steps yet."""
        return {
            "sessionId": self.session_id,
            "agentId": agent_id,
            "task": self.task,
            "startedAt": self.started_at,
            "steps": [],
        }


@dataclass(slots=True)
class Escalation:
    """A detected escalation of a trace (`escalations` row)."""

    id: str
    session_id: str
    triggered_at: str
    triggers: list[dict[str, Any]]
    highest_level: int
    resolved_at: str | None = None
    resolved_by: str | None = None
    resolver_agent: str | None = None
    helpful_hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        """An entry of GET /trace/<sid>/escalations."""
        return {
            "id": self.id,
            "triggeredAt": self.triggered_at,
            "triggers": self.triggers,
            "highestLevel": self.highest_level,
            "resolvedAt": self.resolved_at,
            "resolvedBy": self.resolved_by,
            "resolverAgent": self.resolver_agent,
            "helpfulHint": self.helpful_hint,
        }

    def resolution_json(self) -> dict[str, Any]:
        """POST resolve-escalation's `resolution` (unset optional fields left out)."""
        out: dict[str, Any] = {"escalationId": self.id, "resolvedBy": self.resolved_by}
        if self.resolver_agent is not None:
            out["resolverAgent"] = self.resolver_agent
        out["resolutionTime"] = self.resolved_at
        if self.helpful_hint is not None:
            out["helpfulHint"] = self.helpful_hint
        return out


def _recommendation(level: int) -> str:
    return {
        0: "Continue working",
        1: "Consider pausing to review approach",
        2: "PAUSE: Ask for guidance or try different approach",
    }.get(level, "ESCALATE: Human intervention recommended")


def check_escalation(
    steps: list[Step], current: Step, started_ms: int, now_ms: int, now_iso: str
) -> dict[str, Any]:
    """The five detectors over the trace's steps (the current one included): stuck loop,
    repeated failures, error accumulation, time over 10 minutes, low efficiency."""
    triggers: list[dict[str, Any]] = []

    def add(kind: str, level: int, reason: str) -> None:
        triggers.append({"type": kind, "level": level, "reason": reason, "detectedAt": now_iso})

    same = [s for s in steps[-5:] if s.tool == current.tool and s.outcome in ("nothing", "partial")]
    if len(same) >= 3:  # noqa: PLR2004 - upstream's thresholds
        add("stuck_loop", 2, f"{current.tool} called {len(same)}x with no progress")
    dead_ends = sum(1 for s in steps if s.outcome == "nothing")
    if dead_ends >= 3:  # noqa: PLR2004
        add("repeated_failures", 1, f"{dead_ends} dead ends in this session")
    errors = sum(1 for s in steps if s.outcome == "error")
    if errors >= 2:  # noqa: PLR2004
        add("error_accumulation", 2, f"{errors} errors encountered")
    elapsed = now_ms - started_ms
    if elapsed > TIME_LIMIT_MS:
        add("time_exceeded", 1, f"Task running for {js_round(elapsed / 60000)} minutes")
    if len(steps) >= 5:  # noqa: PLR2004
        idle = sum(1 for s in steps if s.outcome in ("nothing", "error") or s.contribution_type == "minimal")
        ratio = idle / len(steps)
        if ratio > 0.6:  # noqa: PLR2004
            add("low_efficiency", 1, f"{js_round(ratio * 100)}% of steps non-productive")
    highest = max((t["level"] for t in triggers), default=0)
    return {
        "shouldEscalate": bool(triggers),
        "triggers": triggers,
        "highestLevel": highest,
        "recommendation": _recommendation(highest),
    }


def summarize(steps: list[Step]) -> dict[str, Any]:
    """A completed trace's summary: steps, dead ends, exploration and solution time, efficiency."""
    dead_ends = sum(1 for s in steps if s.outcome in ("nothing", "error"))
    total = sum(s.duration_ms for s in steps)
    solution = sum(s.duration_ms for s in steps if s.outcome == "found" or s.contribution_type == "direct")
    return {
        "totalSteps": len(steps),
        "deadEnds": dead_ends,
        "explorationTimeMs": total,
        "solutionTimeMs": solution,
        "efficiency": js_number(solution / total) if total > 0 else 0,
    }
