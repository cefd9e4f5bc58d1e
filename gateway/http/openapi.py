"""The OpenAPI 3.1 description of the whole HTTP API: the DO API, the gateway's own paths and the
admin API. Served at `GET /openapi.json` and kept in the repository as `docs/openapi.json`.

Built here, in code, so that shared shapes are written once; `agent-coord docs openapi` prints
it. tests/do_api/test_openapi.py checks that the committed file is this document, that its paths
are exactly the routes the gateway serves and its methods exactly those that do not answer 405,
and the fuzz run (tests/do_api/test_fuzz.py) sends requests generated from it.

Extensions: `x-any-method: true` marks a path that answers every method alike (as upstream),
listed under GET; `x-websocket: true` marks an operation that is a WebSocket upgrade (its frames
are described in do-api.md section 8).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import orjson

from gateway import __version__
from gateway.domain.commands import MAX_ID_CHARS, MAX_JSON_DEPTH
from gateway.http.openapi_progress import progress_paths

__all__ = ["document", "document_bytes", "render"]

Json = dict[str, Any]

STR: Final[Json] = {"type": "string"}
NSTR: Final[Json] = {"type": ["string", "null"]}
ID: Final[Json] = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
STRS: Final[Json] = {"type": "array", "items": STR}
TIME: Final[Json] = {"type": "string", "description": "ISO-8601 UTC with milliseconds (`...mmmZ`)"}
BOOL: Final[Json] = {"type": "boolean"}
INT: Final[Json] = {"type": "integer"}


def obj(props: dict[str, Json], required: tuple[str, ...] = (), **extra: Any) -> Json:
    out: Json = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    out.update(extra)
    return out


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def list_of(key: str, item: str) -> Json:
    return obj({key: {"type": "array", "items": ref(item)}}, (key,))


SCHEMAS: Final[dict[str, Json]] = {
    "Error": obj(
        {
            "error": {"type": "string", "description": "What went wrong"},
            "field": {"type": "string", "description": "The request field at fault"},
            "message": STR,
            "requestId": {"type": "string", "description": "On a 5xx: the id the gateway log has"},
            "retryable": BOOL,
            "overloaded": BOOL,
            "maxBytes": INT,
            "maxChars": INT,
            "maxDepth": INT,
        },
        ("error",),
        description="Every error answer, on every status: a JSON object with at least `error`.",
    ),
    "Success": obj({"success": BOOL}, ("success",)),
    "Agent": obj(
        {
            "agentId": STR,
            "status": STR,
            "currentTask": NSTR,
            "workingOn": NSTR,
            "lastSeen": TIME,
            "capabilities": STRS,
            "offers": STRS,
            "needs": STRS,
        },
        ("agentId", "status"),
    ),
    "ChatMessage": obj(
        {
            "id": STR,
            "author": STR,
            "authorType": STR,
            "message": STR,
            "timestamp": TIME,
            "reactions": {"type": "array"},
        },
        ("id", "author", "message", "timestamp"),
    ),
    "Task": obj(
        {
            "id": STR,
            "title": STR,
            "description": NSTR,
            "status": STR,
            "assignee": NSTR,
            "createdBy": STR,
            "priority": STR,
            "tags": STRS,
            "files": STRS,
            "createdAt": TIME,
            "updatedAt": TIME,
        },
        ("id", "title", "status"),
    ),
    "Zone": obj(
        {"zoneId": STR, "path": STR, "owner": STR, "description": NSTR, "claimedAt": TIME},
        ("zoneId", "path", "owner"),
    ),
    "Claim": obj({"what": STR, "by": STR, "description": NSTR, "since": TIME, "stale": BOOL}, ("what", "by")),
    "Handoff": obj(
        {
            "id": STR,
            "fromAgent": STR,
            "toAgent": NSTR,
            "title": STR,
            "context": STR,
            "code": NSTR,
            "filePath": NSTR,
            "nextSteps": STRS,
            "priority": STR,
            "status": STR,
            "claimedBy": NSTR,
            "createdAt": TIME,
            "claimedAt": NSTR,
            "completedAt": NSTR,
        },
        ("id", "fromAgent", "title"),
    ),
    "Checkpoint": obj(
        {
            "agentId": STR,
            "conversationSummary": NSTR,
            "accomplishments": STRS,
            "pendingWork": STRS,
            "recentContext": NSTR,
            "filesEdited": STRS,
            "checkpointAt": NSTR,
        },
        ("agentId",),
    ),
    "DirectMessage": obj(
        {"id": STR, "from": STR, "type": STR, "message": STR, "timestamp": TIME, "read": BOOL},
        ("id", "from", "message"),
    ),
    "Memory": obj(
        {"id": STR, "category": STR, "content": STR, "tags": STRS, "createdAt": TIME},
        ("id", "category", "content"),
    ),
    "Lock": obj(
        {
            "resourcePath": STR,
            "resourceType": STR,
            "lockedBy": STR,
            "reason": NSTR,
            "lockedAt": TIME,
            "expiresAt": TIME,
            "remainingMs": INT,
        },
        ("resourcePath", "lockedBy", "expiresAt"),
    ),
    "LockHistoryEntry": obj(
        {
            "id": STR,
            "lockedBy": STR,
            "reason": NSTR,
            "lockedAt": TIME,
            "releasedAt": NSTR,
            "releaseReason": NSTR,
        },
        ("id", "lockedBy"),
    ),
    "PhaseChange": obj(
        {"at": TIME, "actor": STR, "from": NSTR, "to": STR, "reason": STR, "forced": BOOL},
        ("to",),
    ),
    "DeadLetter": obj(
        {
            "seq": INT,
            "domain": STR,
            "scope": STR,
            "id": STR,
            "target": {"enum": ["legacy", "actors"]},
            "enqueuedAt": TIME,
            "deadAt": TIME,
            "attempts": INT,
            "reason": STR,
        },
        ("seq", "domain", "id", "target", "reason"),
    ),
}

# -- request bodies -----------------------------------------------------------------------------

_AGENT_BODY: Final = obj(
    {
        "agentId": ID,
        "status": STR,
        "currentTask": NSTR,
        "workingOn": NSTR,
        "capabilities": STRS,
        "offers": STRS,
        "needs": STRS,
    },
    ("agentId",),
    description="Any other field is kept and echoed (nested at most "
    f"{MAX_JSON_DEPTH} levels deep, as every body).",
)
_CHAT_BODY: Final = obj(
    {"author": ID, "message": STR, "authorType": STR},
    ("author", "message"),
    description="`message` at most limits.chat_message_max_bytes (UTF-8), else 413.",
)
_TASK_CREATE: Final = obj(
    {
        "id": ID,
        "title": STR,
        "description": NSTR,
        "status": STR,
        "assignee": {"type": ["string", "null"], "maxLength": MAX_ID_CHARS},
        "createdBy": {"type": "string", "maxLength": MAX_ID_CHARS},
        "priority": STR,
        "tags": STRS,
        "files": STRS,
    }
)
_TASK_PATCH: Final = obj(
    {
        "id": ID,
        "title": {"type": "string", "minLength": 1},
        "description": NSTR,
        "status": {"type": "string", "minLength": 1},
        "assignee": {"type": ["string", "null"], "maxLength": MAX_ID_CHARS},
        "priority": {"type": "string", "minLength": 1},
        "tags": STRS,
        "files": STRS,
    },
    ("id",),
)
_ZONE_BODY: Final = {
    "oneOf": [
        obj(
            {"action": {"const": "claim"}, "zoneId": ID, "path": STR, "owner": ID, "description": NSTR},
            ("action", "zoneId", "path", "owner"),
        ),
        obj({"action": {"const": "release"}, "zoneId": ID, "owner": ID}, ("action", "zoneId", "owner")),
    ]
}
_CLAIM_BODY: Final = obj(
    {"action": {"enum": ["claim", "release"]}, "what": ID, "by": ID, "description": NSTR},
    ("action", "what", "by"),
)
_HANDOFF_BODY: Final = {
    "oneOf": [
        obj(
            {
                "action": {"const": "create"},
                "fromAgent": ID,
                "toAgent": {"type": ["string", "null"], "maxLength": MAX_ID_CHARS},
                "title": STR,
                "context": STR,
                "code": NSTR,
                "filePath": NSTR,
                "nextSteps": STRS,
                "priority": STR,
            },
            ("fromAgent", "title", "context"),
        ),
        obj(
            {"action": {"enum": ["claim", "complete"]}, "handoffId": ID, "agentId": ID},
            ("action", "handoffId", "agentId"),
        ),
    ]
}
_CHECKPOINT_BODY: Final = obj(
    {
        "conversationSummary": NSTR,
        "accomplishments": STRS,
        "pendingWork": STRS,
        "recentContext": NSTR,
        "filesEdited": STRS,
    },
    description="Each field at most limits.checkpoint_max_bytes (a list: all its items), else 413.",
)
_DM_BODY: Final = obj({"from": ID, "message": STR, "type": STR}, ("from", "message"))
_MARK_READ_BODY: Final = obj({"messageIds": {"type": "array", "items": ID}}, ("messageIds",))
_MEMORY_BODY: Final = obj({"category": STR, "content": STR, "tags": STRS})
_LOCK_BODY: Final = obj(
    {
        "agentId": ID,
        "reason": NSTR,
        "resourceType": NSTR,
        "ttlMs": {
            "type": ["number", "null"],
            "description": "limits.lock_ttl_min_ms..max_ms; 0 or null: default",
        },
    },
    ("agentId",),
)
_UNLOCK_BODY: Final = obj({"agentId": ID, "force": BOOL}, ("agentId",))
_PHASE_BODY: Final = obj(
    {
        "phase": {"enum": ["parallel", "write-through", "read-switch", "cutover"]},
        "reason": {"type": "string", "minLength": 1},
        "force": BOOL,
        "actor": {"type": "string", "minLength": 1},
    },
    ("phase", "reason"),
)

_DEAD_LETTER_BODY: Final = obj(
    {
        "action": {"enum": ["retry", "drop"]},
        "seqs": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
        "all": BOOL,
        "actor": {"type": "string", "minLength": 1},
    },
    ("action",),
)

# -- parameters ---------------------------------------------------------------------------------


def query(name: str, schema: Json | None = None, description: str = "") -> Json:
    out: Json = {"name": name, "in": "query", "required": False, "schema": schema or STR}
    if description:
        out["description"] = description
    return out


def id_query(name: str, description: str = "") -> Json:
    return query(name, {"type": "string", "maxLength": MAX_ID_CHARS}, description)


LIMIT: Final = query(
    "limit", STR, "JS parseInt of the text; NaN or negative is a 400; capped at limits.list_limit_max"
)
AGENT_PARAM: Final = {
    "name": "agentId",
    "in": "path",
    "required": True,
    "schema": ID,
    "description": "percent-encoded (encodeURIComponent)",
}
RESOURCE_PARAM: Final = {
    "name": "resourcePath",
    "in": "path",
    "required": True,
    "schema": ID,
    "description": "the locked resource, percent-encoded (`/` as %2F)",
}

# -- operations ---------------------------------------------------------------------------------


def answer(schema: Json, description: str = "OK") -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS: Final[Json] = {
    "default": answer(ref("Error"), "An error: 4xx for the request, 5xx for the gateway (with requestId)")
}


def op(
    summary: str,
    ok: Json,
    *,
    body: Json | None = None,
    params: list[Json] | None = None,
    tags: tuple[str, ...] = (),
    security: list[Json] | None = None,
    **extra: Any,
) -> Json:
    out: Json = {"summary": summary, "responses": {"200": answer(ok), **ERRORS}}
    if tags:
        out["tags"] = list(tags)
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if security is not None:
        out["security"] = security
    out.update(extra)
    return out


def _ndjson(summary: str, *, params: list[Json] | None = None, body: Json | None = None) -> Json:
    """An admin operation answering a stream of NDJSON lines."""
    out: Json = {
        "summary": summary,
        "tags": ["admin"],
        "security": ADMIN_SECURITY,
        "responses": {
            "200": {"description": "OK", "content": {"application/x-ndjson": {"schema": STR}}},
            **ERRORS,
        },
    }
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return out


def websocket(summary: str, params: list[Json] | None = None) -> Json:
    out = op(summary, obj({}), params=params, tags=("websocket",))
    out["x-websocket"] = True
    out["responses"] = {"101": {"description": "Switching Protocols: the WebSocket is open"}, **ERRORS}
    out["parameters"] = [
        {"name": "Upgrade", "in": "header", "required": True, "schema": {"const": "websocket"}},
        *(params or []),
    ]
    return out


def any_method(operation: Json) -> Json:
    return {"get": operation, "x-any-method": True}


ADMIN_SECURITY: Final[list[Json]] = [{"adminBearer": []}]


def _paths() -> dict[str, Json]:
    """Every path, in the order of do-api.md, then the admin API."""
    co, ag, lo = ("coordinator",), ("agent",), ("lock",)
    return {
        "/": any_method(op("The informational listing of the API (as upstream)", obj({"name": STR}))),
        "/health": any_method(op("Liveness: the process answers", obj({"status": STR, "service": STR}))),
        "/ready": {
            "get": op(
                "Readiness in the current phase (503 with the failed checks when not ready)",
                obj(
                    {"ready": BOOL, "phase": STR, "checks": {"type": "object"}}, ("ready", "phase", "checks")
                ),
                tags=("operations",),
            )
        },
        "/openapi.json": {"get": op("This document", {"type": "object"}, tags=("operations",))},
        "/coordinator": {
            "get": websocket(
                "The coordinator WebSocket (welcome, ping/pong, chat, agent, task and lock updates)",
                [id_query("agentId", "anonymous (anon-<ms>-<rand4>) if absent"), query("token")],
            )
        },
        "/coordinator/agents": {
            "get": op("Registered agents, newest first", list_of("agents", "Agent"), tags=co),
            "post": op(
                "Register or update an agent",
                obj({"success": BOOL, "agent": {"type": "object"}}),
                body=_AGENT_BODY,
                tags=co,
            ),
        },
        "/coordinator/chat": {
            "get": op(
                "The newest chat messages, oldest first",
                obj({"messages": {"type": "array", "items": ref("ChatMessage")}, "count": INT}),
                params=[LIMIT, query("since"), id_query("agentId"), query("inbox")],
                tags=co,
            ),
            "post": op(
                "Post a chat message",
                obj({"success": BOOL, "message": ref("ChatMessage")}),
                body=_CHAT_BODY,
                tags=co,
            ),
        },
        "/coordinator/tasks": {
            "get": op(
                "Tasks, newest first",
                list_of("tasks", "Task"),
                params=[query("status"), id_query("assignee"), LIMIT],
                tags=co,
            ),
            "post": op(
                "Create a task", obj({"success": BOOL, "task": ref("Task")}), body=_TASK_CREATE, tags=co
            ),
            "patch": op(
                "Change a task", obj({"success": BOOL, "task": ref("Task")}), body=_TASK_PATCH, tags=co
            ),
        },
        "/coordinator/work": any_method(
            op(
                "The hot-start bundle of an agent",
                {"type": "object"},
                params=[id_query("agentId", "required")],
                tags=co,
            )
        ),
        "/coordinator/zones": {
            "get": op(
                "Zones (or the zone covering `path`)",
                obj({"zones": {"type": "array", "items": ref("Zone")}, "zone": {"type": ["object", "null"]}}),
                params=[query("path"), id_query("owner"), LIMIT],
                tags=co,
            ),
            "post": op("Claim or release a zone", {"type": "object"}, body=_ZONE_BODY, tags=co),
        },
        "/coordinator/claims": {
            "get": op(
                "Work claims (or the claim of `what`)",
                obj(
                    {
                        "claims": {"type": "array", "items": ref("Claim")},
                        "claim": {"type": ["object", "null"]},
                    }
                ),
                params=[id_query("what"), query("includeStale"), LIMIT],
                tags=co,
            ),
            "post": op(
                "Claim or release work (409 when claimed)", {"type": "object"}, body=_CLAIM_BODY, tags=co
            ),
        },
        "/coordinator/handoffs": {
            "get": op(
                "Handoffs (or the handoff `id`)",
                obj(
                    {
                        "handoffs": {"type": "array", "items": ref("Handoff")},
                        "handoff": {"type": ["object", "null"]},
                    }
                ),
                params=[id_query("id"), id_query("toAgent"), id_query("fromAgent"), query("status"), LIMIT],
                tags=co,
            ),
            "post": op(
                "Create, claim or complete a handoff", {"type": "object"}, body=_HANDOFF_BODY, tags=co
            ),
        },
        "/coordinator/health": any_method(
            op("The coordinator answers", obj({"status": STR, "type": STR}), tags=co)
        ),
        "/agent/{agentId}": {
            "get": websocket(
                "The agent WebSocket (state-sync, DM pushes, checkpoint-save); without Upgrade: /state",
                [AGENT_PARAM, query("token")],
            ),
            "x-any-method": True,
        },
        "/agent/{agentId}/state": any_method(
            op(
                "Checkpoint, unread DMs and memories of an agent",
                obj({"checkpoint": {"type": ["object", "null"]}, "unreadMessages": {"type": "array"}}),
                params=[AGENT_PARAM],
                tags=ag,
            )
        ),
        "/agent/{agentId}/checkpoint": {
            "parameters": [AGENT_PARAM],
            "get": op("The agent's checkpoint", obj({"checkpoint": {"type": ["object", "null"]}}), tags=ag),
            "post": op("Save the agent's checkpoint", ref("Success"), body=_CHECKPOINT_BODY, tags=ag),
        },
        "/agent/{agentId}/messages": {
            "parameters": [AGENT_PARAM],
            "get": op(
                "The agent's direct messages, newest first",
                list_of("messages", "DirectMessage"),
                params=[query("unread"), LIMIT],
                tags=ag,
            ),
            "post": op(
                "Send the agent a direct message",
                obj({"success": BOOL, "message": ref("DirectMessage")}),
                body=_DM_BODY,
                tags=ag,
            ),
            "patch": op("Mark direct messages read", ref("Success"), body=_MARK_READ_BODY, tags=ag),
        },
        "/agent/{agentId}/memory": {
            "parameters": [AGENT_PARAM],
            "get": op(
                "The agent's memories, newest first",
                list_of("memories", "Memory"),
                params=[query("category"), query("query"), LIMIT],
                tags=ag,
            ),
            "post": op(
                "Add a memory", obj({"success": BOOL, "memory": ref("Memory")}), body=_MEMORY_BODY, tags=ag
            ),
        },
        "/agent/{agentId}/health": any_method(
            op("The agent actor answers", obj({"status": STR, "agentId": STR}), params=[AGENT_PARAM], tags=ag)
        ),
        **progress_paths(),
        "/lock/{resourcePath}": any_method(
            op("The same as /check", obj({"locked": BOOL}), params=[RESOURCE_PARAM], tags=lo)
        ),
        "/lock/{resourcePath}/check": any_method(
            op(
                "Is the resource locked?",
                obj({"locked": BOOL, "lock": ref("Lock"), "resourcePath": STR}, ("locked",)),
                params=[RESOURCE_PARAM],
                tags=lo,
            )
        ),
        "/lock/{resourcePath}/lock": {
            "parameters": [RESOURCE_PARAM],
            "post": op(
                "Acquire (or extend) the lock; 409 when another agent holds it",
                obj({"success": BOOL, "lock": ref("Lock"), "message": STR}),
                body=_LOCK_BODY,
                tags=lo,
            ),
        },
        "/lock/{resourcePath}/unlock": {
            "parameters": [RESOURCE_PARAM],
            "post": op(
                "Release the lock (403 for another agent's lock without force)",
                obj({"success": BOOL, "message": STR}),
                body=_UNLOCK_BODY,
                tags=lo,
            ),
        },
        "/lock/{resourcePath}/history": any_method(
            op(
                "The lock's current holder and its last acquisitions",
                obj(
                    {
                        "currentLock": {"type": ["object", "null"]},
                        "history": {"type": "array", "items": ref("LockHistoryEntry")},
                    }
                ),
                params=[RESOURCE_PARAM],
                tags=lo,
            )
        ),
        "/lock/{resourcePath}/health": any_method(
            op(
                "The lock actor answers",
                obj({"status": STR, "resourcePath": STR}),
                params=[RESOURCE_PARAM],
                tags=lo,
            )
        ),
        "/admin/status": {
            "get": op(
                "Phase, repair queue, shadow reads, replication",
                {"type": "object"},
                tags=("admin",),
                security=ADMIN_SECURITY,
            )
        },
        "/admin/phase": {
            "get": op(
                "The phase and since when",
                obj({"phase": STR, "since": TIME}),
                tags=("admin",),
                security=ADMIN_SECURITY,
            ),
            "post": op(
                "Change the phase (409 with the guards' reasons when refused)",
                obj({"success": BOOL, "change": ref("PhaseChange")}),
                body=_PHASE_BODY,
                tags=("admin",),
                security=ADMIN_SECURITY,
            ),
        },
        "/admin/phase/history": {
            "get": op(
                "The phase audit log, oldest first",
                obj({"changes": {"type": "array", "items": ref("PhaseChange")}}),
                params=[query("limit", {"type": "string", "pattern": "^[0-9]+$"}, "1..10000, default 100")],
                tags=("admin",),
                security=ADMIN_SECURITY,
            )
        },
        "/admin/entities": {
            "get": _ndjson(
                "One page of the actor entities in scan order (gateway/bulk; docs/migrate.md)",
                params=[
                    query("domain", STR, "comma-separated domains (default: all)"),
                    query("agent", STR, "comma-separated agent ids: their own data only"),
                    query("after", STR, "resume cursor: the `next` of the previous page"),
                    query("limit", {"type": "string", "pattern": "^[0-9]+$"}, "1..5000, default 500"),
                ],
            ),
            "post": {
                "summary": "Write a batch of entities (NDJSON lines); a newer stored copy is kept",
                "tags": ["admin"],
                "security": ADMIN_SECURITY,
                "parameters": [query("dry_run", STR, "1: report what would change, write nothing")],
                "requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": STR}}},
                "responses": {
                    "200": answer(
                        obj(
                            {
                                "written": {"type": "object"},
                                "unchanged": {"type": "object"},
                                "skipped": {"type": "object"},
                                "skippedKeys": {"type": "array"},
                            }
                        )
                    ),
                    **ERRORS,
                },
            },
        },
        "/admin/entities/read": {
            "post": _ndjson(
                "The entities of the given keys, one NDJSON line each",
                body=obj({"keys": {"type": "array", "items": {"type": "array", "items": STR}}}),
            )
        },
        "/admin/entities/count": {
            "get": op(
                "An estimate of the entities per domain (for progress bars)",
                obj({"counts": {"type": ["object", "null"]}}),
                params=[query("domain", STR, "comma-separated domains"), query("agent", STR, "agent ids")],
                tags=("admin",),
                security=ADMIN_SECURITY,
            )
        },
        "/admin/reverse-sync": {
            "post": op(
                "Record that Redis was refilled from the actors (`agent-coord migrate copy --from "
                "actors --to legacy`, complete): the guard on leaving cutover reads it",
                obj({"success": BOOL}),
                body=obj({"startedMs": INT, "finishedMs": INT, "entities": INT}),
                tags=("admin",),
                security=ADMIN_SECURITY,
            )
        },
        "/admin/repair/dead-letters": {
            "get": op(
                "Repairs that failed their last retry, oldest first, with their reasons",
                obj({"deadLetters": {"type": "array", "items": ref("DeadLetter")}}),
                params=[query("limit", {"type": "string", "pattern": "^[0-9]+$"}, "1..10000, default 100")],
                tags=("admin",),
                security=ADMIN_SECURITY,
            ),
            "post": op(
                "Retry (back into the repair queue) or drop dead letters: `seqs` or `all: true`",
                obj({"success": BOOL, "action": STR, "count": INT}),
                body=_DEAD_LETTER_BODY,
                tags=("admin",),
                security=ADMIN_SECURITY,
            ),
        },
        "/admin/backup": {
            "post": {
                "summary": "A consistent snapshot of the data directory with its manifest, as a tar "
                "archive (docs/operations.md, Backups; `agent-coord backup`)",
                "tags": ["admin"],
                "security": ADMIN_SECURITY,
                "responses": {
                    "200": {"description": "OK", "content": {"application/x-tar": {"schema": STR}}},
                    **ERRORS,
                },
            }
        },
        "/admin/metrics": {
            "get": {
                "summary": "Metrics in the Prometheus text format (docs/operations.md)",
                "tags": ["admin"],
                "security": ADMIN_SECURITY,
                "responses": {
                    "200": {"description": "OK", "content": {"text/plain": {"schema": STR}}},
                    **ERRORS,
                },
            }
        },
    }


@cache
def document() -> Json:
    """The whole document (built once)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agent-coord gateway",
            "version": __version__,
            "description": "The Durable-Objects API of agent-coord (shared spec do-api.md; deliberate "
            "differences in docs/compatibility.md), the gateway's own /ready and /openapi.json, and "
            "the admin API (docs/phases.md). Every answer but /admin/metrics is JSON, errors "
            "included. DO API tokens are optional (`[auth]`, docs/operations.md).",
        },
        "tags": [
            {"name": name} for name in ("coordinator", "agent", "lock", "websocket", "operations", "admin")
        ],
        "security": [{}, {"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "auth.token or a per-agent token, when configured",
                },
                "adminBearer": {"type": "http", "scheme": "bearer", "description": "migration.admin_token"},
            },
        },
    }


def render() -> bytes:
    """The document as the committed file holds it: indented JSON and a final newline."""
    return orjson.dumps(document(), option=orjson.OPT_INDENT_2) + b"\n"


@cache
def document_bytes() -> bytes:
    """The document as `/openapi.json` serves it (compact)."""
    return orjson.dumps(document())
