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

The queue, the ordered replies and the watchdog are `gateway.legacy.pipeline`'s, shared with the
tracked cache's connection (`gateway.legacy.tracking`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import redis.exceptions
import structlog

from gateway.legacy.pipeline import Command, Pipeline, RespProtocol, checked, endpoint, raw, redis_error
from gateway.settings import LegacySettings, mask_url

__all__ = ["LuaScript", "SharedConnection", "redis_error"]

log = structlog.get_logger(__name__)


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


class SharedConnection(Pipeline):
    """Commands of the whole process on one pipelined connection (module docstring)."""

    def __init__(
        self, where: dict[str, Any], setup: list[Command], settings: LegacySettings, url: str
    ) -> None:
        super().__init__(settings)
        self.where = where
        self.setup = setup
        self.url = url
        self._ready = False  # the handshake has answered: commands may be sent
        self._connecting: asyncio.Future[RespProtocol] | None = None
        self.connections = 0

    @classmethod
    def for_url(cls, url: str, settings: LegacySettings) -> SharedConnection | None:
        """A connection to `url` (made at the first command); None for a URL it does not handle."""
        point = endpoint(url)
        if point is None:
            return None
        setup: list[Command] = []
        auth = point.auth()
        if auth is not None:
            setup.append(("AUTH", *auth))
        if point.db != "0":
            setup.append(("SELECT", point.db))
        setup.append(("CLIENT", "SETNAME", "agent-coord"))
        return cls(point.where, setup, settings, url)

    # -- the operations -----------------------------------------------------------------------------

    async def call(self, *words: Any) -> Any:
        """One command's reply (an error reply raises)."""
        conn = await self._live()
        reply = await self._send_on(conn, words)
        if isinstance(reply, hiredis.ReplyError):
            raise redis_error(reply)
        return reply

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of `commands`, sent together (no MULTI: Redis runs them in order); the first
        error reply raises, after every reply has arrived."""
        conn = await self._live()
        futures = [self._send_on(conn, cmd) for cmd in commands]
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

    async def _live(self) -> RespProtocol:
        conn = self._conn
        if self._ready and conn is not None:
            return conn
        return await self._connect()

    async def _connect(self) -> RespProtocol:
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

    async def _open(self) -> RespProtocol:
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                proto = await self._dial(self.where)
                for reply in [await fut for fut in [self._send_on(proto, cmd) for cmd in self.setup]]:
                    checked(reply)
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

    def lost(self, proto: RespProtocol, exc: Exception) -> None:
        """The connection failed or closed: every command waiting on it fails with `exc`."""
        if self._drop(proto, exc) is None:
            return
        self._ready = False
        if not self._closed:
            log.info("legacy.connection.lost", url=mask_url(self.url), error=str(exc))

    async def close(self) -> None:
        """Close the connection; commands after this fail."""
        self._closed = True
        self._abort(redis.exceptions.ConnectionError("legacy connection closed"))

    def _send_on(self, conn: RespProtocol, cmd: Command) -> asyncio.Future[Any]:
        """Queue `cmd` on `conn` (written at the end of this loop iteration); its future gets the
        reply as it came, error replies included."""
        if conn is not self._conn:  # lost between the caller's check and now
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.set_exception(redis.exceptions.ConnectionError("legacy connection lost"))
            return fut
        return self._send(cmd, raw)
