"""The aiohttp application: `create_app(settings)` and `run_app(settings)`.

One catch-all route sends every request to `Gateway.dispatch`, which routes on the raw path
itself (aiohttp's router would decode `%2F` and normalise dot segments first). The actor host
and the store are created and closed in one `cleanup_ctx` generator; app state lives under typed
`web.AppKey`s. With no legacy Redis configured the gateway serves the whole API from the embedded
SQLite actor store alone (the `cutover` phase's behaviour).

Shutdown (SIGTERM/SIGINT through aiohttp's runner): stop accepting, close every WebSocket with
1001, let in-flight requests finish within `server.shutdown_grace_s`, then close the host, which
drains its turns within the same grace and keeps alarms persisted for the next start.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import WSCloseCode, web

from gateway.actors import ActorHost, HostLimits
from gateway.clock import Clock, SystemClock
from gateway.http.handlers import Gateway
from gateway.http.middleware import wrap
from gateway.http.ws import OPEN_SOCKETS
from gateway.settings import Settings
from gateway.store import ActorStore, build_actor_host

__all__ = ["GATEWAY", "HOST", "create_app", "run_app"]

log = structlog.get_logger(__name__)

GATEWAY: Final = web.AppKey("gateway", Gateway)
HOST: Final = web.AppKey("actor_host", ActorHost)


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """The gateway application for `settings`; `clock` defaults to the system clock."""
    clk = clock or SystemClock()
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app[OPEN_SOCKETS] = set()

    async def resources(app: web.Application) -> AsyncIterator[None]:
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
            ),
            synchronous=settings.storage.sqlite_synchronous,
        )
        await host.start()
        app[HOST] = host
        app[GATEWAY] = Gateway(ActorStore(host), settings, clk)
        try:
            yield
        finally:
            await host.close(settings.server.shutdown_grace_s)

    async def close_sockets(app: web.Application) -> None:
        open_sockets: set[web.WebSocketResponse] = app[OPEN_SOCKETS]
        for ws in list(open_sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(close_sockets)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[GATEWAY].dispatch(request)

    app.router.add_route("*", "/{tail:.*}", wrap(handle))
    return app


def run_app(settings: Settings) -> None:
    """Serve `settings.server.host:port` until SIGTERM/SIGINT, then shut down gracefully."""
    if settings.legacy.redis_url is None:
        log.info(
            "gateway.store",
            store="actors",
            message="running on the embedded SQLite actor store alone (no legacy Redis configured)",
            data_dir=str(settings.storage.data_dir),
        )
    else:
        log.warning(
            "gateway.store",
            store="actors",
            message="a legacy Redis is configured but this build serves the SQLite actor store only",
            data_dir=str(settings.storage.data_dir),
        )
    web.run_app(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        shutdown_timeout=settings.server.shutdown_grace_s,
        access_log=None,
        print=None,
        handle_signals=True,
    )
