"""The endpoint handlers: one method per endpoint family, each parsing once and rendering once.

`Gateway.dispatch` is the single aiohttp handler. It routes the raw path (`paths.route`), runs
the endpoint, which turns the request into a typed command (ids and timestamps made here, before
the store runs it), calls the `Store` and renders the domain result into the DO wire shape.
Method rules, statuses and error bodies are upstream's (do-api.md sections 2-8) except for the
deliberate fixes listed in docs/compatibility.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from gateway.clock import Clock
from gateway.domain import commands as c
from gateway.domain.ids import IdGenerator, ids
from gateway.domain.jscompat import iso_from_ms, number_to_string
from gateway.domain.model import list_answer
from gateway.errors import ApiError
from gateway.http import ws as ws_mod
from gateway.http.auth import ANYONE, PRINCIPAL, ApiAuth
from gateway.http.paths import Route, parse_query, route
from gateway.http.progress import TRACE_ROUTES, ProgressApi
from gateway.http.responses import json_response, options_response, raw_json_response
from gateway.settings import Settings
from gateway.store import ProgressStore, SocketHost, Store

__all__ = ["DURABLE_OBJECTS", "ROOT_LISTING", "Gateway"]

DURABLE_OBJECTS: Final = ["AgentCoordinator", "AgentState", "ResourceLock", "VMPool", "GitTree"]

# The informational `/` answer, as upstream HEAD gives it (do-api.md 2.4); nothing parses it.
ROOT_LISTING: Final = {
    "name": "Agent Coordination Durable Objects",
    "version": "0.2.0",
    "endpoints": {
        "/coordinator/agents": "Agent registry - GET/POST",
        "/coordinator/chat": "Group chat - GET/POST",
        "/coordinator/tasks": "Task management - GET/POST",
        "/coordinator/zones": "Zone claiming - GET/POST (claim, release)",
        "/coordinator/claims": "Work claims - GET/POST (claim, release)",
        "/coordinator/handoffs": "Work handoffs - GET/POST (create, claim, complete)",
        "/coordinator/work": "Hot-start bundle - GET",
        "/coordinator/onboard": "Agent onboarding bundle - GET (soul, dashboard, team, suggested task)",
        "/coordinator/session-resume": "CEO Portal session resume - GET (participants, accomplishments, "
        "pending work, quick actions)",
        "/agent/:agentId/*": "Per-agent state - checkpoint, messages, memory, trace",
        "/agent/:agentId/trace": "Work traces - GET (list), POST (start)",
        "/agent/:agentId/trace/:sessionId": "Trace session - GET full trace",
        "/agent/:agentId/trace/:sessionId/step": "Log work step - POST",
        "/agent/:agentId/trace/:sessionId/complete": "Complete trace - POST",
        "/agent/:agentId/trace/:sessionId/resolve-escalation": "Resolve escalation - POST",
        "/agent/:agentId/trace/:sessionId/escalations": "Get trace escalations - GET",
        "/agent/:agentId/soul": "Soul progression - GET/POST/PATCH",
        "/agent/:agentId/credentials": "Soul credentials - GET (list/get/bundle), POST (set), DELETE",
        "/agent/:agentId/dashboard": "Agent self-dashboard - GET (aggregated view)",
        "/lock/:resourcePath/*": "Resource locking - check, lock, unlock",
        "/vmpool/status": "VM pool status - GET",
        "/vmpool/vms": "List all VMs - GET",
        "/vmpool/spawn": "Assign agent to VM - POST",
        "/vmpool/provision": "Register new VM - POST",
        "/vmpool/terminate": "Terminate VM - POST",
        "/vmpool/release": "Release agent from VM - POST",
        "/vmpool/scale": "Scale recommendations - POST",
        "/vmpool/vm/:vmId": "VM details - GET",
        "/vmpool/vm/:vmId/ready": "Mark VM ready - POST",
        "/vmpool/vm/:vmId/agents": "VM agent list - GET",
        "/vmpool/vm/:vmId/health": "VM health history - GET",
        "/gittree/:repoId/status": "Git tree status - GET",
        "/gittree/:repoId/tree": "List/cache tree - GET (list), POST (cache)",
        "/gittree/:repoId/file": "Get file info - GET",
        "/gittree/:repoId/commits": "List/track commits - GET (list), POST (track)",
        "/gittree/:repoId/branches": "List branches - GET",
        "/gittree/:repoId/compare": "Compare branches - GET",
        "/gittree/:repoId/search": "Search files - GET",
        "/gittree/:repoId/webhook": "Webhook updates - POST",
        "/health": "Health check",
    },
    "docs": "https://github.com/piston-labs/agent-coord-mcp/tree/main/cloudflare-do",
}

ROUTE: Final = web.RequestKey("route", Route)
"""The request's route, kept for the checks made when its body is read."""

NOT_FOUND: Final = {"error": "Not found"}
METHOD_NOT_ALLOWED: Final = {"error": "Method not allowed"}


def _not_found() -> web.Response:
    return json_response(NOT_FOUND, 404)


def _method_not_allowed() -> web.Response:
    return json_response(METHOD_NOT_ALLOWED, 405)


def is_websocket_upgrade(request: web.Request) -> bool:
    """The DO's test: an `Upgrade: websocket` header (compared case-insensitively here)."""
    upgrade = request.headers.get("Upgrade")
    return upgrade is not None and upgrade.lower() == "websocket"


Endpoint = Callable[[web.Request, Route], Awaitable[web.StreamResponse]]


class Gateway:
    """The DO API over one `Store` and one `SocketHost`."""

    def __init__(
        self,
        store: Store,
        sockets: SocketHost,
        settings: Settings,
        clock: Clock,
        id_gen: IdGenerator | None = None,
        *,
        progress: ProgressStore,
        auth: ApiAuth | None = None,
        admin_token: str | None = None,
    ) -> None:
        self.store = store
        self.sockets = sockets
        self.auth = auth  # None: no tokens and no admin-only operations
        self.settings = settings
        self.limits = settings.limits
        self.clock = clock
        self.ids = id_gen or ids
        self.max_body = settings.server.max_body_bytes
        self.socket_quota = ws_mod.SocketQuota(settings.limits.websockets_per_agent)
        self.progress = ProgressApi(
            store,
            progress,
            limits=settings.limits,
            clock=clock,
            ids=self.ids,
            body=self.body,
            admin_token=admin_token,
        )
        p = self.progress
        self._coordinator: dict[str, Endpoint] = {
            "/agents": self.agents,
            "/chat": self.chat,
            "/tasks": self.tasks,
            "/work": self.work,
            "/zones": self.zones,
            "/claims": self.claims,
            "/handoffs": self.handoffs,
            "/onboard": p.onboard,
            "/session-resume": p.session_resume,
            "/health": self.coordinator_health,
        }
        self._agent: dict[str, Endpoint] = {
            "/checkpoint": self.checkpoint,
            "/messages": self.messages,
            "/memory": self.memory,
            "/state": self.state,
            "/soul": p.soul,
            "/dashboard": p.dashboard,
            "/trace": p.trace,
            "/heartbeat": p.heartbeat,
            "/shadow": p.shadow,
            "/credentials": p.credentials,
            "/goals": p.goals,
            "/health": self.agent_health,
        }
        self._lock: dict[str, Endpoint] = {
            "/check": self.lock_check,
            "/lock": self.lock_acquire,
            "/unlock": self.lock_release,
            "/history": self.lock_history,
            "/health": self.lock_health,
        }

    def route_table(self) -> dict[str, tuple[str, ...]]:
        """The sub-paths each route kind serves (docs/openapi.json must list exactly these)."""
        return {
            "coordinator": tuple(self._coordinator),
            "agent": (*self._agent, *TRACE_ROUTES),
            "lock": tuple(self._lock),
        }

    # -- plumbing ---------------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:  # noqa: PLR0911 - one per route
        """Route one request (every method, every path) per do-api.md 2."""
        if request.method == "OPTIONS":
            return options_response()
        r = route(request.raw_path)
        kind = r.kind
        request[ROUTE] = r
        if self.auth is not None and kind not in ("health", "root"):
            self._authenticate(request, r)
        if kind == "coordinator":
            if is_websocket_upgrade(request):
                return await ws_mod.coordinator_socket(self, request, parse_query(r.query))
            coord = self._coordinator.get(r.sub)
            return _not_found() if coord is None else await coord(request, r)
        if kind == "agent":
            c.limit_id("agentId", r.target)  # before a WebSocket upgrade too
            if is_websocket_upgrade(request):
                return await ws_mod.agent_socket(self, request, r.target)
            agent = self._agent.get(r.sub)
            if agent is None and r.sub.startswith("/trace/"):
                return await self.progress.trace_session(request, r)
            return _not_found() if agent is None else await agent(request, r)
        if kind == "lock":
            c.limit_id("resourcePath", r.target)
            lock = self._lock.get(r.sub)
            return _not_found() if lock is None else await lock(request, r)
        if kind == "health":
            return json_response(
                {
                    "status": "ok",
                    "service": "agent-coord-do",
                    "timestamp": iso_from_ms(self.clock.now_ms()),
                    "durableObjects": DURABLE_OBJECTS,
                }
            )
        if kind == "root":
            return json_response(ROOT_LISTING)
        if kind == "bad_agent":
            return json_response({"error": "Invalid agent path"}, 400)
        if kind == "bad_lock":
            return json_response({"error": "Invalid lock path"}, 400)
        return json_response({"error": "Not found", "path": r.path}, 404)

    def _authenticate(self, request: web.Request, r: Route) -> None:
        """The token check (gateway/http/auth.py): who is asking, and may it act as the agent of
        the path or the query?"""
        assert self.auth is not None  # noqa: S101 - only called with auth configured
        query = parse_query(r.query)
        principal = self.auth.authenticate(request, query, websocket=is_websocket_upgrade(request))
        if r.kind == "agent" and not (r.sub == "/messages" and request.method == "POST"):
            self.auth.require_agent(principal, r.target, "agentId")  # a DM may go to anyone
        elif r.kind == "coordinator":
            if is_websocket_upgrade(request) and query.get("agentId"):
                self.auth.require_agent(principal, query["agentId"], "agentId")
            self.auth.check_query(request, r.sub, query)

    async def body(self, request: web.Request) -> dict[str, Any]:
        """The JSON object body (parsed once); 413 over `server.max_body_bytes`, 400 if not JSON;
        with tokens on, a 403 if it acts as an agent the token is not for."""
        length = request.content_length
        if length is not None and length > self.max_body:
            raise ApiError(413, {"error": "Request body too large", "maxBytes": self.max_body})
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, {"error": "Request body too large", "maxBytes": self.max_body}) from None
        body = c.parse_body(raw)
        if self.auth is not None:
            r = request[ROUTE]
            self.auth.check_body(request, r.kind, r.sub, body)
        return body

    def now(self) -> int:
        return self.clock.now_ms()

    # -- coordinator ------------------------------------------------------------------------------

    async def coordinator_health(self, _request: web.Request, _r: Route) -> web.Response:
        return json_response({"status": "ok", "type": "coordinator"})

    async def agents(self, request: web.Request, _r: Route) -> web.Response:
        if request.method == "GET":
            agents = await self.store.list_agents(self.now(), self.limits.list_limit_max)
            return raw_json_response(list_answer("agents", agents))
        if request.method == "POST":
            cmd = c.RegisterAgent.parse(
                await self.body(request), self.now(), max_bytes=self.limits.text_max_bytes
            )
            await self.store.register_agent(cmd)
            return json_response({"success": True, "agent": cmd.raw})
        return _method_not_allowed()

    async def chat(self, request: web.Request, r: Route) -> web.Response:
        if request.method == "GET":
            try:
                q = c.ChatQuery.parse(
                    parse_query(r.query),
                    self.now(),
                    self.limits.chat_limit_default,
                    self.limits.list_limit_max,
                )
            except ApiError as e:
                # keep the list keys: a client that never checks the status reads an empty list
                return json_response({**e.body(), "messages": [], "count": 0}, e.status)
            return raw_json_response((await self.store.get_chat(q)).answer())
        if request.method == "POST":
            now = self.now()
            cmd = c.PostChat.parse(
                await self.body(request), now, self.ids, max_bytes=self.limits.chat_message_max_bytes
            )
            msg = await self.store.post_chat(cmd)
            return json_response({"success": True, "message": msg.to_json()})
        return _method_not_allowed()

    async def tasks(self, request: web.Request, r: Route) -> web.Response:
        method = request.method
        if method == "GET":
            tasks = await self.store.list_tasks(
                c.ListTasks.parse(parse_query(r.query), self.limits.list_limit_max)
            )
            return raw_json_response(list_answer("tasks", tasks))
        if method == "POST":
            now = self.now()
            cmd = c.CreateTask.parse(
                await self.body(request), now, self.ids, max_bytes=self.limits.text_max_bytes
            )
            task = await self.store.create_task(cmd)
            return json_response({"success": True, "task": task.create_json()})
        if method == "PATCH":
            update = c.UpdateTask.parse(
                await self.body(request), self.now(), max_bytes=self.limits.text_max_bytes
            )
            task = await self.store.update_task(update)
            return json_response({"success": True, "task": task.to_json()})
        return _method_not_allowed()

    async def work(self, _request: web.Request, r: Route) -> web.Response:
        q = c.WorkQuery.parse(parse_query(r.query), self.now(), self.limits.list_limit_max)
        return raw_json_response((await self.store.work_bundle(q)).answer())

    async def zones(self, request: web.Request, r: Route) -> web.Response:
        if request.method == "GET":
            q = c.ZoneQuery.parse(parse_query(r.query), self.limits.list_limit_max)
            if q.path is not None:
                zone = await self.store.find_zone(q.path)
                return json_response({"zone": None if zone is None else zone.to_json()})
            zones = await self.store.list_zones(q)
            return json_response({"zones": [z.to_json() for z in zones]})
        if request.method != "POST":
            return _method_not_allowed()
        body = await self.body(request)
        action = body.get("action")
        if action == "claim":
            cmd = c.ZoneClaim.parse(body, self.now(), max_bytes=self.limits.text_max_bytes)
            await self._refuse_zone_takeover(request, cmd)
            zone = await self.store.claim_zone(cmd)
            return json_response({"success": True, "zone": zone.create_json()})
        if action == "release":
            released = await self.store.release_zone(c.ReleaseZone.parse(body))
            return json_response({"success": released})
        return json_response({"error": "Invalid action. Use: claim, release"}, 400)

    async def _refuse_zone_takeover(self, request: web.Request, cmd: c.ZoneClaim) -> None:
        """With `auth.admin_only_force`, claiming a zone another owner holds needs the admin token.

        Checked here, against the newest `list_limit_max` zones, before the claim: not atomic
        with it (a zone claimed between the two by someone else is overwritten, as upstream)."""
        if self.auth is None or not self.auth.admin_only_force or request.get(PRINCIPAL, ANYONE).admin:
            return
        zones = await self.store.list_zones(c.ZoneQuery(None, None, self.limits.list_limit_max))
        held = next((z for z in zones if z.zone_id == cmd.zone_id), None)
        if held is not None and held.owner != cmd.owner:
            self.auth.require_admin(request.get(PRINCIPAL, ANYONE), "zoneId")

    async def claims(self, request: web.Request, r: Route) -> web.Response:  # noqa: PLR0911 - one per answer
        if request.method == "GET":
            q = c.ClaimQuery.parse(parse_query(r.query), self.now(), self.limits.list_limit_max)
            if q.what is not None:
                claim = await self.store.get_claim(q.what, q.now_ms)
                return json_response({"claim": None if claim is None else claim.to_json()})
            claims = await self.store.list_claims(q)
            return json_response({"claims": [x.to_json() for x in claims]})
        if request.method != "POST":
            return _method_not_allowed()
        body = await self.body(request)
        action = body.get("action")
        if action == "claim":
            out = await self.store.claim(
                c.ClaimWork.parse(body, self.now(), max_bytes=self.limits.text_max_bytes)
            )
            if out.conflict:
                return json_response(
                    {
                        "success": False,
                        "error": f"Already claimed by {out.claim.by}",
                        "claim": out.claim.to_json(),
                    },
                    409,
                )
            return json_response({"success": True, "claim": out.claim.create_json()})
        if action == "release":
            released = await self.store.release_claim(c.ReleaseClaim.parse(body))
            return json_response({"success": released})
        return json_response({"error": "Invalid action. Use: claim, release"}, 400)

    async def handoffs(self, request: web.Request, r: Route) -> web.Response:  # noqa: PLR0911 - one per answer
        if request.method == "GET":
            q = c.HandoffQuery.parse(parse_query(r.query), self.limits.list_limit_max)
            if q.id is not None:
                h = await self.store.get_handoff(q.id)
                return json_response({"handoff": None if h is None else h.to_json()})
            hs = await self.store.list_handoffs(q)
            return json_response({"handoffs": [h.to_json() for h in hs]})
        if request.method != "POST":
            return _method_not_allowed()
        body = await self.body(request)
        action = body.get("action") or "create"
        if action == "create":
            h = await self.store.create_handoff(
                c.CreateHandoff.parse(body, self.now(), self.ids, max_bytes=self.limits.text_max_bytes)
            )
            return json_response({"success": True, "handoff": h.create_json()})
        if action == "claim":
            out = await self.store.claim_handoff(c.ClaimHandoff.parse(body, self.now()))
            if out.handoff is None:
                return json_response({"success": False, "error": out.error}, 409)
            return json_response({"success": True, "handoff": out.handoff.to_json()})
        if action == "complete":
            out = await self.store.complete_handoff(c.CompleteHandoff.parse(body, self.now()))
            if out.handoff is None:
                return json_response({"success": False, "error": out.error}, 400)
            return json_response({"success": True, "handoff": out.handoff.to_json()})
        return json_response({"error": "Invalid action. Use: create, claim, complete"}, 400)

    # -- agent ------------------------------------------------------------------------------------

    async def agent_health(self, _request: web.Request, r: Route) -> web.Response:
        return json_response({"status": "ok", "type": "agent-state", "agentId": r.target})

    async def checkpoint(self, request: web.Request, r: Route) -> web.Response:
        if request.method == "GET":
            cp = await self.store.get_checkpoint(r.target)
            return json_response({"checkpoint": None if cp is None else cp.to_json()})
        if request.method == "POST":
            await self.store.save_checkpoint(
                c.SaveCheckpoint.parse(
                    r.target, await self.body(request), self.now(), max_bytes=self.limits.checkpoint_max_bytes
                )
            )
            return json_response({"success": True})
        return _method_not_allowed()

    async def messages(self, request: web.Request, r: Route) -> web.Response:
        method = request.method
        if method == "GET":
            q = c.ListDms.parse(r.target, parse_query(r.query), self.limits.list_limit_max)
            return json_response({"messages": [m.to_json() for m in await self.store.list_dms(q)]})
        if method == "POST":
            cmd = c.SendDm.parse(
                r.target,
                await self.body(request),
                self.now(),
                self.ids,
                max_bytes=self.limits.dm_message_max_bytes,
            )
            dm = await self.store.send_dm(cmd)
            return json_response({"success": True, "message": dm.to_json()})
        if method == "PATCH":
            mark = c.MarkDmsRead.parse(r.target, await self.body(request), self.now())
            await self.store.mark_dms_read(mark)
            return json_response({"success": True})
        return _method_not_allowed()

    async def memory(self, request: web.Request, r: Route) -> web.Response:
        if request.method == "GET":
            q = c.MemoryQuery.parse(r.target, parse_query(r.query), self.limits.list_limit_max)
            return json_response({"memories": [m.to_json() for m in await self.store.search_memory(q)]})
        if request.method == "POST":
            cmd = c.AddMemory.parse(
                r.target,
                await self.body(request),
                self.now(),
                self.ids,
                max_bytes=self.limits.memory_content_max_bytes,
            )
            mem = await self.store.add_memory(cmd)
            return json_response({"success": True, "memory": mem.to_json()})
        return _method_not_allowed()

    async def state(self, _request: web.Request, r: Route) -> web.Response:
        return json_response((await self.store.agent_state(r.target)).to_json())

    # -- lock -------------------------------------------------------------------------------------

    async def lock_health(self, _request: web.Request, r: Route) -> web.Response:
        return json_response({"status": "ok", "type": "resource-lock", "resourcePath": r.target})

    async def lock_check(self, _request: web.Request, r: Route) -> web.Response:
        return json_response((await self.store.check_lock(r.target, self.now())).to_json())

    async def lock_acquire(self, request: web.Request, r: Route) -> web.Response:
        if request.method != "POST":
            return _method_not_allowed()
        lim = self.limits
        cmd = c.AcquireLock.parse(
            r.target,
            await self.body(request),
            self.now(),
            self.ids,
            ttl_min_ms=lim.lock_ttl_min_ms,
            ttl_max_ms=lim.lock_ttl_max_ms,
            ttl_default_ms=lim.lock_ttl_default_ms,
            max_bytes=lim.text_max_bytes,
        )
        out = await self.store.acquire_lock(cmd)
        lock = out.lock
        if not out.acquired:
            return json_response(
                {
                    "success": False,
                    "error": "Resource is locked",
                    "lockedBy": lock.locked_by,
                    "expiresAt": lock.expires_at,
                    "remainingMs": lock.expires_ms - out.now_ms,
                },
                409,
            )
        minutes = number_to_string(out.ttl_ms / 60000)
        return json_response(
            {"success": True, "lock": lock.create_json(), "message": f"Lock acquired for {minutes} minutes"}
        )

    async def lock_release(self, request: web.Request, r: Route) -> web.Response:
        if request.method != "POST":
            return _method_not_allowed()
        out = await self.store.release_lock(
            c.ReleaseLock.parse(r.target, await self.body(request), self.now())
        )
        if out.outcome in ("none", "expired"):
            return json_response({"success": True, "message": "No lock to release"})
        assert out.lock is not None  # noqa: S101 - released and not_owner always carry the lock
        if out.outcome == "not_owner":
            return json_response(
                {"success": False, "error": "Not lock owner", "lockedBy": out.lock.locked_by}, 403
            )
        return json_response(
            {"success": True, "message": "Lock released", "previousOwner": out.lock.locked_by}
        )

    async def lock_history(self, _request: web.Request, r: Route) -> web.Response:
        hist = await self.store.lock_history(r.target, 50)
        return json_response(hist.to_json())
