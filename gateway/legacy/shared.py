"""One pipelined connection to the legacy Redis, shared by the gateway's single commands (issue 13).

redis-py's pool costs 50-70 us of the gateway's CPU per command on this machine (the
`BlockingConnectionPool` checkout and return, its `asyncio.Condition`, the retry wrapper, a
readiness check of the socket), several times what Redis itself spends; under issue 13's mix
the serving path sent about one such command per request. `SharedConnection` sends every
command queued in one event loop iteration in one write on ONE connection and hands the
replies (parsed by hiredis) back in order, 2-20 us a command (`docs/benchmarks.md`,
"Write-through, fifth pass").

* **RESP2, like the pool.** Replies are the pool's raw replies (`decode_responses`, with
  `surrogateescape`): str, int, None, lists; an error reply raises the redis-py exception the
  pool raises for it (`NoScriptError`, `BusyLoadingError`, `ResponseError`, ...), so
  `LegacyClient.run` retries and translates both alike.
* **Order.** Redis runs the commands of one connection in the order sent; two commands of one
  caller that awaits the first are in that order on any connection, as before. Commands of
  different callers were never ordered by the pool either.
* **Failure.** A connection that fails (Redis restarted or killed, a reply later than
  `legacy.timeout_s`, a protocol error) fails every command waiting on it with redis-py's
  `ConnectionError` or `TimeoutError`, as the pool's connection would fail its one command; the
  next command connects again (within `legacy.timeout_s`). Nothing is re-sent here: whether a
  command is repeated is `LegacyClient.run`'s decision (idempotent operations only).
* **Not for everything.** WATCH transactions need a connection of their own, and bulk scans
  must not delay the serving path: they stay on the pool. A URL this module does not handle
  (TLS) leaves every command on the pool (`SharedConnection.for_url` answers None).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import hiredis
import redis.exceptions
import structlog

from gateway.settings import LegacySettings, mask_url

__all__ = ["LuaScript", "SharedConnection", "redis_error"]

log = structlog.get_logger(__name__)

Command = tuple[Any, ...]

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


def _checked(reply: Any) -> Any:
    """`reply`, or the exception of an error reply raised."""
    if isinstance(reply, hiredis.ReplyError):
        raise redis_error(reply)
    return reply


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script sent by its SHA1 (`EVALSHA`), and whole when Redis does not know it yet."""

    text: str

    @property
    def sha(self) -> str:
        return _sha(self.text)


_SHAS: dict[str, str] = {}


def _sha(text: str) -> str:
    found = _SHAS.get(text)
    if found is None:
        found = _SHAS[text] = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
    return found


class _Protocol(asyncio.Protocol):
    """The connection's bytes, parsed by hiredis and handed to `SharedConnection` in order."""

    def __init__(self, owner: SharedConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.owner.lost(self, redis.exceptions.ConnectionError(f"legacy connection: {exc}"))
                return
            if reply is False:
                return
            self.owner.on_reply(self, reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self, redis.exceptions.ConnectionError(f"legacy connection lost: {exc or 'closed'}"))


class SharedConnection:
    """Commands of the whole process on one pipelined connection (module docstring)."""

    def __init__(
        self, where: dict[str, Any], setup: list[Command], settings: LegacySettings, url: str
    ) -> None:
        self.where = where
        self.setup = setup
        self.settings = settings
        self.url = url
        self._conn: _Protocol | None = None  # connected (maybe still shaking hands)
        self._ready = False  # the handshake has answered: commands may be sent
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._out: list[bytes] = []
        self._flush_soon = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self.connections = 0

    @classmethod
    def for_url(cls, url: str, settings: LegacySettings) -> SharedConnection | None:
        """A connection to `url` (made at the first command); None for a URL it does not handle."""
        parts = urlsplit(url)
        setup: list[Command] = []
        if parts.password is not None:
            setup.append(("AUTH", unquote(parts.username or "default"), unquote(parts.password)))
        if parts.scheme == "unix":
            where: dict[str, Any] = {"path": parts.path}
            db = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("db", "0")
        elif parts.scheme == "redis":
            where = {"host": parts.hostname or "localhost", "port": parts.port or 6379}
            db = parts.path.lstrip("/") or "0"
        else:
            return None
        if db != "0":
            setup.append(("SELECT", db))
        setup.append(("CLIENT", "SETNAME", "agent-coord"))
        return cls(where, setup, settings, url)

    # -- the operations -----------------------------------------------------------------------------

    async def call(self, *words: Any) -> Any:
        """One command's reply (an error reply raises)."""
        conn = await self._live()
        reply = await self._send(conn, words)
        if isinstance(reply, hiredis.ReplyError):
            raise redis_error(reply)
        return reply

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of `commands`, sent together (no MULTI: Redis runs them in order); the first
        error reply raises, after every reply has arrived."""
        conn = await self._live()
        futures = [self._send(conn, cmd) for cmd in commands]
        replies = [await fut for fut in futures]
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise redis_error(reply)
        return replies

    async def transaction(self, commands: Sequence[Command]) -> list[Any]:
        """`commands` in MULTI/EXEC: their replies (an error reply of one of them raises)."""
        replies = await self.pipeline([("MULTI",), *commands, ("EXEC",)])
        result = replies[-1]
        if not isinstance(result, list):
            raise redis.exceptions.ResponseError(f"transaction failed: {result}")
        for reply in result:
            if isinstance(reply, hiredis.ReplyError):
                raise redis_error(reply)
        return result

    async def script(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """`script`'s reply: EVALSHA, then EVAL when Redis does not know it (it did not run)."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await self.call("EVAL", script.text, len(keys), *keys, *args)

    # -- the connection -----------------------------------------------------------------------------

    async def _live(self) -> _Protocol:
        conn = self._conn
        if self._ready and conn is not None:
            return conn
        return await self._connect()

    async def _connect(self) -> _Protocol:
        """The connection, once its handshake has answered (one connect shared by every caller)."""
        if self._closed:
            raise redis.exceptions.ConnectionError("legacy connection closed")
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                if "path" in self.where:
                    _, proto = await loop.create_unix_connection(lambda: _Protocol(self), self.where["path"])
                else:
                    _, proto = await loop.create_connection(
                        lambda: _Protocol(self), self.where["host"], self.where["port"]
                    )
                self._conn = proto
                for reply in [await fut for fut in [self._send(proto, cmd) for cmd in self.setup]]:
                    _checked(reply)
        except TimeoutError as exc:
            self._abort(redis.exceptions.TimeoutError(f"connecting to {mask_url(self.url)}: timed out"))
            raise redis.exceptions.TimeoutError(f"connecting to {mask_url(self.url)}: timed out") from exc
        except OSError as exc:
            self._abort(redis.exceptions.ConnectionError(str(exc)))
            raise redis.exceptions.ConnectionError(f"connecting to {mask_url(self.url)}: {exc}") from exc
        except BaseException as exc:
            self._abort(redis.exceptions.ConnectionError(f"connecting failed: {exc!r}"))
            raise
        self._ready = True
        self.connections += 1
        return proto

    def _abort(self, exc: Exception) -> None:
        if self._conn is not None:
            self.lost(self._conn, exc)

    def lost(self, proto: _Protocol, exc: Exception) -> None:
        """The connection failed or closed: every command waiting on it fails with `exc`."""
        if proto is not self._conn:
            return
        self._conn, self._ready = None, False
        if proto.transport is not None:
            proto.transport.abort()
        pending, self._pending = self._pending, collections.deque()
        self._out.clear()
        for fut, _ in pending:
            if not fut.done():
                fut.set_exception(exc)
                _ = fut.exception()  # a caller that stopped at an earlier failure leaves none unseen
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self._closed:
            log.info("legacy.connection.lost", url=mask_url(self.url), error=str(exc))

    async def close(self) -> None:
        """Close the connection; commands after this fail."""
        self._closed = True
        self._abort(redis.exceptions.ConnectionError("legacy connection closed"))

    def _send(self, conn: _Protocol, cmd: Command) -> asyncio.Future[Any]:
        """Queue `cmd` on `conn` (written at the end of this loop iteration)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if conn is not self._conn:  # lost between the caller's check and now
            fut.set_exception(redis.exceptions.ConnectionError("legacy connection lost"))
            return fut
        self._out.append(hiredis.pack_command(cmd))
        self._pending.append((fut, time.monotonic()))
        if not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        """Send what this loop iteration queued, in one write."""
        self._flush_soon = False
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
        waited = time.monotonic() - self._pending[0][1]
        if waited >= self.settings.timeout_s:
            self.lost(conn, redis.exceptions.TimeoutError(f"legacy connection: no reply in {waited:.2f}s"))
            return
        self._watchdog = asyncio.get_running_loop().call_later(
            self.settings.timeout_s - waited, self._check_late
        )

    def on_reply(self, proto: _Protocol, reply: Any) -> None:
        """A reply, in the order the commands were sent."""
        if proto is not self._conn:
            return
        if not self._pending:
            self.lost(proto, redis.exceptions.ConnectionError("legacy connection: a reply nobody asked for"))
            return
        fut, _ = self._pending.popleft()
        if not fut.done():  # a cancelled caller: its reply is dropped, the order kept
            fut.set_result(reply)
