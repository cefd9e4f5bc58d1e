"""Bodies and queries of the soul, trace, heartbeat, shadow, goal and credential routes, parsed
into typed commands or a 400/413 naming the field (the rules of gateway/domain/commands.py).

Upstream bound whatever these bodies held (a string `xp`, an unknown `outcome`, a null
`shadowId`); here each field is checked once. Ids are at most MAX_ID_CHARS characters, texts at
most `limits.progress_text_max_bytes`, numbers are integers in a stated range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from gateway.domain.commands import (
    bad_field,
    limit_id,
    limit_text,
    limit_texts,
    opt_id,
    opt_id_list,
    opt_str,
    opt_str_list,
)
from gateway.domain.goals import ACTIONS as GOAL_ACTIONS
from gateway.domain.soul import SPECIALIZATIONS
from gateway.domain.traces import CONTRIBUTIONS, OUTCOMES, RESOLVERS
from gateway.errors import ApiError

__all__ = [
    "MAX_XP",
    "GoalCommand",
    "HeartbeatCommand",
    "ResolveEscalation",
    "ShadowCommand",
    "SoulInit",
    "SoulPatch",
    "StartTrace",
    "StepCommand",
    "opt_int",
]

Json = dict[str, Any]

MAX_XP: Final = 1_000_000
"""The most XP one add-xp or one goal may award."""
MAX_COUNT: Final = 2**53 - 1
"""Counts and durations: JS's largest safe integer."""
SHADOW_ACTIONS: Final = ("register-shadow", "become-shadow", "takeover", "configure")


def opt_int(body: Json, key: str, lo: int, hi: int) -> int | None:
    """An optional integer in [lo, hi] (a JSON number with no fraction); `null`/absent give None."""
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise bad_field(key, f"{key} must be an integer")
    n = int(v)
    if not lo <= n <= hi:
        raise bad_field(key, f"{key} must be between {lo} and {hi}")
    return n


def _text(body: Json, key: str, max_bytes: int) -> str | None:
    v = opt_str(body, key)
    return None if v is None else limit_text(key, v, max_bytes)


def _choice(body: Json, key: str, choices: tuple[str, ...]) -> str | None:
    v = opt_str(body, key)
    if v is None or v == "":
        return None
    if v not in choices:
        raise bad_field(key, f"{key} must be one of: {', '.join(choices)}")
    return v


@dataclass(frozen=True, slots=True)
class SoulInit:
    """POST /soul `{soulId?, name?, personality?}`."""

    soul_id: str | None
    name: str | None
    personality: str | None

    @classmethod
    def parse(cls, body: Json, max_bytes: int) -> SoulInit:
        return cls(
            opt_id(body, "soulId"), _text(body, "name", max_bytes), _text(body, "personality", max_bytes)
        )


@dataclass(frozen=True, slots=True)
class SoulPatch:
    """PATCH /soul: `add-xp`, `unlock-achievement`, or credit a completed trace (`traceId`)."""

    action: str
    xp: int = 0
    source: str = "manual"
    achievement_id: str = ""
    trace_id: str = ""
    domain: str | None = None

    @classmethod
    def parse(cls, body: Json, max_bytes: int) -> SoulPatch:
        action = body.get("action")
        if action == "add-xp":
            xp = body.get("xp")
            if isinstance(xp, bool) or not isinstance(xp, int | float) or xp <= 0:
                raise ApiError(400, {"error": "xp must be a positive number", "field": "xp"})
            n = opt_int(body, "xp", 1, MAX_XP)
            assert n is not None  # noqa: S101 - checked positive above
            return cls("add-xp", xp=n, source=_text(body, "source", max_bytes) or "manual")
        if action == "unlock-achievement":
            achievement = opt_id(body, "achievementId")
            if not achievement:
                raise ApiError(400, {"error": "achievementId required", "field": "achievementId"})
            return cls("unlock-achievement", achievement_id=achievement)
        if action is None or action == "update-from-trace":
            trace_id = opt_id(body, "traceId")
            if trace_id:
                return cls("trace", trace_id=trace_id, domain=_choice(body, "domain", SPECIALIZATIONS))
        raise ApiError(
            400, {"error": "Invalid PATCH request. Provide action (add-xp, unlock-achievement) or traceId"}
        )


@dataclass(frozen=True, slots=True)
class StartTrace:
    """POST /trace `{task | taskDescription, sessionId?}`."""

    task: str
    session_id: str | None

    @classmethod
    def parse(cls, body: Json, max_bytes: int) -> StartTrace:
        task = _text(body, "task", max_bytes) or _text(body, "taskDescription", max_bytes) or "Untitled task"
        return cls(task, opt_id(body, "sessionId") or None)


@dataclass(frozen=True, slots=True)
class StepCommand:
    """POST /trace/<sid>/step."""

    tool: str
    intent: str
    outcome: str
    duration_ms: int
    contribution_type: str | None
    knowledge_gained: list[str]
    eliminated_paths: int
    depends_on: list[str]

    @classmethod
    def parse(cls, body: Json, max_bytes: int) -> StepCommand:
        knowledge = opt_str_list(body, "knowledgeGained") or []
        return cls(
            tool=limit_id("tool", opt_str(body, "tool") or "unknown"),
            intent=_text(body, "intent", max_bytes) or "",
            outcome=_choice(body, "outcome", OUTCOMES) or "partial",
            duration_ms=opt_int(body, "durationMs", 0, MAX_COUNT) or 0,
            contribution_type=_choice(body, "contributionType", CONTRIBUTIONS),
            knowledge_gained=limit_texts("knowledgeGained", knowledge, max_bytes),
            eliminated_paths=opt_int(body, "eliminatedPaths", 0, MAX_COUNT) or 0,
            depends_on=opt_id_list(body, "dependsOn") or [],
        )


@dataclass(frozen=True, slots=True)
class ResolveEscalation:
    """POST /trace/<sid>/resolve-escalation `{escalationId, resolvedBy, resolverAgent?, helpfulHint?}`."""

    escalation_id: str
    resolved_by: str
    resolver_agent: str | None
    helpful_hint: str | None

    @classmethod
    def parse(cls, body: Json, max_bytes: int) -> ResolveEscalation:
        esc = opt_id(body, "escalationId")
        if not esc:
            raise ApiError(400, {"error": "escalationId required", "field": "escalationId"})
        by = _choice(body, "resolvedBy", RESOLVERS)
        if by is None:
            raise ApiError(400, {"error": "resolvedBy required (self, peer or human)", "field": "resolvedBy"})
        return cls(
            esc, by, opt_id(body, "resolverAgent") or None, _text(body, "helpfulHint", max_bytes) or None
        )


@dataclass(frozen=True, slots=True)
class HeartbeatCommand:
    """POST /heartbeat `{tokensUsed?, currentTask?, status?}`."""

    tokens_used: int
    current_task: str | None
    status: str

    @classmethod
    def parse(cls, body: Json, max_bytes: int) -> HeartbeatCommand:
        return cls(
            opt_int(body, "tokensUsed", 0, MAX_COUNT) or 0,
            _text(body, "currentTask", max_bytes) or None,
            limit_id("status", opt_str(body, "status") or "healthy"),
        )


@dataclass(frozen=True, slots=True)
class ShadowCommand:
    """POST /shadow: register-shadow, become-shadow, takeover or configure."""

    action: str
    shadow_id: str | None
    primary_agent: str | None
    stall_ms: int | None
    interval_ms: int | None

    @classmethod
    def parse(cls, body: Json, query_action: str | None) -> ShadowCommand:
        action = opt_str(body, "action") or query_action or "get"
        if action not in SHADOW_ACTIONS:
            raise ApiError(
                400, {"error": "Unknown action. Use: register-shadow, become-shadow, takeover, configure"}
            )
        cmd = cls(
            action,
            opt_id(body, "shadowId") or None,
            opt_id(body, "primaryAgent") or None,
            opt_int(body, "stallThresholdMs", 1, MAX_COUNT),
            opt_int(body, "heartbeatIntervalMs", 1, MAX_COUNT),
        )
        if action == "register-shadow" and cmd.shadow_id is None:
            raise ApiError(400, {"error": "shadowId required", "field": "shadowId"})
        if action == "become-shadow" and cmd.primary_agent is None:
            raise ApiError(400, {"error": "primaryAgent required", "field": "primaryAgent"})
        return cmd


@dataclass(frozen=True, slots=True)
class GoalCommand:
    """POST /goals: create, start, complete, fail or abandon (the action from the body, else the query)."""

    action: str
    id: str | None
    title: str | None
    description: str | None
    type: str
    priority: int
    xp_reward: int
    source: str
    assigned_by: str | None
    context: str | None
    outcome: str | None

    @classmethod
    def parse(cls, body: Json, query_action: str | None, max_bytes: int) -> GoalCommand:
        action = opt_str(body, "action") or query_action or "list"
        if action not in GOAL_ACTIONS:
            raise ApiError(400, {"error": "Invalid action. Use: create, start, complete, fail, abandon"})
        cmd = cls(
            action=action,
            id=opt_id(body, "id") or None,
            title=_text(body, "title", max_bytes) or None,
            description=_text(body, "description", max_bytes) or None,
            type=limit_id("type", opt_str(body, "type") or "task"),
            priority=opt_int(body, "priority", -MAX_COUNT, MAX_COUNT) or 5,
            xp_reward=opt_int(body, "xpReward", 0, MAX_XP) or 10,
            source=limit_id("source", opt_str(body, "source") or "self"),
            assigned_by=opt_id(body, "assignedBy") or None,
            context=_text(body, "context", max_bytes) or None,
            outcome=_text(body, "outcome", max_bytes) or None,
        )
        if action == "create" and cmd.title is None:
            raise ApiError(400, {"error": "title required", "field": "title"})
        if action != "create" and cmd.id is None:
            raise ApiError(400, {"error": "id required", "field": "id"})
        return cmd
