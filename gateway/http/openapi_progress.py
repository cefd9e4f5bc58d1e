"""The OpenAPI paths of the routes of do-api.md 7.4 and 7.5 (onboarding, session resume, soul,
dashboard, traces, heartbeat, shadow, goals, credentials), merged into docs/openapi.json by
`gateway.http.openapi`."""

from __future__ import annotations

from typing import Any, Final

from gateway.domain.commands import MAX_ID_CHARS

__all__ = ["progress_paths"]

Json = dict[str, Any]

STR: Final[Json] = {"type": "string"}
ID: Final[Json] = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
INT: Final[Json] = {"type": "integer"}
BOOL: Final[Json] = {"type": "boolean"}
OBJ: Final[Json] = {"type": "object"}
STRS: Final[Json] = {"type": "array", "items": STR}
IDS: Final[Json] = {"type": "array", "items": ID}

AGENT: Final[Json] = {"name": "agentId", "in": "path", "required": True, "schema": ID}
SESSION: Final[Json] = {
    "name": "sessionId",
    "in": "path",
    "required": True,
    "schema": ID,
    "description": "the trace's sessionId, percent-encoded",
}
ADMIN_SECURITY: Final[list[Json]] = [{"adminBearer": []}]


def _obj(props: dict[str, Json], required: tuple[str, ...] = ()) -> Json:
    out: Json = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def _q(name: str, schema: Json | None = None, description: str = "") -> Json:
    out: Json = {"name": name, "in": "query", "required": False, "schema": schema or STR}
    if description:
        out["description"] = description
    return out


def _op(
    summary: str, ok: Json, tag: str, *, body: Json | None = None, params: list[Json] | None = None
) -> Json:
    out: Json = {
        "summary": summary,
        "tags": [tag],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ok}}},
            "default": {
                "description": "An error: 4xx for the request, 5xx for the gateway (with requestId)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    }
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return out


SOUL_PATCH: Final = {
    "oneOf": [
        _obj({"action": {"const": "add-xp"}, "xp": INT, "source": STR}, ("action", "xp")),
        _obj({"action": {"const": "unlock-achievement"}, "achievementId": ID}, ("action", "achievementId")),
        _obj(
            {"traceId": ID, "domain": {"enum": ["frontend", "backend", "devops", "research"]}}, ("traceId",)
        ),
    ]
}
STEP_BODY: Final = _obj(
    {
        "tool": ID,
        "intent": STR,
        "outcome": {"enum": ["found", "nothing", "error", "partial"]},
        "durationMs": INT,
        "contributionType": {"enum": ["enabling", "pruning", "direct", "minimal"]},
        "knowledgeGained": STRS,
        "eliminatedPaths": INT,
        "dependsOn": IDS,
    }
)
GOAL_BODY: Final = _obj(
    {
        "action": {"enum": ["create", "start", "complete", "fail", "abandon"]},
        "id": ID,
        "title": STR,
        "description": STR,
        "type": ID,
        "priority": INT,
        "xpReward": INT,
        "source": ID,
        "assignedBy": ID,
        "context": STR,
        "outcome": STR,
    }
)
SHADOW_BODY: Final = _obj(
    {
        "action": {"enum": ["register-shadow", "become-shadow", "takeover", "configure"]},
        "shadowId": ID,
        "primaryAgent": ID,
        "stallThresholdMs": INT,
        "heartbeatIntervalMs": INT,
    }
)
CREDENTIAL_BODY: Final = {
    "oneOf": [
        _obj({"key": ID, "value": STR}, ("key", "value")),
        _obj({"credentials": {"type": "object", "additionalProperties": STR}}, ("credentials",)),
    ]
}


def progress_paths() -> dict[str, Json]:
    """The coordinator's /onboard and /session-resume, and the agent's 7.5 routes."""
    co, ag = "coordinator", "agent"
    any_trace = "x-any-method"
    agent_paths: dict[str, Json] = {
        "/agent/{agentId}/soul": {
            "parameters": [AGENT],
            "get": _op("The agent's soul (null without one)", _obj({"soul": OBJ}), ag),
            "post": _op(
                "Create the soul, or rename it keeping its progress",
                _obj({"success": BOOL, "soul": OBJ}),
                ag,
                body=_obj({"soulId": ID, "name": STR, "personality": STR}),
            ),
            "patch": _op(
                "Add XP, unlock an achievement, or credit a completed trace", OBJ, ag, body=SOUL_PATCH
            ),
        },
        "/agent/{agentId}/dashboard": {
            "parameters": [AGENT],
            "get": _op("The agent's dashboard (404 without a soul)", _obj({"dashboard": OBJ}), ag),
        },
        "/agent/{agentId}/trace": {
            "parameters": [AGENT],
            "get": _op("The newest 20 traces", _obj({"traces": {"type": "array", "items": OBJ}}), ag),
            "post": _op(
                "Start a trace (a used sessionId is a 409)",
                _obj({"success": BOOL, "trace": OBJ}),
                ag,
                body=_obj({"task": STR, "taskDescription": STR, "sessionId": ID}),
            ),
        },
        "/agent/{agentId}/trace/{sessionId}": {
            "parameters": [AGENT, SESSION],
            "get": _op("The trace with its steps (404 if unknown)", _obj({"trace": OBJ}), ag),
            any_trace: True,
        },
        "/agent/{agentId}/trace/{sessionId}/step": {
            "parameters": [AGENT, SESSION],
            "post": _op(
                "Log a step; the escalation it triggers, if any",
                _obj({"success": BOOL, "step": OBJ, "escalation": OBJ}),
                ag,
                body=STEP_BODY,
            ),
            any_trace: True,
        },
        "/agent/{agentId}/trace/{sessionId}/complete": {
            "parameters": [AGENT, SESSION],
            "post": _op("Complete the trace with its summary (404 if unknown)", _obj({"success": BOOL}), ag),
            any_trace: True,
        },
        "/agent/{agentId}/trace/{sessionId}/resolve-escalation": {
            "parameters": [AGENT, SESSION],
            "post": _op(
                "Resolve an escalation of the trace",
                _obj({"success": BOOL, "resolution": OBJ}),
                ag,
                body=_obj(
                    {
                        "escalationId": ID,
                        "resolvedBy": {"enum": ["self", "peer", "human"]},
                        "resolverAgent": ID,
                        "helpfulHint": STR,
                    },
                    ("escalationId", "resolvedBy"),
                ),
            ),
            any_trace: True,
        },
        "/agent/{agentId}/trace/{sessionId}/escalations": {
            "parameters": [AGENT, SESSION],
            "get": _op("The trace's escalations", _obj({"escalations": {"type": "array", "items": OBJ}}), ag),
            any_trace: True,
        },
        "/agent/{agentId}/heartbeat": {
            "parameters": [AGENT],
            "get": _op("Heartbeat health", OBJ, ag),
            "post": _op(
                "Record a heartbeat (the log keeps the newest 100)",
                _obj({"success": BOOL, "heartbeat": OBJ}),
                ag,
                body=_obj({"tokensUsed": INT, "currentTask": STR, "status": ID}),
            ),
        },
        "/agent/{agentId}/shadow": {
            "parameters": [AGENT],
            "get": _op("Shadow monitoring status", OBJ, ag),
            "post": _op(
                "register-shadow, become-shadow, takeover or configure",
                OBJ,
                ag,
                body=SHADOW_BODY,
                params=[_q("action")],
            ),
        },
        "/agent/{agentId}/credentials": {
            "parameters": [AGENT],
            "get": {
                **_op(
                    "list: keys with masked previews; get (key=) and bundle: plaintext, admin token only",
                    OBJ,
                    ag,
                    params=[_q("action", {"enum": ["list", "get", "bundle"]}), _q("key", ID)],
                ),
                "security": [{}, *ADMIN_SECURITY],
            },
            "post": _op("Store one credential or several (encrypted at rest)", OBJ, ag, body=CREDENTIAL_BODY),
            "delete": _op(
                "Delete a credential", _obj({"success": BOOL, "deleted": STR}), ag, params=[_q("key", ID)]
            ),
        },
        "/agent/{agentId}/goals": {
            "parameters": [AGENT],
            "get": _op(
                "list (status=), next, active or stats",
                OBJ,
                ag,
                params=[_q("action", {"enum": ["list", "next", "active", "stats"]}), _q("status")],
            ),
            "post": _op(
                "create, start, complete (its XP to the soul), fail or abandon",
                OBJ,
                ag,
                body=GOAL_BODY,
                params=[_q("action")],
            ),
            "delete": _op(
                "Delete a goal", _obj({"success": BOOL, "deleted": STR}), ag, params=[_q("id", ID)]
            ),
        },
    }
    return {
        "/coordinator/onboard": {
            "get": _op(
                "The onboarding bundle of an agent (its soul created if new)",
                _obj({"onboarding": OBJ}),
                co,
                params=[_q("agentId", ID, "required")],
            )
        },
        "/coordinator/session-resume": {
            "get": _op(
                "The session resume bundle (from the newest 100 chat messages)",
                _obj({"sessionResume": OBJ}),
                co,
            )
        },
        **agent_paths,
    }
