"""The aiohttp application: `create_app(settings)` and `run_app(settings)`.

One catch-all route sends every request to `Gateway.dispatch`, which routes on the raw path
itself (aiohttp's router would decode `%2F` and normalise dot segments first). Each resource is
opened and closed by its own `cleanup_ctx` generator, in order: the actor host, the migration
runtime (phase control, repair queue), the legacy store and the phase router (with Redis only),
then the API objects; aiohttp closes the ones already opened in reverse when a later one fails
to start (a `StartupRefused` from the runtime still closes the host). App state lives under
typed `web.AppKey`s. With no legacy Redis configured the gateway serves the whole API from the
embedded SQLite actor store alone (the `cutover` phase's behaviour).

Shutdown (SIGTERM/SIGINT through aiohttp's runner): stop accepting, close every WebSocket with
1001, let in-flight requests finish within `server.shutdown_grace_s`, then close the host, which
drains its turns within the same grace and keeps alarms persisted for the next start.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import WSCloseCode, web

from gateway.actors import ActorHost, HostLimits
from gateway.backup.service import BackupService
from gateway.bulk.actor_side import ActorSide
from gateway.bulk.admin_service import EntityAdmin
from gateway.clock import Clock, SystemClock
from gateway.do.actor_store import ActorSockets, ActorStore, build_actor_host
from gateway.do.credential_cipher import CredentialCipher, load_key
from gateway.do.progress_store import ActorProgressStore
from gateway.do.replica import ActorReplica
from gateway.http import openapi, server
from gateway.http.admin import AdminApi, admin_token
from gateway.http.auth import ApiAuth
from gateway.http.handlers import Gateway
from gateway.http.middleware import wrap
from gateway.http.ready import Readiness
from gateway.http.responses import json_response, raw_json_response
from gateway.http.ws import OPEN_SOCKETS
from gateway.legacy.replica import LegacyReplica
from gateway.legacy.store import LegacyStore
from gateway.loop_watch import LoopWatch
from gateway.metrics import Gauge, RequestMetrics
from gateway.phases.router import PhasedStore
from gateway.phases.runtime import MigrationRuntime
from gateway.phases.sockets import PhasedSockets
from gateway.settings import Settings
from gateway.store import SocketHost, Store

__all__ = [
    "ADMIN",
    "GATEWAY",
    "HOST",
    "LEGACY",
    "LOOP_WATCH",
    "METRICS",
    "MIGRATION",
    "ROUTER",
    "SOCKETS",
    "create_app",
    "gauges",
    "run_app",
]

log = structlog.get_logger(__name__)

GATEWAY: Final = web.AppKey("gateway", Gateway)
HOST: Final = web.AppKey("actor_host", ActorHost)
ADMIN: Final = web.AppKey("admin", AdminApi)
MIGRATION: Final = web.AppKey("migration", MigrationRuntime)
ROUTER: Final = web.AppKey("router", PhasedStore)
SOCKETS: Final = web.AppKey("sockets", PhasedSockets)
LEGACY: Final = web.AppKey("legacy", LegacyStore)
AUTH: Final = web.AppKey("auth", ApiAuth)
ADMIN_TOKEN: Final = web.AppKey("admin_token", str)
MAX_LINE: Final = 65_536
METRICS: Final = web.AppKey("metrics", RequestMetrics)
LOOP_WATCH: Final = web.AppKey("loop_watch", LoopWatch)


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """The gateway application for `settings`; `clock` defaults to the system clock."""
    clk = clock or SystemClock()
    # A request line up to 64 KiB reaches the gateway, so an id over the id limit (256 characters,
    # percent-encoded up to 12 bytes each) gets the gateway's JSON 400 naming the limit instead of
    # aiohttp's plain-text answer to a line over its 8 KiB default.
    app = web.Application(
        client_max_size=settings.server.max_body_bytes, handler_args={"max_line_size": MAX_LINE}
    )
    app[METRICS] = RequestMetrics()
    app[OPEN_SOCKETS] = set()

    async def close_sockets(app: web.Application) -> None:
        open_sockets: set[web.WebSocketResponse] = app[OPEN_SOCKETS]
        for ws in list(open_sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    resources = [_loop_watch, _tokens, _actor_host, _migration]
    if settings.legacy.redis_url is not None:
        resources += [_legacy_store, _phase_router]
    for resource in [*resources, _api]:
        app.cleanup_ctx.append(functools.partial(resource, settings, clk))
    app.on_shutdown.append(close_sockets)

    app.router.add_route("*", r"/{tail:[\s\S]*}", wrap(_handle, metrics=app[METRICS]))
    return app


async def _handle(request: web.Request) -> web.StreamResponse:
    """Every request: the admin API, /ready, or the DO API."""
    path = request.path
    if path == "/admin" or path.startswith("/admin/"):
        return await request.app[ADMIN].handle(request, path)
    if path in ("/ready", "/openapi.json") and request.method != "OPTIONS":
        if request.method not in ("GET", "HEAD"):
            return json_response({"error": "Method not allowed"}, 405)
        if path == "/openapi.json":
            return raw_json_response(openapi.document_bytes())
        return await ready(request.app)
    return await request.app[GATEWAY].dispatch(request)


async def ready(app: web.Application) -> web.Response:
    """`GET /ready` (gateway/http/ready.py): 200 when ready to serve in this phase, else 503."""
    ok, body = await Readiness(
        app[HOST], app[MIGRATION], app.get(LEGACY), settings_of(app).migration.ready_repair_queue_max
    ).check()
    return json_response(body, 200 if ok else 503)


def settings_of(app: web.Application) -> Settings:
    return app[GATEWAY].settings


# -- the resources, each opened and closed by its own generator -------------------------------------


async def _tokens(settings: Settings, clk: Clock, app: web.Application) -> AsyncIterator[None]:
    # the tokens first: a tokens file that cannot be read stops the start before anything opens
    token = admin_token(settings.migration.admin_token, settings.storage.data_dir)
    app[ADMIN_TOKEN] = token
    app[AUTH] = ApiAuth.from_settings(settings.auth, admin_token=token)
    yield


async def _actor_host(settings: Settings, clk: Clock, app: web.Application) -> AsyncIterator[None]:
    a = settings.actors
    host = build_actor_host(
        settings.storage.data_dir,
        settings.limits,
        clock=clk,
        host_limits=HostLimits(
            max_open=a.max_open,
            idle_timeout_s=a.idle_timeout_s,
            mailbox_max=a.mailbox_max,
            alarm_retry_base_s=a.alarm_retry_base_s,
            alarm_max_retries=a.alarm_max_retries,
            socket_queue_max_bytes=settings.server.ws_send_queue_max_bytes,
        ),
        synchronous=settings.storage.sqlite_synchronous,
        shards=settings.storage.shards,
        checkpoint_helper=settings.storage.checkpoint_helper,
        on_lock_alarm_expiry=lambda path: (
            app[ROUTER].after_lock_alarm_expiry(path) if ROUTER in app else None
        ),
    )
    await host.start()
    app[HOST] = host
    try:
        yield
    finally:
        await host.close(settings.server.shutdown_grace_s)


async def _migration(settings: Settings, clk: Clock, app: web.Application) -> AsyncIterator[None]:
    runtime = MigrationRuntime(
        settings.storage.data_dir,
        clk,
        settings.migration,
        legacy_configured=settings.legacy.redis_url is not None,
    )  # refuses to start (StartupRefused) in a phase that needs a Redis none is configured for
    app[MIGRATION] = runtime
    try:
        yield
    finally:
        await runtime.close()


async def _legacy_store(settings: Settings, clk: Clock, app: web.Application) -> AsyncIterator[None]:
    redis_url = settings.legacy.redis_url
    assert redis_url is not None  # noqa: S101 - only appended with a Redis configured
    legacy = LegacyStore.from_url(redis_url, settings, clock=clk)
    app[LEGACY] = legacy
    try:
        yield
    finally:
        await legacy.close()


async def _phase_router(settings: Settings, clk: Clock, app: web.Application) -> AsyncIterator[None]:
    host, runtime, legacy = app[HOST], app[MIGRATION], app[LEGACY]
    actor_sockets = ActorSockets(host)
    router = PhasedStore(
        actors=ActorStore(host),
        legacy=legacy,
        actor_replica=ActorReplica(host),
        legacy_replica=LegacyReplica(legacy.records, clk),
        hub=actor_sockets,
        control=runtime.control,
        gate=runtime.gate,
        queue=runtime.queue,
        shadow=runtime.shadow,
        clock=clk,
        migration=settings.migration,
    )
    app[ROUTER] = router
    app[SOCKETS] = PhasedSockets(
        router, actors=actor_sockets, legacy=legacy, hub=actor_sockets, clock=clk, limits=settings.limits
    )
    runtime.start_repair(router.repair_copy, router.counters)
    try:
        yield
    finally:
        await runtime.stop_background()  # the repair worker and shadow reads use both stores
        await router.drain()


async def _loop_watch(_settings: Settings, _clk: Clock, app: web.Application) -> AsyncIterator[None]:
    """The event loop's stalls watched while the app runs (`gateway.loop_watch`), in the metrics."""
    watch = app[LOOP_WATCH] = LoopWatch()
    app[METRICS].add_state(watch.gauges)
    watch.start()
    try:
        yield
    finally:
        watch.stop()


async def _api(settings: Settings, clk: Clock, app: web.Application) -> AsyncIterator[None]:
    host = app[HOST]
    store: Store = app[ROUTER] if ROUTER in app else ActorStore(host)
    sockets: SocketHost = app[SOCKETS] if SOCKETS in app else ActorSockets(host)
    auth = app[AUTH]
    metrics = app[METRICS]
    metrics.add_state(lambda: gauges(app))
    entities = EntityAdmin(ActorSide(ActorReplica(host)))
    backup = BackupService(settings.storage.data_dir, clk, lambda: str(app[MIGRATION].phase))
    app[ADMIN] = AdminApi(app[MIGRATION], app[ADMIN_TOKEN], metrics.render, entities, backup)
    cipher = CredentialCipher(load_key(settings.auth.credentials_key, settings.storage.data_dir))
    app[GATEWAY] = Gateway(
        store,
        sockets,
        settings,
        clk,
        progress=ActorProgressStore(host, cipher),
        auth=auth if auth.needed else None,
        admin_token=app[ADMIN_TOKEN],
    )
    yield


def gauges(app: web.Application) -> list[Gauge]:
    """The state figures of a running app, read when `/admin/metrics` is scraped."""
    host, runtime = app[HOST], app[MIGRATION]
    helper = host.checkpoint_helper
    stats = runtime.queue.stats()
    now = runtime.clock.now_ms()
    out = [
        Gauge("agent_coord_actors_open", "Actor databases open now.", [({}, host.open_count)]),
        Gauge(
            "agent_coord_actor_activations_total",
            "Actor constructors run.",
            [({}, host.activations)],
            "counter",
        ),
        Gauge("agent_coord_actor_evictions_total", "Idle actors closed.", [({}, host.evictions)], "counter"),
        Gauge("agent_coord_alarms_pending", "Actors with an alarm set.", [({}, host.pending_alarms)]),
        Gauge(
            "agent_coord_checkpoint_helper_rounds_total",
            "WAL checkpoint rounds the checkpoint helper process ran.",
            [({}, 0 if helper is None else helper.rounds)],
            "counter",
        ),
        Gauge(
            "agent_coord_checkpoint_helper_failures_total",
            "Times the checkpoint helper process could not start, died or timed out (rounds then run "
            "in the gateway for a while).",
            [({}, 0 if helper is None else helper.failures)],
            "counter",
        ),
        Gauge("agent_coord_websockets", "WebSockets held by the host.", [({}, host.socket_count)]),
        Gauge(
            "agent_coord_phase",
            "The migration phase (1 for the current one).",
            [({"phase": runtime.phase}, 1)],
        ),
        Gauge("agent_coord_repair_queue_depth", "Entities waiting for repair.", [({}, stats.depth)]),
        Gauge(
            "agent_coord_repair_queue_oldest_age_seconds",
            "Age of the oldest repair entry (0 when empty).",
            [({}, 0 if stats.oldest_ms is None else (now - stats.oldest_ms) / 1000)],
        ),
        Gauge(
            "agent_coord_repair_dead_letters",
            "Repairs that failed their last retry and wait for an operator (they block read-switch).",
            [({}, stats.dead_letters)],
        ),
    ]
    domains = runtime.shadow.stats.domains
    if domains:
        out.append(
            Gauge(
                "agent_coord_shadow_reads_total",
                "Shadow reads by domain and outcome.",
                [
                    ({"domain": name, "outcome": outcome}, getattr(d, outcome))
                    for name, d in sorted(domains.items())
                    for outcome in ("compared", "mismatched", "errors", "skipped")
                ],
                "counter",
            )
        )
    if ROUTER in app:
        counters = app[ROUTER].counters
        out.append(
            Gauge(
                "agent_coord_replication_total",
                "Replication to the non-authoritative store, by outcome.",
                [({"outcome": k}, v) for k, v in sorted(counters.items())],
                "counter",
            )
        )
    if LEGACY in app:
        corrupt = app[LEGACY].corruption.counts
        out.append(
            Gauge(
                "agent_coord_legacy_corrupt_values_total",
                "Unreadable legacy values skipped, by key.",
                [({"key": k}, v) for k, v in sorted(corrupt.items())],
                "counter",
            )
        )
    return out


def run_app(settings: Settings) -> None:
    """Serve `settings.server.host:port` until SIGTERM/SIGINT, then shut down gracefully."""
    server.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        shutdown_timeout_s=settings.server.shutdown_grace_s,
    )
