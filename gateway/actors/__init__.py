"""The Durable-Objects-style actor host: named actors with their own storage, strict turns.

File kinds (the coordinator) have one SQLite database each (`ctx.sql`); sharded kinds (agents,
locks) keep their rows in shared shard files through the scoped `ctx.tables`.

See `host.py` for the guarantees and `docs/actor-host.md` for the design and its figures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from gateway.actors.host import Actor, ActorContext, ActorHost, AlarmInfo, HostLimits
    from gateway.actors.naming import ActorRef, actor_path
    from gateway.actors.sockets import HostedSocket
    from gateway.actors.storage import ActorStorage, Committer, InlineCommitter, SqlCursor, ThreadCommitter
    from gateway.actors.tables import ShardTables, TableSpec

_WHERE: Final = {
    "Actor": "host",
    "ActorContext": "host",
    "ActorHost": "host",
    "AlarmInfo": "host",
    "HostLimits": "host",
    "ActorRef": "naming",
    "actor_path": "naming",
    "HostedSocket": "sockets",
    "ActorStorage": "storage",
    "Committer": "storage",
    "InlineCommitter": "storage",
    "SqlCursor": "storage",
    "ThreadCommitter": "storage",
    "ShardTables": "tables",
    "TableSpec": "tables",
}
"""Each name's module. The names are imported when first asked for (PEP 562), not with the
package: a process that needs one light submodule (the check's legacy scan, which imports
`gateway.actors.sql_functions` for the sampling rule) does not import the host (about 0.1 s)."""


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Actor",
    "ActorContext",
    "ActorHost",
    "ActorRef",
    "ActorStorage",
    "AlarmInfo",
    "Committer",
    "HostLimits",
    "HostedSocket",
    "InlineCommitter",
    "ShardTables",
    "SqlCursor",
    "TableSpec",
    "ThreadCommitter",
    "actor_path",
]
