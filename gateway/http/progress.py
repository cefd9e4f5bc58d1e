"""The routes upstream added after the proof of concept (do-api.md 7.4 and 7.5): onboarding and
session resume on the coordinator; soul, dashboard, traces, heartbeat, shadow, goals and
credentials on the agent.

The agent routes are served by the agent actors in every phase (`ProgressStore`; actor-only
domains, never mirrored). Onboarding and session resume read the coordinator's lists through the
phase's `Store` (the authoritative store of the phase), each online teammate's flow state with
one read of its actor (at most `limits.onboard_parallel_reads` at once) and the onboarding agent
with one turn of its actor plus its checkpoint; the bundles are built by
`gateway.domain.onboarding`.

Plaintext credentials (`?action=get`, `?action=bundle`) need the admin token
(`Authorization: Bearer <migration.admin_token>`); listing shows masked previews only.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from gateway.clock import Clock
from gateway.domain import commands as c
from gateway.domain import onboarding as ob
from gateway.domain import progress_commands as pc
from gateway.domain.ids import IdGenerator
from gateway.domain.jscompat import iso_from_ms
from gateway.errors import ApiError
from gateway.http.auth import bearer_token, token_matches
from gateway.http.paths import Route, decode_component, parse_query
from gateway.http.responses import json_response
from gateway.settings import LimitSettings
from gateway.store import ProgressStore, Store

__all__ = ["AGENT_ROUTES", "COORDINATOR_ROUTES", "TRACE_ROUTES", "ProgressApi"]

COORDINATOR_ROUTES: Final = ("/onboard", "/session-resume")
AGENT_ROUTES: Final = ("/soul", "/dashboard", "/trace", "/heartbeat", "/shadow", "/credentials", "/goals")
TRACE_ROUTES: Final = (
    "/trace/{sessionId}",
    "/trace/{sessionId}/step",
    "/trace/{sessionId}/complete",
    "/trace/{sessionId}/resolve-escalation",
    "/trace/{sessionId}/escalations",
)
"""The trace session sub-paths (any method: a wrong one is upstream's 400 `Invalid trace action`)."""

METHOD_NOT_ALLOWED: Final = {"error": "Method not allowed"}
ADMIN_REQUIRED: Final = {
    "error": "The admin token is required to read credential values",
    "hint": "send Authorization: Bearer <admin token> (migration.admin_token or <data_dir>/admin-token)",
}

BodyReader = Any  # async (request) -> dict[str, Any]: the Gateway's body reader (limits, auth)


def _405() -> web.Response:
    return json_response(METHOD_NOT_ALLOWED, 405)


class ProgressApi:
    """Handlers of the 7.4 and 7.5 routes, mounted by `gateway.http.handlers.Gateway`."""

    def __init__(
        self,
        store: Store,
        progress: ProgressStore,
        *,
        limits: LimitSettings,
        clock: Clock,
        ids: IdGenerator,
        body: BodyReader,
        admin_token: str | None,
    ) -> None:
        self.store = store
        self.progress = progress
        self.limits = limits
        self.clock = clock
        self.ids = ids
        self.body = body
        self._admin = None if admin_token is None else admin_token.encode("utf-8")
        self.text_max = limits.progress_text_max_bytes

    def now(self) -> int:
        return self.clock.now_ms()

    # -- coordinator ------------------------------------------------------------------------------

    async def onboard(self, request: web.Request, r: Route) -> web.Response:
        """GET /coordinator/onboard?agentId=."""
        if request.method != "GET":
            return _405()
        agent_id = c.query_id(parse_query(r.query), "agentId")
        if not agent_id:
            return json_response({"error": "agentId query parameter required"}, 400)
        now = self.now()
        lim = self.limits.list_limit_max
        is_new, soul, dashboard = await self.progress.onboard(agent_id, now)
        checkpoint = None if is_new else await self.store.get_checkpoint(agent_id)
        agents = await self.store.list_agents(now, lim)
        online = sorted(
            (a for a in agents if a.status != "offline"), key=lambda a: a.last_seen or "", reverse=True
        )
        gate = asyncio.Semaphore(self.limits.onboard_parallel_reads)

        async def flow(aid: str) -> str:
            async with gate:
                return await self.progress.flow_status(aid, now)

        flows = await asyncio.gather(*(flow(a.agent_id) for a in online))
        handoffs = await self.store.list_handoffs(c.HandoffQuery(None, None, None, "pending", lim))
        todo = await self.store.list_tasks(c.ListTasks("todo", None, lim))
        unassigned = [t for t in todo if t.assignee is None]
        chat = await self.store.get_chat(c.ChatQuery(ob.RECENT_ONBOARD_CHAT, None, False, None, False, now))
        bundle = {
            "agentId": agent_id,
            "isNewAgent": is_new,
            "timestamp": iso_from_ms(now),
            "soul": soul,
            "dashboard": dashboard,
            "checkpoint": None if checkpoint is None else checkpoint.to_json(),
            "teamOnline": [ob.team_entry(a, f) for a, f in zip(online, flows, strict=True)],
            "suggestedTask": ob.suggest_task(
                checkpoint,
                handoffs[-1] if handoffs else None,  # newest first: the oldest pending
                min(unassigned, key=lambda t: t.created_at) if unassigned else None,
            ),
            "recentChat": ob.recent_chat(chat.messages),
            "welcomeMessage": ob.welcome_message(agent_id, is_new, checkpoint),
        }
        return json_response({"onboarding": bundle})

    async def session_resume(self, request: web.Request, _r: Route) -> web.Response:
        """GET /coordinator/session-resume."""
        if request.method != "GET":
            return _405()
        now = self.now()
        lim = self.limits.list_limit_max
        chat = await self.store.get_chat(
            c.ChatQuery(min(ob.RESUME_MESSAGES, lim), None, False, None, False, now)
        )
        handoffs = await self.store.list_handoffs(c.HandoffQuery(None, None, None, "pending", lim))
        tasks = await self.store.list_tasks(c.ListTasks("in-progress", None, lim))
        claims = await self.store.list_claims(c.ClaimQuery(None, True, now, lim))
        body = ob.session_resume(
            iso_from_ms(now),
            list(reversed(chat.messages)),
            sorted(handoffs, key=lambda h: h.created_at, reverse=True),
            sorted(tasks, key=lambda t: t.updated_at, reverse=True),
            sorted(claims, key=lambda x: x.since, reverse=True),
        )
        return json_response({"sessionResume": body})

    # -- soul and dashboard -----------------------------------------------------------------------

    async def soul(self, request: web.Request, r: Route) -> web.Response:
        agent = r.target
        if request.method == "GET":
            return json_response({"soul": await self.progress.soul(agent, self.now())})
        if request.method == "POST":
            cmd = pc.SoulInit.parse(await self.body(request), self.text_max)
            return json_response(
                {"success": True, "soul": await self.progress.post_soul(agent, cmd, self.now())}
            )
        if request.method == "PATCH":
            patch = pc.SoulPatch.parse(await self.body(request), self.text_max)
            return json_response(await self.progress.patch_soul(agent, patch, self.now()))
        return _405()

    async def dashboard(self, request: web.Request, r: Route) -> web.Response:
        if request.method != "GET":
            return _405()
        board = await self.progress.dashboard(r.target, self.now())
        if board is None:
            return json_response({"error": "No soul data", "hint": "POST to /soul first to initialize"}, 404)
        return json_response({"dashboard": board})

    # -- traces ----------------------------------------------------------------------------------

    async def trace(self, request: web.Request, r: Route) -> web.Response:
        agent = r.target
        if request.method == "GET":
            return json_response({"traces": await self.progress.traces(agent)})
        if request.method == "POST":
            cmd = pc.StartTrace.parse(await self.body(request), self.text_max)
            now = self.now()
            sid = cmd.session_id or self.ids.trace(now)
            trace = await self.progress.start_trace(agent, cmd, sid, now)
            return json_response({"success": True, "trace": trace})
        return _405()

    async def trace_session(self, request: web.Request, r: Route) -> web.Response:  # noqa: PLR0911 - one per action
        """/trace/<sid>[/step|/complete|/resolve-escalation|/escalations]."""
        rest = r.sub[len("/trace/") :]
        raw_sid, _, action = rest.partition("/")
        sid = decode_component(raw_sid)
        if not sid or "/" in action:
            return json_response({"error": "Invalid trace action"}, 400)
        c.limit_id("sessionId", sid)
        agent, method = r.target, request.method
        if method == "GET" and not action:
            return json_response({"trace": await self.progress.trace(agent, sid)})
        if method == "POST" and action == "step":
            cmd = pc.StepCommand.parse(await self.body(request), self.text_max)
            now = self.now()
            return json_response(
                await self.progress.log_step(
                    agent, sid, cmd, (self.ids.step(now), self.ids.escalation(now)), now
                )
            )
        if method == "POST" and action == "complete":
            return json_response(
                {"success": True, "trace": await self.progress.complete_trace(agent, sid, self.now())}
            )
        if method == "POST" and action == "resolve-escalation":
            res = pc.ResolveEscalation.parse(await self.body(request), self.text_max)
            resolution = await self.progress.resolve_escalation(agent, sid, res, self.now())
            return json_response({"success": True, "resolution": resolution})
        if method == "GET" and action == "escalations":
            return json_response({"escalations": await self.progress.escalations(agent, sid)})
        return json_response({"error": "Invalid trace action"}, 400)

    # -- heartbeat and shadow -----------------------------------------------------------------------

    async def heartbeat(self, request: web.Request, r: Route) -> web.Response:
        if request.method == "GET":
            return json_response(await self.progress.heartbeat(r.target, self.now()))
        if request.method == "POST":
            cmd = pc.HeartbeatCommand.parse(await self.body(request), self.text_max)
            now = self.now()
            beat = await self.progress.post_heartbeat(r.target, cmd, self.ids.heartbeat(now), now)
            return json_response({"success": True, "heartbeat": beat})
        return _405()

    async def shadow(self, request: web.Request, r: Route) -> web.Response:
        if request.method == "GET":
            return json_response(await self.progress.shadow(r.target, self.now()))
        if request.method == "POST":
            cmd = pc.ShadowCommand.parse(await self.body(request), parse_query(r.query).get("action"))
            return json_response(await self.progress.post_shadow(r.target, cmd, self.now()))
        return _405()

    # -- goals ----------------------------------------------------------------------------------

    async def goals(self, request: web.Request, r: Route) -> web.Response:  # noqa: PLR0911 - one per action
        agent, q = r.target, parse_query(r.query)
        action = q.get("action") or "list"
        if request.method == "GET":
            if action == "list":
                status = c.nonempty(q.get("status"))
                return json_response(
                    {"goals": await self.progress.goals(agent, status, self.limits.list_limit_max)}
                )
            if action == "next":
                return json_response({"goal": await self.progress.next_goal(agent)})
            if action == "active":
                return json_response({"goal": await self.progress.active_goal(agent)})
            if action == "stats":
                return json_response({"stats": await self.progress.goal_stats(agent)})
            return json_response({"error": "Invalid action. Use: list, next, active, stats"}, 400)
        if request.method == "POST":
            cmd = pc.GoalCommand.parse(await self.body(request), q.get("action"), self.text_max)
            now = self.now()
            return json_response(await self.progress.post_goal(agent, cmd, self.ids.goal(now), now))
        if request.method == "DELETE":
            goal_id = c.query_id(q, "id")
            if not goal_id:
                return json_response({"error": "id parameter required"}, 400)
            return json_response(await self.progress.delete_goal(agent, goal_id))
        return _405()

    # -- credentials ------------------------------------------------------------------------------

    def _require_admin(self, request: web.Request) -> None:
        if self._admin is None or not token_matches(bearer_token(request), self._admin):
            raise ApiError(401, ADMIN_REQUIRED)

    async def credentials(self, request: web.Request, r: Route) -> web.Response:  # noqa: PLR0911 - one per action
        agent, q = r.target, parse_query(r.query)
        lim = self.limits.list_limit_max
        if request.method == "GET":
            action = q.get("action") or "list"
            if action == "list":
                return json_response({"credentials": await self.progress.credential_list(agent, lim)})
            if action == "get":
                key = c.query_id(q, "key")
                if not key:
                    return json_response({"error": "key parameter required"}, 400)
                self._require_admin(request)
                value = await self.progress.credential(agent, key)
                if value is None:
                    return json_response({"error": "Credential not found"}, 404)
                return json_response({"credential": {"key": key, "value": value}})
            if action == "bundle":
                self._require_admin(request)
                return json_response({"credentials": await self.progress.credential_bundle(agent, lim)})
            return json_response({"error": "Invalid action. Use: list, get, bundle"}, 400)
        if request.method == "POST":
            body = await self.body(request)
            values = self._credential_values(body)
            done = await self.progress.set_credentials(agent, values, self.now())
            if body.get("credentials") is None:
                return json_response({"success": True, "credential": done[0]})
            return json_response(
                {
                    "success": True,
                    "set": [{"key": d["key"], "maskedPreview": d["maskedPreview"]} for d in done],
                }
            )
        if request.method == "DELETE":
            key = c.query_id(q, "key")
            if not key:
                return json_response({"error": "key parameter required"}, 400)
            await self.progress.delete_credential(agent, key)
            return json_response({"success": True, "deleted": key})
        return _405()

    def _credential_values(self, body: dict[str, Any]) -> dict[str, str]:
        """`{key, value}` or `{credentials: {k: v}}`; values never appear in an error."""
        cap = self.limits.credential_value_max_bytes
        batch = body.get("credentials")
        if batch is not None:
            if not isinstance(batch, dict) or not batch:
                raise c.bad_field("credentials", "credentials must be a non-empty object of strings")
            if len(batch) > self.limits.list_limit_max:
                raise c.bad_field(
                    "credentials", f"credentials may hold at most {self.limits.list_limit_max} keys"
                )
            out: dict[str, str] = {}
            for k, v in batch.items():
                c.limit_id("key", k)
                if not k or not isinstance(v, str) or not v:
                    raise c.bad_field(
                        "credentials", "credentials must map non-empty keys to non-empty strings"
                    )
                out[k] = c.limit_text("value", v, cap)
            return out
        key = body.get("key")
        value = body.get("value")
        if not key or not value:
            raise ApiError(400, {"error": "key and value required"})
        if not isinstance(key, str):
            raise c.bad_field("key", "key must be a string")
        if not isinstance(value, str):
            raise c.bad_field("value", "value must be a string")
        return {c.limit_id("key", key): c.limit_text("value", value, cap)}
