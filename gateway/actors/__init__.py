"""The Durable-Objects-style actor host: named actors, one SQLite database each, strict turns.

See `host.py` for the guarantees and `docs/actor-host.md` for the design and its figures.
"""

from gateway.actors.host import Actor, ActorContext, ActorHost, AlarmInfo, HostLimits
from gateway.actors.naming import ActorRef, actor_path
from gateway.actors.sockets import HostedSocket
from gateway.actors.storage import ActorStorage, Committer, InlineCommitter, SqlCursor, ThreadCommitter

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
    "SqlCursor",
    "ThreadCommitter",
    "actor_path",
]
