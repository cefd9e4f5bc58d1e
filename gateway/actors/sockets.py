"""WebSockets held by the host, not by actor instances (DO's hibernatable WebSockets).

A socket outlives the activation that accepted it: evicting an idle actor closes its database
but keeps its sockets, and the next message re-activates the actor. Frames leave through a
per-socket queue drained by one writer task, so frames keep their order per socket even when
several turns flush one after another, and a slow client never holds an actor's gate.
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
MAX_QUEUED_FRAMES = 10_000  # a client this far behind is closed (1008) instead of growing memory


class WebSocketLike(Protocol):
    """What the host needs of a server-side WebSocket (aiohttp's `WebSocketResponse` fits)."""

    @property
    def closed(self) -> bool: ...

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class HostedSocket:
    """One accepted WebSocket: its tags, an attachment that survives eviction, its send queue."""

    __slots__ = ("_closing", "_queue", "_writer", "attachment", "closed", "ref", "tags", "ws")

    def __init__(self, ws: WebSocketLike, ref: ActorRef, tags: Sequence[str], attachment: Any = None) -> None:
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
        self._queue: deque[tuple[str, Any]] = deque()
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
        if len(self._queue) >= MAX_QUEUED_FRAMES:
            log.warning("ws.slow_client_closed", actor=str(self.ref), queued=len(self._queue))
            self._queue.clear()
            self.enqueue_close(1008, "too slow")
            return
        self._queue.append(("text", text))
        self._wake()

    def enqueue_close(self, code: int, reason: str = "") -> None:
        """Queue a close frame after the frames already queued."""
        if self._closing:
            return
        self._closing = True
        self._queue.append(("close", (code, reason)))
        self._wake()

    def _wake(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            kind, item = self._queue.popleft()
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
