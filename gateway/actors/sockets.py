"""WebSockets held by the host, not by actor instances (DO's hibernatable WebSockets).

A socket outlives the activation that accepted it: evicting an idle actor closes its database
but keeps its sockets, and the next message re-activates the actor. Frames leave through a
per-socket queue drained by one writer task, so frames keep their order per socket even when
several turns flush one after another, and a slow client never holds an actor's gate.

The queue is bounded in bytes (`max_queued_bytes`, from `server.ws_send_queue_max_bytes`) and in
frames: a client that stops reading is closed with 1013 (try again later) and its queue dropped,
instead of the gateway holding every frame it missed. A single frame is always accepted into an
empty queue, so one large state-sync still reaches a client that keeps up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from gateway.errors import LimitExceeded

if TYPE_CHECKING:
    from gateway.actors.naming import ActorRef

log = structlog.get_logger(__name__)

MAX_TAGS = 10  # DO limits
MAX_TAG_CHARS = 256
MAX_ATTACHMENT_BYTES = 16_384
MAX_QUEUED_FRAMES = 10_000  # a client this far behind is closed instead of growing memory
MAX_QUEUED_BYTES = 4_194_304  # the default of server.ws_send_queue_max_bytes
SLOW_CLIENT_CLOSE = 1013  # try again later: the client may reconnect and resync
SLOW_CLOSE_TIMEOUT_S = 5.0


class WebSocketLike(Protocol):
    """What the host needs of a server-side WebSocket (aiohttp's `WebSocketResponse` fits)."""

    @property
    def closed(self) -> bool: ...

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class HostedSocket:
    """One accepted WebSocket: its tags, an attachment that survives eviction, its send queue."""

    __slots__ = (
        "_closing",
        "_max_bytes",
        "_queue",
        "_writer",
        "attachment",
        "closed",
        "queued_bytes",
        "ref",
        "tags",
        "ws",
    )

    def __init__(
        self,
        ws: WebSocketLike,
        ref: ActorRef,
        tags: Sequence[str],
        attachment: Any = None,
        *,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        tags = tuple(tags)
        if len(tags) > MAX_TAGS:
            raise LimitExceeded(f"a WebSocket may carry at most {MAX_TAGS} tags")
        for tag in tags:
            if len(tag) > MAX_TAG_CHARS:
                raise LimitExceeded(f"a WebSocket tag may be at most {MAX_TAG_CHARS} characters")
        self.ws = ws
        self.ref = ref
        self.tags: tuple[str, ...] = tags
        self.attachment: Any = None
        self.serialize_attachment(attachment)
        self.closed = False  # the close was delivered (or the socket is being closed by us)
        self._closing = False
        self._queue: deque[tuple[str, Any, int]] = deque()  # kind, frame, size in bytes
        self._max_bytes = max_queued_bytes
        self.queued_bytes = 0  # UTF-8 bytes of the text frames waiting in the queue
        self._writer: asyncio.Task[None] | None = None

    def serialize_attachment(self, value: Any) -> None:
        """Keep a small value with the socket (DO: `serializeAttachment`, at most 16 KiB)."""
        if value is not None:
            import orjson  # noqa: PLC0415 - only needed on this rare path

            if len(orjson.dumps(value)) > MAX_ATTACHMENT_BYTES:
                raise LimitExceeded(f"a WebSocket attachment may be at most {MAX_ATTACHMENT_BYTES} bytes")
        self.attachment = value

    def deserialize_attachment(self) -> Any:
        return self.attachment

    # -- outgoing frames ----------------------------------------------------------------------

    def enqueue(self, text: str) -> None:
        """Queue a text frame; it is written by this socket's writer task, in order."""
        if self._closing or self.ws.closed:
            return
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if self._queue and (
            self.queued_bytes + size > self._max_bytes or len(self._queue) >= MAX_QUEUED_FRAMES
        ):
            log.warning(
                "ws.slow_client_closed",
                actor=str(self.ref),
                queued_frames=len(self._queue),
                queued_bytes=self.queued_bytes,
                max_bytes=self._max_bytes,
            )
            self._close_now(SLOW_CLIENT_CLOSE, "too slow: the send queue is full")
            return
        self._queue.append(("text", text, size))
        self.queued_bytes += size
        self._wake()

    def enqueue_close(self, code: int, reason: str = "") -> None:
        """Queue a close frame after the frames already queued."""
        if self._closing:
            return
        self._closing = True
        self._queue.append(("close", (code, reason), 0))
        self._wake()

    def _close_now(self, code: int, reason: str) -> None:
        """Drop the queue and close at once: the writer may be stuck sending to a peer that does
        not read, so it is cancelled, and a close that cannot complete in SLOW_CLOSE_TIMEOUT_S
        drops the connection (aiohttp aborts the transport of a cancelled close)."""
        self._queue.clear()
        self.queued_bytes = 0
        self._closing = True
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        self._writer = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode("utf-8")), SLOW_CLOSE_TIMEOUT_S
            )
        except (TimeoutError, ConnectionError, RuntimeError, OSError) as e:
            log.debug("ws.close_failed", actor=str(self.ref), error=repr(e))

    def _wake(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            kind, item, size = self._queue.popleft()
            self.queued_bytes -= size
            try:
                if kind == "text":
                    if not self.ws.closed:
                        await self.ws.send_str(item)
                else:
                    code, reason = item
                    await self.ws.close(code=code, message=reason.encode("utf-8"))
            except (ConnectionError, RuntimeError, OSError) as e:
                # the peer went away; the reader side delivers the close event
                log.debug("ws.send_failed", actor=str(self.ref), error=str(e))
                self._queue.clear()
                self.queued_bytes = 0
                return

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until every queued frame was written."""
        writer = self._writer
        if writer is not None and not writer.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(writer), timeout_s)

    @property
    def queued(self) -> int:
        return len(self._queue)
