"""An agent's dashboard (GET /agent/<id>/dashboard, do-api.md 7.5): level progress, streak, rust,
flow state, session stats, trust, specializations, alerts, shadow, heartbeat and suggestions.

Everything here is computed from what the agent actor read in one turn (`DashboardInputs`).
The flow state is also what onboarding's `teamOnline` reports per online agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from gateway.domain.jscompat import iso_from_ms, parse_js_date
from gateway.domain.soul import LEVEL_THRESHOLDS, LEVELS, Soul, effective_multiplier, js_number, js_round
from gateway.domain.traces import Trace

__all__ = ["FLOW_STEPS", "DashboardInputs", "FlowInputs", "build_dashboard", "flow_state"]

FLOW_WINDOW_MS: Final = 15 * 60 * 1000
ONLINE_WINDOW_MS: Final = 60 * 60 * 1000
FLOW_STEPS: Final = 10
STREAK_HOURS: Final = 48

SPEC_RANKS: Final = (
    ("None", 0),
    ("Familiar", 100),
    ("Proficient", 500),
    ("Specialist", 2000),
    ("Authority", 5000),
)


@dataclass(frozen=True, slots=True)
class FlowInputs:
    """What the flow state needs: an unresolved escalation? the newest (<= FLOW_STEPS) steps of
    open traces in the last 15 minutes, newest first, as (outcome, timestamp)? a trace started in
    the last hour?"""

    stuck: bool
    recent_steps: list[tuple[str, str]]
    recent_trace: bool


@dataclass(frozen=True, slots=True)
class DashboardInputs:
    """One agent actor's reads for its dashboard."""

    soul: Soul
    rust: float
    recent_traces: list[Trace]  # newest first, at most 10, without steps
    pending_escalations: int
    flow: FlowInputs
    shadow: dict[str, Any]
    heartbeat: dict[str, Any]


def flow_state(f: FlowInputs, now_ms: int) -> dict[str, Any]:
    """`in_flow` (5+ productive recent steps), `stuck`, `available` or `offline`."""
    if f.stuck:
        return {"status": "stuck", "durationMinutes": 0, "respectFlow": False}
    if not f.recent_steps:
        return {
            "status": "available" if f.recent_trace else "offline",
            "durationMinutes": 0,
            "respectFlow": False,
        }
    productive = sum(1 for outcome, _ in f.recent_steps if outcome in ("found", "partial"))
    if productive >= 5 and len(f.recent_steps) >= 5:  # noqa: PLR2004 - upstream's flow threshold
        start = parse_js_date(f.recent_steps[-1][1]) or now_ms
        return {
            "status": "in_flow",
            "durationMinutes": js_round((now_ms - start) / 60000),
            "respectFlow": True,
        }
    return {"status": "available", "durationMinutes": 0, "respectFlow": False}


def flow_since(now_ms: int) -> tuple[str, str]:
    """The ISO times after which a step counts as recent and a trace as recent."""
    return iso_from_ms(now_ms - FLOW_WINDOW_MS), iso_from_ms(now_ms - ONLINE_WINDOW_MS)


def _level(soul: Soul) -> dict[str, Any]:
    idx = LEVELS.index(soul.level) if soul.level in LEVELS else 0
    head: dict[str, Any] = {"current": soul.level, "xp": soul.total_xp}
    if idx == len(LEVELS) - 1:
        return {**head, "nextLevel": None, "message": "Max level reached!"}
    nxt = LEVELS[idx + 1]
    xp, streak, tasks = LEVEL_THRESHOLDS[nxt]
    return {
        **head,
        "nextLevel": nxt,
        "xpNeeded": xp - soul.total_xp,
        "xpProgress": js_round(soul.total_xp / xp * 100),
        "streakNeeded": max(0, streak - soul.current_streak),
        "tasksNeeded": max(0, tasks - soul.tasks_completed),
    }


def _session(traces: list[Trace], today: str) -> dict[str, Any]:
    tasks = 0
    eff_total = 0.0
    eff_n = 0
    for t in traces:
        if t.started_at.startswith(today):
            tasks += 1
            if t.summary is not None:
                eff = t.summary.get("efficiency")
                eff_total += eff if isinstance(eff, int | float) else 0
                eff_n += 1
    return {
        "tasksToday": tasks,
        "xpToday": tasks * 30,
        "avgEfficiency": js_round(eff_total / eff_n * 100) if eff_n else 0,
        "tokensUsed": 0,
    }


def _streak(traces: list[Trace], now_ms: int) -> dict[str, Any]:
    if not traces:
        return {"atRisk": True, "hoursUntilExpires": 0}
    last = traces[0]
    last_ms = parse_js_date(last.completed_at or last.started_at) or now_ms
    left = max(0.0, STREAK_HOURS - (now_ms - last_ms) / 3_600_000)
    return {"atRisk": left < 8, "hoursUntilExpires": js_round(left)}  # noqa: PLR2004


def _rust_status(rust: float) -> str:
    if rust == 0:
        return "None ✨"
    if rust <= 0.2:  # noqa: PLR2004
        return "Light 🌱"
    if rust <= 0.4:  # noqa: PLR2004
        return "Moderate ⚠️"
    return "Heavy 🔧"


def _specializations(specs: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for domain, xp in specs.items():
        rank, prev, nxt = "None", 0, 100
        for i in range(len(SPEC_RANKS) - 1, -1, -1):
            if xp >= SPEC_RANKS[i][1]:
                rank, prev = SPEC_RANKS[i]
                nxt = SPEC_RANKS[i + 1][1] if i + 1 < len(SPEC_RANKS) else SPEC_RANKS[i][1]
                break
        progress = js_round((xp - prev) / (nxt - prev) * 100) if nxt > prev else 100
        out.append({"domain": domain, "xp": xp, "rank": rank, "progress": progress})
    return out


def _suggestions(
    soul: Soul, rust: float, level: dict[str, Any], tasks_today: int, pending: int
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    needed = level.get("xpNeeded")
    if needed and needed < 100:  # noqa: PLR2004
        out.append(
            {
                "action": f"Complete one more task to reach {level['nextLevel']}!",
                "priority": "high",
                "reason": f"Only {needed} XP needed",
            }
        )
    if pending > 0:
        out.append(
            {
                "action": "Check escalation queue - someone might need help!",
                "priority": "medium",
                "reason": f"{pending} unresolved escalation(s)",
            }
        )
    if tasks_today == 0:
        out.append(
            {
                "action": "Start your first task of the day",
                "priority": "medium",
                "reason": "No activity recorded today",
            }
        )
    if rust > 0:
        out.append(
            {
                "action": "Complete a task to shake off rust",
                "priority": "high",
                "reason": f"Rust is reducing XP by {js_round(rust * 50)}%",
            }
        )
    if soul.specializations:
        domain, xp = min(soul.specializations.items(), key=lambda kv: kv[1])
        if xp < 50:  # noqa: PLR2004
            out.append(
                {
                    "action": f"Try a {domain} task to become more well-rounded",
                    "priority": "low",
                    "reason": f"{domain} is your weakest area",
                }
            )
    return out


def build_dashboard(agent_id: str, d: DashboardInputs, now_ms: int) -> dict[str, Any]:
    """The dashboard object (the value of `{"dashboard": ...}`)."""
    soul = d.soul
    now_iso = iso_from_ms(now_ms)
    level = _level(soul)
    session = _session(d.recent_traces, now_iso[:10])
    streak = _streak(d.recent_traces, now_ms)
    return {
        "agentId": agent_id,
        "timestamp": now_iso,
        "level": level,
        "streak": {
            "current": soul.current_streak,
            "longest": soul.longest_streak,
            "atRisk": streak["atRisk"],
            "hoursUntilExpires": streak["hoursUntilExpires"],
        },
        "rust": {
            "level": js_number(d.rust),
            "xpMultiplier": js_number(effective_multiplier(d.rust)),
            "status": _rust_status(d.rust),
        },
        "flow": flow_state(d.flow, now_ms),
        "session": session,
        "trust": {
            "overall": js_number(soul.trust_score),
            "transparency": js_number(soul.transparency_score),
            "trackRecord": js_number(soul.track_record_score),
            "successRate": js_round(soul.tasks_successful / soul.tasks_completed * 100)
            if soul.tasks_completed
            else 0,
        },
        "abilities": soul.abilities,
        "specializations": _specializations(soul.specializations),
        "recentAchievements": soul.achievements[-5:],
        "alerts": {
            "pendingEscalations": d.pending_escalations,
            "streakAtRisk": streak["atRisk"],
            "highRust": d.rust >= 0.4,  # noqa: PLR2004
        },
        "shadow": d.shadow,
        "heartbeat": d.heartbeat,
        "suggestions": _suggestions(soul, d.rust, level, session["tasksToday"], d.pending_escalations),
    }
