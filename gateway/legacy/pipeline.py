"""A pipelined RESP connection to the legacy Redis: what `SharedConnection` and `TrackedHashes` share.

Both keep ONE connection of their own and send on it every command queued in one event loop
iteration in one write; Redis answers the commands of a connection in the order they were sent,
so the replies (parsed by hiredis) are handed back in that order:

* `Pipeline._send` / `_queue` queue a command with the handler its reply goes through, and
  schedule `_flush` for the end of the loop iteration (`_before_flush` lets a subclass add a
  command last, the tracked cache's barrier PING);
* `on_reply` hands each reply to the oldest command waiting; a handler that raises a redis-py
  error fails that command's future alone;
* a watchdog fails the connection when its oldest command has waited longer than
  `legacy.timeout_s`; a protocol error, a reply nobody asked for or a lost connection fail it too
  (`_drop`): every command waiting on it fails with redis-py's `ConnectionError` or `TimeoutError`,
  and nothing is re-sent here.

What differs stays in the subclasses: when they connect and with which handshake (`endpoint`
parses the URL for both), and what a lost connection also drops (the tracked cache).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import hiredis
import redis.exceptions

from gateway.settings import LegacySettings

__all__ = [
    "PING",
    "Command",
    "Endpoint",
    "Pending",
    "Pipeline",
    "RespProtocol",
    "checked",
    "endpoint",
    "fail",
    "raw",
    "redis_error",
]

Command = tuple[Any, ...]
"""One Redis command as its words, e.g. `("HSET", key, field, text)`."""

PING: Final = b"*1\r\n$4\r\nPING\r\n"

_ERRORS: Final[tuple[tuple[str, type[redis.exceptions.RedisError]], ...]] = (
    ("NOSCRIPT", redis.exceptions.NoScriptError),
    ("LOADING", redis.exceptions.BusyLoadingError),
    ("READONLY", redis.exceptions.ReadOnlyError),
    ("EXECABORT", redis.exceptions.ExecAbortError),
    ("NOPERM", redis.exceptions.NoPermissionError),
)


def redis_error(reply: hiredis.ReplyError) -> redis.exceptions.RedisError:
    """The redis-py exception the pool raises for this error reply."""
    text = str(reply)
    for prefix, kind in _ERRORS:
        if text.startswith(prefix):
            return kind(text.removeprefix(prefix).lstrip())
    return redis.exceptions.ResponseError(text)


def checked(reply: Any) -> Any:
    """`reply`, or redis-py's exception for an error reply raised (`NoScriptError` for NOSCRIPT)."""
    if isinstance(reply, hiredis.ReplyError):
        raise redis_error(reply)
    return reply


def raw(reply: Any) -> Any:
    """The reply as it came, error replies included (the caller looks at them)."""
    return reply


def fail(fut: asyncio.Future[Any] | None, exc: Exception) -> None:
    """Fail `fut` with `exc`, marked as seen: a caller that stopped at an earlier failure of the
    same batch does not leave a "never retrieved" error behind."""
    if fut is not None and not fut.done():
        fut.set_exception(exc)
        _ = fut.exception()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a `redis://` or `unix://` URL points, and what its handshake must say."""

    where: dict[str, Any]  # `host` and `port`, or `path`
    username: str | None
    password: str | None
    db: str

    def auth(self) -> tuple[str, str] | None:
        """The AUTH arguments (user, password), or None without a password."""
        if self.password is None:
            return None
        return self.username or "default", self.password


def endpoint(url: str) -> Endpoint | None:
    """The endpoint of `url`; None for a URL this connection does not handle (TLS)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        where: dict[str, Any] = {"path": parts.path}
        db = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("db", "0")
    elif parts.scheme == "redis":
        where = {"host": parts.hostname or "localhost", "port": parts.port or 6379}
        db = parts.path.lstrip("/") or "0"
    else:
        return None
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return Endpoint(where, username, password, db)


@dataclass(slots=True)
class Pending:
    """A command sent on the connection, waiting for its reply (handled in stream order)."""

    on_reply: Callable[[Any], Any]
    future: asyncio.Future[Any] | None
    sent: float
    barrier: Any = None  # what a subclass hangs on its own commands (the tracked cache's PING)


class RespProtocol(asyncio.Protocol):
    """The connection's bytes, parsed by hiredis and handed to the `Pipeline` in order."""

    def __init__(self, owner: Pipeline) -> None:
        self.owner = owner
        self.reader = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        owner = self.owner
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                owner.lost(self, redis.exceptions.ConnectionError(f"{owner.label}: {exc}"))
                return
            if reply is False:
                return
            if isinstance(reply, hiredis.PushNotification):
                owner.on_push(self, reply)
            else:
                owner.on_reply(self, reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self, redis.exceptions.ConnectionError(f"{self.owner.label} lost: {exc or 'closed'}"))


class Pipeline:
    """One pipelined connection's queue, writes, replies and watchdog (module docstring)."""

    label = "legacy connection"
    """How errors and logs name the connection."""

    def __init__(self, settings: LegacySettings) -> None:
        self.settings = settings
        self._conn: RespProtocol | None = None  # connected (maybe still shaking hands)
        self._pending: collections.deque[Pending] = collections.deque()
        self._out: list[bytes] = []
        self._flush_soon = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    async def _dial(self, where: dict[str, Any]) -> RespProtocol:
        """Connect to `where`; the connection becomes this pipeline's (the handshake is the caller's)."""
        loop = asyncio.get_running_loop()
        if "path" in where:
            _, proto = await loop.create_unix_connection(lambda: RespProtocol(self), where["path"])
        else:
            _, proto = await loop.create_connection(lambda: RespProtocol(self), where["host"], where["port"])
        self._conn = proto
        return proto

    # -- sending ------------------------------------------------------------------------------------

    def _send(self, cmd: Command, on_reply: Callable[[Any], Any]) -> asyncio.Future[Any]:
        """Queue `cmd` (written at the end of this loop iteration); its future gets `on_reply(reply)`."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue(cmd, on_reply, fut)
        return fut

    def _queue(self, cmd: Command, on_reply: Callable[[Any], Any], fut: asyncio.Future[Any] | None) -> None:
        self._schedule_flush()
        self._out.append(hiredis.pack_command(cmd))
        self._pending.append(Pending(on_reply, fut, time.monotonic()))

    def _schedule_flush(self) -> None:
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _before_flush(self) -> None:
        """Called as the loop iteration's commands are about to be written: a subclass may queue a
        last one."""

    def _flush(self) -> None:
        """Send what this loop iteration queued, in one write."""
        self._flush_soon = False
        self._before_flush()
        if not self._out:
            return
        data, self._out = b"".join(self._out), []
        conn = self._conn
        if conn is None or conn.transport is None:
            return  # lost meanwhile: everything queued has failed already
        conn.transport.write(data)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self.settings.timeout_s, self._check_late)

    def _check_late(self) -> None:
        """Fail the connection when its oldest command has waited longer than `legacy.timeout_s`."""
        self._watchdog = None
        conn = self._conn
        if not self._pending or conn is None:
            return
        waited = time.monotonic() - self._pending[0].sent
        if waited >= self.settings.timeout_s:
            self.lost(conn, redis.exceptions.TimeoutError(f"{self.label}: no reply in {waited:.2f}s"))
            return
        self._watchdog = asyncio.get_running_loop().call_later(
            self.settings.timeout_s - waited, self._check_late
        )

    # -- receiving ----------------------------------------------------------------------------------

    def on_reply(self, proto: RespProtocol, reply: Any) -> None:
        """A reply, in the order the commands were sent."""
        if proto is not self._conn:
            return
        if not self._pending:
            self.lost(proto, redis.exceptions.ConnectionError(f"{self.label}: a reply nobody asked for"))
            return
        item = self._pending.popleft()
        try:
            result = item.on_reply(reply)
        except redis.exceptions.RedisError as exc:
            fail(item.future, exc)
            return
        if item.future is not None and not item.future.done():  # a cancelled caller: dropped, order kept
            item.future.set_result(result)

    def on_push(self, proto: RespProtocol, push: list[Any]) -> None:
        """A RESP3 push message (only a connection that said HELLO 3 gets them)."""

    def lost(self, proto: RespProtocol, exc: Exception) -> None:
        """The connection failed or closed: every command waiting on it fails with `exc`."""
        self._drop(proto, exc)

    def _drop(self, proto: RespProtocol, exc: Exception) -> list[Pending] | None:
        """The common part of `lost`: the connection closed and forgotten, what waited on it failed
        and returned; None when `proto` is not (any more) this pipeline's connection."""
        if proto is not self._conn:
            return None
        self._conn = None
        if proto.transport is not None:
            proto.transport.abort()
        pending, self._pending = self._pending, collections.deque()
        self._out.clear()
        for item in pending:
            fail(item.future, exc)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        return list(pending)
