"""Bearer tokens: the optional token of the DO API, and comparing tokens in constant time.

The DO API is open by default, as upstream (its clients send no token). One setting turns
tokens on (`[auth]` in the settings):

- `auth.token`: one token shared by every client. Each DO API request needs
  `Authorization: Bearer <token>`, or `?token=<token>` on a WebSocket upgrade (browsers cannot
  set headers there). A missing or wrong token is a 401.
- `auth.agent_tokens_file`: a token per agent, in a file of `<agent-id> <token>` lines. A token
  then also says who the client is, and a request may only act as that agent: the agent of
  `/agent/<id>/...` (except a DM, which any agent may send to `<id>`) and of a socket, the
  `agentId`/`author`/`from`/`by`/`owner`/`fromAgent` a body names, and the `agentId` whose inbox
  `/work` or `/chat?agentId=` reads. Acting as another agent is a 403 naming the field.

The admin API token (`migration.admin_token`) is accepted everywhere and may act as any agent.
With `auth.admin_only_force`, a force-unlock and a zone claim that takes over another owner's
zone need it (403 otherwise), whether or not client tokens are on.

`/`, `/health`, `/ready`, `/openapi.json` and CORS preflights need no token; `/admin/*` has its
own. aiohttp decodes header values as UTF-8 with `surrogateescape`, so a header carrying bytes that
are not UTF-8 arrives with lone surrogates: every token is compared as the exact bytes sent.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from gateway.errors import ApiError, StartupRefused
from gateway.settings import AuthSettings

__all__ = [
    "ANYONE",
    "PRINCIPAL",
    "ApiAuth",
    "Principal",
    "bearer_token",
    "load_agent_tokens",
    "token_matches",
]


def bearer_token(request: web.Request) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header, as sent; None without one."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = given.strip().encode("utf-8", "surrogateescape")
    return token or None


def token_matches(given: bytes | None, expected: bytes) -> bool:
    """Whether `given` is `expected`, in time that does not depend on where they differ."""
    return given is not None and hmac.compare_digest(given, expected)


def _digest(token: bytes) -> bytes:
    # Tokens are looked up by their SHA-256, so a dict lookup leaks nothing about the token text.
    return hashlib.sha256(token).digest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: `agent` for a per-agent token, `admin` for the admin token; with tokens
    off or a shared token, neither (it may act as any agent)."""

    agent: str | None = None
    admin: bool = False

    def may_act_as(self, agent_id: str) -> bool:
        return self.agent is None or self.admin or self.agent == agent_id


ANYONE: Final = Principal()
PRINCIPAL: Final = web.RequestKey("principal", Principal)

# (route kind, sub-path, method) -> the body field naming the agent the request acts as; for
# handoffs it depends on the action. Requests not listed name no acting agent (tasks are shared).
_BODY_AGENT: Final[dict[tuple[str, str, str], str | dict[str, str]]] = {
    ("coordinator", "/agents", "POST"): "agentId",
    ("coordinator", "/chat", "POST"): "author",
    ("coordinator", "/zones", "POST"): "owner",
    ("coordinator", "/claims", "POST"): "by",
    ("coordinator", "/handoffs", "POST"): {"create": "fromAgent", "claim": "agentId", "complete": "agentId"},
    ("agent", "/messages", "POST"): "from",
    ("lock", "/lock", "POST"): "agentId",
    ("lock", "/unlock", "POST"): "agentId",
}
# Coordinator reads whose `agentId` query reads (and may move) that agent's inbox.
_QUERY_AGENT: Final = frozenset({"/chat", "/work", "/onboard"})


def load_agent_tokens(path: Path) -> dict[bytes, str]:
    """The per-agent tokens file: `<agent-id> <token>` a line, `#` comments and blank lines
    ignored. Refuses to start (StartupRefused, naming the line) on a malformed line or a token
    given twice."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise StartupRefused(f"auth.agent_tokens_file {path} cannot be read: {e}") from None
    tokens: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) != 2:  # noqa: PLR2004 - an agent id and a token
            raise StartupRefused(
                f"auth.agent_tokens_file {path} line {number}: expected '<agent-id> <token>'"
            )
        agent, token = parts
        digest = _digest(token.encode("utf-8"))
        if digest in tokens:
            raise StartupRefused(f"auth.agent_tokens_file {path} line {number}: this token is given twice")
        tokens[digest] = agent
    return tokens


class ApiAuth:
    """The DO API's token check, built once from the settings."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        admin_token: str,
        agent_tokens: Mapping[bytes, str] | None = None,
    ) -> None:
        self.shared = None if settings.token is None else _digest(settings.token.encode("utf-8"))
        self.agents = dict(agent_tokens or {})
        self.admin = _digest(admin_token.encode("utf-8"))
        self.admin_only_force = settings.admin_only_force
        self.per_agent = settings.agent_tokens_file is not None
        self.enabled = self.shared is not None or self.per_agent
        # Off (the default) there is nothing to check: the gateway skips it, at no cost per request.
        self.needed = self.enabled or self.admin_only_force

    @classmethod
    def from_settings(cls, settings: AuthSettings, *, admin_token: str) -> ApiAuth:
        path = settings.agent_tokens_file
        tokens = None if path is None else load_agent_tokens(path)
        return cls(settings, admin_token=admin_token, agent_tokens=tokens)

    def authenticate(self, request: web.Request, query: Mapping[str, str], *, websocket: bool) -> Principal:
        """Who sent `request` (stored on it for later checks); a 401 when a token is needed and
        the one given is missing or wrong."""
        given = bearer_token(request)
        if given is None and websocket and query.get("token"):
            given = query["token"].encode("utf-8", "surrogateescape")
        principal = self._principal(given)
        if principal is None:
            raise ApiError(401, {"error": "Missing or wrong bearer token"})
        request[PRINCIPAL] = principal
        return principal

    def _principal(self, given: bytes | None) -> Principal | None:
        digest = None if given is None else _digest(given)
        if digest is not None and hmac.compare_digest(digest, self.admin):
            return Principal(admin=True)
        if not self.enabled:
            return ANYONE
        if digest is None:
            return None
        if self.shared is not None:
            return ANYONE if hmac.compare_digest(digest, self.shared) else None
        agent = self.agents.get(digest)
        return None if agent is None else Principal(agent=agent)

    # -- what a principal may do ----------------------------------------------------------------

    @staticmethod
    def require_agent(principal: Principal, agent_id: str, field: str) -> None:
        """A 403 unless `principal` may act as `agent_id` (named by `field`)."""
        if not principal.may_act_as(agent_id):
            raise ApiError(
                403,
                {
                    "error": f"this token is for agent {principal.agent!r}; it cannot act as {agent_id!r}",
                    "field": field,
                },
            )

    def check_body(
        self, request: web.Request, kind: str, sub: str, body: dict[str, Any], *, method: str | None = None
    ) -> None:
        """The body's acting agent must be the token's (per-agent tokens); force needs admin.
        `method` defaults to the request's (a WebSocket frame passes the method it stands for)."""
        principal = request.get(PRINCIPAL, ANYONE)
        if kind == "lock" and sub == "/unlock" and body.get("force") is True:
            self.require_admin(principal, "force")
        field_by = _BODY_AGENT.get((kind, sub, method or request.method))
        if principal.agent is None or field_by is None:
            return
        field = field_by if isinstance(field_by, str) else field_by.get(str(body.get("action") or "create"))
        value = None if field is None else body.get(field)
        if field is not None and isinstance(value, str):
            self.require_agent(principal, value, field)

    def check_query(self, request: web.Request, sub: str, query: Mapping[str, str]) -> None:
        """`/chat?agentId=` and `/work?agentId=` read that agent's inbox: the token's agent only."""
        principal = request.get(PRINCIPAL, ANYONE)
        agent_id = query.get("agentId")
        if principal.agent is not None and sub in _QUERY_AGENT and agent_id:
            self.require_agent(principal, agent_id, "agentId")

    def require_admin(self, principal: Principal, field: str) -> None:
        """With `auth.admin_only_force`, a 403 unless the request carries the admin token."""
        if self.admin_only_force and not principal.admin:
            raise ApiError(
                403,
                {
                    "error": f"{field} needs the admin token (auth.admin_only_force is on)",
                    "field": field,
                },
            )
