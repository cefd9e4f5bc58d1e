"""An agent's soul: its XP, level, streak, stats and abilities, and the rules that change them.

Upstream's `soul_progression` row (do-api.md 7.5, `e6b866b`), one per agent actor. Rendered in
upstream's two shapes: the **create form** (the object a POST builds in memory: no
`lastTraceId`, no computed fields) and the **read form** (the row read back: `lastTraceId`, then
the computed `rustLevel` and `effectiveXPMultiplier`).

Deliberate differences (docs/compatibility.md, "Souls, traces and goals"): a POST on an existing
soul keeps its progress (upstream's INSERT OR REPLACE wiped it); a goal's XP reward goes through
the same level rule as any XP (upstream added it without re-levelling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Final

__all__ = [
    "LEVELS",
    "LEVEL_ABILITIES",
    "LEVEL_THRESHOLDS",
    "SPECIALIZATIONS",
    "Soul",
    "XpResult",
    "add_xp",
    "calculate_level",
    "credit_trace",
    "effective_multiplier",
    "js_number",
    "js_round",
    "merge_abilities",
    "new_abilities",
    "new_soul",
    "record_goal",
    "rename_soul",
    "rust_level",
    "trust_score",
    "unlock_achievement",
]

LEVELS: Final = ("novice", "capable", "expert", "master")

LEVEL_THRESHOLDS: Final[dict[str, tuple[int, int, int]]] = {
    "novice": (0, 0, 0),
    "capable": (100, 3, 5),
    "expert": (500, 5, 25),
    "master": (2000, 10, 100),
}
"""level -> (XP, streak, tasks completed) all needed to reach it."""

LEVEL_ABILITIES: Final[dict[str, dict[str, bool]]] = {
    "novice": {
        "canCommit": False,
        "canSpawnSubagents": False,
        "canAccessProd": False,
        "canMentorPeers": False,
        "extendedBudget": False,
    },
    "capable": {"canCommit": True},
    "expert": {"canSpawnSubagents": True, "canMentorPeers": True},
    "master": {"canAccessProd": True, "extendedBudget": True},
}

SPECIALIZATIONS: Final = ("frontend", "backend", "devops", "research")

DAY_MS: Final = 86_400_000


def js_round(x: float) -> int:
    """JS `Math.round` (halves round up, towards +Infinity)."""
    return math.floor(x + 0.5)


def js_number(x: float) -> int | float:
    """A number as JS would print it in JSON: an integral value without `.0`."""
    return int(x) if float(x).is_integer() else x


def _abilities() -> dict[str, bool]:
    return dict(LEVEL_ABILITIES["novice"])


@dataclass(slots=True)
class Soul:
    """One agent's soul (agent actor `soul_progression` row)."""

    soul_id: str
    name: str
    personality: str
    created_at: str
    total_xp: int = 0
    level: str = "novice"
    current_streak: int = 0
    longest_streak: int = 0
    tasks_completed: int = 0
    tasks_successful: int = 0
    total_tokens_used: int = 0
    avg_efficiency: float = 0
    peers_helped: int = 0
    last_trace_id: str | None = None
    escalation_count: int = 0
    self_resolved_count: int = 0
    peer_assist_count: int = 0
    human_escalation_count: int = 0
    specializations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPECIALIZATIONS, 0))
    achievements: list[str] = field(default_factory=list)
    abilities: dict[str, bool] = field(default_factory=_abilities)
    trust_score: float = 0.5
    transparency_score: float = 0.5
    track_record_score: float = 0.5

    def _head(self) -> dict[str, Any]:
        return {
            "soulId": self.soul_id,
            "name": self.name,
            "personality": self.personality,
            "createdAt": self.created_at,
            "totalXP": self.total_xp,
            "level": self.level,
            "currentStreak": self.current_streak,
            "longestStreak": self.longest_streak,
            "tasksCompleted": self.tasks_completed,
            "tasksSuccessful": self.tasks_successful,
            "totalTokensUsed": self.total_tokens_used,
            "avgEfficiency": js_number(self.avg_efficiency),
            "peersHelped": self.peers_helped,
        }

    def _tail(self) -> dict[str, Any]:
        return {
            "escalationCount": self.escalation_count,
            "selfResolvedCount": self.self_resolved_count,
            "peerAssistCount": self.peer_assist_count,
            "humanEscalationCount": self.human_escalation_count,
            "specializations": self.specializations,
            "achievements": self.achievements,
            "abilities": self.abilities,
            "trustScore": js_number(self.trust_score),
            "transparencyScore": js_number(self.transparency_score),
            "trackRecordScore": js_number(self.track_record_score),
        }

    def create_json(self) -> dict[str, Any]:
        """The create form (upstream's in-memory soul of a POST)."""
        return {**self._head(), **self._tail()}

    def to_json(self, rust: float) -> dict[str, Any]:
        """The read form, with the computed rust and XP multiplier for `rust`."""
        return {
            **self._head(),
            "lastTraceId": self.last_trace_id,
            **self._tail(),
            "rustLevel": js_number(rust),
            "effectiveXPMultiplier": js_number(effective_multiplier(rust)),
        }


def new_soul(
    agent_id: str, now_iso: str, soul_id: str | None, name: str | None, personality: str | None
) -> Soul:
    """POST /soul on an agent without one (and the soul onboarding or XP creates)."""
    return Soul(soul_id or agent_id, name or agent_id, personality or "helpful assistant", now_iso)


def rename_soul(soul: Soul, name: str | None, personality: str | None) -> Soul:
    """POST /soul on an existing soul: new name or personality if given, all progress kept."""
    return replace(soul, name=name or soul.name, personality=personality or soul.personality)


def rust_level(last_trace_started_ms: int | None, now_ms: int) -> float:
    """Rust from the days since the last credited trace started: 0, 0.2, 0.4 or 0.6."""
    if last_trace_started_ms is None:
        return 0
    days = (now_ms - last_trace_started_ms) // DAY_MS
    if days < 7:  # noqa: PLR2004 - upstream's rust steps
        return 0
    if days < 30:  # noqa: PLR2004
        return 0.2
    if days < 90:  # noqa: PLR2004
        return 0.4
    return 0.6


def effective_multiplier(rust: float) -> float:
    """`1 - rust * 0.5`."""
    return 1 - rust * 0.5


def calculate_level(xp: int, streak: int, tasks: int) -> str:
    """The highest level whose XP, streak and task thresholds are all met."""
    for level in reversed(LEVELS):
        need_xp, need_streak, need_tasks = LEVEL_THRESHOLDS[level]
        if xp >= need_xp and streak >= need_streak and tasks >= need_tasks:
            return level
    return "novice"


def new_abilities(old_level: str, new_level: str) -> list[str]:
    """The abilities unlocked between two levels (upstream `getNewAbilities`)."""
    out: list[str] = []
    for lvl in LEVELS[LEVELS.index(old_level) + 1 : LEVELS.index(new_level) + 1]:
        out += [k for k, on in LEVEL_ABILITIES[lvl].items() if on]
    return out


def merge_abilities(current: dict[str, bool], level: str) -> dict[str, bool]:
    """The abilities of every level up to `level` laid over `current`."""
    merged = dict(current)
    for lvl in LEVELS[: LEVELS.index(level) + 1]:
        merged.update(LEVEL_ABILITIES[lvl])
    return merged


def trust_score(success_rate: float, self_resolved: int, human_escalations: int) -> float:
    """50 % success rate, 30 % self-resolution, 20 % avoiding human escalation, at most 1."""
    self_rate = self_resolved / (self_resolved + human_escalations) if self_resolved > 0 else 0.5
    avoidance = 1 if human_escalations == 0 else 1 / (1 + human_escalations * 0.1)
    return min(1, success_rate * 0.5 + self_rate * 0.3 + avoidance * 0.2)


@dataclass(frozen=True, slots=True)
class XpResult:
    """What an XP change did: the new soul, the XP gained and the level change if any."""

    soul: Soul
    xp_gained: int
    level_up: dict[str, Any] | None


def _relevel(old: Soul, new: Soul, xp: int, *, unlock: bool) -> XpResult:
    level = calculate_level(new.total_xp, new.current_streak, new.tasks_completed)
    if level == old.level:
        return XpResult(new, xp, None)
    if unlock:
        abilities_text = new_abilities(old.level, level)
        new = replace(new, level=level, abilities=merge_abilities(new.abilities, level))
    else:
        # upstream's add-xp names every ability of the new level's own entry and stores none
        abilities_text = [k for k, on in LEVEL_ABILITIES[level].items() if on]
        new = replace(new, level=level)
    return XpResult(new, xp, {"oldLevel": old.level, "newLevel": level, "newAbilities": abilities_text})


def add_xp(soul: Soul, xp: int) -> XpResult:
    """PATCH /soul add-xp: XP added, the level recomputed (abilities unchanged, as upstream)."""
    return _relevel(soul, replace(soul, total_xp=soul.total_xp + xp), xp, unlock=False)


def unlock_achievement(soul: Soul, achievement: str) -> tuple[Soul, bool]:
    """PATCH /soul unlock-achievement: the soul and whether it already had the achievement."""
    if achievement in soul.achievements:
        return soul, True
    return replace(soul, achievements=[*soul.achievements, achievement]), False


def record_goal(soul: Soul, xp: int, *, success: bool) -> Soul:
    """A goal completed (`success`, its XP reward added) or failed: task counts, then the level.

    Upstream added the reward without re-levelling; here it goes through the level rule."""
    new = replace(
        soul,
        total_xp=soul.total_xp + xp,
        tasks_completed=soul.tasks_completed + 1,
        tasks_successful=soul.tasks_successful + (1 if success else 0),
    )
    return _relevel(soul, new, xp, unlock=True).soul


def trace_xp(efficiency: float, resolved_by: list[str | None]) -> int:
    """XP for a completed trace: base 10, efficiency 15/5/0, self-resolved 10, no escalations 5."""
    eff = 15 if efficiency > 0.7 else 5 if efficiency > 0.5 else 0  # noqa: PLR2004 - upstream's steps
    self_resolved = 10 if all(r in (None, "self") for r in resolved_by) else 0
    none = 5 if not resolved_by else 0
    return 10 + eff + self_resolved + none


def credit_trace(
    soul: Soul, trace_id: str, efficiency: float, resolved_by: list[str | None], domain: str | None
) -> XpResult:
    """PATCH /soul `{traceId, domain?}`: XP, streak, stats, specialization and trust from a
    completed trace (upstream `updateSoulFromTrace`)."""
    xp = trace_xp(efficiency, resolved_by)
    human = sum(1 for r in resolved_by if r == "human")
    self_count = sum(1 for r in resolved_by if r == "self")
    peer = sum(1 for r in resolved_by if r == "peer")
    successful = human == 0
    streak = soul.current_streak + 1 if successful else 0
    completed = soul.tasks_completed + 1
    succeeded = soul.tasks_successful + (1 if successful else 0)
    specs = dict(soul.specializations)
    if domain is not None:
        specs[domain] = specs.get(domain, 0) + math.floor(xp * 0.5)
    new = replace(
        soul,
        total_xp=soul.total_xp + xp,
        current_streak=streak,
        longest_streak=max(streak, soul.longest_streak),
        tasks_completed=completed,
        tasks_successful=succeeded,
        avg_efficiency=(soul.avg_efficiency * soul.tasks_completed + efficiency) / completed,
        last_trace_id=trace_id,
        escalation_count=soul.escalation_count + len(resolved_by),
        self_resolved_count=soul.self_resolved_count + self_count,
        peer_assist_count=soul.peer_assist_count + peer,
        human_escalation_count=soul.human_escalation_count + human,
        specializations=specs,
        trust_score=trust_score(
            succeeded / completed, soul.self_resolved_count + self_count, soul.human_escalation_count + human
        ),
    )
    return _relevel(soul, new, xp, unlock=True)
