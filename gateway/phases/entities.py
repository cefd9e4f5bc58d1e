"""Entity keys: how the phase router, the repair queue and the checker name one piece of data.

Both stores hold the same entities under different layouts; an `EntityKey` names one entity
independently of either layout: its domain, the actor scope it lives in (an agent id for
per-agent data, empty for the coordinator's, the resource path for a lock) and its id within
that scope.
"""

from __future__ import annotations

from dataclasses import dataclass

DOMAINS: tuple[str, ...] = (
    "agent",
    "chat",
    "task",
    "zone",
    "claim",
    "handoff",
    "checkpoint",
    "dm",
    "memory",
    "lock",
)


@dataclass(frozen=True, slots=True)
class EntityKey:
    """One entity, named independently of either store's layout."""

    domain: str
    scope: str
    id: str

    def __str__(self) -> str:
        return f"{self.domain}:{self.scope}:{self.id}" if self.scope else f"{self.domain}:{self.id}"
