"""The two WebSockets of the DO API (do-api.md 8): the coordinator socket and the agent socket.

The handler owns the read loop: each client frame is parsed here into a command (ids and times
made here) and run through the `SocketHost` (a chat frame through the `Store`, as POST /chat);
every outgoing frame is queued on the host-held socket and leaves in order (from an actor, only
after its turn commits). When the client closes, aiohttp answers the close frame (upstream never
did, do-api.md 12.6) and the socket host runs the close exactly once.
Frames that are not JSON objects, and unknown types, are ignored, as upstream does.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
import structlog
from aiohttp import WSMsgType, web

from gateway.domain import commands as c
from gateway.errors import ApiError, GatewayError
from gateway.http.auth import ANYONE, PRINCIPAL

if TYPE_CHECKING:
    from gateway.http.handlers import Gateway
    from gateway.store import SocketHandle

__all__ = ["OPEN_SOCKETS", "SocketQuota", "agent_socket", "coordinator_socket"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

OPEN_SOCKETS: Final = web.AppKey("open_sockets", set[web.WebSocketResponse])
"""Every open server-side socket of the app, closed with 1001 on shutdown."""

MAX_FRAME_BYTES: Final = 1_048_576
WS_INTERNAL_ERROR: Final = 1011
WS_TRY_AGAIN_LATER: Final = 1013
HTTP_UNAVAILABLE: Final = 503


def _frame(data: str | bytes) -> dict[str, Any] | None:
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None


class SocketQuota:
    """How many WebSockets each agent id has open, bounded by `limits.websockets_per_agent`.

    Counted in the HTTP layer, before the upgrade, so that one more socket than allowed is a
    plain 429 JSON answer. Coordinator and agent sockets of an agent id count together; each
    anonymous coordinator socket has an id of its own.
    """

    def __init__(self, per_agent: int) -> None:
        self.per_agent = per_agent
        self._open: dict[str, int] = {}

    def take(self, agent_id: str) -> None:
        """Count one more socket for `agent_id`, or raise the 429 if it has its maximum open."""
        n = self._open.get(agent_id, 0)
        if n >= self.per_agent:
            raise ApiError(
                429,
                {
                    "error": f"agent {agent_id!r} has {self.per_agent} WebSockets open, the most allowed",
                    "agentId": agent_id,
                    "maxSockets": self.per_agent,
                },
            )
        self._open[agent_id] = n + 1

    def give_back(self, agent_id: str) -> None:
        """One socket of `agent_id` has ended."""
        n = self._open.get(agent_id, 0) - 1
        if n > 0:
            self._open[agent_id] = n
        else:
            self._open.pop(agent_id, None)


async def _serve(
    gw: Gateway,
    request: web.Request,
    agent_id: str,
    *,
    open_: Any,
    on_frame: Any,
    close: Any,
) -> web.WebSocketResponse:
    gw.socket_quota.take(agent_id)  # before the upgrade: one too many is a 429 answer
    try:
        return await _serve_socket(gw, request, open_, on_frame, close)
    finally:
        gw.socket_quota.give_back(agent_id)


async def _serve_socket(
    gw: Gateway,
    request: web.Request,
    open_: Any,
    on_frame: Any,
    close: Any,
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(autoping=True, max_msg_size=max(gw.max_body, MAX_FRAME_BYTES))
    await ws.prepare(request)
    sockets = request.app.get(OPEN_SOCKETS)
    if sockets is not None:
        sockets.add(ws)
    handle: SocketHandle | None = None
    opening: asyncio.Future[SocketHandle] = asyncio.ensure_future(open_(ws))
    try:
        try:
            handle = await _to_the_end(opening)
        except Exception as e:
            # After the 101 an HTTP error answer would be written into the socket as garbage: the
            # client gets a close frame instead (1013 for a retryable error, else 1011).
            retry = isinstance(e, GatewayError) and (e.retryable or e.status == HTTP_UNAVAILABLE)
            log.warning("ws.open_failed", error=repr(e), exc_info=not isinstance(e, GatewayError))
            await ws.close(
                code=WS_TRY_AGAIN_LATER if retry else WS_INTERNAL_ERROR, message=b"cannot open now"
            )
            return ws
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = _frame(msg.data)
            if data is None:
                continue
            try:
                await on_frame(handle, data)
            except GatewayError as e:  # a bad frame or a busy actor: upstream ignores it too
                log.info("ws.frame_rejected", error=e.message, status=e.status)
    finally:
        if sockets is not None:
            sockets.discard(ws)
        if handle is None and opening.done() and not opening.cancelled() and opening.exception() is None:
            handle = opening.result()  # opened although the handler was cancelled meanwhile
        if handle is not None:
            await _to_the_end(asyncio.ensure_future(close(handle, ws.close_code or 1006, "")))
    return ws


async def _to_the_end(task: asyncio.Future[T]) -> T:
    """Wait for a socket's open or close even if the handler is cancelled meanwhile.

    aiohttp cancels the handler of a client that went away (`handler_cancellation`, on in its
    TestServer) and every handler still running at shutdown. An open or close cut off while it
    waited (for the actor's turn, or the phase router's lock) left the socket held by the host,
    and its agent online with no `offline` broadcast, for good. So each runs as its own task:
    one cancellation of the handler waits for it to finish (it is short, bounded by the stores'
    timeouts) and is then passed on; a second one cancels the task too, so nothing outlives a
    shutdown that asked twice.
    """
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.cancelled():
            raise
        await task
        raise


async def coordinator_socket(
    gw: Gateway, request: web.Request, query: dict[str, str]
) -> web.WebSocketResponse:
    """`/coordinator...` with `Upgrade: websocket`: welcome, ping/pong, chat, agent-update, close."""
    store, sockets = gw.store, gw.sockets
    principal = request.get(PRINCIPAL, ANYONE)
    # checked before the upgrade; with a per-agent token and no agentId, the socket is the token's
    agent_id = c.query_id(query, "agentId") or principal.agent or gw.ids.anon_agent(gw.now())

    async def open_(ws: web.WebSocketResponse) -> SocketHandle:
        return await sockets.open_coordinator_socket(ws, agent_id, gw.now())

    async def on_frame(handle: SocketHandle, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "ping":
            await sockets.coordinator_ping(handle, gw.now())
        elif kind == "chat":
            payload = data.get("payload")
            if isinstance(payload, dict):
                if gw.auth is not None:  # a chat frame acts as its author, as a POST does
                    gw.auth.check_body(request, "coordinator", "/chat", payload, method="POST")
                cmd = c.PostChat.parse(payload, gw.now(), gw.ids, max_bytes=gw.limits.chat_message_max_bytes)
                await store.post_chat(cmd)
        elif kind == "agent-update":
            payload = data.get("payload")
            status = payload.get("status") if isinstance(payload, dict) else None
            if isinstance(status, str) and status:
                await sockets.coordinator_set_status(handle, status, gw.now())

    return await _serve(
        gw, request, agent_id, open_=open_, on_frame=on_frame, close=sockets.close_coordinator_socket
    )


async def agent_socket(gw: Gateway, request: web.Request, agent_id: str) -> web.WebSocketResponse:
    """`/agent/<id>...` with `Upgrade: websocket`: state-sync, DM pushes, checkpoint-save."""
    sockets = gw.sockets

    async def open_(ws: web.WebSocketResponse) -> SocketHandle:
        return await sockets.open_agent_socket(ws, agent_id, gw.now())

    async def on_frame(handle: SocketHandle, data: dict[str, Any]) -> None:
        if data.get("type") == "checkpoint-save":
            payload = data.get("payload")
            if isinstance(payload, dict):
                await sockets.agent_socket_checkpoint(
                    handle,
                    c.SaveCheckpoint.parse(
                        agent_id, payload, gw.now(), max_bytes=gw.limits.checkpoint_max_bytes
                    ),
                )

    return await _serve(
        gw, request, agent_id, open_=open_, on_frame=on_frame, close=sockets.close_agent_socket
    )
