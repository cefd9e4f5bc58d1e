"""The project's one exception hierarchy.

Errors of the libraries below us (sqlite3/aiosqlite, redis-py) are translated into these at the
boundary where they are caught, so callers never depend on a driver's exception types. Every
error knows the HTTP status and JSON body it becomes when it reaches a client::

    GatewayError                      500  base class; never raised itself
    ├── ApiError                      4xx  a request the API rejects (bad input, wrong method ...)
    ├── ActorError                         the actor host
    │   ├── ActorOverloaded           503  the actor's mailbox is full (not retryable)
    │   ├── CommitFailed              503  the turn's commit failed; the actor was reset (retryable)
    │   ├── ActorResetError           503  the actor was reset while the event waited (retryable)
    │   ├── HostClosed                503  the host is shutting down (retryable)
    │   ├── ActorOwnedElsewhere            another process holds the data directory
    │   ├── TransactionControlNotAllowed   BEGIN/COMMIT/SAVEPOINT passed to sql.exec
    │   ├── InvalidActorName               a name the host cannot store (kind unknown, not text)
    │   └── LimitExceeded                  an actor limit (tags, attachment size, parameters)
    ├── StoreUnavailable              503  a backing store (legacy Redis) cannot be reached
    └── LegacyStoreError              500  Redis answered with an error (WRONGTYPE, a script error)

Error bodies keep the DO API's shape (`{"error": ...}`) and add machine-readable flags
(`retryable`, `overloaded`, `remote`) the way Durable Objects annotate their exceptions.

A client never sees the message of a 5xx: it can name a Redis host, a command or an actor.
`client_body` gives it the class's `public_message` and the request id instead, and the
middleware logs the message under that id.
"""

from __future__ import annotations

from typing import Any, Final

SERVER_ERROR: Final = 500


class GatewayError(Exception):
    """Base of every error this project raises on purpose."""

    status: int = 500
    retryable: bool = False
    public_message: str = "Internal server error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        """The error as JSON, with its full message (for 4xx this is what the client receives)."""
        out: dict[str, Any] = {"error": self.message}
        if self.retryable:
            out["retryable"] = True
        return out

    def client_body(self, request_id: str) -> dict[str, Any]:
        """The JSON body a client receives: `body()` for a 4xx; for a 5xx the same flags, but
        `public_message` for the message and the request id under which the log has the details."""
        body = self.body()
        if self.status < SERVER_ERROR:
            return body
        return {**body, "error": self.public_message, "requestId": request_id}


class ApiError(GatewayError):
    """A request the API rejects; carries its status and the exact JSON body to send."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("error", "error")))
        self.status = status
        self._body = body

    def body(self) -> dict[str, Any]:
        return self._body


class ActorError(GatewayError):
    """An error of the actor host itself (not of an actor's own code)."""


class ActorOverloaded(ActorError):
    """The actor has more queued events than its mailbox allows; the event was not run."""

    status = 503
    public_message = "The actor is overloaded; too many requests are waiting for it"

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "overloaded": True, "retryable": False}


class CommitFailed(ActorError):
    """The turn's writes could not be committed; nothing of the turn is visible."""

    status = 503
    retryable = True
    public_message = "The write could not be committed and changed nothing; retry it"


class ActorResetError(ActorError):
    """The actor was reset (its commit or a critical section failed) before this event ran."""

    status = 503
    retryable = True
    public_message = "The request was interrupted before it ran; retry it"


class HostClosed(ActorError):
    """The host no longer accepts events (it is shutting down)."""

    status = 503
    retryable = True
    public_message = "The gateway is shutting down; retry"


class ActorOwnedElsewhere(ActorError):
    """Another live host process owns the data directory (one host per directory)."""


class TransactionControlNotAllowed(ActorError):
    """Transaction-control SQL was passed to `sql.exec`; use `ctx.transaction` instead."""


class InvalidActorName(ActorError):
    """The actor kind is unknown or the name cannot be stored."""


class StorageApiError(ActorError):
    """Actor code misused its storage: `ctx.sql` on a sharded kind, `ctx.tables` on a file
    kind, an undeclared table, or a SQL fragment that could reach past the actor's own rows."""


class DataDirError(ActorError):
    """The data directory cannot be served as it is (a layout the host cannot take over)."""


class LimitExceeded(ActorError):
    """An actor limit was exceeded (WebSocket tags, attachment size, SQL parameters)."""


class StoreUnavailable(GatewayError):
    """A backing store cannot be reached; the request did not change anything there."""

    status = 503
    retryable = True
    public_message = "A backing store is unavailable; retry later"


class LegacyStoreError(GatewayError):
    """Redis answered with an error that is not about reachability (WRONGTYPE, a script error).

    Not retryable: the same command would fail the same way. Raised by `LegacyClient.run`, where
    redis-py's `ResponseError` and its relatives are translated.
    """

    status = 500


class StartupRefused(GatewayError):
    """The gateway cannot start as configured; the message says why and what to do."""
