"""The admin HTTP API: phase status and control, protected by a bearer token.

    GET  /admin/status                 phase, since when, repair queue, shadow reads, last report
    GET  /admin/phase                  {"phase", "since"}
    POST /admin/phase                  {"phase", "reason", "force"?, "actor"?} -> the audit row
    GET  /admin/phase/history?limit=N  the audit log, oldest first
    GET  /admin/metrics                Prometheus text format (gateway/metrics.py)
    GET  /admin/entities               one page of the actor entities, NDJSON (gateway/bulk)
    POST /admin/entities               write a batch of entities (NDJSON in, a summary out)
    POST /admin/entities/read          entities by key, NDJSON
    GET  /admin/entities/count         entities per domain (an estimate)
    POST /admin/reverse-sync           {"startedMs", "finishedMs", "entities"}: Redis was refilled
                                       from the actors (`agent-coord migrate`, the cutover guard)
    GET  /admin/repair/dead-letters    repairs that failed their last retry, with their reasons
    POST /admin/repair/dead-letters    {"action": "retry"|"drop", "seqs": [..] | "all": true}
    POST /admin/backup                 a consistent snapshot of the data directory, a tar archive

Every request needs `Authorization: Bearer <token>`. The token is `migration.admin_token`
from the settings or, when none is configured, a random one the gateway writes once to
`<data_dir>/admin-token` (mode 0600), which the `agent-coord phase` commands read when they
run on the same machine. The token is never logged.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import web

from gateway.domain.phase import PHASES
from gateway.http.auth import bearer_token, token_matches
from gateway.http.token_file import TOKEN_FILE
from gateway.phases.control import PhaseChange
from gateway.phases.guards import PhaseChangeRefusedError
from gateway.phases.repair import DeadLetter

log = structlog.get_logger(__name__)

JSON = "application/json"


class PhaseService(Protocol):
    """What the admin API needs from the migration runtime."""

    def status(self) -> dict[str, Any]: ...

    async def change_phase(self, to_phase: str, *, actor: str, reason: str, force: bool) -> PhaseChange: ...

    def history(self, limit: int) -> list[PhaseChange]: ...

    def dead_letters(self, limit: int) -> list[DeadLetter]: ...

    async def resolve_dead_letters(self, action: str, seqs: list[int] | None, *, actor: str) -> int: ...

    def record_reverse_sync(self, *, started_ms: int, finished_ms: int, entities: int) -> None: ...


class EntityService(Protocol):
    """What the entity routes need: the actor side of the bulk layer, on the gateway's host
    (`gateway.bulk.admin_service.EntityAdmin`). Bad parameters raise ValueError (a 400)."""

    async def scan(self, query: Mapping[str, str]) -> AsyncIterator[bytes]: ...

    async def read(self, body: bytes) -> AsyncIterator[bytes]: ...

    async def write(self, body: bytes, query: Mapping[str, str]) -> dict[str, Any]: ...

    async def count(self, query: Mapping[str, str]) -> dict[str, Any]: ...


class BackupProvider(Protocol):
    """What `POST /admin/backup` needs (`gateway.backup.service.BackupService`)."""

    def archive(self) -> AsyncIterator[bytes]: ...


def admin_token(configured: str | None, data_dir: Path) -> str:
    """The configured token, or the one kept in the data directory (created on first use)."""
    if configured:
        return configured
    path = data_dir / TOKEN_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    # hex, not URL-safe base64: a token starting with "-" (1 in 64 of those) is taken by argparse
    # for an option in `agent-coord ... --token <token>`, and the command fails as bad usage
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    log.info("admin.token_created", path=str(path))
    return token


MAX_HISTORY = 10_000

ROUTES: dict[str, tuple[str, ...]] = {
    "/admin/status": ("GET",),
    "/admin/phase": ("GET", "POST"),
    "/admin/phase/history": ("GET",),
    "/admin/metrics": ("GET",),
    "/admin/entities": ("GET", "POST"),
    "/admin/entities/read": ("POST",),
    "/admin/entities/count": ("GET",),
    "/admin/reverse-sync": ("POST",),
    "/admin/repair/dead-letters": ("GET", "POST"),
    "/admin/backup": ("POST",),
}
"""Every admin path and its methods (another method is a 405; docs/openapi.json lists them)."""


class _Reject(Exception):
    """Internal control flow: an error answer; never escapes this module."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error"))
        self.status = status
        self.body = body


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=JSON)


def _unknown(path: str) -> _Reject:
    """A 405 for a known path (another method), else a 404."""
    if path in ROUTES:
        return _Reject(405, {"error": "Method not allowed"})
    return _Reject(404, {"error": "Not found", "path": path})


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_HISTORY:
        raise _Reject(400, {"error": f"limit must be an integer in 1..{MAX_HISTORY}"})
    return int(raw)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise _Reject(400, {"error": "the body must be a JSON object"})
    return body


def _dead_letter_action(body: dict[str, Any]) -> tuple[str, list[int] | None, str]:
    """The action, the dead letters it applies to (None: all) and who asked."""
    action, seqs, every = body.get("action"), body.get("seqs"), body.get("all", False)
    actor = body.get("actor", "admin-api")
    if action not in ("retry", "drop"):
        raise _Reject(400, {"error": "action must be retry or drop"})
    if not isinstance(actor, str) or not actor:
        raise _Reject(400, {"error": "actor must be a non-empty string"})
    if every is True and seqs is None:
        return action, None, actor
    if every is not False or not isinstance(seqs, list) or not seqs:
        raise _Reject(
            400, {"error": "give either seqs (a non-empty list of dead-letter numbers) or all: true"}
        )
    if not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x < 2**63 for x in seqs):
        raise _Reject(400, {"error": "seqs must hold dead-letter numbers (positive integers)"})
    return action, [int(x) for x in seqs], actor


class AdminApi:
    """Serves `/admin/*` for one gateway."""

    def __init__(
        self,
        service: PhaseService,
        token: str,
        metrics_text: Callable[[], str] | None = None,
        entities: EntityService | None = None,
        backup: BackupProvider | None = None,
    ) -> None:
        self._service = service
        self._backup = backup
        self._token = token.encode("utf-8")
        self._metrics_text = metrics_text
        self._entities = entities

    def _authorized(self, request: web.Request) -> bool:
        return token_matches(bearer_token(request), self._token)

    async def handle(self, request: web.Request, path: str) -> web.StreamResponse:
        """Answer one admin request; `path` is the request path (already known to start /admin)."""
        if not self._authorized(request):
            return _json(401, {"error": "admin API: missing or wrong bearer token"})
        try:
            return await self._route(request, path.rstrip("/"))
        except _Reject as e:
            return _json(e.status, e.body)

    async def _route(self, request: web.Request, path: str) -> web.StreamResponse:
        get = request.method == "GET"
        if path.startswith("/admin/entities") and self._entities is not None:
            return await self._entity_route(request, path, self._entities)
        if path == "/admin/status" and get:
            return _json(200, self._service.status())
        if path == "/admin/metrics" and get and self._metrics_text is not None:
            return web.Response(
                body=self._metrics_text().encode("utf-8"),
                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
            )
        if path in ("/admin/phase", "/admin/phase/history", "/admin/reverse-sync"):
            return await self._phase_route(request, path)
        if path == "/admin/backup" and request.method == "POST" and self._backup is not None:
            return await _stream(request, self._backup.archive(), "application/x-tar")
        if path == "/admin/repair/dead-letters" and request.method in ("GET", "POST"):
            return await self._dead_letters(request)
        raise _unknown(path)

    async def _phase_route(self, request: web.Request, path: str) -> web.Response:
        get = request.method == "GET"
        if path == "/admin/phase" and get:
            status = self._service.status()
            return _json(200, {"phase": status["phase"], "since": status["since"]})
        if path == "/admin/phase" and request.method == "POST":
            change = await self._change(request)
            return _json(200, {"success": True, "change": change.to_json()})
        if path == "/admin/reverse-sync" and request.method == "POST":
            return await self._reverse_sync(request)
        if path == "/admin/phase/history" and get:
            limit = _limit(request)
            return _json(200, {"changes": [c.to_json() for c in self._service.history(limit)]})
        raise _unknown(path)

    async def _entity_route(
        self, request: web.Request, path: str, entities: EntityService
    ) -> web.StreamResponse:
        method = request.method
        try:
            if path == "/admin/entities" and method == "GET":
                return await _stream(request, await entities.scan(request.query))
            if path == "/admin/entities/read" and method == "POST":
                return await _stream(request, await entities.read(await request.read()))
            if path == "/admin/entities" and method == "POST":
                return _json(200, await entities.write(await request.read(), request.query))
            if path == "/admin/entities/count" and method == "GET":
                return _json(200, await entities.count(request.query))
        except ValueError as e:
            raise _Reject(400, {"error": str(e)}) from e
        if path in ROUTES:
            raise _Reject(405, {"error": "Method not allowed"})
        raise _Reject(404, {"error": "Not found", "path": path})

    async def _reverse_sync(self, request: web.Request) -> web.Response:
        body = await _body(request)
        fields = ("startedMs", "finishedMs", "entities")
        values = [body.get(f) for f in fields]
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 for v in values):
            raise _Reject(400, {"error": "startedMs, finishedMs and entities must be non-negative integers"})
        started, finished, entities = (int(v) for v in values)  # type: ignore[arg-type]
        if finished < started:
            raise _Reject(400, {"error": "finishedMs is before startedMs"})
        self._service.record_reverse_sync(started_ms=started, finished_ms=finished, entities=entities)
        return _json(200, {"success": True})

    async def _dead_letters(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            letters = self._service.dead_letters(_limit(request))
            return _json(200, {"deadLetters": [d.to_json() for d in letters]})
        action, seqs, actor = _dead_letter_action(await _body(request))
        count = await self._service.resolve_dead_letters(action, seqs, actor=actor)
        return _json(200, {"success": True, "action": action, "count": count})

    async def _change(self, request: web.Request) -> PhaseChange:
        body = await _body(request)
        phase, reason = body.get("phase"), body.get("reason")
        force, actor = body.get("force", False), body.get("actor", "admin-api")
        problems = [
            (phase not in PHASES, f"phase must be one of {', '.join(PHASES)}"),
            (
                not isinstance(reason, str) or not reason.strip(),
                "reason is required: say why the phase changes",
            ),
            (not isinstance(force, bool), "force must be true or false"),
            (not isinstance(actor, str) or not actor, "actor must be a non-empty string"),
        ]
        errors = [message for bad, message in problems if bad]
        if errors:
            raise _Reject(400, {"error": errors[0]})
        try:
            return await self._service.change_phase(
                str(phase), actor=str(actor), reason=str(reason).strip(), force=bool(force)
            )
        except PhaseChangeRefusedError as e:
            raise _Reject(
                409, {"error": "phase change refused", "reasons": e.reasons, "hint": "--force overrides"}
            ) from e


async def _stream(
    request: web.Request, chunks: AsyncIterator[bytes], content_type: str = "application/x-ndjson"
) -> web.StreamResponse:
    """Send chunks (NDJSON lines, an archive) as they come, so a large answer never sits in memory
    whole; the source is closed even when the client goes away."""
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        first = await anext(chunks, b"")  # the source's errors still answer as JSON
        response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        await response.prepare(request)
        if first:
            await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response
