"""The agent actor's soul, trace, heartbeat, shadow and goal operations, each run as one turn.

Each function takes the agent actor, loads what it needs through `progress_tables`, lets the
domain rules decide (`gateway.domain.soul`, `traces`, `heartbeat`, `goals`, `dashboard`) and
stores the result; refusals are `ApiError`s (the turn then rolls back). Answers are the wire
shapes of do-api.md 7.5. Credentials are stored and read as ciphertext only
(`gateway.do.progress_store` encrypts and decrypts outside the turn).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from gateway.do import progress_tables as t
from gateway.domain import dashboard as dash
from gateway.domain import goals as g
from gateway.domain import heartbeat as hb
from gateway.domain import progress_commands as pc
from gateway.domain import soul as s
from gateway.domain import traces as tr
from gateway.domain.jscompat import iso_from_ms, parse_js_date
from gateway.errors import ApiError

__all__ = ["TRACE_LIST"]

TRACE_LIST: Final = 20
DASHBOARD_TRACES: Final = 10
TRACE_NOT_FOUND: Final = {"error": "Trace not found"}


def _sql(actor: Any) -> t.Sql:
    sql: t.Sql = actor.ctx.tables
    return sql


def _rust(sql: t.Sql, soul: s.Soul, now_ms: int) -> float:
    if soul.last_trace_id is None:
        return 0
    trace = t.trace_get(sql, soul.last_trace_id, steps=False)
    return s.rust_level(None if trace is None else parse_js_date(trace.started_at), now_ms)


def soul_json(actor: Any, now_ms: int) -> dict[str, Any] | None:
    """The soul's read form, or None."""
    sql = _sql(actor)
    soul = t.soul_get(sql)
    return None if soul is None else soul.to_json(_rust(sql, soul, now_ms))


def _soul_or_new(actor: Any, now_ms: int) -> s.Soul:
    soul = t.soul_get(_sql(actor))
    return soul or s.new_soul(actor.agent_id, iso_from_ms(now_ms), None, None, None)


async def get_soul(actor: Any, now_ms: int) -> dict[str, Any] | None:
    """GET /soul."""
    return soul_json(actor, now_ms)


async def post_soul(actor: Any, cmd: pc.SoulInit, now_ms: int) -> dict[str, Any]:
    """POST /soul: a new soul (create form), or the existing one renamed with its progress kept."""
    sql = _sql(actor)
    soul = t.soul_get(sql)
    if soul is None:
        new = s.new_soul(actor.agent_id, iso_from_ms(now_ms), cmd.soul_id, cmd.name, cmd.personality)
        t.soul_put(sql, new)
        return new.create_json()
    kept = s.rename_soul(soul, cmd.name, cmd.personality)
    t.soul_put(sql, kept)
    return kept.to_json(_rust(sql, kept, now_ms))


async def patch_soul(actor: Any, cmd: pc.SoulPatch, now_ms: int) -> dict[str, Any]:
    """PATCH /soul: add-xp, unlock-achievement or credit a completed trace."""
    sql = _sql(actor)
    soul = _soul_or_new(actor, now_ms)
    if cmd.action == "add-xp":
        res = s.add_xp(soul, cmd.xp)
        t.soul_put(sql, res.soul)
        out: dict[str, Any] = {"success": True, "xpGained": res.xp_gained, "totalXP": res.soul.total_xp}
        if res.level_up is not None:
            out["levelUp"] = res.level_up
        return {**out, "soul": soul_json(actor, now_ms)}
    if cmd.action == "unlock-achievement":
        new, already = s.unlock_achievement(soul, cmd.achievement_id)
        t.soul_put(sql, new)
        return {
            "success": True,
            "achievement": cmd.achievement_id,
            "alreadyUnlocked": already,
            "soul": soul_json(actor, now_ms),
        }
    trace = t.trace_get(sql, cmd.trace_id, steps=False)
    if trace is None:
        raise ApiError(404, TRACE_NOT_FOUND)
    if trace.summary is None:
        return {"success": False, "xpGained": 0, "soul": None}
    if trace.credited:
        raise ApiError(409, {"success": False, "error": "Trace already credited", "xpGained": 0})
    escalations = t.escalations_of(sql, trace.session_id)
    eff = trace.summary.get("efficiency", 0)
    res = s.credit_trace(
        soul,
        trace.session_id,
        eff if isinstance(eff, int | float) else 0,
        [e.resolved_by for e in escalations],
        cmd.domain,
    )
    t.soul_put(sql, res.soul)
    t.trace_put(sql, trace, credited_at=iso_from_ms(now_ms))
    body: dict[str, Any] = {"success": True, "xpGained": res.xp_gained}
    if res.level_up is not None:
        body["levelUp"] = res.level_up
    return {**body, "soul": soul_json(actor, now_ms)}


# -- dashboard and flow ---------------------------------------------------------------------------------


def _flow_inputs(sql: t.Sql, now_ms: int) -> dash.FlowInputs:
    step_since, trace_since = dash.flow_since(now_ms)
    return dash.FlowInputs(
        stuck=t.unresolved_escalations(sql) > 0,
        recent_steps=t.recent_open_steps(sql, step_since, dash.FLOW_STEPS),
        recent_trace=t.trace_started_after(sql, trace_since),
    )


def heartbeat_json(sql: t.Sql, now_ms: int) -> dict[str, Any]:
    """GET /heartbeat."""
    return hb.heartbeat_status(
        t.shadow_get(sql), t.heartbeats_recent(sql, hb.RECENT_HEARTBEATS), t.heartbeat_count(sql), now_ms
    )


def dashboard_json(actor: Any, now_ms: int) -> dict[str, Any] | None:
    """The dashboard, or None without a soul."""
    sql = _sql(actor)
    soul = t.soul_get(sql)
    if soul is None:
        return None
    inputs = dash.DashboardInputs(
        soul=soul,
        rust=_rust(sql, soul, now_ms),
        recent_traces=t.trace_list(sql, DASHBOARD_TRACES),
        pending_escalations=t.unresolved_escalations(sql),
        flow=_flow_inputs(sql, now_ms),
        shadow=hb.shadow_status(t.shadow_get(sql), now_ms),
        heartbeat=heartbeat_json(sql, now_ms),
    )
    return dash.build_dashboard(actor.agent_id, inputs, now_ms)


async def get_dashboard(actor: Any, now_ms: int) -> dict[str, Any] | None:
    """GET /dashboard."""
    return dashboard_json(actor, now_ms)


async def flow_status(actor: Any, now_ms: int) -> str:
    """Onboarding's `flowStatus` of a teammate: its flow state, `unknown` without a soul."""
    sql = _sql(actor)
    if t.soul_get(sql) is None:
        return "unknown"
    return str(dash.flow_state(_flow_inputs(sql, now_ms), now_ms)["status"])


async def onboard(actor: Any, now_ms: int) -> tuple[bool, dict[str, Any], dict[str, Any] | None]:
    """Onboarding's one turn of the agent itself: its soul (created if new: create form),
    whether it was new, and its dashboard."""
    sql = _sql(actor)
    soul = t.soul_get(sql)
    if soul is None:
        new = s.new_soul(actor.agent_id, iso_from_ms(now_ms), actor.agent_id, actor.agent_id, None)
        t.soul_put(sql, new)
        return True, new.create_json(), dashboard_json(actor, now_ms)
    return False, soul.to_json(_rust(sql, soul, now_ms)), dashboard_json(actor, now_ms)


# -- traces ------------------------------------------------------------------------------------------


async def list_traces(actor: Any) -> list[dict[str, Any]]:
    """GET /trace: the newest 20."""
    return [x.list_json() for x in t.trace_list(_sql(actor), TRACE_LIST)]


async def start_trace(actor: Any, cmd: pc.StartTrace, session_id: str, now_ms: int) -> dict[str, Any]:
    """POST /trace; a sessionId already used is a 409."""
    sql = _sql(actor)
    if t.trace_get(sql, session_id, steps=False) is not None:
        raise ApiError(409, {"error": "Trace already exists", "sessionId": session_id})
    trace = tr.Trace(session_id, cmd.task, iso_from_ms(now_ms))
    t.trace_put(sql, trace)
    return trace.start_json(actor.agent_id)


def _trace(sql: t.Sql, session_id: str) -> tr.Trace:
    trace = t.trace_get(sql, session_id)
    if trace is None:
        raise ApiError(404, TRACE_NOT_FOUND)
    return trace


async def get_trace(actor: Any, session_id: str) -> dict[str, Any]:
    """GET /trace/<sid>."""
    return _trace(_sql(actor), session_id).to_json(actor.agent_id)


async def log_step(
    actor: Any, session_id: str, cmd: pc.StepCommand, ids: tuple[str, str], now_ms: int
) -> dict[str, Any]:
    """POST /trace/<sid>/step: the step, and the escalation it triggers if any (`ids`: the
    step's id and the escalation's)."""
    step_id, esc_id = ids
    sql = _sql(actor)
    trace = _trace(sql, session_id)
    now_iso = iso_from_ms(now_ms)
    step = tr.Step(
        step_id,
        session_id,
        now_iso,
        cmd.tool,
        cmd.intent,
        cmd.outcome,
        cmd.duration_ms,
        cmd.contribution_type,
        cmd.knowledge_gained,
        cmd.eliminated_paths,
        cmd.depends_on,
    )
    t.step_add(sql, step)
    started = parse_js_date(trace.started_at) or now_ms
    check = tr.check_escalation([*trace.steps, step], step, started, now_ms, now_iso)
    out: dict[str, Any] = {"success": True, "step": step.to_json(created=True)}
    if check["shouldEscalate"]:
        t.escalation_put(
            sql, tr.Escalation(esc_id, session_id, now_iso, check["triggers"], check["highestLevel"])
        )
        out["escalation"] = {**check, "escalationId": esc_id}
    return out


async def complete_trace(actor: Any, session_id: str, now_ms: int) -> dict[str, Any]:
    """POST /trace/<sid>/complete: the summary stored; an unknown trace is a 404."""
    sql = _sql(actor)
    trace = _trace(sql, session_id)
    done = replace(trace, completed_at=iso_from_ms(now_ms), summary=tr.summarize(trace.steps))
    t.trace_put(sql, done)
    return done.to_json(actor.agent_id)


async def resolve_escalation(
    actor: Any, session_id: str, cmd: pc.ResolveEscalation, now_ms: int
) -> dict[str, Any]:
    """POST /trace/<sid>/resolve-escalation; an escalation not of this trace is a 404."""
    sql = _sql(actor)
    esc = t.escalation_get(sql, cmd.escalation_id)
    if esc is None or esc.session_id != session_id:
        raise ApiError(404, {"error": "Escalation not found"})
    done = replace(
        esc,
        resolved_at=iso_from_ms(now_ms),
        resolved_by=cmd.resolved_by,
        resolver_agent=cmd.resolver_agent,
        helpful_hint=cmd.helpful_hint,
    )
    t.escalation_put(sql, done)
    return done.resolution_json()


async def trace_escalations(actor: Any, session_id: str) -> list[dict[str, Any]]:
    """GET /trace/<sid>/escalations (an unknown trace has none, as upstream)."""
    return [e.to_json() for e in t.escalations_of(_sql(actor), session_id)]


# -- heartbeat and shadow ----------------------------------------------------------------------------


async def get_heartbeat(actor: Any, now_ms: int) -> dict[str, Any]:
    """GET /heartbeat."""
    return heartbeat_json(_sql(actor), now_ms)


async def post_heartbeat(actor: Any, cmd: pc.HeartbeatCommand, hb_id: str, now_ms: int) -> dict[str, Any]:
    """POST /heartbeat: logged (the log pruned to the newest 100), the monitor's last heartbeat set."""
    sql = _sql(actor)
    now_iso = iso_from_ms(now_ms)
    t.heartbeat_add(sql, hb.Heartbeat(hb_id, now_iso, cmd.tokens_used, cmd.current_task, cmd.status))
    t.shadow_put(sql, hb.beat(t.shadow_get(sql), now_iso, now_ms))
    return {"id": hb_id, "timestamp": now_iso}


async def get_shadow(actor: Any, now_ms: int) -> dict[str, Any]:
    """GET /shadow."""
    return hb.shadow_status(t.shadow_get(_sql(actor)), now_ms)


async def post_shadow(actor: Any, cmd: pc.ShadowCommand, now_ms: int) -> dict[str, Any]:
    """POST /shadow: register-shadow, become-shadow, takeover or configure."""
    sql = _sql(actor)
    monitor = t.shadow_get(sql)
    now_iso = iso_from_ms(now_ms)
    new: hb.ShadowMonitor | None
    if cmd.action == "register-shadow":
        assert cmd.shadow_id is not None  # noqa: S101 - the command requires it
        new, out = hb.register_shadow(monitor, cmd.shadow_id, cmd.stall_ms, cmd.interval_ms, now_iso)
    elif cmd.action == "become-shadow":
        assert cmd.primary_agent is not None  # noqa: S101 - the command requires it
        new, out = hb.become_shadow(monitor, cmd.primary_agent, now_iso)
    elif cmd.action == "takeover":
        new, out = hb.takeover(monitor, now_iso)
    else:
        new, out = hb.configure(monitor, cmd.stall_ms, cmd.interval_ms)
    if new is not None:
        t.shadow_put(sql, new)
    return out


# -- goals -------------------------------------------------------------------------------------------


async def list_goals(actor: Any, status: str | None, limit: int) -> list[dict[str, Any]]:
    """GET /goals?action=list[&status=]."""
    return [x.to_json() for x in t.goals_list(_sql(actor), status, limit)]


async def next_goal(actor: Any) -> dict[str, Any] | None:
    """GET /goals?action=next: the highest-priority pending goal."""
    goal = t.goal_first(_sql(actor), "pending")
    return None if goal is None else goal.next_json()


async def active_goal(actor: Any) -> dict[str, Any] | None:
    """GET /goals?action=active: the goal in progress."""
    goal = t.goal_first(_sql(actor), "in_progress")
    return None if goal is None else goal.active_json()


async def goal_stats(actor: Any) -> dict[str, int]:
    """GET /goals?action=stats."""
    return t.goal_stats(_sql(actor))


async def post_goal(actor: Any, cmd: pc.GoalCommand, goal_id: str, now_ms: int) -> dict[str, Any]:
    """POST /goals: create, or move a goal on (complete awards its XP to the soul, if any)."""
    sql = _sql(actor)
    now_iso = iso_from_ms(now_ms)
    if cmd.action == "create":
        assert cmd.title is not None  # noqa: S101 - the command requires it
        goal = g.Goal(
            goal_id,
            cmd.title,
            cmd.description,
            cmd.type,
            cmd.priority,
            "pending",
            cmd.xp_reward,
            cmd.source,
            cmd.assigned_by,
            cmd.context,
            now_iso,
        )
        t.goal_put(sql, goal)
        return {"success": True, "goal": goal.create_json()}
    assert cmd.id is not None  # noqa: S101 - the command requires it
    current = t.goal_get(sql, cmd.id)
    if current is None:
        raise ApiError(404, {"error": "Goal not found", "id": cmd.id})
    moved = g.transition(current, cmd.action, now_iso, cmd.outcome)
    if isinstance(moved, str):
        raise ApiError(409, {"success": False, "error": moved, "id": cmd.id})
    goal, out = moved
    t.goal_put(sql, goal)
    if cmd.action in ("complete", "fail"):
        soul = t.soul_get(sql)
        if soul is not None:
            xp = goal.xp_reward if cmd.action == "complete" else 0
            t.soul_put(sql, s.record_goal(soul, xp, success=cmd.action == "complete"))
    return {"success": True, **out}


async def delete_goal(actor: Any, goal_id: str) -> dict[str, Any]:
    """DELETE /goals?id=."""
    t.goal_delete(_sql(actor), goal_id)
    return {"success": True, "deleted": goal_id}


# -- credentials (ciphertext only) -----------------------------------------------------------------------


async def credentials(actor: Any, limit: int) -> list[t.StoredCredential]:
    """Every credential as stored."""
    return t.credentials_all(_sql(actor), limit)


async def credential(actor: Any, key: str) -> t.StoredCredential | None:
    """One credential as stored."""
    return t.credential_get(_sql(actor), key)


async def put_credentials(actor: Any, items: list[t.StoredCredential]) -> None:
    """Store encrypted credentials (a key already held keeps its creation time)."""
    sql = _sql(actor)
    for item in items:
        t.credential_put(sql, item)


async def delete_credential(actor: Any, key: str) -> bool:
    """Delete one credential."""
    return t.credential_delete(_sql(actor), key)
