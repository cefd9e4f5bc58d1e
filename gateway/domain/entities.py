"""Entity keys: how the phase router, the repair queue and the checker name one piece of data.

Both stores hold the same entities under different layouts; an `EntityKey` names one entity
independently of either layout: its domain, the actor scope it lives in (an agent id for
per-agent data, empty for the coordinator's, the resource path for a lock) and its id within
that scope.

`OWNERS` tables which of the three DO actor kinds holds each domain, once: the actor store finds
the actor of an entity through it, and the phase router serialises the replication of the
entities one actor holds through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.domain.model import (
    Agent,
    Checkpoint,
    Claim,
    DirectMessage,
    GroupMessage,
    Handoff,
    Lock,
    Memory,
    Task,
    Zone,
)

__all__ = ["COORDINATOR_NAME", "DOMAINS", "OWNERS", "Entity", "EntityKey", "Owner"]

Entity = Agent | GroupMessage | Task | Zone | Claim | Handoff | Checkpoint | DirectMessage | Memory | Lock
"""Every entity an `EntityKey` can name (what a replica reads and writes)."""


class Owner(StrEnum):
    """The DO actor kind that holds an entity (the actor kinds' own names)."""

    COORDINATOR = "coordinator"  # the singleton `main`
    AGENT = "agent"  # one per agent id: the key's scope
    LOCK = "lock"  # one per resource path: the key's id


OWNERS: Final[dict[str, Owner]] = {
    "agent": Owner.COORDINATOR,
    "chat": Owner.COORDINATOR,
    "task": Owner.COORDINATOR,
    "zone": Owner.COORDINATOR,
    "claim": Owner.COORDINATOR,
    "handoff": Owner.COORDINATOR,
    "checkpoint": Owner.AGENT,
    "dm": Owner.AGENT,
    "memory": Owner.AGENT,
    "lock": Owner.LOCK,
}
"""domain -> the actor kind that holds its entities."""

DOMAINS: Final[tuple[str, ...]] = tuple(OWNERS)

COORDINATOR_NAME: Final = "main"
"""The singleton coordinator's actor name (upstream `idFromName('main')`)."""


@dataclass(frozen=True, slots=True)
class EntityKey:
    """One entity, named independently of either store's layout."""

    domain: str
    scope: str
    id: str

    def __str__(self) -> str:
        return f"{self.domain}:{self.scope}:{self.id}" if self.scope else f"{self.domain}:{self.id}"

    @property
    def owner(self) -> Owner:
        """The actor kind holding the entity; ValueError for an unknown domain."""
        owner = OWNERS.get(self.domain)
        if owner is None:
            raise ValueError(f"unknown entity domain {self.domain!r}")
        return owner

    @property
    def owner_name(self) -> str:
        """The name of the actor holding the entity: `main`, the agent id or the resource path."""
        owner = self.owner
        if owner is Owner.COORDINATOR:
            return COORDINATOR_NAME
        return self.scope if owner is Owner.AGENT else self.id
