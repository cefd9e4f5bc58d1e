"""The three DO actor kinds served by the actor host, with upstream's table and column names.

* `coordinator.CoordinatorActor` ("coordinator", the singleton `main`): agents, chat, tasks,
  zones, claims, handoffs and the coordinator WebSocket;
* `agent_state.AgentStateActor` ("agent", one per agent id): checkpoint, DMs, memory and the
  agent WebSocket;
* `resource_lock.ResourceLockActor` ("lock", one per resource path): the lock, its history and
  the expiry alarm.
"""

from gateway.actors import ActorRef
from gateway.domain.entities import COORDINATOR_NAME, EntityKey

COORDINATOR = ActorRef("coordinator", COORDINATOR_NAME)
"""The singleton coordinator (upstream `idFromName('main')`)."""


def agent_ref(agent_id: str) -> ActorRef:
    """The agent actor of `agent_id` (upstream `idFromName(agentId)`)."""
    return ActorRef("agent", agent_id)


def lock_ref(resource_path: str) -> ActorRef:
    """The lock actor of `resource_path` (upstream `idFromName(resourcePath)`)."""
    return ActorRef("lock", resource_path)


def owner_ref(key: EntityKey) -> ActorRef:
    """The actor whose database holds the entity (`gateway.domain.entities.OWNERS`)."""
    return ActorRef(key.owner.value, key.owner_name)


__all__ = ["COORDINATOR", "agent_ref", "lock_ref", "owner_ref"]
