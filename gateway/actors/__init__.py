"""The Durable-Objects-style actor host: named actors with their own storage, strict turns.

File kinds (the coordinator) have one SQLite database each (`ctx.sql`); sharded kinds (agents,
locks) keep their rows in shared shard files through the scoped `ctx.tables`.

See `host.py` for the guarantees and `docs/actor-host.md` for the design and its figures.
"""

from gateway.actors.host import Actor, ActorContext, ActorHost, AlarmInfo, HostLimits
from gateway.actors.naming import ActorRef, actor_path
from gateway.actors.sockets import HostedSocket
from gateway.actors.storage import ActorStorage, Committer, InlineCommitter, SqlCursor, ThreadCommitter
from gateway.actors.tables import ShardTables, TableSpec

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
